//! Headless Chromium, driven through chromedriver on a loopback port, for
//! tests that load the agent's page as a user's browser does.

use super::{WAIT, free_port};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// How the browser hands out its own address in ICE candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// Plain IP addresses (`--disable-features=WebRtcHideLocalIpsWithMdns`).
    PlainIps,
    /// Chromium's default: host addresses hidden behind `<uuid>.local`
    /// names, which the camera must resolve over mDNS.
    MdnsNames,
}

/// chromedriver, and a browser session through it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium allowed to use loopback
    /// candidates.
    pub async fn start(candidates: Candidates) -> Browser {
        Self::start_with(candidates, &[]).await
    }

    /// [`Self::start`] with more Chromium flags.
    pub async fn start_with(candidates: Candidates, extra: &[&str]) -> Browser {
        let (driver, port) = start_chromedriver();
        let profile = tempfile::tempdir().expect("temp dir");
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--disable-default-apps".into(),
            // WebRTC over loopback.
            "--allow-loopback-in-peer-connection".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            // A generated microphone and camera, granted without asking (talkback tests).
            "--use-fake-device-for-media-stream".into(),
            "--use-fake-ui-for-media-stream".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        if candidates == Candidates::PlainIps {
            args.push("--disable-features=WebRtcHideLocalIpsWithMdns".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a browser session");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Waits (in the page, at most [`WAIT`]) until `condition` holds, then
    /// returns `{ok, value}` with `value` = `result` evaluated.
    pub async fn wait_for(&self, condition: &str, result: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const deadline = Date.now() + {ms};
             (function check() {{
               let ok = false;
               try {{ ok = ({condition}); }} catch (e) {{}}
               if (ok || Date.now() > deadline) {{
                 let value = null;
                 try {{ value = ({result}); }} catch (e) {{ value = 'error: ' + e; }}
                 done({{ ok, value }});
                 return;
               }}
               setTimeout(check, 100);
             }})();",
            ms = WAIT.as_millis(),
        );
        self.client
            .execute_async(&script, vec![])
            .await
            .expect("the script runs")
    }

    /// Runs `body` (async JavaScript that calls `done(value)`) in the page
    /// and returns the value.
    pub async fn run(&self, body: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1];\n{body}");
        self.client
            .execute_async(&script, vec![])
            .await
            .expect("the script runs")
    }

    /// The page's message line (where it shows errors).
    pub async fn message(&self) -> String {
        let v = self
            .wait_for("true", "document.getElementById('message').textContent")
            .await;
        v["value"].as_str().unwrap_or_default().to_string()
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Starts chromedriver on a free loopback port; returns it and its port.
///
/// chromedriver binds its port on 127.0.0.1 and on ::1, and exits when
/// either is taken. A port free on 127.0.0.1 may still be the local port
/// of another test's outgoing connection on ::1, so a chromedriver that
/// exits before announcing itself is started again on another port.
fn start_chromedriver() -> (Child, u16) {
    const ATTEMPTS: usize = 5;
    let mut why = String::new();
    for _ in 0..ATTEMPTS {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is installed (the README's test command installs chromium-driver)",
            );
        // chromedriver announces when it listens; its output is read on a
        // thread of its own, so the wait is bounded. The channel closes
        // when chromedriver closes its output (it exited).
        let stdout = driver.stdout.take().expect("piped stdout");
        let (started_tx, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    let _ = started_tx.send(line);
                } else if line.contains("not available") || line.contains("Exiting") {
                    // Its last words: kept for the failure message.
                    let _ = started_tx.send(format!("failed: {line}"));
                }
            }
        });
        match started.recv_timeout(WAIT) {
            Ok(line) if !line.starts_with("failed: ") => return (driver, port),
            Ok(line) => why = format!("port {port}: {line}"),
            Err(e) => why = format!("port {port}: no start message within {WAIT:?} ({e})"),
        }
        let _ = driver.kill();
        let _ = driver.wait();
    }
    panic!("chromedriver did not start in {ATTEMPTS} attempts; last: {why}");
}
