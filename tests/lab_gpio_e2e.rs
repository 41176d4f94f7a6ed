//! The shipped `rtcam` binary with the Linux GPIO character-device backend
//! against the kernel's GPIO simulator (gpio-sim), inside the kernel lab's
//! guest: pins declared in a config file (`[[gpio.pins]]`) by line name
//! ("GPIO17"-style names set on gpio-sim lines) and as
//! `gpiochipN:offset`; outputs driven over the DataChannel and read back
//! from the simulated lines (active_low included); an input driven from the
//! simulator's pull and seen as `gpio.changed`, a glitch shorter than its
//! debounce unseen; failsafes when the driving viewer leaves and at
//! shutdown. Ignored on a host; `.ci/test` runs it in the guest with
//! `--ignored`, where it fails (never skips) if gpio-sim cannot be used.

mod common;

use common::WAIT;
use common::agent::{AgentProcess, TestConfig};
use common::lab::{require_lab, sh};
use common::viewer;
use gpiosim::Level;
use rtcam::probe::Viewer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RELAY: u32 = 1; // "GPIO17", active low
const LAMP: u32 = 5; // by gpiochipN:5
const DOOR: u32 = 3; // "GPIO27", input

async fn ok(v: &Viewer, req: Value) -> Value {
    let reply = v.command(req.clone(), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], true, "{req} -> {reply}");
    reply["result"].clone()
}

/// The next `gpio.changed` event for `pin` within `within`, skipping others.
async fn changed(v: &mut Viewer, pin: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = v.next_event(left).await?;
        if ev["event"] == "gpio.changed" && ev["pin"] == pin {
            return Some(ev["value"].clone());
        }
    }
}

