//! Log setup: `RTCAM_LOG` filter (default `info`), to stderr. Under systemd
//! (`JOURNAL_STREAM` set) lines carry no ANSI colour and no timestamp, since
//! journald adds its own; elsewhere colour only on a terminal without
//! `NO_COLOR`.
//!
//! The WebRTC stack logs through the `log` crate, at levels chosen for a
//! library: a viewer closing its tab is an `ERROR` there ("handle_inbound
//! got err: abort chunk"). rtcam reports what each viewer's connection did
//! itself (offer accepted, connected, session ended with its reason), so the
//! stack's records are bridged into `tracing` at the level they deserve in a
//! daemon ([`stack_level`]): its errors and warnings become `DEBUG`, its
//! chatter `TRACE`. `ERROR` in rtcam's log means the operator must act.
//!
//! Logging never blocks the agent: lines go into a bounded queue that one
//! thread of its own writes to stderr ([`LogPipe`]). When stderr is blocked
//! (a full pipe nobody reads, a stalled journald) the queue fills and
//! further lines are dropped and counted rather than stalling signaling or
//! media; once the output drains, the count is logged in one line, and
//! `/stats.json` has the total (`log_lines_dropped`).

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds at most.
pub const QUEUE_LINES: usize = 4096;
/// Bytes the queue holds at most.
pub const QUEUE_BYTES: usize = 1 << 20;

/// Log lines dropped since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The installed pipe, for [`flush`].
static PIPE: OnceLock<LogPipe> = OnceLock::new();

/// Log lines dropped since start because the output was blocked.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Dropped since the last report.
    unreported: u64,
    /// The writer thread is writing a line taken off the queue.
    writing: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a line is queued.
    queued: Condvar,
    /// Signalled when the writer has written everything.
    drained: Condvar,
}

/// A bounded, lossy queue of log lines in front of a writer that may block
/// (stderr). Cloning shares the queue.
#[derive(Clone)]
pub struct LogPipe {
    shared: Arc<Shared>,
}

impl LogPipe {
    /// A pipe whose lines a thread of its own writes to `out`.
    pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<LogPipe> {
        let pipe = LogPipe {
            shared: Arc::default(),
        };
        let worker = pipe.clone();
        std::thread::Builder::new()
            .name("rtcam-log".into())
            .spawn(move || worker.write_all_to(out))?;
        Ok(pipe)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one line, or counts it as dropped when the queue is full.
    fn push(&self, line: Vec<u8>) {
        let mut q = self.lock();
        if q.lines.len() >= QUEUE_LINES || q.bytes + line.len() > QUEUE_BYTES {
            q.unreported += 1;
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.bytes += line.len();
        q.lines.push_back(line);
        drop(q);
        self.shared.queued.notify_one();
    }

    /// The writer thread: writes lines as they come; when the queue has
    /// drained after lines were dropped, logs how many.
    fn write_all_to(&self, mut out: impl Write) {
        loop {
            let line = {
                let mut q = self.lock();
                loop {
                    if let Some(line) = q.lines.pop_front() {
                        q.bytes -= line.len();
                        q.writing = true;
                        break line;
                    }
                    q.writing = false;
                    self.shared.drained.notify_all();
                    q = self
                        .shared
                        .queued
                        .wait(q)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            // A broken stderr has nowhere to report to: the line is lost.
            let _ = out.write_all(&line).and_then(|()| out.flush());
            let dropped = {
                let mut q = self.lock();
                if q.lines.is_empty() {
                    std::mem::take(&mut q.unreported)
                } else {
                    0
                }
            };
            if dropped > 0 {
                // Through the subscriber, so it is formatted like every line
                // (and queued behind nothing: the queue is empty).
                tracing::warn!(
                    dropped,
                    total = dropped_lines(),
                    "log output was blocked: {dropped} log lines dropped"
                );
            }
        }
    }

    /// Waits (at most `timeout`) until every queued line is written.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = self.lock();
        while !q.lines.is_empty() || q.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self
                .shared
                .drained
                .wait_timeout(q, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// One log line being formatted; queued when dropped.
pub struct LineBuf<'a> {
    pipe: &'a LogPipe,
    buf: Vec<u8>,
}

impl Write for LineBuf<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.pipe.push(std::mem::take(&mut self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for LogPipe {
    type Writer = LineBuf<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineBuf {
            pipe: self,
            buf: Vec::new(),
        }
    }
}

/// Waits (at most `timeout`) until the log lines queued so far are written;
/// false if the output stayed blocked. Call before the process exits.
pub fn flush(timeout: Duration) -> bool {
    PIPE.get().is_none_or(|p| p.flush(timeout))
}

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

/// Installs the global subscriber (writing to stderr through a [`LogPipe`])
/// and the `log` bridge; a second call is a no-op.
pub fn init() {
    if PIPE.get().is_some() {
        return;
    }
    let Ok(pipe) = LogPipe::spawn(std::io::stderr()) else {
        eprintln!("rtcam: cannot start the log thread; logging off");
        return;
    };
    let filter =
        EnvFilter::try_from_env("RTCAM_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(pipe.clone());
    // `finish` rather than `init`: the latter would install tracing-log's
    // own bridge, which keeps the stack's levels.
    let installed = if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing::subscriber::set_global_default(builder.with_ansi(false).without_time().finish())
    } else {
        // Lines go through our pipe, so the formatter cannot see whether
        // stderr is a terminal: colour only there, and never with NO_COLOR
        // (a log redirected to a file or a pipe stays plain text).
        let colour = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        tracing::subscriber::set_global_default(builder.with_ansi(colour).finish())
    };
    // Already installed (tests call init more than once): keep the first.
    if installed.is_ok() {
        let _ = PIPE.set(pipe);
        if log::set_boxed_logger(Box::new(Bridge)).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
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

    /// A writer that blocks until the test opens it, like a full pipe.
    #[derive(Clone)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        out: Capture,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().expect("not poisoned");
            while !*open {
                open = cv.wait(open).expect("not poisoned");
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_drops_lines_and_never_blocks_the_logger() {
        let gate = Gate {
            open: Arc::new((Mutex::new(false), Condvar::new())),
            out: Capture::default(),
        };
        let pipe = LogPipe::spawn(gate.clone()).expect("log thread");
        let sub = tracing_subscriber::fmt()
            .with_writer(pipe.clone())
            .with_ansi(false)
            .finish();
        let before = dropped_lines();
        tracing::subscriber::with_default(sub, || {
            // Twice the queue, while the output is blocked: returns at once.
            for i in 0..2 * QUEUE_LINES {
                tracing::info!(i, "flood");
            }
        });
        assert!(!pipe.flush(Duration::from_millis(50)), "still blocked");
        // The queue's worth, and the line the writer holds, were kept.
        let dropped = dropped_lines() - before;
        assert!(dropped >= QUEUE_LINES as u64 - 1, "{dropped} dropped");
        {
            let (lock, cv) = &*gate.open;
            *lock.lock().expect("not poisoned") = true;
            cv.notify_all();
        }
        assert!(pipe.flush(Duration::from_secs(10)), "drains once open");
        let text = String::from_utf8(gate.out.0.lock().expect("not poisoned").clone())
            .expect("utf-8 logs");
        assert!(
            text.lines().any(|l| l.ends_with(" i=0")),
            "the first lines were kept"
        );
        assert!(
            text.lines().count() >= QUEUE_LINES - 1,
            "the queue was written"
        );
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
