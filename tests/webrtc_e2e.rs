//! End to end over loopback: the `rtcam` binary (embedded broker, test
//! pattern, started from a config file) ↔ headless viewers speaking the
//! MQTT signaling protocol and WebRTC, decoding the H.264 they receive.
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use common::agent::{TestConfig, start};
use common::{
    WAIT, frames, malformed_messages_get_codes, no_error_before_barrier, viewer, viewer_options,
};
use rtcam::probe::{Signal, Viewer};
use serde_json::json;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_decode_the_stream_and_everything_returns_to_idle() {
    let cfg = TestConfig::new("frames").with("webrtc.disconnected_timeout_ms", 1000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    assert_eq!(base.camera, "idle", "no viewer: the camera is off");

    let mut v = viewer(&s, "frames-1", true).await;
    let run = frames(&mut v, 150).await;
    assert!(run.first_keyframe, "the first frame is a keyframe");
    assert!(run.in_order(), "frames arrive in order");
    assert_eq!(run.seqs.len(), 150, "every picture carries its block code");
    // Counted, not timed: on loopback almost every captured frame decodes.
    assert!(
        run.missing() <= 15,
        "{} of {} captured frames lost",
        run.missing(),
        run.missing() + 150
    );
    assert_eq!(v.decode_errors(), 0);
    let during = agent.stats().await;
    assert_eq!(
        (during.sessions, during.connected, during.subscribers),
        (1, 1, 1)
    );

    // One viewer leaves politely, another vanishes without a bye.
    let ghost = viewer(&s, "frames-ghost", true).await;
    let mark = agent.log().len();
    v.bye().await;
    ghost.close().await;
    let after = agent.wait_idle(&base).await;
    assert_eq!((after.subscribers, after.holds), (0, 0));
    agent
        .wait_stats(
            "the runtime's tasks (the WebRTC stack's included) back to the baseline",
            |s| s.runtime_tasks <= base.runtime_tasks,
        )
        .await;
    agent
        .wait_stats("the camera to stop", |s| s.camera == "idle")
        .await;
    // Viewers leaving is not an error: nothing above INFO in the log.
    let left = agent.log().since(mark);
    assert!(
        left.iter().any(|l| l.contains("session ended")),
        "the ends are logged: {left:#?}"
    );
    let loud: Vec<&String> = left
        .iter()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(loud.is_empty(), "logged above INFO: {loud:#?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_viewer_joins_mid_stream_with_an_immediate_keyframe() {
    // No periodic keyframe in sight: a join must cause its own.
    let cfg = TestConfig::new("join").with("video.keyframe_interval_ms", 60_000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let mut first = viewer(&s, "join-1", true).await;
    let run = frames(&mut first, 30).await;
    let stream_at = *run.seqs.last().expect("frames");
    let joined = Instant::now();
    let mut second = viewer(&s, "join-2", true).await;
    let f = second
        .next_frame(WAIT)
        .await
        .expect("the second viewer decodes");
    eprintln!(
        "second viewer: first frame {:?} after starting to join",
        f.decoded_at - joined
    );
    assert!(f.keyframe, "its first frame is a keyframe");
    let seq = f.seq.expect("the block code decodes");
    assert!(
        // Any keyframe before the periodic one (60 s of frames away) was
        // made for the join; not a latency bound (emulation is slow).
        seq > stream_at && seq < stream_at + 60 * s.video.fps,
        "the keyframe was made for the join (seq {seq}, stream at {stream_at}), not the 60 s periodic one"
    );
    // The first viewer carried on.
    frames(&mut first, 10).await;
    first.bye().await;
    second.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_produces_a_keyframe() {
    let cfg = TestConfig::new("pli").with("video.keyframe_interval_ms", 60_000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let mut v = viewer(&s, "pli-1", true).await;
    let first = v.next_frame(WAIT).await.expect("frames");
    assert!(first.keyframe);
    // Without a request there is no keyframe for a while...
    for _ in 0..30 {
        let f = v.next_frame(WAIT).await.expect("frames keep coming");
        assert!(!f.keyframe, "no keyframe without a request");
    }
    // ...and with a PLI one comes within a few frames.
    assert!(v.request_keyframe().await, "PLI sent");
    let mut waited = 0;
    loop {
        let f = v.next_frame(WAIT).await.expect("frames keep coming");
        if f.keyframe {
            break;
        }
        waited += 1;
        assert!(waited < 30, "no keyframe within 30 frames of the PLI");
    }
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_viewers_refuses_extra_offers_without_disturbing_viewers() {
    let cfg = TestConfig::new("max").with("webrtc.max_viewers", 2);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let mut a = viewer(&s, "max-a", true).await;
    let mut b = viewer(&s, "max-b", true).await;
    match Viewer::connect(&viewer_options(&s, "max-c", true)).await {
        Err(rtcam::probe::ProbeError::Refused { code, .. }) => assert_eq!(code, "max_viewers"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a third viewer must be refused"),
    }
    for v in [&mut a, &mut b] {
        v.drain_frames();
        frames(v, 10).await;
    }
    assert_eq!(agent.stats().await.sessions, 2);
    a.bye().await;
    b.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_channel_only_session_works_without_the_camera() {
    let agent = start(&TestConfig::new("dconly")).await;
    let s = agent.settings().clone();
    let v = viewer(&s, "dc-only", false).await;
    let reply = v
        .command(json!({"cmd": "ping"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["result"]["pong"], true);
    let status = v
        .command(json!({"cmd": "video.status"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(status["result"]["viewers"], 1);
    let st = agent.stats().await;
    assert_eq!(
        (st.subscribers, st.holds, st.camera.as_str()),
        (0, 0, "idle"),
        "camera not started"
    );
    let unknown = v
        .command(json!({"cmd": "nope"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(unknown["error"]["code"], "unknown_cmd");
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_message_gets_its_error_code() {
    let agent = start(&TestConfig::new("malformed")).await;
    let base = agent.stats().await;
    malformed_messages_get_codes(agent.settings()).await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_3_1_1_agent_drops_its_own_echoes() {
    let cfg = TestConfig::new("v311").with("mqtt.protocol", "3.1.1");
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    assert_eq!(agent.stats().await.echoes_dropped, 0);
    let mut v = viewer(&s, "v311-viewer", true).await;
    let run = frames(&mut v, 10).await;
    assert!(run.first_keyframe && run.in_order());
    // 3.1.1 has no "no local": the broker sent the agent its own answer
    // and candidates back, and the filter dropped them.
    let st = agent
        .wait_stats("the agent's echoes to be dropped", |st| {
            st.echoes_dropped >= 2
        })
        .await;
    eprintln!("echoes dropped: {}", st.echoes_dropped);
    no_error_before_barrier(&s, &mut v, "v311-viewer").await;
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_bye_to_viewers() {
    let agent = start(&TestConfig::new("shutdown")).await;
    let s = agent.settings().clone();
    let mut v = viewer(&s, "shutdown-viewer", true).await;
    v.next_frame(WAIT).await.expect("frames");
    agent.shutdown().await;
    let mut got_bye = false;
    while let Some(sig) = v.next_signal(WAIT).await {
        if sig == Signal::Bye {
            got_bye = true;
            break;
        }
    }
    assert!(got_bye, "the viewer is told the session ended");
    v.close().await;
}
