//! A real browser: headless Chromium (driven through chromedriver) loads the
//! built-in page of the `rtcam` binary (started from a config file),
//! signals through the embedded broker's WebSocket listener, decodes the
//! H.264 stream and drives simulated GPIO pins from the control panel; the
//! pins' levels are read from the agent's log (the simulator logs every
//! electrical change at DEBUG). Runs inside a private network namespace.

mod common;

use common::agent::{AgentProcess, TestConfig, start};
use common::browser::{Browser, Candidates};
use common::process::{all_output, rtcam};
use common::{WAIT, http_request};
use fantoccini::Locator;
use serde_json::{Value, json};

/// The agent's log filter: rtcam at INFO, the simulated pins' electrical
/// changes at DEBUG.
const PIN_LOG: &str = "info,rumqttd=off,rtcam::gpio::sim=debug";

/// The simulator's log line for an electrical change of `pin`.
fn line_of(pin: &str, level: &str) -> String {
    format!("simulated line {pin}: {level}")
}

/// The page's address on the agent.
fn page_url(agent: &AgentProcess) -> String {
    format!("http://{}/", agent.http_addr())
}

/// A header's value (names compared case-insensitively).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_stream_from_the_built_in_page() {
    // Four encoder threads: four slices per picture, which Chromium must decode.
    let cfg = TestConfig::new("browser")
        .with("webrtc.disconnected_timeout_ms", 1000)
        .with("webrtc.playout_delay_ms", 100)
        .with("video.encoder_threads", 4);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&page_url(&agent))
        .await
        .expect("the page loads");
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
    // Chromium offers the playout-delay extension and the agent answers it
    // (webrtc.playout_delay_ms is set).
    let answer = browser
        .run("done(window.rtcam.pc.remoteDescription.sdp);")
        .await;
    let sdp = answer.as_str().unwrap_or_default();
    // The page reads the test pattern's block code back from every frame
    // it shows: capture-to-display latency (same clock on both ends).
    let lat = browser
        .wait_for(
            "window.rtcam.latency.summary().count >= 20",
            "window.rtcam.latency.summary()",
        )
        .await;
    assert_eq!(
        lat["ok"], true,
        "the block code is read from shown frames: {lat}"
    );
    let l = &lat["value"];
    let (p50, max) = (l["p50"].as_f64(), l["max"].as_f64());
    assert!(
        p50.is_some_and(|v| v > 0.0) && max.is_some_and(|v| v < 5000.0),
        "latencies are positive and bounded: {l}"
    );
    assert!(
        l["firstFrameMs"].as_f64().is_some_and(|v| v > 0.0),
        "the first shown frame is timed from the offer: {l}"
    );
    assert!(
        sdp.lines().any(|l| l.starts_with("a=extmap:")
            && l.ends_with(" http://www.webrtc.org/experiments/rtp-hdrext/playout-delay")),
        "the answer negotiates playout-delay: {answer}"
    );
    // The page shows the device info it read from P/info.
    let device = browser
        .wait_for(
            "document.getElementById('info').rows.length > 0",
            "document.getElementById('device').textContent",
        )
        .await;
    assert_eq!(device["value"], s.device.name.as_str());
    let st = agent.stats().await;
    assert_eq!(
        (st.sessions, st.connected, st.subscribers),
        (1, 1, 1),
        "the page is one streaming session"
    );
    // Closing the browser ends its session (a bye, or ICE noticing).
    browser.close().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}

/// The page's video runs: connected, with frames decoded.
const STREAMING: &str = "window.rtcam && window.rtcam.link === 'connected' \
                         && window.rtcam.stats.framesDecoded >= 10";

/// A config for an agent the test restarts under its page: a fixed web
/// port, as a camera has, so the page's origin stays the one the restarted
/// agent's broker lets open a WebSocket.
fn restartable(prefix: &str) -> TestConfig {
    TestConfig::new(prefix).with("http.listen", format!("127.0.0.1:{}", common::free_port()))
}

