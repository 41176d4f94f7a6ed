//! The shipped `rtcam` binary with a real V4L2 camera (vivid), inside the
//! kernel lab's guest, watched by a WebRTC viewer over loopback: camera
//! controls over the DataChannel against vivid's own controls (read back
//! from the driver with v4l2-ctl), and a camera unplugged (vivid's
//! Disconnect control, then the driver unloaded) for 12 s during `rtcam
//! run`: the agent survives, the viewer's session stays, and its video
//! resumes at a keyframe when the camera is back. Ignored on a host; run by
//! `.ci/test` in the guest with `--ignored --test-threads=1`.

mod common;

use common::WAIT;
use common::agent::{AgentProcess, TestConfig};
use common::lab::{require_lab, sh, unload, unload_media, wait_nodes};
use common::viewer;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

fn load_vivid() -> PathBuf {
    unload_media();
    sh("modprobe vivid n_devs=1 node_types=0x1");
    wait_nodes("vivid's capture node", 1, |n| n.ends_with("-vid-cap")).remove(0)
}

/// A 320x180@15 camera on `source` (the smallest vivid mode: the guest
/// runs under emulation).
fn config(prefix: &str, source: &str) -> TestConfig {
    TestConfig::new(prefix)
        .with("video.source", source)
        .with("video.width", 320)
        .with("video.height", 180)
        .with("video.fps", 15)
        .with("video.bitrate_kbps", 300)
}

fn control<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["controls"]
        .as_array()
        .expect("a controls array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("control {name} missing from {list}"))
}

fn driver_value(node: &std::path::Path, name: &str) -> String {
    sh(&format!("v4l2-ctl -d {} --get-ctrl {name}", node.display()))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
async fn camera_controls_over_the_data_channel_reach_vivids_controls() {
    require_lab();
    let node = load_vivid();
    let cfg = config("lab-controls", &node.display().to_string());
    let s = cfg.settings();
    let agent = AgentProcess::start(&cfg).await;
    let mut v = viewer(&s, "lab-ctl", true).await;
    common::frames(&mut v, 3).await;

    let list = v
        .command(json!({"cmd": "camera.controls"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(list["ok"], true, "{list}");
    let list = &list["result"];
    let b = control(list, "brightness");
    assert_eq!(
        (&b["type"], &b["min"], &b["max"], &b["default"]),
        (&json!("integer"), &json!(0), &json!(255), &json!(128)),
        "{b}"
    );
    assert_eq!(b["value"], 128);
    let c = control(list, "contrast");
    assert_eq!(c["type"], "integer", "{c}");
    // A menu: vivid's test patterns, with their labels.
    let tp = control(list, "test_pattern");
    assert_eq!(tp["type"], "menu", "{tp}");
    assert!(tp["items"].to_string().contains("75% Colorbar"), "{tp}");
    // Buttons (vivid's Disconnect) cannot be listed as values.
    assert!(
        !list.to_string().contains("\"disconnect\""),
        "buttons are not listed: {list}"
    );

    for (name, value) in [("brightness", 200), ("contrast", 30), ("test_pattern", 3)] {
        let r = v
            .command(
                json!({"cmd": "camera.set", "control": name, "value": value}),
                WAIT,
            )
            .await
            .expect("a reply");
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["result"]["value"], value, "{r}");
        let held = driver_value(&node, name);
        assert!(
            held.starts_with(&format!("{name}: {value}")),
            "the driver holds {held:?}, not {value}"
        );
    }
    // Out of range, unknown: refused with bad_params, the driver unchanged.
    for (name, value, says) in [
        ("brightness", 300, "outside 0..=255"),
        ("brightness", -1, "outside 0..=255"),
        ("no_such_control", 1, "unknown camera control"),
    ] {
        let r = v
            .command(
                json!({"cmd": "camera.set", "control": name, "value": value}),
                WAIT,
            )
            .await
            .expect("a reply");
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"]["code"], "bad_params", "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap_or("").contains(says),
            "{r}"
        );
    }
    assert_eq!(driver_value(&node, "brightness"), "brightness: 200");
    let list = v
        .command(json!({"cmd": "camera.controls"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(control(&list["result"], "brightness")["value"], 200);
    // Still streaming.
    common::frames(&mut v, 3).await;
    v.bye().await;
    agent.shutdown().await;
    unload_media();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
async fn a_camera_unplugged_during_run_comes_back_to_the_same_viewer_at_a_keyframe() {
    require_lab();
    let node = load_vivid();
    let cfg = config("lab-unplug", "auto");
    let s = cfg.settings();
    let mut agent = AgentProcess::start(&cfg).await;
    let mut v = viewer(&s, "lab-unplug", true).await;
    let run = common::frames(&mut v, 10).await;
    assert!(run.first_keyframe);

    let mark = agent.log().len();
    let aside = common::lab::unplug(&node);
    agent
        .log()
        .wait_line_after("the camera's failure", mark, WAIT, |l| {
            l.contains("camera failed; reopening")
        })
        .await;
    let unplugged = std::time::Instant::now();
    let log = agent.log().clone();
    let unloading = std::thread::spawn(|| std::panic::catch_unwind(|| unload("vivid")));
    let unloaded = tokio::task::spawn_blocking(move || unloading.join())
        .await
        .expect("joins");
    if !matches!(unloaded, Ok(Ok(()))) {
        panic!("vivid stays loaded; agent log:\n{}", log.tail(30));
    }
    common::lab::replug_cleanup(&aside);
    tokio::time::sleep(Duration::from_secs(12)).await;
    v.drain_frames();
    sh("modprobe vivid n_devs=1 node_types=0x1");
    wait_nodes("vivid's capture node, back", 1, |n| n.ends_with("-vid-cap"));
    // Reopened within the backoff's 10 s ceiling; the first frame the
    // viewer decodes after the gap is a keyframe.
    let f = v
        .next_frame(WAIT)
        .await
        .expect("video resumes once the camera is back");
    assert!(
        f.keyframe,
        "the first frame after the camera came back is a keyframe"
    );
    eprintln!(
        "video resumed {:.1} s after the unplug",
        unplugged.elapsed().as_secs_f64()
    );
    common::frames(&mut v, 10).await;
    agent.assert_running("after the camera came back");
    let st = agent.stats().await;
    assert_eq!(st.sessions, 1, "the viewer's session stayed: {st:?}");
    v.bye().await;
    agent.shutdown().await;
    unload_media();
}
