//! Attacks on the signaling, as any client of an open broker could make
//! them, against the `rtcam` binary in token mode (a Mosquitto with no ACL,
//! so the attacker may publish and read every topic): a flood of one-byte
//! offers from thousands of client ids; reading and replaying offers;
//! ending or taking over another viewer's session; offers and candidates
//! that cost the camera work. After each, a connected viewer keeps
//! decoding and a new viewer is admitted. Runs inside a private network
//! namespace (see `.ci/test`).

mod common;

use bytes::Bytes;
use common::agent::{AgentProcess, TestConfig};
use common::mosquitto::Mosquitto;
use common::{Raw, WAIT, Watch, frames, free_port, viewer_options};
use rtcam::probe::{ProbeError, Viewer};
use serde_json::json;
use std::time::Instant;

const VIEW: &str = "attack-view-token-0123456789";
const CONTROL: &str = "attack-control-token-0123456789";

/// The agent in token mode on a Mosquitto open to anyone, and its broker.
async fn setup(prefix: &str) -> (AgentProcess, Mosquitto, tempfile::TempDir) {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("token.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("write");
    let cfg = TestConfig::new(prefix)
        .with("mqtt.url", format!("mqtt://127.0.0.1:{port}"))
        .with("auth.mode", "token")
        .with("auth.secret_file", key.display().to_string())
        .with_toml(&format!(
            "[[auth.tokens]]\ntoken = {VIEW:?}\nrole = \"view\"\n\
             [[auth.tokens]]\ntoken = {CONTROL:?}\nrole = \"control\"\n"
        ));
    let agent = AgentProcess::start(&cfg).await;
    (agent, broker, dir)
}

/// A viewer with `token`, connected and decoding.
async fn watcher(agent: &AgentProcess, id: &str, token: &str) -> Viewer {
    let mut opts = viewer_options(agent.settings(), id, true);
    opts.token = Some(token.into());
    let mut v = Viewer::connect(&opts).await.expect("the offer is answered");
    assert!(v.wait_connected(WAIT).await, "{id} connects");
    frames(&mut v, 3).await;
    v
}

/// A new viewer gets in within 15 s of the attack's end.
async fn a_new_viewer_is_admitted(agent: &AgentProcess, id: &str) {
    let t0 = Instant::now();
    let deadline = t0 + std::time::Duration::from_secs(15);
    loop {
        let mut opts = viewer_options(agent.settings(), id, true);
        opts.token = Some(VIEW.into());
        // A viewer gives up on an answer after a few seconds and tries again.
        opts.timeout = std::time::Duration::from_secs(4);
        match Viewer::connect(&opts).await {
            Ok(mut v) => {
                assert!(v.wait_connected(WAIT).await, "{id} connects");
                frames(&mut v, 3).await;
                eprintln!("{id} admitted {:?} after the attack", t0.elapsed());
                v.bye().await;
                return;
            }
            Err(e @ (ProbeError::Refused { .. } | ProbeError::Timeout(_)))
                if Instant::now() < deadline =>
            {
                eprintln!("{id}: {e}; retrying");
                // A viewer's own backoff between attempts.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => panic!("{id} was not admitted within 15 s: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_offers_before_any_token_check_locks_nobody_out() {
    let (agent, _broker, _dir) = setup("flood").await;
    let mut steady = watcher(&agent, "steady", VIEW).await;
    let raw = Raw::connect(agent.settings()).await;
    // 5,000 one-byte offers, each from a new client id (the old agent
    // counted ids before reading the offer, and refused new ids past 4,096).
    let before = agent.stats().await;
    for i in 0..5000 {
        raw.send_flood("offer", &format!("flood-{i}"), Bytes::from_static(b"x"))
            .await;
    }
    // Whatever the broker and the agent could not take was dropped; what
    // matters is the next viewer.
    a_new_viewer_is_admitted(&agent, "after-flood").await;
    let st = agent.stats().await;
    eprintln!(
        "flood: {} handled, {} dropped while the manager was behind",
        st.signaling_received - before.signaling_received,
        st.signaling_dropped - before.signaling_dropped
    );
    frames(&mut steady, 10).await;
    steady.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_never_travels_on_the_broker_and_a_captured_offer_is_worthless() {
    let (agent, _broker, _dir) = setup("replay").await;
    let s = agent.settings().clone();
    let p = s.mqtt.topic_prefix.clone();
    // An eavesdropper reads every signaling message.
    let mut spy = Watch::start(&s, "spy", &format!("{p}/#")).await;
    let mut v = watcher(&agent, "victim", CONTROL).await;
    let offer = spy
        .wait_for("the victim's offer", &format!("{p}/offer/victim"), |_| true)
        .await;
    let text = String::from_utf8_lossy(&offer).into_owned();
    assert!(
        !text.contains(CONTROL),
        "the token is not in the offer: {text}"
    );
    assert!(text.contains("\"auth\""), "a proof is: {text}");
    // Replayed as is: refused (and, since it carries the victim's DTLS
    // fingerprint, useless anyway).
    let mut raw = Raw::connect(&s).await;
    let mut replay: serde_json::Value = serde_json::from_slice(&offer).expect("JSON");
    replay.as_object_mut().expect("an object").remove("session");
    let code = raw.code("offer", "replayer", replay.to_string()).await;
    assert_eq!(
        code, "unauthorized",
        "another client id cannot use the proof"
    );
    // Under the victim's own id, with a fresh client id it cannot know the
    // secret of: refused, and the victim is undisturbed.
    let code = raw.code("offer", "victim", replay.to_string()).await;
    assert!(
        code == "unauthorized" || code == "client_id_in_use",
        "{code}"
    );
    // The token itself in an offer is refused: it would be readable by all.
    let bearer = json!({"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=fingerprint:sha-256 AA\r\n", "token": CONTROL});
    assert_eq!(
        raw.code("offer", "bearer", bearer.to_string()).await,
        "unauthorized"
    );
    let run = frames(&mut v, 30).await;
    assert!(run.in_order(), "the victim's stream went on");
    assert_eq!(agent.stats().await.sessions, 1, "and its session");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_camera_or_beyond_the_ttl_ceiling_are_refused() {
    let (agent, _broker, dir) = setup("audience").await;
    let s = agent.settings().clone();
    let secret = std::fs::read_to_string(dir.path().join("token.key")).expect("read");
    let secret = secret.trim().as_bytes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let cases = [
        (
            "other-camera",
            rtcam::auth::mint(
                secret,
                rtcam::auth::Role::Control,
                "rtcam/porch",
                now + 3600,
            ),
            "another camera",
        ),
        (
            "too-long",
            rtcam::auth::mint(
                secret,
                rtcam::auth::Role::Control,
                &s.mqtt.topic_prefix,
                now + 40 * 86_400,
            ),
            "max_token_ttl",
        ),
        (
            "fine",
            rtcam::auth::mint(
                secret,
                rtcam::auth::Role::View,
                &s.mqtt.topic_prefix,
                now + 3600,
            ),
            "",
        ),
    ];
    for (id, token, why) in cases {
        let mut opts = viewer_options(&s, id, false);
        opts.token = Some(token);
        match Viewer::connect(&opts).await {
            Err(ProbeError::Refused { code, message }) if !why.is_empty() => {
                assert_eq!(code, "unauthorized");
                assert!(message.contains(why), "{id}: {message}");
            }
            Ok(v) if why.is_empty() => v.bye().await,
            Err(e) => panic!("{id}: {e}"),
            Ok(_) => panic!("{id} must be refused"),
        }
    }
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_else_can_end_or_take_over_a_session() {
    let (agent, _broker, _dir) = setup("ownership").await;
    let s = agent.settings().clone();
    let mut v = watcher(&agent, "owner", CONTROL).await;
    let mut raw = Raw::connect(&s).await;
    // A bye without the session's secret ends nothing.
    for bye in ["{}", r#"{"session":"guessed"}"#] {
        assert_eq!(raw.code("bye", "owner", bye).await, "unknown_session");
    }
    // Another principal offering on the owner's client id is refused.
    let mut thief = viewer_options(&s, "owner", false);
    thief.token = Some(VIEW.into());
    thief.mqtt.client_id = "thief".into();
    match Viewer::connect(&thief).await {
        Err(ProbeError::Refused { code, .. }) => assert_eq!(code, "client_id_in_use"),
        Ok(_) => panic!("the client id was taken over"),
        Err(e) => panic!("{e}"),
    }
    let run = frames(&mut v, 30).await;
    assert!(run.in_order());
    assert_eq!(agent.stats().await.sessions, 1);
    v.bye().await;
    agent
        .wait_stats("the owner's bye ends it", |st| st.sessions == 0)
        .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_offers_and_candidate_floods_cost_the_camera_nothing_much() {
    let (agent, _broker, _dir) = setup("expensive").await;
    let s = agent.settings().clone();
    let mut v = watcher(&agent, "steady", VIEW).await;
    let mut raw = Raw::connect(&s).await;
    // An offer listing 1,000 candidates is refused before the stack sees it.
    let mut sdp = String::from(
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AA:BB\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n",
    );
    for i in 0..1000 {
        sdp.push_str(&format!(
            "a=candidate:{i} 1 udp 1 10.0.{}.{} 9 typ host\r\n",
            i / 250,
            i % 250
        ));
    }
    let code = raw
        .code(
            "offer",
            "heavy",
            json!({"type": "offer", "sdp": sdp}).to_string(),
        )
        .await;
    assert_eq!(code, "too_many_candidates");
    // 5,000 candidates trickled into a live session: 64 are taken, the
    // viewer is told once, the rest are dropped; the stream goes on.
    let session_candidates = |i: u32| {
        json!({"candidate": format!("candidate:{i} 1 udp 1 10.1.{}.{} 9 typ host", i / 250, i % 250), "sdpMid": "0", "sdpMLineIndex": 0})
            .to_string()
    };
    for i in 0..5000 {
        raw.send_flood("ice", "steady", session_candidates(i)).await;
    }
    let run = frames(&mut v, 60).await;
    assert!(run.in_order() && run.longest_gap() <= 15, "{:?}", run.seqs);
    // Offers that never finish ICE: one token holds at most two
    // negotiation slots, so a viewer with another token gets in at once.
    for i in 0..8 {
        let code = stalled_offer(&mut raw, &s, &format!("stall-{i}"), Some(CONTROL)).await;
        assert!(
            (i < 2 && code.is_none()) || code.as_deref() == Some("busy"),
            "stalled offer {i}: {code:?}"
        );
    }
    a_new_viewer_is_admitted(&agent, "after-stall").await;
    frames(&mut v, 10).await;
    v.bye().await;
    agent.shutdown().await;
}

/// Publishes a real offer (SDP from a WebRTC peer closed at once, so ICE
/// never completes) from `client`, with a proof of `token`; returns the
/// error code replied, or `None` when it was answered.
async fn stalled_offer(
    raw: &mut Raw,
    s: &rtcam::config::Settings,
    client: &str,
    token: Option<&str>,
) -> Option<String> {
    let opts = rtcam::peer::PeerOptions::for_viewer(&s.webrtc);
    let (peer, sdp, _, _) = rtcam::peer::Peer::offer(&opts, true, Some("control"))
        .await
        .expect("an offer");
    peer.close().await;
    let mut offer = json!({"type": "offer", "sdp": sdp});
    if let Some(t) = token {
        let fp = rtcam::auth::sdp_fingerprint(&sdp).expect("a fingerprint");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        offer["auth"] = serde_json::to_value(rtcam::auth::prove(t, client, fp, now)).expect("JSON");
    }
    raw.answer_or_code("offer", client, offer.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_that_never_connect_cannot_hold_the_negotiation_slots() {
    // Without authentication every client id is its own principal: the
    // slots are taken back from the oldest stalled offers instead.
    let port = free_port();
    let _broker = Mosquitto::start(port);
    let cfg = TestConfig::new("stall-open")
        .with("mqtt.url", format!("mqtt://127.0.0.1:{port}"))
        .with("webrtc.max_viewers", 16);
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let mut steady = common::viewer(&s, "steady", true).await;
    let mut raw = Raw::connect(&s).await;
    let slots = s.webrtc.max_negotiating;
    for i in 0..slots {
        assert_eq!(
            stalled_offer(&mut raw, &s, &format!("stall-{i}"), None).await,
            None
        );
    }
    assert_eq!(agent.stats().await.negotiating, slots);
    let t0 = Instant::now();
    let deadline = t0 + std::time::Duration::from_secs(15);
    loop {
        match Viewer::connect(&viewer_options(&s, "newcomer", true)).await {
            Ok(mut v) => {
                assert!(v.wait_connected(WAIT).await);
                frames(&mut v, 3).await;
                eprintln!("admitted {:?} after the slots filled", t0.elapsed());
                v.bye().await;
                break;
            }
            Err(ProbeError::Refused { code, .. })
                if code == "busy" && Instant::now() < deadline =>
            {
                // A viewer's own backoff between attempts.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => panic!("not admitted within 15 s: {e}"),
        }
    }
    frames(&mut steady, 10).await;
    steady.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_datachannels_buy_no_more_commands_and_keyframes_are_rationed() {
    let port = free_port();
    let _broker = Mosquitto::start(port);
    // The default budget: 50 commands per second per session, bursts of 50.
    let cfg = TestConfig::new("channels")
        .with("mqtt.url", format!("mqtt://127.0.0.1:{port}"))
        .with("video.keyframe_interval_ms", 60_000);
    let rate = 50.0;
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let mut watcher = common::viewer(&s, "watcher", true).await;
    // Twenty channels, each labelled "control".
    let labels = ["control"; 20];
    let attacker = common::channels::ChannelViewer::connect(&s, "many", &labels, None).await;
    // The agent keeps four channels and closes the other sixteen.
    let mut closed = std::collections::BTreeSet::new();
    let waited = tokio::time::timeout(WAIT, async {
        while closed.len() < 16 {
            let pending = attacker
                .channels
                .iter()
                .enumerate()
                .filter(|(i, _)| !closed.contains(i))
                .map(|(i, c)| Box::pin(async move { (i, c.recv().await) }));
            let ((i, ev), _, _) = futures::future::select_all(pending).await;
            if matches!(ev, Some(rtcam::peer::ChannelEvent::Closed) | None) {
                closed.insert(i);
            }
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "16 channels closed by the agent, got {}",
        closed.len()
    );
    let open: Vec<usize> = (0..20).filter(|i| !closed.contains(i)).collect();
    assert_eq!(open.len(), 4);
    let t0 = Instant::now();
    let mut ok = 0;
    let mut limited = 0;
    for round in 0..100u64 {
        for &i in &open {
            let r = attacker
                .command_on(i, round * 100 + i as u64, json!({"cmd": "ping"}))
                .await;
            if r["ok"] == true {
                ok += 1;
            } else {
                assert_eq!(r["error"]["code"], "rate_limited", "{r}");
                limited += 1;
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    eprintln!("{ok} commands allowed, {limited} rate limited, in {elapsed:.2} s over 4 channels");
    // The session's bucket: a burst of 50, then 50 per second. Per channel
    // (the old behaviour) four channels would have had four bursts.
    assert!(
        f64::from(ok) <= rate * (1.0 + elapsed.ceil()),
        "{ok} commands in {elapsed:.2} s: the budget is per session"
    );
    assert!(limited > 0);
    // A keyframe request storm: the stream gets at most one forced IDR per
    // second (30 frames), whoever asks.
    let keyframe_asker = common::viewer(&s, "asker", false).await;
    let storm = tokio::spawn(async move {
        // 40 requests a second, within the command budget.
        for _ in 0..200 {
            let r = keyframe_asker
                .command(json!({"cmd": "video.keyframe"}), WAIT)
                .await;
            let r = r.expect("a reply");
            assert_eq!(r["ok"], true, "{r}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        keyframe_asker
    });
    let mut keyframes = 0;
    let mut seqs = Vec::new();
    for _ in 0..150 {
        let f = watcher.next_frame(WAIT).await.expect("frames keep coming");
        if f.keyframe {
            keyframes += 1;
            seqs.extend(f.seq);
        }
    }
    let asker = storm.await.expect("the storm ends");
    eprintln!("{keyframes} keyframes in 150 frames during the storm (seqs {seqs:?})");
    assert!(keyframes <= 7, "{keyframes} keyframes in 150 frames");
    asker.bye().await;
    attacker.close().await;
    watcher.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_gpio_commands_over_mqtt_is_rationed() {
    let port = free_port();
    let _broker = Mosquitto::start(port);
    let cfg = TestConfig::new("gpio-flood")
        .with("mqtt.url", format!("mqtt://127.0.0.1:{port}"))
        .with("gpio.backend", "sim")
        .with("gpio.mqtt", true)
        .with_env("RTCAM_LOG", "info,rtcam::gpio::sim=debug")
        .with_toml(
            "[[gpio.pins]]\nname = \"relay1\"\npin = 17\nmode = \"output\"\n\
             [[gpio.pins]]\nname = \"lamp\"\npin = 22\nmode = \"output\"\n",
        );
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let p = s.mqtt.topic_prefix.clone();
    let raw = Raw::connect(&s).await;
    let mark = agent.log().len();
    let t0 = Instant::now();
    // 2,000 toggles as fast as the broker takes them.
    for _ in 0..2000 {
        raw.send_flood_topic(&format!("{p}/gpio/relay1/set"), "TOGGLE")
            .await;
    }
    // A command behind them on the same link: once it is applied, every
    // toggle before it was applied or dropped. It may itself meet an empty
    // budget: sent again each second until it lands.
    let lamp = loop {
        raw.send_flood_topic(&format!("{p}/gpio/lamp/set"), "ON")
            .await;
        let seen = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            agent.log().wait_line_after("lamp on", mark, WAIT, |l| {
                l.ends_with("simulated line lamp: high")
            }),
        )
        .await;
        if seen.is_ok() {
            break t0.elapsed().as_secs_f64();
        }
        assert!(t0.elapsed() < 2 * WAIT, "the lamp command never landed");
    };
    let applied = agent
        .log()
        .since(mark)
        .iter()
        .filter(|l| l.contains("simulated line relay1:"))
        .count();
    eprintln!("{applied} of 2000 toggles applied in {lamp:.2} s");
    // control.rate_limit (50) per second, plus its burst.
    assert!(
        applied as f64 <= 50.0 * (1.0 + lamp.ceil()),
        "{applied} toggles applied in {lamp:.2} s"
    );
    assert!(applied > 0);
    agent.shutdown().await;
}
