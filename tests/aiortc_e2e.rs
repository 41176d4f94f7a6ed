//! End to end against a WebRTC stack that shares no code with rtcam: the
//! `rtcam` binary (test pattern and test tone, started from a config file)
//! watched by aiortc, Python's WebRTC (`tests/aiortc/viewer.py`), which
//! signals over MQTT as docs/protocol.md says, decodes H.264 and Opus, and
//! measures from the decoded media itself: each frame's block code gives
//! its video latency, each beep's onset its audio latency, and the two
//! give the audio-video offset.
//!
//! The viewer runs in target/aiortc-venv, made by `tests/aiortc/setup`
//! (pinned wheels from PyPI). Making it needs the network, which the
//! private namespace the tests run in has not, so the setup must have run
//! before entering it (`.ci/test`); here it runs again (a no-op once up to
//! date), and a Python environment that cannot be had fails the test,
//! never skips it.

mod common;

use common::agent::{AgentProcess, TestConfig, start};
use common::players;
use serde_json::Value;
use std::time::Duration;

/// How long the viewer receives once connected.
const SECONDS: u64 = 6;

/// Runs the viewer against `agent` for [`SECONDS`] and returns its report.
async fn watch(agent: &AgentProcess, client_id: &str) -> Value {
    let s = agent.settings();
    let mut cmd = tokio::process::Command::new(players::aiortc_python());
    cmd.arg(players::repo().join("tests/aiortc/viewer.py"))
        .args(["--broker", &s.broker.v5_listen.to_string()])
        .args(["--mqtt-protocol", "5"])
        .args(["--prefix", &s.mqtt.topic_prefix])
        .args(["--client-id", client_id])
        .args(["--seconds", &SECONDS.to_string()]);
    // The viewer bounds itself (about SECONDS + 45 s at worst).
    players::report(
        cmd,
        Duration::from_secs(SECONDS + 90),
        agent,
        "aiortc viewer",
    )
    .await
}

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("the report has no number {key}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_decodes_video_and_audio_in_sync() {
    // Set up Python first: the agent need not wait for pip.
    players::aiortc_python();
    let cfg = TestConfig::new("aiortc")
        .with("video.width", 640)
        .with("video.height", 480)
        .with("video.fps", 30)
        .with("audio.input", "test");
    let agent = start(&cfg).await;
    let report = watch(&agent, "aiortc-viewer").await;

    // About 30 frames a second for SECONDS, each carrying its block code.
    let coded = number(&report, "video_decoded_with_code");
    assert!(coded > 60.0, "{coded} frames with a block code: {report:#}");
    // 20 ms Opus frames: 50 a second.
    let audio = number(&report, "audio_frames");
    assert!(audio > 200.0, "{audio} audio frames: {report:#}");
    let hz = number(&report, "tone_hz");
    assert!(
        (hz - 1000.0).abs() <= 20.0,
        "the test tone is 1 kHz, heard {hz} Hz: {report:#}"
    );
    let onsets = report["tone_onsets"].as_array().map_or(0, Vec::len);
    assert!(onsets >= 4, "{onsets} beeps in {SECONDS} s: {report:#}");
    // Audio and video captured together arrive together.
    let offset = number(&report, "av_offset_ms");
    assert!(
        offset.abs() <= 80.0,
        "audio arrives {offset} ms after the video captured with it: {report:#}"
    );
    // A player lines the two up by the RTCP sender reports: both streams'
    // reports map RTP time to the camera's clock alike.
    for kind in ["audio", "video"] {
        let n = report["sender_reports"][kind].as_u64().unwrap_or(0);
        assert!(n >= 2, "{n} {kind} sender reports: {report:#}");
    }
    let sync = number(&report, "sr_av_sync_ms");
    assert!(
        sync.abs() <= 80.0,
        "by the sender reports, sound is {sync} ms off the picture: {report:#}"
    );
    agent.shutdown().await;
}
