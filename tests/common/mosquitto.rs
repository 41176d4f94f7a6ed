//! A Mosquitto broker started by a test, on a loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A Mosquitto process on a loopback port; killed when dropped.
pub struct Mosquitto {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto on `127.0.0.1:port` and returns once it accepts connections.
    pub fn start(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"),
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
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("mosquitto printed its start-up lines")
                .expect("readable stderr");
            assert!(!line.contains("Error"), "mosquitto failed: {line}");
            if line.contains("running") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Mosquitto { child, _dir: dir }
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
