//! DataChannel control end to end: a headless viewer sends commands over
//! WebRTC to an agent with simulated GPIO. Runs inside a private network
//! namespace (see `.ci/test`).

mod common;

use common::{WAIT, gpio_settings, start, viewer, viewer_options, watch_from_now};
use serde_json::{Value, json};
use std::time::Duration;

async fn ok(v: &rtcam::probe::Viewer, req: Value) -> Value {
    let reply = v.command(req.clone(), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], true, "{req} -> {reply}");
    reply["result"].clone()
}

async fn err(v: &rtcam::probe::Viewer, req: Value) -> String {
    let reply = v.command(req.clone(), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], false, "{req} -> {reply}");
    reply["error"]["code"].as_str().expect("a code").to_string()
}

/// The next `gpio.changed` event for `pin`.
async fn changed(v: &mut rtcam::probe::Viewer, pin: &str) -> Value {
    loop {
        let ev = v.next_event(WAIT).await.expect("an event");
        if ev["event"] == "gpio.changed" && ev["pin"] == pin {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_commands_round_trip_and_reach_the_pins() {
    let s = gpio_settings("ctl-rt");
    let agent = start(s.clone()).await;
    let sim = agent
        .gpio()
        .and_then(|g| g.simulator())
        .expect("sim backend")
        .clone();
    let v = viewer(&s, "ctl-rt", false).await;

    let list = ok(&v, json!({"cmd": "gpio.list"})).await;
    let names: Vec<&str> = list["pins"]
        .as_array()
        .expect("pins")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["relay1", "door", "dim", "pan"]);

    assert_eq!(
        ok(
            &v,
            json!({"cmd": "gpio.set", "pin": "relay1", "value": true})
        )
        .await["value"],
        true
    );
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(true));
    assert_eq!(
        ok(&v, json!({"cmd": "gpio.get", "pin": "relay1"})).await["value"],
        true
    );
    assert_eq!(
        ok(&v, json!({"cmd": "gpio.toggle", "pin": "relay1"})).await["value"],
        false
    );
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(false));

    // A pulse turns the output on, then back to what it was. First take the
    // events of the set and the toggle (they may still be on their way).
    let mut v = v;
    assert_eq!(changed(&mut v, "relay1").await["value"], true, "set");
    assert_eq!(changed(&mut v, "relay1").await["value"], false, "toggle");
    let r = ok(&v, json!({"cmd": "gpio.pulse", "pin": "relay1", "ms": 50})).await;
    assert_eq!(r["restores_to"], false);
    assert_eq!(changed(&mut v, "relay1").await["value"], true);
    assert_eq!(
        changed(&mut v, "relay1").await["value"],
        false,
        "restored after the pulse"
    );
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(false));

    let r = ok(
        &v,
        json!({"cmd": "pwm.set", "pin": "dim", "duty": 0.25, "frequency_hz": 500}),
    )
    .await;
    assert_eq!(
        (r["value"].as_f64(), r["frequency_hz"].as_f64()),
        (Some(0.25), Some(500.0))
    );
    assert_eq!(sim.pin("dim").and_then(|p| p.pwm), Some((500.0, 0.25)));
    let r = ok(&v, json!({"cmd": "servo.set", "pin": "pan", "angle": 45})).await;
    assert_eq!(r["pulse_us"], 1250);
    assert_eq!(
        sim.pin("pan")
            .and_then(|p| p.pulse)
            .map(|(_, w)| w.as_micros()),
        Some(1250)
    );
    let r = ok(
        &v,
        json!({"cmd": "servo.set", "pin": "pan", "pulse_us": 2000}),
    )
    .await;
    assert_eq!(r["value"], 180.0);

    // Errors carry their codes.
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
    sim.fail_writes(true);
    assert_eq!(
        err(
            &v,
            json!({"cmd": "gpio.set", "pin": "relay1", "value": true})
        )
        .await,
        "hardware"
    );
    sim.fail_writes(false);

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
    let s = gpio_settings("ctl-sync");
    let agent = start(s.clone()).await;
    let sim = agent
        .gpio()
        .and_then(|g| g.simulator())
        .expect("sim backend")
        .clone();
    let a = viewer(&s, "ctl-sync-a", false).await;
    // b is answered but not yet connected: a change made now must still
    // reach b's panel once its channel opens.
    let mut b = rtcam::probe::Viewer::connect(&viewer_options(&s, "ctl-sync-b", false))
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
    // An input edge, as a wire would make it.
    assert!(sim.drive("door", false));
    assert_eq!(changed(&mut b, "door").await["value"], false);
    let mut a = a;
    assert_eq!(
        changed(&mut a, "door").await["value"],
        false,
        "every panel gets input events"
    );
    a.bye().await;
    b.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failsafe_applies_when_the_controlling_viewer_vanishes() {
    let mut s = gpio_settings("ctl-failsafe");
    s.webrtc.disconnected_timeout = Duration::from_secs(1);
    let agent = start(s.clone()).await;
    let sim = agent
        .gpio()
        .and_then(|g| g.simulator())
        .expect("sim backend")
        .clone();
    let gpio = agent.gpio().expect("gpio").clone();
    let controller = viewer(&s, "ctl-failsafe-a", false).await;
    let watcher = viewer(&s, "ctl-failsafe-b", false).await;
    ok(
        &controller,
        json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
    )
    .await;
    let mut events = gpio.subscribe();
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(true));
    // The watcher never touched relay1: its leaving changes nothing.
    watcher.bye().await;
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 1 && c.tasks == 1)
            .await
    );
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(true));
    // The controlling viewer disappears without a bye (ICE times out).
    controller.close().await;
    let ev = loop {
        let e = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("failsafe in time")
            .expect("open");
        if e.pin == "relay1" {
            break e;
        }
    };
    assert_eq!(ev.value, rtcam::gpio::PinValue::Level(false));
    assert_eq!(
        sim.pin("relay1").map(|p| p.high),
        Some(false),
        "relay1 back to its failsafe"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitrate_change_shows_in_the_stream() {
    let mut s = gpio_settings("ctl-bitrate");
    s.video.bitrate_kbps = 2000;
    s.video.min_bitrate_kbps = 50;
    let agent = start(s.clone()).await;
    let mut v = viewer(&s, "ctl-bitrate", true).await;
    let rate = |bytes: u64, secs: f64| bytes as f64 * 8.0 / 1000.0 / secs;
    watch_from_now(&mut v, Duration::from_secs(1)).await;
    let b0 = v.stats().await.bytes_received;
    watch_from_now(&mut v, Duration::from_secs(3)).await;
    let high = rate(v.stats().await.bytes_received - b0, 3.0);
    let clamped = ok(&v, json!({"cmd": "video.bitrate", "kbps": 10})).await;
    assert_eq!(clamped["kbps"], 50, "clamped to video.min_bitrate_kbps");
    let r = ok(&v, json!({"cmd": "video.bitrate", "kbps": 100})).await;
    assert_eq!(r["kbps"], 100);
    ok(&v, json!({"cmd": "video.keyframe"})).await;
    // Let the rate control settle, then measure.
    watch_from_now(&mut v, Duration::from_secs(2)).await;
    let b1 = v.stats().await.bytes_received;
    watch_from_now(&mut v, Duration::from_secs(3)).await;
    let low = rate(v.stats().await.bytes_received - b1, 3.0);
    eprintln!("measured {high:.0} kbit/s at 2000, {low:.0} kbit/s at 100");
    assert!(
        low < high * 0.5,
        "the stream slowed down: {high:.0} -> {low:.0} kbit/s"
    );
    assert_eq!(
        ok(&v, json!({"cmd": "video.status"})).await["bitrate_kbps"],
        100
    );
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_commands_gets_errors_and_never_stalls_video() {
    let s = gpio_settings("ctl-flood");
    let agent = start(s.clone()).await;
    let mut watcher = viewer(&s, "ctl-flood-video", true).await;
    let mut attacker = viewer(&s, "ctl-flood-bad", false).await;
    attacker.wait_channel(WAIT).await.expect("open");
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
        let Some(r) = attacker.next_event(WAIT).await.or(None) else {
            break;
        };
        replies += 1;
        *codes
            .entry(r["error"]["code"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    eprintln!("flood replies by code: {codes:?}");
    assert_eq!(replies, sent + 1, "one reply per message");
    assert!(
        codes.contains_key("rate_limited"),
        "the rate limit kicked in"
    );
    assert!(codes.contains_key("bad_json"));
    assert!(!codes.contains_key("?"), "every reply has a code");
    // The other viewer's video kept flowing. (Not a frame rate: under
    // emulation (.ci/cross) the whole stream runs slower.)
    let (n, _, _) = watch_from_now(&mut watcher, Duration::from_secs(1)).await;
    assert!(n > 0, "video kept flowing ({n} frames in 1 s)");
    watcher.bye().await;
    attacker.bye().await;
    agent.shutdown().await;
}