/// Polls a simulated line until it reads `want` (the agent acts on its
/// own threads), at most [`WAIT`].
async fn level(chip: &gpiosim::Chip, offset: u32, want: Level, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = chip.get_level(offset).expect("the simulated line reads");
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: line {offset} stays {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
async fn pins_from_a_config_file_drive_and_read_simulated_lines() {
    require_lab();
    sh("modprobe gpio-sim");
    let mut bank = gpiosim::Bank::new(8, "rtcam-lab");
    bank.name(RELAY, "GPIO17").name(DOOR, "GPIO27");
    let sim = gpiosim::builder()
        .with_name(gpiosim::unique_name("rtcam-lab", None))
        .with_bank(&bank)
        .live()
        .unwrap_or_else(|e| panic!("gpio-sim is usable in the lab: {e}"));
    let chip = &sim.chips()[0];
    let chip_name = chip
        .dev_path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a /dev/gpiochipN path")
        .to_string();
    let pins = format!(
        r#"
[[gpio.pins]]
name = "relay"
pin = "GPIO17"
mode = "output"
active_low = true
initial = false
failsafe = false

[[gpio.pins]]
name = "lamp"
pin = "{chip_name}:{LAMP}"
mode = "output"
initial = false
failsafe = false

[[gpio.pins]]
name = "door"
pin = "GPIO27"
mode = "input"
pull = "up"
debounce_ms = 200
"#
    );
    let cfg = TestConfig::new("lab-gpio")
        .with("gpio.backend", "cdev")
        .with_toml(&pins);
    let s = cfg.settings();
    let mut agent = AgentProcess::start(&cfg).await;
    assert!(
        agent
            .log()
            .text()
            .contains("GPIO ready backend=\"cdev\" pins=3"),
        "{}",
        agent.log().tail(20)
    );
    // Initial levels: the active-low relay's logical false is a high line.
    level(chip, RELAY, Level::High, "relay initial (active low)").await;
    level(chip, LAMP, Level::Low, "lamp initial").await;
    // The input's pull-up, asked for by rtcam, holds the line high.
    level(chip, DOOR, Level::High, "door pulled up by its bias").await;

    let a = viewer(&s, "gpio-a", false).await;
    let mut b = viewer(&s, "gpio-b", false).await;
    let door = ok(&a, json!({"cmd": "gpio.get", "pin": "door"})).await;
    assert_eq!(door["value"], true, "{door}");

    ok(
        &a,
        json!({"cmd": "gpio.set", "pin": "relay", "value": true}),
    )
    .await;
    level(chip, RELAY, Level::Low, "relay on (active low)").await;
    assert_eq!(changed(&mut b, "relay", WAIT).await, Some(json!(true)));
    ok(&a, json!({"cmd": "gpio.set", "pin": "lamp", "value": true})).await;
    level(chip, LAMP, Level::High, "lamp on").await;
    assert_eq!(changed(&mut b, "lamp", WAIT).await, Some(json!(true)));
    let lamp = ok(&b, json!({"cmd": "gpio.get", "pin": "lamp"})).await;
    assert_eq!(lamp["value"], true);

    // The simulator pulls the input low: both panels see it.
    chip.set_pull(DOOR, Level::Low).expect("pull down");
    assert_eq!(changed(&mut b, "door", WAIT).await, Some(json!(false)));
    let door = ok(&a, json!({"cmd": "gpio.get", "pin": "door"})).await;
    assert_eq!(door["value"], false);
    // A glitch far shorter than the 200 ms debounce is not an edge...
    chip.set_pull(DOOR, Level::High).expect("glitch up");
    chip.set_pull(DOOR, Level::Low).expect("glitch down");
    assert_eq!(
        changed(&mut b, "door", Duration::from_millis(800)).await,
        None,
        "a glitch under the debounce period reached the viewer"
    );
    // ... a lasting change is.
    chip.set_pull(DOOR, Level::High).expect("pull up");
    assert_eq!(changed(&mut b, "door", WAIT).await, Some(json!(true)));

    // The viewer that drove the outputs leaves: both go to their failsafe.
    a.bye().await;
    level(chip, RELAY, Level::High, "relay failsafe off (active low)").await;
    level(chip, LAMP, Level::Low, "lamp failsafe off").await;
    assert_eq!(changed(&mut b, "relay", WAIT).await, Some(json!(false)));

    // At shutdown too. The line is released when rtcam exits (gpio-sim then
    // shows its pull), so a watcher samples the line through the stop: it
    // must go from driven-on to the failsafe before the release.
    ok(
        &b,
        json!({"cmd": "gpio.set", "pin": "relay", "value": true}),
    )
    .await;
    level(chip, RELAY, Level::Low, "relay on again").await;
    chip.set_pull(RELAY, Level::Low)
        .expect("the released line reads low");
    let stop = Arc::new(AtomicBool::new(false));
    let value = format!(
        "/sys/devices/platform/{}/{}/sim_gpio{RELAY}/value",
        chip.dev_name, chip.chip_name
    );
    let seen = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = vec![Level::Low];
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&value).expect("the line's value reads");
                let l = if text.trim() == "1" {
                    Level::High
                } else {
                    Level::Low
                };
                if seen.last() != Some(&l) {
                    seen.push(l);
                }
            }
            seen
        })
    };
    b.close().await;
    let log = agent.log().clone();
    let status = agent.stop().await;
    stop.store(true, Ordering::Relaxed);
    let seen = seen.join().expect("the watcher ends");
    assert!(status.success(), "{}", log.tail(30));
    assert!(
        log.text().contains("failsafe applied pin=relay"),
        "{}",
        log.tail(30)
    );
    assert_eq!(
        seen,
        vec![Level::Low, Level::High, Level::Low],
        "relay: on (low), failsafe (high) at shutdown, released (the pull)"
    );
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
async fn an_input_edge_on_a_simulated_line_records_with_pre_roll() {
    require_lab();
    sh("modprobe gpio-sim");
    const PIR: u32 = 4;
    let mut bank = gpiosim::Bank::new(8, "rtcam-pir");
    bank.name(PIR, "GPIO4");
    let sim = gpiosim::builder()
        .with_name(gpiosim::unique_name("rtcam-pir", None))
        .with_bank(&bank)
        .live()
        .unwrap_or_else(|e| panic!("gpio-sim is usable in the lab: {e}"));
    let chip = &sim.chips()[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("rec");
    let cfg = TestConfig::new("lab-pir")
        .with("gpio.backend", "cdev")
        .with("video.width", 320)
        .with("video.height", 240)
        .with("video.fps", 15)
        .with("video.keyframe_interval_ms", 1000)
        .with("record.mode", "events")
        .with("record.dir", rec.display().to_string())
        .with("record.triggers", vec!["pir"])
        .with("record.pre_s", 2)
        .with("record.post_s", 2)
        .with("record.fragment_ms", 500)
        .with("record.min_free_mb", 0)
        .with_toml(
            "[[gpio.pins]]\nname = \"pir\"\npin = \"GPIO4\"\nmode = \"input\"\npull = \"down\"\n",
        );
    let s = cfg.settings();
    let agent = AgentProcess::start(&cfg).await;
    let mut v = viewer(&s, "pir-panel", false).await;
    // The camera runs for the pre-roll from the start: 3 s of frames.
    agent
        .wait_stats("3 s of frames", |st| st.frames >= 45)
        .await;
    let edge = unix_ms();
    chip.set_pull(PIR, Level::High).expect("the sensor fires");
    // One edge, two events (the panel's and the recorder's), in either
    // order: waiting for one must not throw the other away.
    let (mut value, mut started) = (None, None);
    let deadline = tokio::time::Instant::now() + WAIT;
    while value.is_none() || started.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(ev) = v.next_event(left).await else {
            panic!("gpio.changed {value:?} and record.started {started:?} of the edge");
        };
        match ev["event"].as_str() {
            Some("gpio.changed") if ev["pin"] == "pir" => value = Some(ev["value"].clone()),
            Some("record.started") => started = Some(ev),
            _ => {}
        }
    }
    assert_eq!(value, Some(json!(true)));
    let started = started.expect("record.started");
    assert!(started["segment"].is_string(), "{started}");
    chip.set_pull(PIR, Level::Low).expect("the sensor settles");
    common::event(&mut v, "record.stopped", WAIT)
        .await
        .expect("record.stopped after the post-roll");
    assert!(
        agent
            .log()
            .text()
            .contains("recording trigger source=gpio:pir"),
        "{}",
        agent.log().tail(20)
    );
    let list = ok(&v, json!({"cmd": "record.list"})).await;
    let recs = list["recordings"].as_array().expect("recordings");
    assert_eq!(recs.len(), 1, "{list}");
    let start = recs[0]["start_ms"].as_u64().expect("start_ms");
    // From a keyframe (1 s apart) at least 2 s before the edge.
    assert!(
        start + 2000 <= edge + 300,
        "pre-roll: segment {start}, edge {edge}"
    );
    // Pre-roll, the high time, and 2 s after the falling edge, at 15 fps.
    assert!(
        recs[0]["frames"].as_u64().expect("frames") >= 4 * 15,
        "{list}"
    );
    v.close().await;
    agent.shutdown().await;
}
