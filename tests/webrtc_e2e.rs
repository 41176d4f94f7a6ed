//! End to end over loopback: agent (embedded broker, test pattern) ↔
//! headless viewers speaking the MQTT signaling protocol and WebRTC,
//! decoding the H.264 they receive. Runs inside a private network
//! namespace (see `.ci/test`).

mod common;

use common::{
    WAIT, malformed_messages_get_codes, settings, start, viewer, viewer_options, watch,
    watch_from_now,
};
use rtcam::probe::{Signal, Viewer};
use serde_json::json;
use std::time::{Duration, Instant};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits for a condition that has no event to wait on (the runtime's task count).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_decode_most_frames_and_everything_returns_to_zero() {
    let mut s = settings("frames");
    s.webrtc.disconnected_timeout = Duration::from_secs(1);
    let agent = start(s.clone()).await;
    let base = agent.stats();
    let base_tasks = alive_tasks();
    assert_eq!(base.camera, "idle", "no viewer: the camera is off");

    let mut v = viewer(&s, "frames-1", true).await;
    let (n, first_key, seqs) = watch(&mut v, Duration::from_secs(5)).await;
    // 5 s at 30 fps is 150 frames; at least 90 % must decode.
    assert!(n >= 135, "decoded {n} of ~150 frames");
    assert!(first_key, "the first frame is a keyframe");
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "frames arrive in order"
    );
    assert_eq!(v.decode_errors(), 0);
    let during = agent.stats();
    assert_eq!(
        (during.sessions, during.connected, during.subscribers),
        (1, 1, 1)
    );

    // One viewer leaves politely, another vanishes without a bye.
    let ghost = viewer(&s, "frames-ghost", true).await;
    v.bye().await;
    ghost.close().await;
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 0 && c.tasks == 0)
            .await,
        "sessions end: {:?}",
        agent.stats()
    );
    let after = agent.stats();
    assert_eq!(
        (after.subscribers, after.holds),
        (0, 0),
        "hub subscriptions released"
    );
    // Polled: the session tasks end just after the session count drops,
    // later under emulation (.ci/cross).
    eventually("agent tasks to return to the baseline", || {
        agent.stats().tasks == base.tasks
    })
    .await;
    eventually(
        "the runtime's tasks (peer drivers included) to return to the baseline",
        || alive_tasks() <= base_tasks,
    )
    .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_viewer_joins_mid_stream_with_an_immediate_keyframe() {
    let mut s = settings("join");
    // No periodic keyframe in sight: a join must cause its own.
    s.video.keyframe_interval = Duration::from_secs(60);
    let agent = start(s.clone()).await;
    let mut first = viewer(&s, "join-1", true).await;
    let (_, _, seqs) = watch(&mut first, Duration::from_secs(1)).await;
    let stream_at = *seqs.last().expect("frames");
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
    let (n, _, _) = watch_from_now(&mut first, Duration::from_secs(1)).await;
    assert!(n > 0, "first viewer still decodes ({n} frames in 1 s)");
    first.bye().await;
    second.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_produces_a_keyframe() {
    let mut s = settings("pli");
    s.video.keyframe_interval = Duration::from_secs(60);
    let agent = start(s.clone()).await;
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
    let mut s = settings("max");
    s.webrtc.max_viewers = 2;
    let agent = start(s.clone()).await;
    let mut a = viewer(&s, "max-a", true).await;
    let mut b = viewer(&s, "max-b", true).await;
    match Viewer::connect(&viewer_options(&s, "max-c", true)).await {
        Err(rtcam::probe::ProbeError::Refused { code, .. }) => assert_eq!(code, "max_viewers"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a third viewer must be refused"),
    }
    for v in [&mut a, &mut b] {
        let (n, _, _) = watch_from_now(v, Duration::from_secs(1)).await;
        assert!(n > 0, "existing viewers keep decoding ({n} frames in 1 s)");
    }
    assert_eq!(agent.stats().sessions, 2);
    a.bye().await;
    b.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_channel_only_session_works_without_the_camera() {
    let s = settings("dconly");
    let agent = start(s.clone()).await;
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
    let st = agent.stats();
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
    let s = settings("malformed");
    let agent = start(s.clone()).await;
    malformed_messages_get_codes(&s).await;
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 0 && c.tasks == 0)
            .await
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_3_1_1_agent_filters_its_own_echoes() {
    let mut s = settings("v311");
    s.mqtt.protocol = rtcam::config::settings::MqttProtocol::V311;
    let agent = start(s.clone()).await;
    let mut v = viewer(&s, "v311-viewer", true).await;
    let (n, first_key, _) = watch(&mut v, Duration::from_secs(1)).await;
    assert!(first_key && n > 0, "{n} frames");
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_bye_to_viewers() {
    let s = settings("shutdown");
    let agent = start(s.clone()).await;
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
