//! Log setup: `RTCAM_LOG` filter (default `info`), to stderr. Under systemd
//! (`JOURNAL_STREAM` set) lines carry no ANSI colour and no timestamp, since
//! journald adds its own.
//!
//! The WebRTC stack logs through the `log` crate, at levels chosen for a
//! library: a viewer closing its tab is an `ERROR` there ("handle_inbound
//! got err: abort chunk"). rtcam reports what each viewer's connection did
//! itself (offer accepted, connected, session ended with its reason), so the
//! stack's records are bridged into `tracing` at the level they deserve in a
//! daemon ([`stack_level`]): its errors and warnings become `DEBUG`, its
//! chatter `TRACE`. `ERROR` in rtcam's log means the operator must act.

use tracing_subscriber::EnvFilter;

/// Default filter. rumqttd (the embedded broker) logs every ordinary client
/// disconnect as an error, so it is off unless asked for
/// (`RTCAM_LOG=info,rumqttd=info`); the broker problems that matter show in
/// rtcam's own MQTT link warnings.
pub const DEFAULT_FILTER: &str = "info,rumqttd=off";

/// Crates of the WebRTC stack, whose `log` records are re-levelled.
const STACK_PREFIXES: &[&str] = &["webrtc", "rtc"];

/// Whether a `log` target belongs to the WebRTC stack (`rtc_sctp::…`, `webrtc::…`).
fn is_stack(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    STACK_PREFIXES
        .iter()
        .any(|p| krate == *p || krate.strip_prefix(p).is_some_and(|r| r.starts_with('_')))
}

/// The level a `log` record is logged at by rtcam: the WebRTC stack's
/// errors and warnings are per-connection events rtcam already reports, so
/// they become `DEBUG`, and its info and debug lines `TRACE`. Other crates
/// keep their level.
pub fn stack_level(target: &str, level: log::Level) -> log::Level {
    if !is_stack(target) {
        return level;
    }
    match level {
        log::Level::Error | log::Level::Warn => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

/// Forwards `log` records to `tracing` at [`stack_level`].
struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        let level = stack_level(meta.target(), meta.level());
        tracing::level_filters::LevelFilter::current() >= tracing_log::AsTrace::as_trace(&level)
    }

    fn log(&self, record: &log::Record<'_>) {
        // The subscriber's filter decides on the new level (and the target).
        let level = stack_level(record.target(), record.level());
        let relevelled = log::Record::builder()
            .level(level)
            .target(record.target())
            .args(*record.args())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        let _ = tracing_log::format_trace(&relevelled);
    }

    fn flush(&self) {}
}

/// Installs the global subscriber and the `log` bridge; a second call is a no-op.
pub fn init() {
    let filter =
        EnvFilter::try_from_env("RTCAM_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `finish` rather than `init`: the latter would install tracing-log's
    // own bridge, which keeps the stack's levels.
    let installed = if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing::subscriber::set_global_default(builder.with_ansi(false).without_time().finish())
    } else {
        tracing::subscriber::set_global_default(builder.finish())
    };
    // Already installed (tests call init more than once): keep the first.
    if installed.is_ok() && log::set_boxed_logger(Box::new(Bridge)).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Logs through a subscriber with `filter`, the stack's records through
    /// the bridge as `log` would deliver them; returns the output.
    fn logged(filter: &str) -> String {
        let out = Capture::default();
        let writer = out.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "rtcam::agent", "agent-line");
            tracing::warn!(target: "rtcam::signaling", "agent-warning");
            tracing::error!(target: "rumqttd::server", "broker-line");
            let record = |level, target: &str, text: &str| {
                log::Log::log(
                    &Bridge,
                    &log::Record::builder()
                        .level(level)
                        .target(target)
                        .args(format_args!("{text}"))
                        .build(),
                );
            };
            record(
                log::Level::Error,
                "rtc_sctp::association",
                "handle_inbound got err: abort chunk",
            );
            record(log::Level::Warn, "webrtc::peer_connection", "stack-warning");
            record(log::Level::Info, "rtc_ice::agent", "ice-chatter");
            record(log::Level::Warn, "rtcamish::thing", "other-crate-warning");
        });
        String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8 logs")
    }

    #[test]
    fn a_viewer_leaving_logs_nothing_above_info_by_default() {
        let text = logged(DEFAULT_FILTER);
        assert!(text.contains("agent-line"), "{text}");
        assert!(text.contains("agent-warning"), "{text}");
        assert!(
            text.contains("other-crate-warning"),
            "only the stack is re-levelled: {text}"
        );
        for quiet in ["abort chunk", "stack-warning", "ice-chatter", "broker-line"] {
            assert!(!text.contains(quiet), "{quiet} should be filtered: {text}");
        }
    }

    #[test]
    fn the_stack_errors_show_at_debug_level_when_asked_for() {
        let text = logged("debug");
        let line = text
            .lines()
            .find(|l| l.contains("abort chunk"))
            .unwrap_or_else(|| panic!("the stack's error is kept at debug: {text}"));
        assert!(line.contains("DEBUG") && !line.contains("ERROR"), "{line}");
        assert!(!text.contains("ice-chatter"), "info becomes trace: {text}");
        assert!(logged("trace").contains("ice-chatter"));
    }

    #[test]
    fn stack_targets_are_recognised_by_crate_name() {
        for t in [
            "rtc",
            "rtc_sctp::association",
            "webrtc::peer_connection",
            "rtc::x",
        ] {
            assert_eq!(stack_level(t, log::Level::Error), log::Level::Debug, "{t}");
        }
        for t in ["rtcam::peer", "rtcamx", "rumqttd::server", "webrtcish"] {
            assert_eq!(stack_level(t, log::Level::Error), log::Level::Error, "{t}");
        }
    }
}
