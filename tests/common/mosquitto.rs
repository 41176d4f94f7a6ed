//! A Mosquitto broker started by a test, on loopback ports.

use super::lines::LineLog;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Mosquitto process on loopback ports; killed when dropped.
pub struct Mosquitto {
    child: Child,
    log: LineLog,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto on `127.0.0.1:port`, open to anyone, and returns
    /// once it accepts connections.
    pub fn start(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        Mosquitto::start_with(
            dir,
            &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        )
    }

    /// Starts Mosquitto with `config` (listeners, authentication; files it
    /// names may live in `dir`, kept as long as the broker runs), logging
    /// everything to [`Mosquitto::log`], and returns once it accepts connections.
    pub fn start_with(dir: tempfile::TempDir, config: &str) -> Mosquitto {
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("{config}\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"),
        )
        .expect("write config");
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto is installed (the README's test command installs it)");
        // Mosquitto says when it is ready to accept connections.
        let log = LineLog::new();
        log.read_from(child.stderr.take().expect("piped stderr"), None);
        let started = log.wait_line_blocking("mosquitto to start", Duration::from_secs(20), |l| {
            l.contains("running") || l.contains("Error")
        });
        assert!(!started.contains("Error"), "mosquitto failed: {started}");
        Mosquitto {
            child,
            log,
            _dir: dir,
        }
    }

    /// Its log: connections, authentication and TLS failures.
    pub fn log(&self) -> &LineLog {
        &self.log
    }

    /// Makes it re-read its configuration and password file (SIGHUP).
    pub fn reload(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit pid_t");
        // SAFETY: kill(2) with a pid this process started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP sent");
    }

    /// Sends it a signal (SIGSTOP freezes it: connected, but silent).
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit pid_t");
        // SAFETY: kill(2) with a pid this process started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal sent");
    }

    /// Stops the broker now.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
