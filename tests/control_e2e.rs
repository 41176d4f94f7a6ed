//! DataChannel control end to end: the `rtcam` binary, started from a config
//! file that declares simulated GPIO pins, and headless viewers sending it
//! commands over WebRTC. What the pins do electrically is read from the
//! agent's own log (the simulator logs every change at DEBUG), their logical
//! values through the DataChannel. Runs inside a private network namespace
//! (see `.ci/test`).

mod common;

use common::agent::{AgentProcess, TestConfig, start};
use common::lines::LineLog;
use common::{WAIT, frames, viewer, viewer_options};
use rtcam::probe::Viewer;
use serde_json::{Value, json};
use std::time::Instant;

/// The simulator's electrical changes at DEBUG, everything else at INFO.
const SIM_LOG: &str = "info,rtcam::gpio::sim=debug";

/// An agent config with [`common::SIM_PINS`] on the simulator, logging electrical changes.
fn gpio_config(prefix: &str) -> TestConfig {
    TestConfig::new(prefix)
        .with("gpio.backend", "sim")
        .with_env("RTCAM_LOG", SIM_LOG)
        .with_toml(common::SIM_PINS)
}

async fn ok(v: &Viewer, req: Value) -> Value {
    let reply = v.command(req.clone(), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], true, "{req} -> {reply}");
    reply["result"].clone()
}

async fn err(v: &Viewer, req: Value) -> String {
    let reply = v.command(req.clone(), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], false, "{req} -> {reply}");
    reply["error"]["code"].as_str().expect("a code").to_string()
}

/// The next `gpio.changed` event for `pin`.
async fn changed(v: &mut Viewer, pin: &str) -> Value {
    loop {
        let ev = v.next_event(WAIT).await.expect("an event");
        if ev["event"] == "gpio.changed" && ev["pin"] == pin {
            return ev;
        }
    }
}

/// Whether `line` is the simulator saying `change` (e.g. `relay1: high`).
fn is_sim(line: &str, change: &str) -> bool {
    line.ends_with(&format!("simulated line {change}"))
}

/// Waits until a line logged after `mark` satisfies `pred`, and returns it.
async fn line_after(
    log: &LineLog,
    mark: usize,
    what: &str,
    pred: impl Fn(&str) -> bool + Clone + Send + 'static,
) -> String {
    let before = log.since(0)[..mark].iter().filter(|l| pred(l)).count();
    log.wait_count(what, before + 1, WAIT, pred.clone()).await;
    log.since(mark)
        .into_iter()
        .find(|l| pred(l))
        .expect("the line just counted")
}

/// Waits until the simulator logs `change` (`relay1: high`) after `mark`.
async fn electrical(agent: &AgentProcess, mark: usize, change: &str) -> String {
    let want = change.to_string();
    line_after(
        agent.log(),
        mark,
        &format!("the simulated line to go {change}"),
        move |l| is_sim(l, &want),
    )
    .await
}

