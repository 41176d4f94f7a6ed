//! End to end over loopback: agent (embedded broker, test pattern) ↔
//! headless viewers speaking the MQTT signaling protocol and WebRTC,
//! decoding the H.264 they receive. Runs inside a private network
//! namespace (see `.ci/test`).

mod common;

use bytes::Bytes;
use common::{WAIT, settings, start, viewer, viewer_options};
use rtcam::probe::{Signal, Viewer};
use rtcam::signaling::mqtt::{Link, LinkEvent};
use rtcam::signaling::topics::{ClientId, Topics};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Receives frames for `window` and returns (count, first keyframe?, sequence numbers).
async fn watch(v: &mut Viewer, window: Duration) -> (usize, bool, Vec<u32>) {
    let first = v.next_frame(WAIT).await.expect("a first frame");
    let end = first.decoded_at + window;
    let mut seqs: Vec<u32> = first.seq.into_iter().collect();
    let mut n = 1;
    while let Some(f) = v
        .next_frame(end.saturating_duration_since(Instant::now()))
        .await
    {
        n += 1;
        seqs.extend(f.seq);
        if Instant::now() >= end {
            break;
        }
    }
    (n, first.keyframe, seqs)
}

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
    assert_eq!(after.tasks, base.tasks, "agent tasks back to the baseline");
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
        seq > stream_at && seq < stream_at + 30,
        "the keyframe was made for the join (seq {seq}, stream at {stream_at}), not the 60 s periodic one"
    );
    // The first viewer carried on without a gap.
    let (n, _, _) = watch(&mut first, Duration::from_secs(1)).await;
    assert!(n >= 25, "first viewer still decodes ({n} frames in 1 s)");
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
        let (n, _, _) = watch(v, Duration::from_secs(1)).await;
        assert!(
            n >= 25,
            "existing viewers keep decoding ({n} frames in 1 s)"
        );
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

/// A raw MQTT client that sends malformed messages and collects error replies.
struct Raw {
    link_pub: rtcam::signaling::mqtt::LinkPublisher,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>,
    task: tokio::task::JoinHandle<()>,
    topics: Topics,
}

impl Raw {
    async fn connect(s: &rtcam::config::Settings) -> Raw {
        let topics = Topics::new(&s.mqtt.topic_prefix);
        let mut link = Link::new(
            &common::mqtt_for(s, "raw-attacker"),
            vec![
                format!("{}/error/+", topics.prefix()),
                format!("{}/answer/+", topics.prefix()),
            ],
        )
        .expect("link");
        let link_pub = link.publisher();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (up_tx, mut up) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                match link.next().await {
                    Ok(LinkEvent::Connected) => {
                        let _ = up_tx.send(true);
                    }
                    Ok(LinkEvent::Message(t, p)) => {
                        let _ = tx.send((t, p));
                    }
                    Err(_) => {}
                }
            }
        });
        tokio::time::timeout(WAIT, up.wait_for(|c| *c))
            .await
            .expect("raw client connects")
            .expect("link alive");
        Raw {
            link_pub,
            rx,
            task,
            topics,
        }
    }

    /// Sends `payload` to `P/{kind}/{client}` and returns the error code replied on `P/error/{client}`.
    async fn code(&mut self, kind: &str, client: &str, payload: impl Into<Bytes>) -> String {
        let topic = format!("{}/{kind}/{client}", self.topics.prefix());
        assert!(self.link_pub.publish(&topic, payload));
        let want = self.topics.error(&ClientId::parse(client).expect("valid"));
        loop {
            let (t, p) = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("an error reply")
                .expect("link alive");
            if t == want {
                let v: Value = serde_json::from_slice(&p).expect("error replies are JSON");
                assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
                return v["code"].as_str().expect("a code").to_string();
            }
        }
    }
}

const VP8_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n";

/// Every kind of malformed message gets its documented code, while a viewer keeps streaming.
pub async fn malformed_messages_get_codes(s: &rtcam::config::Settings) {
    let mut watcher = viewer(s, "steady", true).await;
    let mut raw = Raw::connect(s).await;
    let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(70_000));
    let cases: Vec<(&str, &str, Bytes, &str)> = vec![
        ("offer", "m1", Bytes::from_static(b"{not json"), "bad_json"),
        (
            "offer",
            "m2",
            Bytes::from_static(&[0xff, 0xfe, 0xfd]),
            "bad_json",
        ),
        (
            "offer",
            "m3",
            Bytes::from_static(br#"{"type":"answer","sdp":"v=0"}"#),
            "bad_message",
        ),
        (
            "offer",
            "m4",
            Bytes::from_static(br#"{"sdp":"v=0"}"#),
            "bad_message",
        ),
        (
            "offer",
            "m5",
            Bytes::from_static(br#"{"type":"offer","sdp":"hello"}"#),
            "bad_sdp",
        ),
        ("offer", "m6", Bytes::from(big), "too_large"),
        (
            "offer",
            "m7",
            Bytes::from(json!({"type": "offer", "sdp": VP8_ONLY}).to_string()),
            "no_video_codec",
        ),
        (
            "ice",
            "m8",
            Bytes::from_static(br#"{"candidate":"not a candidate"}"#),
            "bad_candidate",
        ),
        ("ice", "m9", Bytes::from_static(b"[]"), "bad_message"),
        ("bye", "m10", Bytes::from_static(b"{}"), "unknown_session"),
        ("bye", "m11", Bytes::from_static(b"bye!"), "bad_json"),
    ];
    let mut got = HashMap::new();
    for (kind, client, payload, want) in cases {
        let code = raw.code(kind, client, payload).await;
        assert_eq!(code, want, "{kind} from {client}");
        got.insert(client, code);
    }
    // An offer whose SDP parses as text but that the WebRTC stack rejects.
    let broken = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
    let code = raw
        .code(
            "offer",
            "m12",
            json!({"type": "offer", "sdp": broken}).to_string(),
        )
        .await;
    assert_eq!(code, "bad_sdp");
    // The streaming viewer was not disturbed.
    let (n, _, _) = watch(&mut watcher, Duration::from_secs(1)).await;
    assert!(
        n >= 25,
        "the steady viewer kept decoding ({n} frames in 1 s)"
    );
    assert!(
        watcher
            .next_signal(Duration::from_millis(10))
            .await
            .is_none(),
        "and got no error"
    );
    raw.task.abort();
    let _ = raw.rx.try_recv();
    watcher.bye().await;
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
    assert!(first_key && n >= 25, "{n} frames");
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
