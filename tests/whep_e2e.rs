//! WHEP (draft-ietf-wish-whep-04) end to end: the `rtcam` binary, started
//! from a config file with bearer tokens and a simulated relay, watched by
//! WHEP players that share no code with it:
//! - `tests/aiortc/whep_client.py` (aiortc and urllib): every status code
//!   of the draft's exchange, frames decoded, DataChannel commands under
//!   the token's role;
//! - the `whip-whep` npm package's `WHEPClient` in headless Chromium
//!   (tests/whep/): watches, trickles its candidates, restarts ICE and
//!   goes on decoding, deletes.
//!
//! The players reach the agent's web port on loopback only; the tests run
//! in the private network namespace of `.ci/test`.

mod common;

use common::agent::{AgentProcess, TestConfig, start};
use common::browser::{Browser, Candidates};
use common::players::setup;
use common::whep;
use serde_json::Value;
use std::time::Duration;

const VIEW: &str = "whep-view-token-0123456789";
const CONTROL: &str = "whep-control-token-0123456789";

fn config(prefix: &str) -> TestConfig {
    TestConfig::new(prefix)
        .with("video.width", 320)
        .with("video.height", 240)
        .with("video.fps", 15)
        .with("auth.mode", "token")
        .with("gpio.backend", "sim")
        .with_toml(&format!(
            "[[gpio.pins]]\nname = \"relay1\"\npin = 17\nmode = \"output\"\n\
             [[auth.tokens]]\ntoken = {VIEW:?}\nrole = \"view\"\n\
             [[auth.tokens]]\ntoken = {CONTROL:?}\nrole = \"control\"\n"
        ))
}

async fn aiortc_player(agent: &AgentProcess, token: &str, commands: &[&str]) -> Value {
    let url = format!("http://{}/whep", agent.http_addr());
    whep::player(agent, &url, token, commands, &[]).await
}

