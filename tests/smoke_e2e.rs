//! A small end-to-end stream that makes no assumption about speed, so it
//! also runs under emulation (CI runs it for aarch64 under qemu): the
//! `rtcam` binary, started from a config file, with its embedded broker and
//! a 320x240 test pattern → MQTT signaling → WebRTC → a headless viewer that
//! decodes the H.264 and reads each frame's block code, plus a DataChannel
//! command that moves a simulated GPIO pin, seen in the agent's log (the
//! simulator logs every electrical change at DEBUG).
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use common::agent::{AgentProcess, TestConfig};
use common::viewer_options;
use rtcam::probe::Viewer;
use serde_json::json;
use std::time::Duration;

/// Emulated ARM runs the whole stack ~20x slower than native: every wait
/// here is an upper bound on an event, never a rate.
const SLOW: Duration = Duration::from_secs(120);

/// Four simulated pins, no demo driver: relay1 (output, failsafe off), door
/// (input, pulled up), dim (PWM, duty at most 0.9), pan (servo).
const PINS: &str = r#"
[[gpio.pins]]
name = "relay1"
pin = 17
mode = "output"
initial = false
failsafe = false

[[gpio.pins]]
name = "door"
pin = 27
mode = "input"
pull = "up"
debounce_ms = 0

[[gpio.pins]]
name = "dim"
pin = 18
mode = "pwm"
frequency_hz = 1000
max_duty = 0.9

[[gpio.pins]]
name = "pan"
pin = 12
mode = "servo"
"#;

/// The simulator's log line for an electrical change of `pin`.
fn line_of(pin: &str, level: &str) -> String {
    format!("simulated line {pin}: {level}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_stream_reaches_a_viewer_through_the_embedded_broker() {
    let cfg = TestConfig::new("smoke")
        .with("video.width", 320)
        .with("video.height", 240)
        .with("video.fps", 15)
        .with("video.bitrate_kbps", 300)
        .with("gpio.backend", "sim")
        .with_toml(PINS)
        .with_env("RTCAM_LOG", "info,rumqttd=off,rtcam::gpio::sim=debug");
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    assert_eq!(base.camera, "idle", "no viewer: the camera is off");
    // The relay starts low: its initial value, written at start.
    agent
        .log()
        .wait_line("relay1 driven to its initial low", SLOW, |l| {
            l.contains(&line_of("relay1", "low"))
        })
        .await;
    let high = line_of("relay1", "high");
    assert_eq!(
        agent.log().count(|l| l.contains(&high)),
        0,
        "nothing drove relay1 high yet"
    );

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
    let during = agent.stats().await;
    assert_eq!(
        (during.sessions, during.connected, during.subscribers),
        (1, 1, 1),
        "one streaming session"
    );

    // The same figures for Prometheus, with the media thread's stage times.
    let (status, metrics) = common::http_get(agent.http_addr(), "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /metrics:\n{metrics}"))
    };
    assert!(value("rtcam_frames_total") >= 10.0, "{metrics}");
    assert_eq!(value("rtcam_viewers"), 1.0, "{metrics}");
    assert_eq!(value("rtcam_camera_running"), 1.0, "{metrics}");
    assert!(
        (150.0..=300.0).contains(&value("rtcam_encoder_bitrate_kbps")),
        "between the first viewer's start (half the ceiling) and the ceiling: {metrics}"
    );
    assert!(
        value("rtcam_stage_seconds_count{stage=\"encode\"}") >= 10.0
            && value("rtcam_stage_seconds_count{stage=\"capture_to_publish\"}") >= 10.0,
        "{metrics}"
    );
    assert_eq!(metrics.lines().last(), Some("# EOF"), "{metrics}");
    // The viewer's link, sampled by its session every 2 s.
    let sent = "rtcam_viewer_sent_bytes_total{client=\"smoke-1\"} ";
    let deadline = std::time::Instant::now() + SLOW;
    let metrics = loop {
        let (_, m) = common::http_get(agent.http_addr(), "/metrics").await;
        if m.lines().any(|l| {
            l.strip_prefix(sent)
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v > 0)
        }) {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no link figures for smoke-1 in /metrics:\n{m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        metrics.contains("rtcam_viewer_rtt_seconds{client=\"smoke-1\"}"),
        "{metrics}"
    );

    // A control command travels over the DataChannel and reaches the pin:
    // the reply says so, and so does the simulated line.
    let reply = v
        .command(
            json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
            SLOW,
        )
        .await
        .expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    let h = high.clone();
    agent
        .log()
        .wait_line("the simulated relay1 line to go high", SLOW, move |l| {
            l.contains(&h)
        })
        .await;
    let got = v
        .command(json!({"cmd": "gpio.get", "pin": "relay1"}), SLOW)
        .await
        .expect("a reply");
    assert_eq!(got["result"]["value"], true, "{got}");

    // Leaving ends the session and frees everything; the relay falls back
    // to its failsafe (off) once the session that drove it has ended.
    let lows = agent.log().count(|l| l.contains(&line_of("relay1", "low")));
    v.bye().await;
    let after = agent
        .wait_stats_within(SLOW, "the session to end and free everything", |st| {
            st.sessions == 0 && st.subscribers == 0 && st.holds == 0 && st.tasks == base.tasks
        })
        .await;
    assert_eq!(after.subscribers, 0, "hub subscription released");
    let (_, metrics) = common::http_get(agent.http_addr(), "/metrics").await;
    assert!(
        !metrics.contains("client=\"smoke-1\""),
        "an ended session's link leaves /metrics:\n{metrics}"
    );
    agent
        .log()
        .wait_count("relay1 back to its failsafe low", lows + 1, SLOW, |l| {
            l.contains("simulated line relay1: low")
        })
        .await;
    agent
        .log()
        .wait_line("the failsafe logged at the session's end", SLOW, |l| {
            l.contains("failsafe applied") && l.contains("pin=relay1")
        })
        .await;
    agent
        .wait_stats_within(SLOW, "the camera to stop", |st| st.camera == "idle")
        .await;
    agent.shutdown().await;
}
