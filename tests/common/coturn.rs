//! A real TURN server for the tests: `turnserver` (Debian package
//! `coturn`, installed by `.ci/setup`) listening and relaying on 127.0.0.1
//! only, configured on its command line (not /etc/turnserver.conf), its
//! files in a temporary directory; killed when dropped.

use super::{WAIT, free_port};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The realm every test server uses.
pub const REALM: &str = "rtcam.test";

/// How clients authenticate.
pub enum Auth<'a> {
    /// One long-term user (`--lt-cred-mech --user=NAME:PASSWORD`).
    User {
        /// User name.
        name: &'a str,
        /// Password.
        password: &'a str,
    },
    /// The TURN REST API (`--use-auth-secret --static-auth-secret=SECRET`):
    /// user names `<expiry>:<id>`, passwords HMAC-SHA1'd from the secret.
    Secret(&'a str),
}

/// A running `turnserver`.
pub struct Coturn {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// Starts one and waits until it answers STUN.
    pub fn start(auth: Auth<'_>) -> Coturn {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let log = dir.path().join("turnserver.log");
        let mut args: Vec<String> = vec![
            // Command line only: not /etc/turnserver.conf.
            "-n".into(),
            "--listening-ip=127.0.0.1".into(),
            "--relay-ip=127.0.0.1".into(),
            format!("--listening-port={port}"),
            // The agent is a loopback peer; coturn refuses those by default.
            "--allow-loopback-peers".into(),
            format!("--realm={REALM}"),
            "--fingerprint".into(),
            "--no-cli".into(),
            "--no-tls".into(),
            "--no-dtls".into(),
            "--no-tcp".into(),
            "--no-tcp-relay".into(),
            // Everything in the temporary directory, nothing in /var.
            format!("--userdb={}", dir.path().join("turndb").display()),
            format!("--pidfile={}", dir.path().join("turnserver.pid").display()),
            format!("--log-file={}", log.display()),
            "--simple-log".into(),
            "--no-stdout-log".into(),
            // Logs each allocation and its traffic when it ends.
            "--verbose".into(),
        ];
        match auth {
            Auth::User { name, password } => {
                args.push("--lt-cred-mech".into());
                args.push(format!("--user={name}:{password}"));
            }
            Auth::Secret(secret) => {
                args.push("--use-auth-secret".into());
                args.push(format!("--static-auth-secret={secret}"));
            }
        }
        let child = Command::new("turnserver")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs (install the Debian package coturn: .ci/setup)");
        let mut turn = Coturn {
            child,
            port,
            log,
            _dir: dir,
        };
        turn.wait_ready();
        turn
    }

    /// Waits until the server answers a STUN Binding request on its port.
    fn wait_ready(&mut self) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let deadline = Instant::now() + WAIT;
        // Binding request: type 0x0001, length 0, magic cookie, transaction id.
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(b"rtcam-ready!");
        let mut buf = [0u8; 512];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("turnserver exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "turnserver does not answer STUN on 127.0.0.1:{}:\n{}",
                self.port,
                self.log_text()
            );
            sock.send_to(&request, ("127.0.0.1", self.port))
                .expect("send to loopback");
            // Each request waits up to the read timeout for its answer.
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && n >= 20
                && buf[..2] == [0x01, 0x01]
                && buf[8..20] == request[8..20]
            {
                return;
            }
        }
    }

    /// Its `turn:` URL (UDP).
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log has a line containing every `needle`; returns it.
    pub async fn wait_log_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .log_text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no coturn log line with {needles:?}:\n{}",
                self.log_text()
            );
            // A log file has no event to wait on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
