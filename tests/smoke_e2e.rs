//! A small end-to-end stream that makes no assumption about speed, so it
//! also runs under emulation (CI runs it for aarch64 under qemu): agent with
//! its embedded broker and a 320x240 test pattern → MQTT signaling →
//! WebRTC → a headless viewer that decodes the H.264 and reads each frame's
//! block code, plus a DataChannel command that moves a simulated GPIO pin.
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use common::{assert_private_netns, gpio_settings, viewer_options};
use rtcam::agent::{Agent, AgentOptions};
use rtcam::probe::Viewer;
use serde_json::json;
use std::time::Duration;

/// Emulated ARM runs the whole stack ~20x slower than native: every wait
/// here is an upper bound on an event, never a rate.
const SLOW: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_stream_reaches_a_viewer_through_the_embedded_broker() {
    let mut s = gpio_settings("smoke");
    s.video.width = 320;
    s.video.height = 240;
    s.video.fps = 15;
    s.video.bitrate_kbps = 300;
    assert_private_netns();
    let agent = Agent::start(s.clone(), AgentOptions::default())
        .await
        .expect("the agent starts");
    assert!(
        agent.wait_mqtt_connected(SLOW).await,
        "the agent connects to its embedded broker"
    );
    let sim = agent
        .gpio()
        .and_then(|g| g.simulator())
        .expect("the sim backend is configured")
        .clone();

    let mut opts = viewer_options(&s, "smoke-1", true);
    opts.timeout = SLOW;
    let mut v = Viewer::connect(&opts).await.expect("the offer is answered");
    assert!(v.wait_connected(SLOW).await, "ICE and DTLS complete");

    // Ten decoded frames, each carrying the test pattern's block code with
    // strictly increasing sequence numbers: real pictures, not just packets.
    let first = v.next_frame(SLOW).await.expect("a first decoded frame");
    assert!(first.keyframe, "decoding starts at a keyframe");
    assert_eq!((first.width, first.height), (320, 240));
    let mut last = first.seq.expect("the block code reads back");
    for _ in 0..9 {
        let f = v.next_frame(SLOW).await.expect("another decoded frame");
        let seq = f.seq.expect("the block code reads back");
        assert!(seq > last, "frames arrive in order ({seq} after {last})");
        last = seq;
    }
    assert_eq!(v.decode_errors(), 0);

    // A control command travels over the DataChannel and reaches the pin.
    let reply = v
        .command(
            json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
            SLOW,
        )
        .await
        .expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        sim.pin("relay1").map(|p| p.high),
        Some(true),
        "the simulated pin is high"
    );

    v.bye().await;
    assert!(
        agent
            .wait_sessions(SLOW, |c| c.sessions == 0 && c.tasks == 0)
            .await,
        "the session ends and frees everything: {:?}",
        agent.stats()
    );
    assert_eq!(agent.stats().subscribers, 0, "hub subscription released");
    agent.shutdown().await;
}
