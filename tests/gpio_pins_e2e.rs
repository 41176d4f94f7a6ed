//! Pins declared in a config file, end to end through the `rtcam` binary:
//! one pin of each mode (an active-low output with a failsafe, a pulled-up
//! debounced input, PWM, a servo) on the simulated backend, driven over the
//! DataChannel and over MQTT (`P/gpio/{name}/set`), seen by a second
//! viewer (`gpio.changed`), in `P/info` and the MQTT state topics, announced
//! to Home Assistant, and put to their failsafes when the driving viewer
//! leaves and at shutdown. Electrical levels are read from the simulated
//! backend's DEBUG log. Runs inside a private network namespace.

mod common;

use common::agent::{AgentProcess, TestConfig};
use common::{WAIT, Watch, viewer};
use rtcam::probe::Viewer;
use serde_json::{Value, json};

const PINS: &str = r#"
[[gpio.pins]]
name = "relay1"
pin = 17
mode = "output"
active_low = true
initial = false
failsafe = false

[[gpio.pins]]
name = "door"
pin = "GPIO27"
mode = "input"
pull = "up"
debounce_ms = 30

[[gpio.pins]]
name = "dim"
pin = 18
mode = "pwm"
frequency_hz = 500
max_duty = 0.8
failsafe = 0.0

[[gpio.pins]]
name = "pan"
pin = 12
mode = "servo"
min_us = 1000
max_us = 2000
max_angle = 180
initial = 90
failsafe = 90
"#;

fn config() -> TestConfig {
    TestConfig::new("pins")
        .with("gpio.backend", "sim")
        .with("gpio.mqtt", true)
        .with("gpio.ha_prefix", "ha-test")
        .with_env("RTCAM_LOG", "info,rtcam::gpio::sim=debug")
        .with_toml(PINS)
}

async fn ok(v: &Viewer, req: Value) -> Value {
    let reply = v.command(req.clone(), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], true, "{req} -> {reply}");
    reply["result"].clone()
}

/// The next `gpio.changed` event for `pin`, skipping others.
async fn changed(v: &mut Viewer, pin: &str) -> Value {
    loop {
        let ev = v.next_event(WAIT).await.expect("a gpio.changed event");
        if ev["event"] == "gpio.changed" && ev["pin"] == pin {
            return ev["value"].clone();
        }
    }
}

/// Waits for the simulated backend to log `line` (e.g. `relay1: high`)
/// after the log mark `from`.
async fn level(agent: &AgentProcess, from: usize, line: &str) {
    let want = format!("simulated line {line}");
    agent
        .log()
        .wait_line_after(&format!("`{want}`"), from, WAIT, move |l| {
            l.ends_with(&want)
        })
        .await;
}

