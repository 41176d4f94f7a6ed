//! A real browser: headless Chromium (driven through chromedriver) loads the
//! built-in page, signals through the embedded broker's WebSocket listener,
//! and decodes the H.264 stream. Runs inside a private network namespace.

mod common;

use common::{WAIT, free_port, settings, start};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// chromedriver on a loopback port, and a browser session through it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
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
        // chromedriver announces when it listens.
        let stdout = driver.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("chromedriver started")
                .expect("readable");
            if line.contains("started successfully") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let profile = tempfile::tempdir().expect("temp dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--disable-default-apps",
                    // WebRTC over loopback, with plain IPs rather than mDNS names.
                    "--allow-loopback-in-peer-connection",
                    "--disable-features=WebRtcHideLocalIpsWithMdns",
                    "--autoplay-policy=no-user-gesture-required",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
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

    /// Waits (in the page) until `condition` holds, then returns `result`.
    pub async fn wait_for(&self, condition: &str, result: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const deadline = Date.now() + {ms};
             (function check() {{
               let ok = false;
               try {{ ok = ({condition}); }} catch (e) {{}}
               if (ok || Date.now() > deadline) {{ done({{ ok, value: ({result}) }}); return; }}
               setTimeout(check, 100);
             }})();",
            ms = WAIT.as_millis(),
        );
        self.client
            .execute_async(&script, vec![])
            .await
            .expect("the script runs")
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_stream_from_the_built_in_page() {
    let s = settings("browser");
    let agent = start(s.clone()).await;
    let url = format!(
        "http://{}/",
        agent.http_addr().expect("the web viewer listens")
    );
    let browser = Browser::start().await;
    browser.client.goto(&url).await.expect("the page loads");
    let r = browser
        .wait_for(
            "window.rtcam && window.rtcam.stats.framesDecoded >= 30",
            "window.rtcam ? window.rtcam.stats : null",
        )
        .await;
    assert_eq!(r["ok"], true, "the video element decoded 30 frames: {r}");
    let stats = &r["value"];
    assert_eq!(stats["width"], 640, "{stats}");
    assert_eq!(stats["height"], 480, "{stats}");
    // The page shows the device info it read from P/info.
    let device = browser
        .wait_for(
            "document.getElementById('info').rows.length > 0",
            "document.getElementById('device').textContent",
        )
        .await;
    assert_eq!(device["value"], s.device.name.as_str());
    assert_eq!(agent.stats().connected, 1);
    browser.close().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_panel_drives_outputs_and_shows_inputs() {
    let s = common::gpio_settings("browser-panel");
    let agent = start(s.clone()).await;
    let sim = agent
        .gpio()
        .and_then(|g| g.simulator())
        .expect("simulated pins")
        .clone();
    let url = format!(
        "http://{}/",
        agent.http_addr().expect("the web viewer listens")
    );
    let browser = Browser::start().await;
    browser.client.goto(&url).await.expect("the page loads");
    // The panel is built from P/info and the control channel opens.
    let ready = browser
        .wait_for(
            "document.getElementById('pin-relay1') && window.rtcam.pc && window.rtcam.stats.framesDecoded > 0",
            "true",
        )
        .await;
    assert_eq!(ready["ok"], true, "panel built: {ready}");
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(false));
    let toggle = browser
        .client
        .find(fantoccini::Locator::Id("pin-relay1"))
        .await
        .expect("the relay1 toggle");
    toggle.click().await.expect("clicked");
    let mut gpio_events = agent.gpio().expect("gpio").subscribe();
    if sim.pin("relay1").map(|p| p.high) != Some(true) {
        let ev = tokio::time::timeout(common::WAIT, gpio_events.recv())
            .await
            .expect("a change")
            .expect("open");
        assert_eq!(ev.pin, "relay1");
    }
    assert_eq!(
        sim.pin("relay1").map(|p| p.high),
        Some(true),
        "the click drove the pin"
    );
    // An input edge lights the indicator.
    let before = browser
        .wait_for("true", "document.getElementById('led-door').className")
        .await;
    let door_high = sim.pin("door").map(|p| p.high).expect("door");
    assert!(sim.drive("door", !door_high));
    let want = if door_high { "led" } else { "led on" };
    let lit = browser
        .wait_for(
            &format!("document.getElementById('led-door').className === '{want}'"),
            "document.getElementById('led-door').className",
        )
        .await;
    assert_eq!(
        lit["ok"], true,
        "indicator follows the input (was {before}): {lit}"
    );
    browser.close().await;
    agent.shutdown().await;
}