/// The simulator's changes logged after `mark` for `pin`.
fn pin_lines_after(agent: &AgentProcess, mark: usize, pin: &str) -> Vec<String> {
    let prefix = format!("simulated line {pin}: ");
    agent
        .log()
        .since(mark)
        .into_iter()
        .filter(|l| l.contains(&prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_commands_round_trip_and_reach_the_pins() {
    let agent = start(&gpio_config("ctl-rt")).await;
    let s = agent.settings().clone();
    let mut v = viewer(&s, "ctl-rt", false).await;

    let list = ok(&v, json!({"cmd": "gpio.list"})).await;
    let names: Vec<&str> = list["pins"]
        .as_array()
        .expect("pins")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["relay1", "door", "dim", "pan"]);

    let mark = agent.log().len();
    assert_eq!(
        ok(
            &v,
            json!({"cmd": "gpio.set", "pin": "relay1", "value": true})
        )
        .await["value"],
        true
    );
    electrical(&agent, mark, "relay1: high").await;
    assert_eq!(
        ok(&v, json!({"cmd": "gpio.get", "pin": "relay1"})).await["value"],
        true
    );
    let mark = agent.log().len();
    assert_eq!(
        ok(&v, json!({"cmd": "gpio.toggle", "pin": "relay1"})).await["value"],
        false
    );
    electrical(&agent, mark, "relay1: low").await;

    // A pulse turns the output on, then back to what it was. First take the
    // events of the set and the toggle (they may still be on their way).
    assert_eq!(changed(&mut v, "relay1").await["value"], true, "set");
    assert_eq!(changed(&mut v, "relay1").await["value"], false, "toggle");
    let mark = agent.log().len();
    let r = ok(&v, json!({"cmd": "gpio.pulse", "pin": "relay1", "ms": 50})).await;
    assert_eq!(r["restores_to"], false);
    assert_eq!(changed(&mut v, "relay1").await["value"], true);
    assert_eq!(
        changed(&mut v, "relay1").await["value"],
        false,
        "restored after the pulse"
    );
    // Electrically: high, then low again, in that order.
    electrical(&agent, mark, "relay1: low").await;
    let relay: Vec<String> = pin_lines_after(&agent, mark, "relay1");
    assert!(
        relay.len() == 2 && is_sim(&relay[0], "relay1: high") && is_sim(&relay[1], "relay1: low"),
        "the pulse drove relay1 high then low: {relay:#?}"
    );

    let mark = agent.log().len();
    let r = ok(
        &v,
        json!({"cmd": "pwm.set", "pin": "dim", "duty": 0.25, "frequency_hz": 500}),
    )
    .await;
    assert_eq!(
        (r["value"].as_f64(), r["frequency_hz"].as_f64()),
        (Some(0.25), Some(500.0))
    );
    electrical(&agent, mark, "dim: pwm 500 Hz duty 0.25").await;
    let mark = agent.log().len();
    let r = ok(&v, json!({"cmd": "servo.set", "pin": "pan", "angle": 45})).await;
    assert_eq!(r["pulse_us"], 1250);
    line_after(agent.log(), mark, "a 1250 us servo pulse on pan", |l| {
        l.contains("simulated line pan: pulse 1250 us every ")
    })
    .await;
    let r = ok(
        &v,
        json!({"cmd": "servo.set", "pin": "pan", "pulse_us": 2000}),
    )
    .await;
    assert_eq!(r["value"], 180.0);

    // Errors carry their codes, and refused commands drive nothing.
    let mark = agent.log().len();
    assert_eq!(
        err(
            &v,
            json!({"cmd": "gpio.set", "pin": "relay9", "value": true})
        )
        .await,
        "unknown_pin"
    );
    assert_eq!(
        err(&v, json!({"cmd": "gpio.set", "pin": "door", "value": true})).await,
        "wrong_mode"
    );
    assert_eq!(
        err(&v, json!({"cmd": "pwm.set", "pin": "dim", "duty": 0.95})).await,
        "bad_params"
    );
    assert_eq!(
        err(
            &v,
            json!({"cmd": "gpio.pulse", "pin": "relay1", "ms": 999_999})
        )
        .await,
        "bad_params"
    );
    assert_eq!(
        err(&v, json!({"cmd": "gpio.blink", "pin": "relay1"})).await,
        "unknown_cmd"
    );
    // A later change, logged after anything the refused ones could have
    // driven (one log, in order), proves they drove nothing.
    ok(
        &v,
        json!({"cmd": "servo.set", "pin": "pan", "pulse_us": 1000}),
    )
    .await;
    electrical(&agent, mark, "pan: pulse 1000 us every 20000 us").await;
    let driven: Vec<String> = agent
        .log()
        .since(mark)
        .into_iter()
        .filter(|l| l.contains("simulated line ") && !l.contains("simulated line pan: "))
        .collect();
    assert!(driven.is_empty(), "refused commands drove: {driven:#?}");
    // (A write the hardware refuses, code `hardware`, needs a fault inside
    // the process: tests/faults_inprocess.rs.)

    // Camera controls of the test source.
    let controls = ok(&v, json!({"cmd": "camera.controls"})).await;
    assert!(
        controls["controls"]
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["name"] == "brightness")
    );
    assert_eq!(
        ok(
            &v,
            json!({"cmd": "camera.set", "control": "brightness", "value": 20})
        )
        .await["value"],
        20
    );
    assert_eq!(
        err(
            &v,
            json!({"cmd": "camera.set", "control": "brightness", "value": 99})
        )
        .await,
        "bad_params"
    );
    assert_eq!(
        err(
            &v,
            json!({"cmd": "camera.set", "control": "zoom", "value": 1})
        )
        .await,
        "bad_params"
    );
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_input_edges_reach_every_control_panel() {
    // No pins declared, simulator: the demo pin set, whose door input opens
    // and closes by itself (simulated inputs cannot be driven from outside).
    let cfg = TestConfig::new("ctl-sync")
        .with("gpio.backend", "sim")
        .with_env("RTCAM_LOG", SIM_LOG);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let mut a = viewer(&s, "ctl-sync-a", false).await;
    let pins = ok(&a, json!({"cmd": "gpio.list"})).await;
    assert!(
        pins["pins"]
            .as_array()
            .expect("pins")
            .iter()
            .any(|p| p["name"] == "door" && p["mode"] == "input"),
        "the demo has a door input: {pins}"
    );
    // b is answered but not yet connected: a change made now must still
    // reach b's panel once its channel opens.
    let mut b = Viewer::connect(&viewer_options(&s, "ctl-sync-b", false))
        .await
        .expect("b's offer is answered");
    ok(
        &a,
        json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
    )
    .await;
    let ev = changed(&mut b, "relay1").await;
    assert_eq!(ev["value"], true, "b sees a's change");
    assert!(ev["ts_ms"].as_u64().is_some_and(|t| t > 0));
    assert!(ev.get("id").is_none(), "events carry no id");
    // An input edge, as a wire makes it (the demo door, every 7 s).
    let edge = changed(&mut b, "door").await;
    let value = edge["value"].as_bool().expect("a level");
    assert!(edge["ts_ms"].as_u64().is_some_and(|t| t > 0), "{edge}");
    // a gets the very same edge (a may have seen earlier ones).
    loop {
        let seen = changed(&mut a, "door").await;
        if seen["ts_ms"] == edge["ts_ms"] {
            assert_eq!(
                seen["value"], value,
                "every panel gets the same input event"
            );
            break;
        }
        assert!(
            seen["ts_ms"].as_u64() < edge["ts_ms"].as_u64(),
            "a got a later door event {seen} before b's {edge}"
        );
    }
    a.bye().await;
    b.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failsafe_applies_when_the_controlling_viewer_vanishes() {
    let cfg = gpio_config("ctl-failsafe").with("webrtc.disconnected_timeout_ms", 1000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    // A panel that never drives relay1: it watches what happens to it.
    let mut observer = viewer(&s, "ctl-failsafe-obs", false).await;
    let controller = viewer(&s, "ctl-failsafe-a", false).await;
    let watcher = viewer(&s, "ctl-failsafe-b", false).await;
    let mark = agent.log().len();
    ok(
        &controller,
        json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
    )
    .await;
    electrical(&agent, mark, "relay1: high").await;
    assert_eq!(changed(&mut observer, "relay1").await["value"], true);

    // The watcher never touched relay1: its leaving changes nothing.
    watcher.bye().await;
    agent
        .wait_stats("the watcher's session to end", |st| {
            st.sessions == 2 && st.connected == 2
        })
        .await;
    // Its session's end (and any failsafe it caused) is behind us: the
    // logical value is still on...
    assert_eq!(
        ok(&observer, json!({"cmd": "gpio.get", "pin": "relay1"})).await["value"],
        true
    );
    // ...and electrically: a change logged now comes after anything the
    // watcher's end could have driven.
    let barrier = agent.log().len();
    ok(
        &observer,
        json!({"cmd": "servo.set", "pin": "pan", "angle": 0}),
    )
    .await;
    electrical(&agent, barrier, "pan: pulse 1000 us every 20000 us").await;
    let relay = pin_lines_after(&agent, mark, "relay1");
    assert_eq!(relay.len(), 1, "only the set drove relay1: {relay:#?}");

    // The controlling viewer disappears without a bye (ICE times out).
    let mark = agent.log().len();
    controller.close().await;
    let ev = changed(&mut observer, "relay1").await;
    assert_eq!(ev["value"], false, "relay1 back to its failsafe: {ev}");
    line_after(agent.log(), mark, "the failsafe to be logged", |l| {
        l.contains("failsafe applied") && l.contains("pin=relay1")
    })
    .await;
    electrical(&agent, mark, "relay1: low").await;
    assert_eq!(
        ok(&observer, json!({"cmd": "gpio.get", "pin": "relay1"})).await["value"],
        false
    );
    agent
        .wait_stats("the controller's session to end", |st| st.sessions == 1)
        .await;
    observer.bye().await;
    agent.shutdown().await;
}

/// Bytes the viewer received per decoded frame over the next `n` frames.
async fn bytes_per_frame(v: &mut Viewer, n: usize) -> f64 {
    let b0 = v.stats().await.bytes_received;
    let run = frames(v, n).await;
    let b1 = v.stats().await.bytes_received;
    assert!(run.in_order(), "frames arrive in order");
    (b1 - b0) as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitrate_change_shows_in_the_stream() {
    // No periodic keyframe inside the measured runs.
    let cfg = TestConfig::new("ctl-bitrate")
        .with("video.bitrate_kbps", 2000)
        .with("video.min_bitrate_kbps", 50)
        .with("video.keyframe_interval_ms", 60_000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let mut v = viewer(&s, "ctl-bitrate", true).await;
    // Past the first keyframe and the rate control's start.
    frames(&mut v, 30).await;
    v.drain_frames();
    let high = bytes_per_frame(&mut v, 90).await;
    let clamped = ok(&v, json!({"cmd": "video.bitrate", "kbps": 10})).await;
    assert_eq!(clamped["kbps"], 50, "clamped to video.min_bitrate_kbps");
    let r = ok(&v, json!({"cmd": "video.bitrate", "kbps": 100})).await;
    assert_eq!(r["kbps"], 100);
    ok(&v, json!({"cmd": "video.keyframe"})).await;
    // Let the rate control settle (and the keyframe pass), then measure.
    frames(&mut v, 60).await;
    v.drain_frames();
    let low = bytes_per_frame(&mut v, 90).await;
    eprintln!("received {high:.0} bytes/frame at 2000 kbit/s, {low:.0} at 100 kbit/s");
    assert!(
        low < high * 0.5,
        "frames got smaller: {high:.0} -> {low:.0} bytes per frame"
    );
    let status = ok(&v, json!({"cmd": "video.status"})).await;
    assert_eq!(status["bitrate_kbps"], 100, "{status}");
    // The test pattern's I420 goes to OpenH264 as it is: no copy.
    assert_eq!(status["encoder"], "openh264", "{status}");
    assert_eq!(status["frame_copies"], 0, "{status}");
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_commands_gets_errors_and_never_stalls_video() {
    let agent = start(&gpio_config("ctl-flood")).await;
    let s = agent.settings().clone();
    let mut watcher = viewer(&s, "ctl-flood-video", true).await;
    let mut attacker = viewer(&s, "ctl-flood-bad", false).await;
    attacker.wait_channel(WAIT).await.expect("open");
    // The watcher's frames from here on, across the whole flood.
    watcher.drain_frames();
    let first = watcher.next_frame(WAIT).await.expect("frames");
    let bad = [
        "not json",
        "[]",
        r#"{"id":1}"#,
        r#"{"id":2,"cmd":"gpio.fly"}"#,
        r#"{"id":3,"cmd":"gpio.set","pin":"nope","value":true}"#,
        r#"{"id":4,"cmd":"gpio.set","pin":"door","value":true}"#,
        r#"{"id":5,"cmd":"pwm.set","pin":"dim","duty":"max"}"#,
    ];
    let sent = 700;
    for i in 0..sent {
        attacker.send_raw(bad[i % bad.len()]).await.expect("sent");
    }
    let big = format!(
        r#"{{"id":9,"cmd":"ping","pad":"{}"}}"#,
        "x".repeat(16 * 1024)
    );
    attacker.send_raw(&big).await.expect("sent");
    // Every message gets an error reply; count them by code.
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let mut replies = 0;
    while replies < sent + 1 {
        let Some(r) = attacker.next_event(WAIT).await else {
            break;
        };
        replies += 1;
        *codes
            .entry(r["error"]["code"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let flood_over = Instant::now();
    eprintln!("flood replies by code: {codes:?}");
    assert_eq!(replies, sent + 1, "one reply per message");
    assert!(
        codes.contains_key("rate_limited"),
        "the rate limit kicked in"
    );
    assert!(codes.contains_key("bad_json"));
    assert!(!codes.contains_key("?"), "every reply has a code");

    // The other viewer's video kept flowing throughout: every frame from
    // before the flood to one decoded after it, and at least 30, counted
    // (not a frame rate: under emulation (.ci/cross) the stream is slower).
    let mut seqs: Vec<u32> = first.seq.into_iter().collect();
    loop {
        let f = watcher
            .next_frame(WAIT)
            .await
            .expect("the watcher keeps decoding");
        seqs.extend(f.seq);
        if f.decoded_at > flood_over && seqs.len() >= 30 {
            break;
        }
    }
    let run = common::Run {
        first_keyframe: false,
        seqs,
    };
    let span = run.seqs.len() as u32 + run.missing();
    eprintln!(
        "watcher across the flood: {} of {span} frames, longest gap {}",
        run.seqs.len(),
        run.longest_gap()
    );
    assert!(run.in_order(), "frames arrive in order");
    assert!(
        run.longest_gap() <= 15,
        "video stalled: {} frames in a row lost during the flood",
        run.longest_gap()
    );
    assert!(
        run.missing() * 10 <= span,
        "{} of {span} frames lost during the flood",
        run.missing()
    );
    watcher.bye().await;
    attacker.bye().await;
    agent.shutdown().await;
}