fn status(report: &Value, path: &str) -> u64 {
    report
        .pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no status at {path}: {report:#}"))
}

fn text<'a>(report: &'a Value, path: &str) -> &'a str {
    report
        .pointer(path)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aiortc_whep_player_watches_trickles_restarts_and_deletes() {
    common::players::aiortc_python();
    let agent = start(&config("whep-aiortc")).await;
    let set = r#"{"cmd":"gpio.set","pin":"relay1","value":true}"#;
    let report = aiortc_player(&agent, VIEW, &[r#"{"cmd":"ping"}"#, set]).await;
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");

    // Discovery and CORS.
    assert_eq!(status(&report, "/options/status"), 204);
    assert_eq!(text(&report, "/options/accept_post"), "application/sdp");
    assert_eq!(text(&report, "/options/allow_origin"), "*");

    // Bad offers are refused with the draft's codes, each naming the problem.
    assert_eq!(status(&report, "/bad_posts/wrong_type/status"), 415);
    assert_eq!(
        text(&report, "/bad_posts/wrong_type/accept_post"),
        "application/sdp"
    );
    assert_eq!(status(&report, "/bad_posts/not_sdp/status"), 400);
    assert_eq!(text(&report, "/bad_posts/not_sdp/error"), "bad_sdp");
    assert_eq!(status(&report, "/bad_posts/no_token/status"), 401);
    assert!(text(&report, "/bad_posts/no_token/www_authenticate").starts_with("Bearer"));
    assert_eq!(status(&report, "/bad_posts/wrong_token/status"), 401);
    assert_eq!(
        text(&report, "/bad_posts/wrong_token/error"),
        "unauthorized"
    );

    // The session: 201, its resource, its ICE session's tag, the agent's
    // candidates in the answer.
    assert_eq!(status(&report, "/post/status"), 201);
    assert_eq!(text(&report, "/post/content_type"), "application/sdp");
    let location = text(&report, "/post/location");
    assert!(
        location.starts_with("/whep/") && location.len() >= "/whep/".len() + 22,
        "{location}"
    );
    assert!(text(&report, "/post/etag").starts_with('"'));
    assert!(
        status(&report, "/post/answer_candidates") >= 1,
        "{report:#}"
    );
    assert_eq!(report["post"]["end_of_candidates"], true);

    // Video decoded; the DataChannel serves commands under the token's role.
    let frames = status(&report, "/frames_decoded");
    assert!(frames >= 20, "{frames} frames decoded in 3 s at 15 fps");
    assert_eq!(report["replies"]["1"]["ok"], true, "{report:#}");
    assert_eq!(
        report["replies"]["2"]["error"]["code"], "not_allowed",
        "{report:#}"
    );

    // PATCH: trickle, preconditions, media types, restart.
    assert_eq!(status(&report, "/patch/trickle/status"), 204);
    assert_eq!(status(&report, "/patch/stale_etag/status"), 412);
    assert_eq!(status(&report, "/patch/wrong_type/status"), 415);
    let unreadable = status(&report, "/patch/unreadable/status");
    assert!(unreadable == 400 || unreadable == 422, "{unreadable}");
    assert_eq!(status(&report, "/patch/wrong_token/status"), 401);
    assert_eq!(
        status(&report, "/patch/restart_without_if_match/status"),
        428
    );
    assert_eq!(status(&report, "/patch/restart/status"), 200, "{report:#}");
    assert_eq!(
        text(&report, "/patch/restart/content_type"),
        "application/trickle-ice-sdpfrag"
    );
    let new_ufrag = text(&report, "/patch/restart/ufrag");
    assert!(
        !new_ufrag.is_empty() && new_ufrag != text(&report, "/patch/answer_ufrag"),
        "{report:#}"
    );
    assert_ne!(
        text(&report, "/patch/restart/etag"),
        text(&report, "/post/etag")
    );
    assert!(
        status(&report, "/patch/restart/candidates") >= 1,
        "{report:#}"
    );
    assert_eq!(
        status(&report, "/patch/restart_without_token/status"),
        200,
        "{report:#}"
    );
    assert_ne!(
        text(&report, "/patch/restart_without_token/ufrag"),
        new_ufrag
    );

    // DELETE ends it, and the resource is gone.
    assert_eq!(status(&report, "/delete/status"), 200);
    assert_eq!(status(&report, "/patch_after_delete/status"), 404);
    agent
        .wait_stats("the WHEP session ended", |s| s.sessions == 0)
        .await;

    // A control token may drive the relay over the same door.
    let report = aiortc_player(
        &agent,
        CONTROL,
        &[r#"{"cmd":"gpio.set","pin":"relay1","value":true}"#],
    )
    .await;
    assert_eq!(report["replies"]["1"]["ok"], true, "{report:#}");
    agent
        .wait_stats("the second WHEP session ended", |s| s.sessions == 0)
        .await;
    agent.shutdown().await;
}

/// A browser-like offer: H.264 Constrained Baseline, a DTLS fingerprint.
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
    a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
    a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
    a=setup:actpass\r\na=rtpmap:96 H264/90000\r\n\
    a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

/// One HTTP/1.1 request on a fresh connection: the status line and headers
/// (lowercase), and the body.
async fn request(agent: &AgentProcess, head: &str, body: &str) -> (String, String) {
    let (h, b) = request_as_sent(agent, head, body).await;
    (h.to_ascii_lowercase(), b)
}

/// [`request`], the head as the agent sent it.
async fn request_as_sent(agent: &AgentProcess, head: &str, body: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(agent.http_addr())
        .await
        .expect("connects");
    let req = format!(
        "{head}\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("sends");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut out))
        .await
        .expect("answered in time")
        .expect("reads");
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (h.to_string(), b.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_token_that_made_a_whep_session_may_change_it() {
    let agent = start(&config("whep-owner")).await;
    let post = format!(
        "POST /whep HTTP/1.1\r\nContent-Type: application/sdp\r\nAuthorization: Bearer {VIEW}"
    );
    let (h, body) = request_as_sent(&agent, &post, OFFER).await;
    assert!(h.starts_with("HTTP/1.1 201"), "{h}\n{body}");
    // The resource's name is case-sensitive.
    let location = h
        .lines()
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
        })
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("a Location: {h}"))
        .trim()
        .to_string();
    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
                m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
                a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let patch = |token: &str| {
        format!(
            "PATCH {location} HTTP/1.1\r\nContent-Type: application/trickle-ice-sdpfrag\r\n\
             Authorization: Bearer {token}"
        )
    };
    let delete =
        |token: &str| format!("DELETE {location} HTTP/1.1\r\nAuthorization: Bearer {token}");
    // Another valid token, even one with more rights, is not its maker.
    for head in [patch(CONTROL), delete(CONTROL)] {
        let body = if head.starts_with("PATCH") { frag } else { "" };
        let (h, b) = request(&agent, &head, body).await;
        assert!(h.starts_with("http/1.1 403"), "{head}: {h}\n{b}");
        assert!(b.contains("\"forbidden\""), "{b}");
    }
    assert_eq!(
        agent.stats().await.sessions,
        1,
        "the refusals left it alone"
    );
    let (h, b) = request(&agent, &patch(VIEW), frag).await;
    assert!(h.starts_with("http/1.1 204"), "{h}\n{b}");
    let (h, b) = request(&agent, &delete(VIEW), "").await;
    assert!(h.starts_with("http/1.1 200"), "{h}\n{b}");
    agent
        .wait_stats("the session ended", |s| s.sessions == 0)
        .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_and_mqtt_viewers_share_one_viewer_limit() {
    let agent = start(&config("whep-limit").with("webrtc.max_viewers", 1)).await;
    // An MQTT viewer takes the only slot...
    let mqtt = common::channels::ChannelViewer::connect(
        agent.settings(),
        "limit-mqtt-viewer",
        &["control"],
        Some(CONTROL),
    )
    .await;
    agent
        .wait_stats("the MQTT viewer connected", |s| s.connected == 1)
        .await;
    // ...so a WHEP offer, well formed and authorised, is refused: 503.
    let head = format!(
        "POST /whep HTTP/1.1\r\nContent-Type: application/sdp\r\nAuthorization: Bearer {VIEW}"
    );
    let (h, body) = request(&agent, &head, OFFER).await;
    assert!(h.starts_with("http/1.1 503"), "{h}\n{body}");
    assert!(h.contains("retry-after: 5"), "{h}");
    assert!(body.contains("\"max_viewers\""), "{body}");
    // The refusal left the MQTT viewer alone.
    assert_eq!(agent.stats().await.connected, 1);
    mqtt.close().await;
    agent
        .wait_stats("the MQTT viewer left", |s| s.sessions == 0)
        .await;
    // With the slot free, the same offer passes admission (a 201, or the
    // WebRTC stack's verdict on its made-up fingerprint: never 503), its
    // token in the URL this time (RFC 6750 §2.3, for players that cannot
    // set headers).
    let in_url =
        format!("POST /whep?access_token={VIEW} HTTP/1.1\r\nContent-Type: application/sdp");
    let (h, body) = request(&agent, &in_url, OFFER).await;
    assert!(
        !h.starts_with("http/1.1 503") && !h.starts_with("http/1.1 401"),
        "{h}\n{body}"
    );
    agent.shutdown().await;
}

/// The `whip-whep` package's `WHEPClient`, from tests/whep/setup.
fn whep_js() -> String {
    let path = setup(
        "tests/whep/setup",
        "target/whep-npm/node_modules/whip-whep/whep.js",
    );
    std::fs::read_to_string(path).expect("whep.js reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_an_npm_whep_client_watches_restarts_ice_and_deletes() {
    let source = whep_js();
    let agent = start(&config("whep-chromium")).await;
    let browser = Browser::start(Candidates::PlainIps).await;
    // A page of the agent's origin with nothing of rtcam's in it (its 404),
    // so that only the npm client talks to the agent.
    browser
        .client
        .goto(&format!("http://{}/no-such-page", agent.http_addr()))
        .await
        .expect("a page");
    let module = format!("{source}\nwindow.WHEPClient = WHEPClient;\n");
    let url = format!("http://{}/whep", agent.http_addr());
    let started = browser
        .run(&format!(
            "const s = document.createElement('script');
             s.type = 'module';
             s.textContent = {module};
             document.head.appendChild(s);
             const wait = () => window.WHEPClient ? go() : setTimeout(wait, 20);
             async function go() {{
               try {{
                 const pc = new RTCPeerConnection();
                 pc.addTransceiver('video', {{ direction: 'recvonly' }});
                 const dc = pc.createDataChannel('control');
                 window.replies = [];
                 dc.onopen = () => dc.send(JSON.stringify({{ id: 1, cmd: 'ping' }}));
                 dc.onmessage = (m) => window.replies.push(JSON.parse(m.data));
                 window.pc = pc;
                 window.client = new WHEPClient();
                 await window.client.view(pc, {url:?}, {VIEW:?});
                 done('viewing');
               }} catch (e) {{ done('error: ' + e); }}
             }}
             wait();",
            module = serde_json::to_string(&module).expect("a JSON string"),
        ))
        .await;
    assert_eq!(started, "viewing", "agent log:\n{}", agent.log().tail(40));
    let decoded = "(async () => { let n = 0; (await pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') n = r.framesDecoded; }); return n; })()";
    let frames = |min: u64| {
        format!(
            "const deadline = Date.now() + 20000;
             (async function check() {{
               const n = await {decoded};
               if (n >= {min} || Date.now() > deadline) return done(n);
               setTimeout(check, 100);
             }})();"
        )
    };
    let before = browser.run(&frames(30)).await.as_u64().unwrap_or(0);
    assert!(
        before >= 30,
        "{before} frames decoded before the restart; agent log:\n{}",
        agent.log().tail(40)
    );
    let pong = browser
        .wait_for("window.replies.length > 0", "window.replies[0]")
        .await;
    assert_eq!(pong["value"]["result"]["pong"], true, "{pong}");

    // ICE restart through PATCH with If-Match: the same session goes on.
    let restarted = browser
        .run(
            "const old = pc.remoteDescription.sdp.match(/a=ice-ufrag:(.*)\\r\\n/)[1];
             client.restart().then(() => {
               const now = pc.remoteDescription.sdp.match(/a=ice-ufrag:(.*)\\r\\n/)[1];
               done({ old, now, etag: client.etag });
             }, (e) => done({ error: String(e) }));",
        )
        .await;
    assert!(
        restarted["error"].is_null(),
        "{restarted}; agent log:\n{}",
        agent.log().tail(40)
    );
    assert_ne!(restarted["old"], restarted["now"], "{restarted}");
    assert!(
        restarted["etag"]
            .as_str()
            .is_some_and(|e| e.starts_with('"')),
        "{restarted}"
    );
    let after = browser
        .run(&frames(before + 30))
        .await
        .as_u64()
        .unwrap_or(0);
    assert!(
        after >= before + 30,
        "{after} frames after the restart (from {before}); agent log:\n{}",
        agent.log().tail(40)
    );
    agent
        .log()
        .wait_line("the agent's restart line", Duration::from_secs(10), |l| {
            l.contains("WHEP ICE restart")
        })
        .await;

    // stop() closes the peer connection and DELETEs the resource.
    let stopped = browser
        .run("client.stop().then(() => done('stopped'), (e) => done('error: ' + e));")
        .await;
    assert_eq!(stopped, "stopped");
    agent
        .wait_stats("the WHEP session ended", |s| s.sessions == 0)
        .await;
    browser.close().await;
    agent.shutdown().await;
}