/// The agent started from `cfg`, and Chromium playing its page.
async fn streaming_page(cfg: &TestConfig) -> (AgentProcess, Browser) {
    let agent = start(cfg).await;
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&page_url(&agent))
        .await
        .expect("the page loads");
    let r = browser
        .wait_for(
            STREAMING,
            "window.rtcam ? [window.rtcam.link, window.rtcam.stats] : null",
        )
        .await;
    assert_eq!(r["ok"], true, "the page streams: {r}");
    (agent, browser)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_comes_back_by_itself_when_the_agent_restarts() {
    let cfg = restartable("browser-restart");
    let (mut agent, browser) = streaming_page(&cfg).await;
    let state = "window.rtcam ? [window.rtcam.link, window.rtcam.stats] : null";
    // The agent dies under the page (SIGKILL: no bye, no DTLS close, its
    // embedded broker gone too) and comes back with the same config.
    agent.kill().await;
    let agent = start(&cfg).await;
    // The page's new session, made by itself: its broker connection
    // retried, the camera's retained `online` seen, a new offer sent.
    let page = "[window.rtcam.link, document.getElementById('status').textContent, \
                document.getElementById('message').textContent, window.rtcam.stats]";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = agent.stats().await;
        if st.connected == 1 && st.subscribers == 1 {
            break;
        }
        if std::time::Instant::now() > deadline {
            let state = browser.wait_for("true", page).await;
            panic!(
                "the page made no new session: {st:?}\npage: {state}\nagent log:\n{}",
                agent.log().tail(20)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Its statistics start over with the new connection.
    let r = browser.wait_for(STREAMING, state).await;
    assert_eq!(r["ok"], true, "the page streams again: {r}");
    browser.close().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_answer_was_lost_goes_on_under_a_new_client_id() {
    // The orphaned session outlives the test unless the page moves on: a
    // page waiting for the camera to time it out would stay dark.
    let cfg = restartable("browser-lost-answer").with("webrtc.negotiation_timeout_ms", 300_000);
    let (mut agent, browser) = streaming_page(&cfg).await;
    let state = "window.rtcam ? [window.rtcam.link, window.rtcam.clientId, \
                 document.getElementById('message').textContent, window.rtcam.stats] : null";
    let r = browser.wait_for("true", state).await;
    let first_id = r["value"][1].as_str().expect("a client id").to_string();
    // The broker link drops right after the page's next new offer leaves
    // (a Wi-Fi hiccup): the camera takes the offer, its answer is lost.
    let armed = browser
        .run(&format!(
            "const send = WebSocket.prototype.send;
             window.cutOffers = 0;
             WebSocket.prototype.send = function (data) {{
               send.call(this, data);
               const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
               const text = ArrayBuffer.isView(bytes) ? new TextDecoder().decode(bytes) : String(data);
               if (window.cutOffers === 0 && text.includes('/offer/{first_id}')
                   && !text.includes('\"restart\"')) {{
                 window.cutOffers = 1;
                 setTimeout(() => this.close(), 0);
               }}
             }};
             done(true);"
        ))
        .await;
    assert_eq!(armed, true);
    // A new offer, not an ICE restart: the agent goes away until the page
    // has spent its ICE restart (dropped while the broker was away).
    agent.kill().await;
    let r = browser
        .wait_for("window.rtcam.iceRestarts >= 1", state)
        .await;
    assert_eq!(r["ok"], true, "the page tried an ICE restart: {r}");
    let agent = start(&cfg).await;
    let r = browser
        .wait_for(
            &format!(
                "window.cutOffers === 1 && window.rtcam.clientId !== '{first_id}' && {STREAMING}"
            ),
            &format!("[window.cutOffers, {state}]"),
        )
        .await;
    assert_eq!(
        r["ok"],
        true,
        "the page streams under a new client id: {r}\nagent log:\n{}",
        agent.log().tail(20)
    );
    // The orphan, still negotiating, beside the page's new session.
    let st = agent.stats().await;
    assert_eq!(
        (st.sessions, st.negotiating, st.connected),
        (2, 1, 1),
        "the lost answer's session and the page's new one: {st:?}"
    );
    browser.close().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_icon_is_served_and_nothing_on_the_page_is_missing() {
    let agent = start(&TestConfig::new("browser-icon")).await;
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&page_url(&agent))
        .await
        .expect("the page loads");
    let ready = browser
        .wait_for(
            "document.readyState === 'complete' && !!window.rtcam \
             && performance.getEntriesByType('resource').some((e) => e.name.endsWith('/config.json'))",
            "document.readyState",
        )
        .await;
    assert_eq!(ready["ok"], true, "the page loaded: {ready}");
    // The icon the page names, fetched by the page itself.
    let icon = browser
        .run(
            "const link = document.querySelector('link[rel~=\"icon\"]');
             if (!link) { done({ href: null }); return; }
             fetch(link.href, { cache: 'no-store' })
               .then((r) => done({ href: link.getAttribute('href'), status: r.status,
                                   type: r.headers.get('content-type') }))
               .catch((e) => done({ href: link.getAttribute('href'), error: String(e) }));",
        )
        .await;
    let href = icon["href"]
        .as_str()
        .unwrap_or_else(|| panic!("the page has a <link rel=\"icon\">: {icon}"))
        .to_string();
    assert_eq!(icon["status"], 200, "the page's icon loads: {icon}");
    assert!(
        icon["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("image/")),
        "the page's icon is an image: {icon}"
    );
    // The same from outside, and /favicon.ico, which some browsers ask for
    // whatever the page says.
    for path in [href.as_str(), "/favicon.ico"] {
        let (status, headers, body) = http_request(agent.http_addr(), "GET", path, &[]).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let kind = header(&headers, "content-type").unwrap_or_default();
        assert!(
            kind.starts_with("image/"),
            "GET {path}: an image, not {kind:?}"
        );
        assert!(!body.is_empty(), "GET {path}: a body");
    }
    // Every resource the page loaded (style sheet, scripts, /config.json)
    // came back 200: no 404 on page load.
    let loaded = browser
        .run(
            "done(performance.getEntriesByType('resource')
                    .map((e) => ({ name: e.name, status: e.responseStatus })));",
        )
        .await;
    let entries = loaded.as_array().expect("a list of resources");
    for want in [
        "/assets/style.css",
        "/assets/app.js",
        "/assets/panel.js",
        "/assets/recordings.js",
        "/config.json",
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e["name"].as_str().is_some_and(|n| n.ends_with(want))),
            "the page loaded {want}: {loaded}"
        );
    }
    let failed: Vec<&Value> = entries.iter().filter(|e| e["status"] != 200).collect();
    assert!(failed.is_empty(), "resources not served: {failed:?}");
    // Recording is off (the default): the recordings view says so, and how
    // to turn it on.
    browser
        .client
        .find(Locator::Id("rec-toggle"))
        .await
        .expect("a Recordings button")
        .click()
        .await
        .expect("the button clicks");
    let off = browser
        .wait_for(
            "document.getElementById('rec-info').textContent.startsWith('Recording is off')",
            "document.getElementById('rec-info').textContent",
        )
        .await;
    assert_eq!(off["ok"], true, "the view says recording is off: {off}");
    assert!(
        off["value"]
            .as_str()
            .is_some_and(|t| t.contains("[record]") && t.contains("mode")),
        "and how to turn it on: {off}"
    );
    browser.close().await;
    agent.shutdown().await;
}

/// Clicks the element `css` finds; again (a few times) if the page redrew
/// it between finding and clicking.
async fn click(browser: &Browser, css: &str) {
    let mut last = String::new();
    for _ in 0..5 {
        match browser.client.find(Locator::Css(css)).await {
            Ok(e) => match e.click().await {
                Ok(()) => return,
                Err(err) => last = err.to_string(),
            },
            Err(err) => last = err.to_string(),
        }
    }
    panic!("cannot click {css}: {last}");
}

/// The recordings' picture size.
const W: i64 = 320;
const H: i64 = 240;

/// Continuous recording of 2 s segments under `dir`.
fn recording(prefix: &str, dir: &std::path::Path) -> TestConfig {
    TestConfig::new(prefix)
        .with("video.width", W)
        .with("video.height", H)
        .with("video.fps", 15)
        .with("record.mode", "continuous")
        .with("record.dir", dir.join("recordings").display().to_string())
        .with("record.segment_s", 2)
        .with("record.fragment_ms", 500)
        .with("record.min_free_mb", 0)
        // The moving test pattern: motion from the start, marked on the timeline.
        .with("motion.enabled", true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_takes_a_snapshot_and_plays_a_recorded_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start(&recording("browser-rec", dir.path())).await;
    let device = agent.settings().device.name.clone();
    agent
        .log()
        .wait_line("a closed segment", WAIT, |l| {
            l.contains("recording segment closed")
        })
        .await;
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&page_url(&agent))
        .await
        .expect("the page loads");
    // What this Chromium says of H.264 (Constrained Baseline) in MP4.
    let support = browser
        .wait_for(
            "!!window.rtcamRecordings",
            "({ canPlayType: document.createElement('video') \
                  .canPlayType('video/mp4; codecs=\"avc1.42E01F\"'), \
                mse: MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42E01F\"') })",
        )
        .await;
    eprintln!("Chromium and H.264 in MP4: {support}");
    assert_eq!(support["ok"], true, "the page loaded: {support}");

    // The snapshot button: the picture of the camera now, shown, with a
    // download named after the device and the time.
    click(&browser, "#snapshot").await;
    let snap = browser
        .wait_for(
            "(document.getElementById('snap-img').complete \
              && document.getElementById('snap-img').naturalWidth > 0) \
             || document.getElementById('message').textContent.startsWith('snapshot')",
            "({ width: document.getElementById('snap-img').naturalWidth, \
                height: document.getElementById('snap-img').naturalHeight, \
                download: document.getElementById('snap-download').download, \
                href: document.getElementById('snap-download').href, \
                shown: !document.getElementById('snap').hidden, \
                message: document.getElementById('message').textContent })",
        )
        .await;
    eprintln!("snapshot: {snap}");
    assert_eq!(snap["ok"], true, "the snapshot shows: {snap}");
    let s = &snap["value"];
    assert_eq!(
        (s["width"].as_i64(), s["height"].as_i64()),
        (Some(W), Some(H)),
        "{s}"
    );
    assert_eq!(s["shown"], true, "{s}");
    let download = s["download"].as_str().unwrap_or_default();
    assert!(
        download.starts_with(&format!("{device}-")) && download.ends_with(".jpg"),
        "a sensible file name: {s}"
    );
    assert!(
        s["href"].as_str().is_some_and(|h| h.starts_with("blob:")),
        "{s}"
    );

    // The recordings view: today's timeline with the open segment marked
    // as recording, and a closed one to play.
    click(&browser, "#rec-toggle").await;
    let listed = browser
        .wait_for(
            "window.rtcamRecordings.recordings.some((r) => !r.open) \
             && !!document.querySelector('#rec-days .timeline .seg.open') \
             && !!document.querySelector('#rec-days tr[data-name] button.play') \
             && !!document.querySelector('#rec-days .timeline .mark')",
            "({ closed: window.rtcamRecordings.recordings.filter((r) => !r.open).map((r) => r.name), \
                open: window.rtcamRecordings.recordings.filter((r) => r.open).map((r) => r.name), \
                segs: document.querySelectorAll('#rec-days .timeline .seg').length, \
                motion_marks: document.querySelectorAll('#rec-days .timeline .mark').length, \
                days: document.querySelectorAll('#rec-days .day').length, \
                live: document.querySelector('#rec-days .live') ? document.querySelector('#rec-days .live').textContent : null, \
                info: document.getElementById('rec-info').textContent })",
        )
        .await;
    eprintln!("recordings view: {listed}");
    assert_eq!(
        listed["ok"], true,
        "the view lists the recordings: {listed}"
    );
    let l = &listed["value"];
    assert_eq!(l["days"], 1, "{l}");
    assert!(
        l["live"].as_str().is_some_and(|t| t.contains("recording")),
        "{l}"
    );
    assert_eq!(l["open"].as_array().map(Vec::len), Some(1), "{l}");
    let name = l["closed"][0]
        .as_str()
        .expect("a closed segment")
        .to_string();
    // Its download link carries the token's place and a file name.
    let link = browser
        .run(&format!(
            "const a = document.querySelector('#rec-days tr[data-name=\"{name}\"] a.download');
             fetch(a.href, {{ headers: {{ Range: 'bytes=0-7' }} }})
               .then((r) => done({{ download: a.download, status: r.status,
                                   type: r.headers.get('content-type') }}))
               .catch((e) => done({{ error: String(e) }}));"
        ))
        .await;
    assert_eq!(
        link["status"], 206,
        "the download link serves the file: {link}"
    );
    assert_eq!(link["type"], "video/mp4", "{link}");
    assert!(
        link["download"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("{device}-")) && d.ends_with(".mp4")),
        "{link}"
    );

    // Playing it: Chromium decodes the MP4 and its time runs.
    click(
        &browser,
        &format!("#rec-days tr[data-name=\"{name}\"] button.play"),
    )
    .await;
    let played = browser
        .wait_for(
            "(() => { const v = document.getElementById('rec-video'); \
                      return (v.readyState >= 2 && v.currentTime > 0.5) || !!v.error \
                        || document.getElementById('rec-message').textContent !== ''; })()",
            "(() => { const v = document.getElementById('rec-video'); \
                      return { readyState: v.readyState, currentTime: v.currentTime, \
                               videoWidth: v.videoWidth, videoHeight: v.videoHeight, \
                               duration: v.duration, error: v.error ? v.error.code + ' ' + v.error.message : null, \
                               src: v.currentSrc, playing: window.rtcamRecordings.playing, \
                               recMessage: document.getElementById('rec-message').textContent, \
                               message: document.getElementById('message').textContent }; })()",
        )
        .await;
    eprintln!("playback: {played}");
    assert_eq!(played["ok"], true, "Chromium plays the segment: {played}");
    let p = &played["value"];
    assert!(p["readyState"].as_i64().is_some_and(|r| r >= 2), "{p}");
    assert!(p["currentTime"].as_f64().is_some_and(|t| t > 0.5), "{p}");
    assert_eq!(
        (p["videoWidth"].as_i64(), p["videoHeight"].as_i64()),
        (Some(W), Some(H)),
        "{p}"
    );
    assert_eq!(p["error"], Value::Null, "{p}");
    assert_eq!(p["playing"], name.as_str(), "{p}");
    assert!(
        p["src"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("/recordings/{name}"))),
        "{p}"
    );
    assert_eq!(p["recMessage"], "", "no error shown: {p}");
    assert_eq!(p["message"], "", "no error shown: {p}");

    // Deleting it (no [auth]: every page may): two clicks, then it is gone
    // from the list.
    let delete = format!("#rec-days tr[data-name=\"{name}\"] button.delete");
    click(&browser, &delete).await;
    click(&browser, &delete).await;
    let gone = browser
        .wait_for(
            &format!(
                "!window.rtcamRecordings.recordings.some((r) => r.name === '{name}') \
                 || document.getElementById('rec-message').textContent !== ''"
            ),
            "({ left: window.rtcamRecordings.recordings.map((r) => r.name), \
                playing: window.rtcamRecordings.playing, \
                recMessage: document.getElementById('rec-message').textContent })",
        )
        .await;
    assert_eq!(gone["ok"], true, "the segment is deleted: {gone}");
    assert_eq!(gone["value"]["recMessage"], "", "{gone}");
    assert_eq!(gone["value"]["playing"], Value::Null, "{gone}");
    let (day, file) = name.split_once('/').expect("day/file");
    assert!(
        !dir.path().join("recordings").join(day).join(file).exists(),
        "{name} is gone from the disk"
    );
    // A click on the timeline plays the segment under it (a 2 s segment is
    // thinner than a pixel on a 24 h bar: the nearest one).
    // The list reloads after the delete, and a segment that has just closed
    // leaves no open one until the next opens: the script waits for a drawn
    // segment (any will do) in the same turn as it clicks.
    let picked = browser
        .run(
            "const deadline = Date.now() + 20000;
             (function pick() {
               const seg = document.querySelector('#rec-days .timeline .seg.open')
                 || document.querySelector('#rec-days .timeline .seg');
               if (!seg) {
                 if (Date.now() > deadline) { done({ error: 'no segment drawn' }); return; }
                 setTimeout(pick, 100);
                 return;
               }
               const bar = seg.parentElement;
               const r = seg.getBoundingClientRect();
               bar.dispatchEvent(new MouseEvent('click', { bubbles: true,
                 clientX: r.left + 1, clientY: r.top + r.height / 2 }));
               done({ playing: window.rtcamRecordings.playing,
                      names: window.rtcamRecordings.recordings.map((x) => x.name) });
             })();",
        )
        .await;
    assert!(
        picked["names"]
            .as_array()
            .is_some_and(|n| n.contains(&picked["playing"])),
        "the timeline click plays a listed segment: {picked}"
    );
    browser.close().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_panel_drives_outputs_and_shows_inputs() {
    // No pins declared: the demo set on the simulator, whose door opens and
    // closes by itself (an input edge this test cannot make from outside).
    let cfg = TestConfig::new("browser-panel").with_env("RTCAM_LOG", PIN_LOG);
    let agent = start(&cfg).await;
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&page_url(&agent))
        .await
        .expect("the page loads");
    // The panel is built from P/info and the control channel opens.
    let ready = browser
        .wait_for(
            "document.getElementById('pin-relay1') && document.getElementById('led-door') \
             && window.rtcam.pc && window.rtcam.stats.framesDecoded > 0",
            "true",
        )
        .await;
    assert_eq!(ready["ok"], true, "panel built: {ready}");
    let (low, high) = (line_of("relay1", "low"), line_of("relay1", "high"));
    assert!(
        agent.log().count(|l| l.contains(&low)) >= 1,
        "relay1 starts low:\n{}",
        agent.log().tail(30)
    );
    assert_eq!(agent.log().count(|l| l.contains(&high)), 0, "relay1 is low");
    let toggle = browser
        .client
        .find(Locator::Id("pin-relay1"))
        .await
        .expect("the relay1 toggle");
    toggle.click().await.expect("clicked");
    let h = high.clone();
    agent
        .log()
        .wait_line("the click to drive relay1 high", WAIT, move |l| {
            l.contains(&h)
        })
        .await;
    let shown = browser
        .wait_for(
            "document.getElementById('pin-relay1').checked",
            "[document.getElementById('pin-relay1').checked, document.getElementById('message').textContent]",
        )
        .await;
    assert_eq!(
        shown["value"],
        json!([true, ""]),
        "the toggle shows on, no error: {shown}"
    );

    // An input edge moves the indicator: the demo door flips every 7 s.
    let before = browser
        .wait_for("true", "document.getElementById('led-door').className")
        .await["value"]
        .as_str()
        .expect("a class")
        .to_string();
    let flipped = browser
        .wait_for(
            &format!("document.getElementById('led-door').className !== '{before}'"),
            "document.getElementById('led-door').className",
        )
        .await;
    assert_eq!(
        flipped["ok"], true,
        "the door indicator follows the input within {WAIT:?} (was {before:?}): {flipped}"
    );
    // What it shows is the input's value, as the agent reports it.
    let now = browser
        .run(
            "window.rtcam.call('gpio.get', { pin: 'door' }).then((r) =>
               done({ reply: r, led: document.getElementById('led-door').className }));",
        )
        .await;
    assert_eq!(now["reply"]["ok"], true, "{now}");
    let lit = if now["reply"]["result"]["value"] == true {
        "led on"
    } else {
        "led"
    };
    assert_eq!(
        now["led"], lit,
        "the indicator shows the door's value: {now}"
    );
    assert_eq!(now["led"], flipped["value"], "{now} after {flipped}");
    browser.close().await;
    agent.shutdown().await;
}

