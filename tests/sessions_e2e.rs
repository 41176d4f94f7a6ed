//! Session rules seen from viewers of the `rtcam` binary: a client's new
//! offer replaces its session (telling only the old session's channel), the
//! camera's ends are announced on the DataChannel and MQTT, and binary
//! DataChannel messages are refused without ending the session.
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use common::agent::{TestConfig, start};
use common::tap::Tap;
use common::{WAIT, frames, no_error_before_barrier, viewer_options};
use rtcam::probe::{Signal, Viewer};
use serde_json::{Value, json};

/// Waits for the control channel's `bye` event and returns its reason.
async fn bye_event(v: &mut Viewer) -> String {
    loop {
        let ev: Value = v
            .next_event(WAIT)
            .await
            .expect("a bye event on the control channel");
        if ev["event"] == "bye" {
            return ev["reason"].as_str().expect("a reason").to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_offer_replaces_the_session_and_tells_only_the_old_channel() {
    let agent = start(&TestConfig::new("replace")).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    // Two viewers with one client id (a page restarting its session). The
    // broker lets only that client id publish the offer, so the first
    // viewer's MQTT connection runs through a relay, cut before the second
    // takes the client id over (else each would take it back at every
    // reconnect); its WebRTC session stays up.
    let tap = Tap::start(s.broker.v5_listen).await;
    let mut opts = viewer_options(&s, "same-client", true);
    opts.mqtt.url = tap.url();
    let mut a = Viewer::connect(&opts)
        .await
        .expect("the first offer is answered");
    assert!(a.wait_connected(WAIT).await);
    frames(&mut a, 5).await;
    tap.cut();
    let mut opts = viewer_options(&s, "same-client", true);
    // Without the live session's secret the client id is not ours to reuse.
    match Viewer::connect(&opts).await {
        Err(rtcam::probe::ProbeError::Refused { code, .. }) => assert_eq!(code, "client_id_in_use"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a live session was replaced without its secret"),
    }
    opts.replaces = a.session().map(str::to_string);
    let mut b = Viewer::connect(&opts)
        .await
        .expect("the second offer is answered");
    assert!(b.wait_connected(WAIT).await);
    assert_eq!(bye_event(&mut a).await, "replaced");
    let run = frames(&mut b, 10).await;
    assert!(run.first_keyframe, "the new session starts at a keyframe");
    // No P/bye (nor anything else) reached the client: it would end the new session.
    no_error_before_barrier(&s, &mut b, "same-client").await;
    let st = agent
        .wait_stats("one session left", |st| {
            st.sessions == 1 && st.subscribers == 1
        })
        .await;
    assert_eq!(st.connected, 1);
    let ping = b
        .command(json!({"cmd": "ping"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(ping["ok"], true, "the new session's channel works: {ping}");
    a.close().await;
    b.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_datachannel_messages_get_bad_json_and_the_session_goes_on() {
    let agent = start(&TestConfig::new("binary-dc")).await;
    let s = agent.settings().clone();
    let mut v = common::viewer(&s, "binary-dc", false).await;
    v.send_binary(&[0x7b, 0x00, 0xff, 0x7d])
        .await
        .expect("a binary message is sent");
    let reply = v
        .next_event(WAIT)
        .await
        .expect("a reply to the binary message");
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], "bad_json", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("binary") && m.contains("4 bytes")),
        "the message says what was wrong: {reply}"
    );
    let ping = v
        .command(json!({"cmd": "ping"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(ping["ok"], true, "the session goes on: {ping}");
    assert_eq!(agent.stats().await.sessions, 1);
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_camera_ending_a_session_says_bye_on_the_channel_and_over_mqtt() {
    let agent = start(&TestConfig::new("camera-bye")).await;
    let s = agent.settings().clone();
    let mut v = common::viewer(&s, "camera-bye", true).await;
    frames(&mut v, 3).await;
    v.wait_channel(WAIT)
        .await
        .expect("the control channel opens");
    agent.shutdown().await;
    assert_eq!(bye_event(&mut v).await, "shutdown");
    let mut got_bye = false;
    while let Some(sig) = v.next_signal(WAIT).await {
        if sig == Signal::Bye {
            got_bye = true;
            break;
        }
    }
    assert!(got_bye, "P/bye/{{id}} says the session ended too");
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_closing_its_connection_ends_its_session_at_once() {
    // Only the DTLS close can end it in time: the disconnection timeout is
    // longer than the wait.
    let cfg = TestConfig::new("dtls-close").with("webrtc.disconnected_timeout_ms", 60_000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    // Only the viewer's own client id may read its bye on the embedded
    // broker: its MQTT connection runs through a relay, cut before a
    // watcher takes the client id over.
    let tap = Tap::start(s.broker.v5_listen).await;
    let mut opts = viewer_options(&s, "closing", true);
    opts.mqtt.url = tap.url();
    let mut v = Viewer::connect(&opts).await.expect("the offer is answered");
    assert!(v.wait_connected(WAIT).await, "closing connects");
    frames(&mut v, 5).await;
    tap.cut();
    let mut byes = common::Watch::start(
        &s,
        "closing",
        &format!("{}/bye/closing", s.mqtt.topic_prefix),
    )
    .await;
    v.close().await;
    let bye = byes
        .wait_for(
            "the camera's bye",
            &format!("{}/bye/closing", s.mqtt.topic_prefix),
            |p| p.starts_with(b"{"),
        )
        .await;
    let bye: Value = serde_json::from_slice(&bye).expect("JSON");
    assert_eq!(bye["reason"], "closed", "{bye}");
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}
