//! Log setup: `RTCAM_LOG` filter (default `info`), to stderr. Under systemd
//! (`JOURNAL_STREAM` set) lines carry no ANSI colour and no timestamp, since
//! journald adds its own.

use tracing_subscriber::EnvFilter;

/// Default filter. rumqttd logs every ordinary client disconnect as an
/// error, so it is off unless asked for (`RTCAM_LOG=info,rumqttd=info`); the
/// WebRTC stack's info lines are per-connection chatter. Targets match by
/// prefix, so the stack's crates are named with `::` to leave `rtcam` alone.
pub const DEFAULT_FILTER: &str = "info,rumqttd=off,webrtc::=warn,rtc::=warn,rtc_ice=error,rtc_dtls=error,rtc_sctp=warn,rtc_srtp=warn,rtc_mdns=warn,rtc_interceptor=warn,rtc_datachannel=warn";

/// Installs the global subscriber; a second call is a no-op.
pub fn init() {
    let filter =
        EnvFilter::try_from_env("RTCAM_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.with_ansi(false).without_time().try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests call init more than once): keep the first.
    let _ = result;
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

    #[test]
    fn default_filter_keeps_rtcam_and_quietens_the_stack() {
        let out = Capture::default();
        let writer = out.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(DEFAULT_FILTER))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "rtcam::agent", "agent-line");
            tracing::info!(target: "rtc::peer_connection", "stack-line");
            tracing::info!(target: "rtc_ice::agent", "ice-line");
            tracing::error!(target: "rumqttd::server", "broker-line");
            tracing::warn!(target: "rtc_sctp::association", "sctp-warning");
            tracing::warn!(target: "rtc_ice::agent", "ice-chatter");
        });
        let text =
            String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8 logs");
        assert!(text.contains("agent-line"), "{text}");
        assert!(text.contains("sctp-warning"), "{text}");
        for quiet in ["stack-line", "ice-line", "broker-line", "ice-chatter"] {
            assert!(!text.contains(quiet), "{quiet} should be filtered: {text}");
        }
    }
}