/// The `P/info` document's pin values.
fn info_values(info: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(info).expect("P/info is JSON");
    let mut out = serde_json::Map::new();
    for p in v["pins"].as_array().expect("pins") {
        out.insert(
            p["name"].as_str().expect("a name").into(),
            p["value"].clone(),
        );
    }
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_from_a_config_file_are_driven_seen_and_put_to_their_failsafes() {
    let cfg = config();
    let s = cfg.settings();
    let p = s.mqtt.topic_prefix.clone();
    let agent = AgentProcess::start(&cfg).await;
    // The broker is the agent's own: what it published so far is retained.
    let mut ha = Watch::start(&s, "ha-watch", "ha-test/#").await;
    let mut states = Watch::start(&s, "state-watch", &format!("{p}/gpio/+/state")).await;
    let mut info = Watch::start(&s, "info-watch", &format!("{p}/info")).await;
    assert!(
        agent
            .log()
            .text()
            .contains("GPIO ready backend=\"sim\" pins=4")
    );
    // Active low: the relay's logical false is a high line.
    level(&agent, 0, "relay1: high").await;
    level(&agent, 0, "pan: pulse 1500 us every 20000 us").await;

    // Home Assistant discovery, one document per pin and one for the
    // snapshot camera, ids with one prefix.
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 5 {
        let (topic, doc) = ha.next().await.expect("a discovery document per pin");
        let doc: Value = serde_json::from_slice(&doc).expect("discovery is JSON");
        seen.insert(topic, doc);
    }
    let node = "rtcam_agent_pins";
    for (component, pin) in [
        ("switch", "relay1"),
        ("binary_sensor", "door"),
        ("number", "dim"),
        ("number", "pan"),
    ] {
        let topic = format!("ha-test/{component}/{node}/{pin}/config");
        let doc = seen
            .get(&topic)
            .unwrap_or_else(|| panic!("{topic} missing from {:?}", seen.keys()));
        assert_eq!(doc["unique_id"], format!("{node}_{pin}"));
        assert_eq!(doc["state_topic"], format!("{p}/gpio/{pin}/state"));
        assert_eq!(doc["availability_topic"], format!("{p}/status"));
        assert_eq!(doc["device"]["identifiers"][0], node);
    }
    assert!(
        seen[&format!("ha-test/binary_sensor/{node}/door/config")]
            .get("command_topic")
            .is_none()
    );
    let camera = &seen[&format!("ha-test/camera/{node}/snapshot/config")];
    assert_eq!(camera["topic"], format!("{p}/snapshot"));
    assert_eq!(
        camera["device"]["identifiers"][0], node,
        "one device with the pins"
    );

    // Two panels; the first drives, the second follows.
    let a = viewer(&s, "pins-a", false).await;
    let mut b = viewer(&s, "pins-b", false).await;
    let list = ok(&a, json!({"cmd": "gpio.list"})).await;
    let pins = list["pins"].as_array().expect("pins");
    assert_eq!(pins.len(), 4);
    let door = ok(&a, json!({"cmd": "gpio.get", "pin": "door"})).await;
    assert_eq!(
        door["value"], true,
        "the pull-up holds the input high: {door}"
    );
    assert_eq!(door["mode"], "input");

    let mark = agent.log().len();
    let set = ok(
        &a,
        json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
    )
    .await;
    assert_eq!(set["value"], true);
    assert_eq!(changed(&mut b, "relay1").await, true);
    level(&agent, mark, "relay1: low").await;
    states
        .wait_for("relay1 ON", &format!("{p}/gpio/relay1/state"), |v| {
            v == b"ON"
        })
        .await;
    info.wait_for("P/info with relay1 on", &format!("{p}/info"), |v| {
        info_values(v)["relay1"] == true
    })
    .await;

    // Over MQTT: a duty for the dimmer, an angle for the servo.
    let mark = agent.log().len();
    ha.publish(&format!("{p}/gpio/dim/set"), "0.5").await;
    assert_eq!(changed(&mut b, "dim").await, 0.5);
    level(&agent, mark, "dim: pwm 500 Hz duty 0.5").await;
    ha.publish(&format!("{p}/gpio/pan/set"), "45").await;
    assert_eq!(changed(&mut b, "pan").await, 45.0);
    level(&agent, mark, "pan: pulse 1250 us every 20000 us").await;
    states
        .wait_for("dim 0.5", &format!("{p}/gpio/dim/state"), |v| v == b"0.5")
        .await;
    info.wait_for(
        "P/info with the new duty and angle",
        &format!("{p}/info"),
        |v| {
            let values = info_values(v);
            values["dim"] == 0.5 && values["pan"] == 45.0
        },
    )
    .await;
    // A duty over the pin's max_duty is refused, naming the bound.
    let over = a
        .command(json!({"cmd": "pwm.set", "pin": "dim", "duty": 0.9}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(over["error"]["code"], "bad_params", "{over}");

    // The viewer that set relay1 leaves: relay1 goes to its failsafe.
    let mark = agent.log().len();
    a.bye().await;
    assert_eq!(changed(&mut b, "relay1").await, false);
    level(&agent, mark, "relay1: high").await;
    states
        .wait_for("relay1 OFF", &format!("{p}/gpio/relay1/state"), |v| {
            v == b"OFF"
        })
        .await;

    // At shutdown every pin with a failsafe goes to it, whoever set it.
    ok(
        &b,
        json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
    )
    .await;
    ok(&b, json!({"cmd": "servo.set", "pin": "pan", "angle": 10})).await;
    let mark = agent.log().len();
    let log = agent.log().clone();
    b.close().await;
    agent.shutdown().await;
    let after: Vec<String> = log.since(mark);
    for want in [
        "simulated line relay1: high",
        "simulated line dim: pwm 500 Hz duty 0",
        "simulated line pan: pulse 1500 us every 20000 us",
    ] {
        assert!(
            after.iter().any(|l| l.ends_with(want)),
            "{want} after the stop: {after:#?}"
        );
    }
}