const VIEW_TOKEN: &str = "browser-view-token-0123456789";

/// Mints a signed token with the agent's own config, as an operator does
/// (`rtcam --config FILE token --role ROLE --ttl 1h`).
async fn mint(agent: &AgentProcess, role: &str) -> String {
    let mut command = rtcam();
    command
        .arg("--config")
        .arg(agent.config_path())
        .args(["token", "--role", role, "--ttl", "1h"]);
    let out = tokio::process::Command::from(command)
        .output()
        .await
        .expect("rtcam token runs");
    assert!(out.status.success(), "rtcam token: {}", all_output(&out));
    let token = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_string();
    assert!(token.starts_with(&format!("rtcam2.{role}.")), "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_takes_its_token_from_its_url() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let secret_file = secrets.path().join("token.key");
    std::fs::write(&secret_file, format!("{}\n", common::random_hex(24))).expect("secret written");
    let mut view = toml::Table::new();
    view.insert("token".into(), VIEW_TOKEN.into());
    view.insert("role".into(), "view".into());
    let cfg = TestConfig::new("browser-token")
        .with("auth.mode", "token")
        .with("auth.secret_file", secret_file.display().to_string())
        .with("auth.tokens", toml::Value::Array(vec![view.into()]))
        .with("webrtc.disconnected_timeout_ms", 1000)
        .with_env("RTCAM_LOG", PIN_LOG);
    let agent = start(&cfg).await;
    let control = mint(&agent, "control").await;
    let url = page_url(&agent);
    let browser = Browser::start(Candidates::PlainIps).await;

    // Without a token the camera's broker refuses the page (its MQTT
    // password is the token), and the page says why with the documented
    // code.
    browser.client.goto(&url).await.expect("the page loads");
    let refused = browser
        .wait_for(
            "document.getElementById('message').textContent.startsWith('unauthorized: ')",
            "document.getElementById('message').textContent",
        )
        .await;
    assert_eq!(
        refused["ok"], true,
        "the page shows unauthorized: {refused}"
    );
    agent
        .log()
        .wait_line("the refusal in the agent's log", WAIT, |l| {
            l.contains("MQTT connection refused") && l.contains("BadCredentials")
        })
        .await;
    let st = agent.stats().await;
    assert_eq!(st.sessions, 0, "a refused offer gets no session: {st:?}");
    let frames = browser
        .wait_for("true", "window.rtcam.stats.framesDecoded || 0")
        .await;
    assert_eq!(frames["value"], 0, "no video without a token");

    // With a control token in its URL the page streams and drives a pin.
    browser
        .client
        .goto(&format!("{url}?token={control}"))
        .await
        .expect("the page loads");
    let ready = browser
        .wait_for(
            "document.getElementById('pin-relay1') && window.rtcam.pc \
             && window.rtcam.pc.connectionState === 'connected' && window.rtcam.stats.framesDecoded > 0",
            "document.getElementById('message').textContent",
        )
        .await;
    assert_eq!(ready["ok"], true, "the control page streams: {ready}");
    agent
        .log()
        .wait_line("a control session for the page", WAIT, |l| {
            l.contains("offer accepted") && l.contains("role=\"control\"")
        })
        .await;
    let high = line_of("relay1", "high");
    assert_eq!(agent.log().count(|l| l.contains(&high)), 0, "relay1 is low");
    browser
        .client
        .find(Locator::Id("pin-relay1"))
        .await
        .expect("the relay1 toggle")
        .click()
        .await
        .expect("clicked");
    let h = high.clone();
    agent
        .log()
        .wait_line("the control page to drive relay1 high", WAIT, move |l| {
            l.contains(&h)
        })
        .await;

    // With a view token it streams, but a state-changing command is
    // refused (not_allowed) and the pin does not move. The lamp has no
    // failsafe, so nothing else writes it meanwhile.
    let lamp_writes = || agent.log().count(|l| l.contains("simulated line lamp:"));
    assert_eq!(lamp_writes(), 1, "the lamp's initial write only");
    browser
        .client
        .goto(&format!("{url}?token={VIEW_TOKEN}"))
        .await
        .expect("the page loads");
    let ready = browser
        .wait_for(
            "document.getElementById('pin-lamp') && window.rtcam.pc \
             && window.rtcam.pc.connectionState === 'connected' && window.rtcam.stats.framesDecoded > 0",
            "document.getElementById('pin-lamp').checked",
        )
        .await;
    assert_eq!(ready["ok"], true, "the view page streams: {ready}");
    agent
        .log()
        .wait_line("a view session for the page", WAIT, |l| {
            l.contains("offer accepted") && l.contains("role=\"view\"")
        })
        .await;
    let was = ready["value"].clone();
    browser
        .client
        .find(Locator::Id("pin-lamp"))
        .await
        .expect("the lamp toggle")
        .click()
        .await
        .expect("clicked");
    let denied = browser
        .wait_for(
            "document.getElementById('message').textContent.startsWith('not_allowed: ')",
            "[document.getElementById('message').textContent, document.getElementById('pin-lamp').checked]",
        )
        .await;
    assert_eq!(denied["ok"], true, "the page shows not_allowed: {denied}");
    assert_eq!(denied["value"][1], was, "the toggle goes back: {denied}");
    let reply = browser
        .run("window.rtcam.call('gpio.get', { pin: 'lamp' }).then((r) => done(r));")
        .await;
    assert_eq!(
        reply["result"]["value"], false,
        "the lamp stayed off: {reply}"
    );
    assert_eq!(lamp_writes(), 1, "nothing wrote the lamp");
    let st = agent.stats().await;
    assert!(
        st.sessions >= 1,
        "the view page has a session of its own: {st:?}"
    );
    browser.close().await;
    agent.shutdown().await;
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_of(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // From field 3 (the state) on: utime and stime, fields 14 and 15, are at 11 and 12.
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::time::Duration::from_millis(ticks * 1000 / hz)
}

/// A fresh Chromium on the agent's page.
async fn open_page(agent: &AgentProcess) -> Browser {
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&page_url(agent))
        .await
        .expect("the page loads");
    browser
}

/// Loads per benchmark figure: `BROWSER_BENCH_LOADS`, else `default`.
fn bench_loads(default: usize) -> usize {
    std::env::var("BROWSER_BENCH_LOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A script reporting Chromium's jitter-buffer totals for the `kind` stream.
fn jitter_script(kind: &str) -> String {
    format!(
        "(async () => {{ let r = null; (await window.rtcam.pc.getStats()).forEach(s => {{ \
         if (s.type === 'inbound-rtp' && s.kind === '{kind}') r = {{ delay: s.jitterBufferDelay, \
         emitted: s.jitterBufferEmittedCount }}; }}); done(r); }})();"
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Benchmark, not a test (run with `--ignored`; docs/BENCHMARKS.md has the
/// command and figures): headless Chromium loads the built-in page
/// `BROWSER_BENCH_LOADS` times (default 5) per size, with
/// `webrtc.playout_delay_ms` unset and 0, and
/// reads, from every frame it presents, the test pattern's block code:
/// capture-to-display p50/p95/max over 10 s per load, offer to first
/// presented frame, delivered fps, freezes (gaps over 200 ms between
/// presented frames), Chromium's jitter-buffer time per frame, and the
/// agent's CPU (% of a core) and RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --release --test browser_e2e -- --ignored --nocapture"]
async fn bench_browser_latency() {
    const KIND: &str = "video";
    const SECONDS: u64 = 10;
    let loads = bench_loads(5);
    for (w, h, kbps) in [(1280, 720, 2000), (640, 480, 1000)] {
        for delay in [None, Some(0)] {
            let mut cfg = TestConfig::new("browser-bench")
                .with("video.width", w)
                .with("video.height", h)
                .with("video.fps", 30)
                .with("video.bitrate_kbps", kbps);
            if let Some(d) = delay {
                cfg = cfg.with("webrtc.playout_delay_ms", d);
            }
            let delay = delay.map_or("unset".to_string(), |d: i64| d.to_string());
            let agent = start(&cfg).await;
            let (mut p50, mut p95, mut max, mut first, mut fps, mut jitter, mut cpu) =
                (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
            let mut freezes = 0;
            for _ in 0..loads {
                let browser = open_page(&agent).await;
                browser
                    .wait_for(
                        "window.rtcam && window.rtcam.latency.summary().count >= 10",
                        "true",
                    )
                    .await;
                browser
                    .run("window.rtcam.latency.clear(); done(true);")
                    .await;
                let j0 = browser.run(&jitter_script(KIND)).await;
                let c0 = cpu_of(agent.pid());
                tokio::time::sleep(std::time::Duration::from_secs(SECONDS)).await;
                let c1 = cpu_of(agent.pid());
                let j1 = browser.run(&jitter_script(KIND)).await;
                let l = browser
                    .run("done(Object.assign(window.rtcam.latency.summary(), { gaps: (() => { \
                          const t = window.rtcam.latency.times(); let n = 0; \
                          for (let i = 1; i < t.length; i++) if (t[i] - t[i - 1] > 200) n++; return n; })() }));")
                    .await;
                let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
                p50.push(f(&l, "p50"));
                p95.push(f(&l, "p95"));
                max.push(f(&l, "max"));
                first.push(f(&l, "firstFrameMs"));
                fps.push(f(&l, "presented") / SECONDS as f64);
                freezes += l["gaps"].as_u64().unwrap_or(0);
                let frames = f(&j1, "emitted") - f(&j0, "emitted");
                jitter.push((f(&j1, "delay") - f(&j0, "delay")) / frames.max(1.0) * 1000.0);
                cpu.push((c1 - c0).as_secs_f64() / SECONDS as f64 * 100.0);
                browser.close().await;
            }
            let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default();
            let worst = max.iter().copied().fold(f64::NAN, f64::max);
            let first_max = first.iter().copied().fold(f64::NAN, f64::max);
            println!(
                "{w}x{h}@30 {kbps} kbit/s, playout_delay_ms={delay}, {loads} loads x {SECONDS} s: \
                 capture->display p50 {:.1} / p95 {:.1} / max {worst:.1} ms (medians of loads; max of all), \
                 offer->first frame median {:.0} / max {first_max:.0} ms, {:.1} fps presented, {freezes} freezes > 200 ms, \
                 jitter buffer {:.1} ms/frame, agent CPU {:.1} % of a core, RSS {rss_kb}",
                median(&mut p50),
                median(&mut p95),
                median(&mut first),
                median(&mut fps),
                median(&mut jitter),
                median(&mut cpu),
            );
            agent.shutdown().await;
        }
    }
}

/// The camera's sound from capture to playing in Chromium: the agent's test
/// microphone beeps at each whole second of the clock (which the agent and
/// the browser share here), an AudioWorklet on the page's received track
/// finds each beep's onset, and the context's output timestamp says when
/// that sample plays. Also Chromium's audio jitter buffer per sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --release --test browser_e2e -- --ignored --nocapture"]
async fn bench_browser_audio_latency() {
    const KIND: &str = "audio";
    const SETUP: &str = r#"(async () => {
        const rx = window.rtcam.pc.getReceivers().find(r => r.track && r.track.kind === 'audio');
        if (!rx) { done({ error: 'no audio receiver' }); return; }
        const code = `class Onset extends AudioWorkletProcessor {
            constructor() { super(); this.last = -1e9; }
            process(inputs) {
                const ch = inputs[0] && inputs[0][0];
                if (ch) for (let i = 0; i < ch.length; i++) {
                    if (Math.abs(ch[i]) > 0.06) {
                        const t = currentTime + i / sampleRate;
                        if (t - this.last > 0.5) this.port.postMessage(t);
                        this.last = t;
                    }
                }
                return true;
            }
        }
        registerProcessor('rtcam-onset', Onset);`;
        const ctx = new AudioContext();
        await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], { type: 'application/javascript' })));
        const src = ctx.createMediaStreamSource(new MediaStream([rx.track]));
        const node = new AudioWorkletNode(ctx, 'rtcam-onset');
        const silent = ctx.createGain();
        silent.gain.value = 0;
        src.connect(node); node.connect(silent); silent.connect(ctx.destination);
        const played = [], seen = [];
        node.port.onmessage = (m) => {
            seen.push(Date.now());
            const ts = ctx.getOutputTimestamp();
            if (ts.performanceTime > 0)
                played.push(performance.timeOrigin + ts.performanceTime + (m.data - ts.contextTime) * 1000);
        };
        window.rtcamBench = { ctx, played, seen };
        done({ rate: ctx.sampleRate, base: ctx.baseLatency, output: ctx.outputLatency });
    })();"#;
    const SECONDS: u64 = 10;
    let loads = bench_loads(3);
    let cfg = TestConfig::new("browser-audio-bench").with("audio.input", "test");
    let agent = start(&cfg).await;
    let (mut played, mut seen, mut jitter) = (vec![], vec![], vec![]);
    let mut output = String::new();
    for _ in 0..loads {
        let browser = open_page(&agent).await;
        let ready = browser
            .wait_for(
                "window.rtcamAudio && window.rtcam.stats.framesDecoded > 0 && \
                 window.rtcam.pc.getReceivers().some(r => r.track && r.track.kind === 'audio')",
                "window.rtcam.stats.framesDecoded",
            )
            .await;
        assert_eq!(ready["ok"], true, "the page plays: {ready}");
        click(&browser, "#sound").await;
        let set = browser.run(SETUP).await;
        assert!(set["error"].is_null(), "{set}");
        output = format!(
            "AudioContext {} Hz, baseLatency {} s, outputLatency {} s",
            set["rate"], set["base"], set["output"]
        );
        let j0 = browser.run(&jitter_script(KIND)).await;
        tokio::time::sleep(std::time::Duration::from_secs(SECONDS)).await;
        let j1 = browser.run(&jitter_script(KIND)).await;
        let r = browser
            .run("done({ played: window.rtcamBench.played, seen: window.rtcamBench.seen });")
            .await;
        // A beep starts at a whole second: its latency is the onset's
        // distance past that second.
        let past = |v: &Value| -> Vec<f64> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_f64)
                        .map(|t| t.rem_euclid(1000.0))
                        .collect()
                })
                .unwrap_or_default()
        };
        // The first onset may be a beep cut in half by the track starting.
        played.extend(past(&r["played"]).into_iter().skip(1));
        seen.extend(past(&r["seen"]).into_iter().skip(1));
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let samples = f(&j1, "emitted") - f(&j0, "emitted");
        jitter.push((f(&j1, "delay") - f(&j0, "delay")) / samples.max(1.0) * 1000.0);
        browser.close().await;
    }
    assert!(
        seen.len() >= loads * (SECONDS as usize - 3),
        "a beep heard each second: {seen:?}"
    );
    let q = |v: &[f64], p: f64| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "audio capture->play (test tone onset at the page's output, {} beeps over {loads} loads): \
         p50 {:.1} / p95 {:.1} / max {:.1} ms; onset seen by the page's script p50 {:.1} ms ({} beeps); \
         Chromium audio jitter buffer {:.1} ms (median of loads); {output}",
        played.len(),
        q(&played, 0.5),
        q(&played, 0.95),
        q(&played, 1.0),
        q(&seen, 0.5),
        seen.len(),
        median(&mut jitter),
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_token_plays_recordings_and_is_told_it_may_not_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut view = toml::Table::new();
    view.insert("token".into(), VIEW_TOKEN.into());
    view.insert("role".into(), "view".into());
    let cfg = recording("browser-rec-token", dir.path())
        .with("auth.mode", "token")
        .with("auth.tokens", toml::Value::Array(vec![view.into()]));
    let agent = start(&cfg).await;
    agent
        .log()
        .wait_line("a closed segment", WAIT, |l| {
            l.contains("recording segment closed")
        })
        .await;
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&format!("{}?token={VIEW_TOKEN}", page_url(&agent)))
        .await
        .expect("the page loads");
    let _ = browser.wait_for("!!window.rtcamRecordings", "true").await;
    click(&browser, "#rec-toggle").await;
    // A static token's role is the camera's to say: the page offers Delete.
    let listed = browser
        .wait_for(
            "!!document.querySelector('#rec-days tr[data-name] button.delete')",
            "({ closed: window.rtcamRecordings.recordings.filter((r) => !r.open).map((r) => r.name), \
                info: document.getElementById('rec-info').textContent })",
        )
        .await;
    assert_eq!(listed["ok"], true, "the list, with the token: {listed}");
    let name = listed["value"]["closed"][0]
        .as_str()
        .expect("a closed segment")
        .to_string();
    // The <video> carries the token in its URL and plays.
    click(
        &browser,
        &format!("#rec-days tr[data-name=\"{name}\"] button.play"),
    )
    .await;
    let played = browser
        .wait_for(
            "(() => { const v = document.getElementById('rec-video'); \
                      return (v.readyState >= 2 && v.currentTime > 0.5) || !!v.error \
                        || document.getElementById('rec-message').textContent !== ''; })()",
            "(() => { const v = document.getElementById('rec-video'); \
                      return { readyState: v.readyState, currentTime: v.currentTime, \
                               videoWidth: v.videoWidth, src: v.currentSrc, \
                               recMessage: document.getElementById('rec-message').textContent }; })()",
        )
        .await;
    eprintln!("playback with a view token: {played}");
    let p = &played["value"];
    assert_eq!(played["ok"], true, "a view token plays: {played}");
    assert_eq!(p["videoWidth"].as_i64(), Some(W), "{p}");
    assert!(
        p["src"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("?access_token={VIEW_TOKEN}"))),
        "{p}"
    );
    assert_eq!(p["recMessage"], "", "{p}");
    // Delete: the camera refuses, the page shows its reason and drops the
    // Delete buttons; the file stays.
    let delete = format!("#rec-days tr[data-name=\"{name}\"] button.delete");
    click(&browser, &delete).await;
    click(&browser, &delete).await;
    let refused = browser
        .wait_for(
            "document.getElementById('rec-message').textContent !== ''",
            "({ message: document.getElementById('rec-message').textContent, \
                buttons: document.querySelectorAll('#rec-days button.delete').length })",
        )
        .await;
    eprintln!("delete with a view token: {refused}");
    assert_eq!(refused["ok"], true, "the refusal is shown: {refused}");
    let message = refused["value"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("cannot delete {name}: forbidden: "))
            && message.contains("control"),
        "{refused}"
    );
    assert_eq!(refused["value"]["buttons"], 0, "{refused}");
    let (day, file) = name.split_once('/').expect("day/file");
    assert!(
        dir.path().join("recordings").join(day).join(file).exists(),
        "{name} is still on the disk"
    );
    browser.close().await;
    agent.shutdown().await;
}

