//! The `rtcam` binary run as a process of its own, as a user runs it: a
//! config file, environment variables, its log on stderr.

use super::lines::{LineLog, LogGate};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The binary under test. Cross-compiled test runs set `RTCAM_TEST_RUNNER`
/// to the emulator (the cargo runner) that must start it (see `.ci/cross`).
/// The caller's `RTCAM_*` settings are not inherited, and logs carry no colours.
pub fn rtcam() -> Command {
    let exe = env!("CARGO_BIN_EXE_rtcam");
    let runner = std::env::var("RTCAM_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut c = match words.next() {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("RTCAM_") {
            c.env_remove(k);
        }
    }
    c.env("NO_COLOR", "1");
    c
}

/// What a finished process wrote: stdout, then stderr.
pub fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running `rtcam` process; its stdout and stderr are collected in
/// [`RtcamProcess::log`]. Killed when dropped.
pub struct RtcamProcess {
    child: Child,
    log: LineLog,
    gate: Option<LogGate>,
}

impl RtcamProcess {
    /// Starts `command` (from [`rtcam`]) with its output collected;
    /// `echo` also prints each line, tagged, for `--nocapture` runs.
    pub fn spawn(command: Command, echo: Option<&'static str>) -> RtcamProcess {
        Self::spawn_with(command, echo, false)
    }

    /// [`Self::spawn`]; with `gated`, the reading of its stderr (where it
    /// logs) can be paused: see [`Self::log_gate`].
    pub fn spawn_with(
        mut command: Command,
        echo: Option<&'static str>,
        gated: bool,
    ) -> RtcamProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the rtcam binary starts");
        let log = LineLog::new();
        log.read_from(child.stdout.take().expect("piped stdout"), echo);
        let stderr = child.stderr.take().expect("piped stderr");
        let gate = if gated {
            Some(log.read_from_gated(stderr, echo))
        } else {
            log.read_from(stderr, echo);
            None
        };
        RtcamProcess { child, log, gate }
    }

    /// Pauses and resumes the reading of its stderr (when spawned gated).
    pub fn log_gate(&self) -> Option<&LogGate> {
        self.gate.as_ref()
    }

    /// Its output so far.
    pub fn log(&self) -> &LineLog {
        &self.log
    }

    /// Panics (with its log) unless the process is still running.
    pub fn assert_running(&mut self, context: &str) {
        if let Some(status) = self.child.try_wait().expect("the child can be polled") {
            panic!(
                "{context}: rtcam exited ({status}); its log:\n{}",
                self.log.tail(80)
            );
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit pid_t");
        // SAFETY: kill(2) with a pid this process started and has not reaped.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "signal {signal} sent"
        );
    }

    /// Reaps it once it has exited (its output closed).
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("the child is reaped")
    }

    /// Asks it to stop (SIGTERM, as systemd does) and waits, at most
    /// `timeout`, for it to exit.
    pub async fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.log
            .wait_closed("rtcam to exit after SIGTERM", timeout)
            .await;
        self.wait()
    }
}

impl Drop for RtcamProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
