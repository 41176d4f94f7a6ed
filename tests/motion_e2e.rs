//! Motion detection end to end through the `rtcam` binary and its config:
//! a still test picture with sensor grain raises nothing; a box that starts
//! moving at a known time (`video.test_object_after_s`, moving for 5 s, then
//! still) raises `motion.start` after it appears and `motion.end` after it
//! stops, on the DataChannel and MQTT (`P/motion`, a Home Assistant motion
//! sensor), and triggers an events-mode recording whose pre-roll starts at
//! a keyframe before the motion. Runs inside a private network namespace.

mod common;

use common::agent::{AgentProcess, TestConfig};
use common::{WAIT, Watch};

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A still picture; the block code and clock (top left) are excluded, as a
/// camera's timestamp overlay would be.
fn config(prefix: &str) -> TestConfig {
    TestConfig::new(prefix)
        .with("video.test_scene", "still")
        .with("video.keyframe_interval_ms", 1000)
        .with("motion.enabled", true)
        .with("motion.threshold", 25)
        .with("motion.min_area_percent", 0.3)
        .with("motion.end_after_s", 2)
        .with_toml("[[motion.exclude]]\nx = 0.0\ny = 0.0\nw = 0.32\nh = 0.45\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_scene_with_sensor_grain_raises_no_motion() {
    let agent = AgentProcess::start(&config("motion-still")).await;
    let s = agent.settings().clone();
    let mut state = Watch::start(
        &s,
        "still-watch",
        &format!("{}/motion", s.mqtt.topic_prefix),
    )
    .await;
    state
        .wait_for(
            "P/motion OFF",
            &format!("{}/motion", s.mqtt.topic_prefix),
            |p| p == b"OFF",
        )
        .await;
    // Motion detection keeps the camera on: 8 s of frames (240) is the run.
    agent
        .wait_stats("8 s of frames", |st| st.frames >= 240)
        .await;
    assert_eq!(
        agent.log().count(|l| l.contains("motion started")),
        0,
        "{}",
        agent.log().tail(20)
    );
    assert!(agent.log().text().contains("motion detection on"));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_moving_at_a_known_time_raises_motion_and_records_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("rec");
    let cfg = config("motion-box")
        .with("video.test_object_after_s", 4)
        .with("gpio.ha_prefix", "ha-motion")
        .with("record.mode", "events")
        .with("record.dir", rec.display().to_string())
        .with("record.pre_s", 2)
        .with("record.post_s", 5)
        .with("record.fragment_ms", 500)
        .with("record.min_free_mb", 0);
    let before_start = unix_ms();
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let p = s.mqtt.topic_prefix.clone();
    let mut state = Watch::start(&s, "box-watch", &format!("{p}/motion")).await;
    let mut ha = Watch::start(&s, "box-ha", "ha-motion/#").await;
    let mut v = common::viewer(&s, "box-dc", false).await;

    let start = common::event(&mut v, "motion.start", WAIT)
        .await
        .expect("motion.start");
    let start_ms = start["ts_ms"].as_u64().expect("ts_ms");
    // Never before the box appears (4 s after the camera started, which was
    // after `before_start`).
    assert!(
        start_ms >= before_start + 4000,
        "motion at {start_ms}, camera from {before_start}"
    );
    state
        .wait_for("P/motion ON", &format!("{p}/motion"), |b| b == b"ON")
        .await;
    let rec_started = common::event(&mut v, "record.started", WAIT)
        .await
        .expect("record.started");
    assert!(rec_started["segment"].as_str().is_some(), "{rec_started}");
    // The box stops after 5 s; motion ends 2 s later, the recording (post-roll
    // 5 s after the last trigger, at most 1 s before the box stopped) after that.
    let end = common::event(&mut v, "motion.end", WAIT)
        .await
        .expect("motion.end");
    let end_ms = end["ts_ms"].as_u64().expect("ts_ms");
    assert!(
        end_ms >= start_ms + 5000,
        "the box moved 5 s: {start_ms} .. {end_ms}"
    );
    state
        .wait_for("P/motion OFF", &format!("{p}/motion"), |b| b == b"OFF")
        .await;
    common::event(&mut v, "record.stopped", WAIT)
        .await
        .expect("record.stopped after the post-roll");
    let doc = ha
        .wait_for(
            "the motion sensor",
            "ha-motion/binary_sensor/rtcam_agent_motion_box/motion/config",
            |_| true,
        )
        .await;
    let doc: serde_json::Value = serde_json::from_slice(&doc).expect("JSON");
    assert_eq!(doc["device_class"], "motion");
    assert_eq!(doc["state_topic"], format!("{p}/motion"));
    // A snapshot was published when motion started.
    let mut shot = Watch::start(&s, "box-shot", &format!("{p}/snapshot")).await;
    shot.wait_for("the motion snapshot", &format!("{p}/snapshot"), |b| {
        b.starts_with(&[0xff, 0xd8])
    })
    .await;

    // The recording: one segment, from a keyframe before the motion.
    let r = v
        .command(serde_json::json!({"cmd": "record.list"}), WAIT)
        .await
        .expect("a reply");
    let list = r["result"]["recordings"]
        .as_array()
        .expect("recordings")
        .clone();
    assert_eq!(list.len(), 1, "{r}");
    // The motion event is logged next to the recordings, start and end.
    let motion = r["result"]["motion"].as_array().expect("motion").clone();
    assert_eq!(motion.len(), 1, "{r}");
    assert_eq!(motion[0]["start_ms"].as_u64(), Some(start_ms));
    assert_eq!(motion[0]["end_ms"].as_u64(), Some(end_ms));
    let (_, _, body) = common::http_request(agent.http_addr(), "GET", "/recordings", &[]).await;
    let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        listed["motion"], r["result"]["motion"],
        "HTTP lists the same"
    );
    let first_ms = list[0]["start_ms"].as_u64().expect("start");
    assert!(
        first_ms + 1000 <= start_ms,
        "pre-roll: starts {first_ms}, motion {start_ms}"
    );
    let file = rec.join(list[0]["name"].as_str().expect("name"));
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-err_detect", "explode", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(v);
    agent.shutdown().await;
}