/// Samples louder than this (of 32767) in the speaker's file are a voice,
/// not silence.
const LOUD: i16 = 1000;

fn loud_samples(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(2)
        .filter(|b| i16::from_le_bytes([b[0], b[1]]).unsigned_abs() > LOUD.unsigned_abs())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_the_camera_sound_and_talks_back_with_its_microphone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mic, spk) = (dir.path().join("mic.raw"), dir.path().join("spk.raw"));
    common::asoundrc(dir.path(), &mic, &spk);
    let cfg = TestConfig::new("browser-audio")
        .with("audio.input", "test")
        .with("audio.output", "rtcam_spk")
        .with_env("HOME", &dir.path().display().to_string());
    let agent = AgentProcess::start(&cfg).await;
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&page_url(&agent))
        .await
        .expect("the page loads");
    let ready = browser
        .wait_for(
            "window.rtcamAudio && !document.getElementById('talk').hidden \
             && !document.getElementById('sound').hidden \
             && window.rtcam.stats.framesDecoded > 0",
            "({ talkHidden: document.getElementById('talk').hidden, \
                frames: window.rtcam.stats.framesDecoded, \
                message: document.getElementById('audio-message').textContent })",
        )
        .await;
    assert_eq!(ready["ok"], true, "the sound controls show: {ready}");
    // The camera's sound: muted until asked (browsers autoplay muted only),
    // then the level meter moves with the test tone's beeps.
    click(&browser, "#sound").await;
    let heard = browser
        .wait_for(
            "!document.getElementById('video').muted && window.rtcamAudio.level > 0.02",
            "({ muted: document.getElementById('video').muted, level: window.rtcamAudio.level, \
                button: document.getElementById('sound').textContent })",
        )
        .await;
    eprintln!("camera sound: {heard}");
    assert_eq!(heard["ok"], true, "the camera's sound plays: {heard}");
    assert_eq!(heard["value"]["button"], "Sound on", "{heard}");

    // Push-to-talk with Chromium's generated microphone.
    let talking = browser
        .run(
            "window.rtcamAudio.press().then(() => done({ talking: window.rtcamAudio.talking, \
                error: window.rtcamAudio.lastError }));",
        )
        .await;
    assert_eq!(talking["talking"], true, "the page talks: {talking}");
    // Another viewer is refused the floor meanwhile, with the documented code.
    let other = common::viewer(agent.settings(), "second-talker", false).await;
    let r = other
        .command(json!({"cmd": "audio.talk", "on": true}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(r["error"]["code"], "floor_taken", "{r}");
    // The page's voice reaches the speaker (the file plugin's file).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = loud_samples(&spk);
        if n > 4800 {
            eprintln!("speaker: {n} loud samples");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the talkback reaches the speaker ({n} loud samples):\n{}",
            agent.log().tail(30)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let released = browser
        .run("window.rtcamAudio.release().then(() => done(window.rtcamAudio.talking));")
        .await;
    assert_eq!(released, false, "{released}");
    agent
        .log()
        .wait_line("the floor released", WAIT, |l| {
            l.contains("talkback: floor released")
        })
        .await;
    let r = other
        .command(json!({"cmd": "audio.talk", "on": true}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(r["result"]["talking"], true, "the floor is free again: {r}");
    other.bye().await;
    browser.close().await;
    agent.shutdown().await;
}
