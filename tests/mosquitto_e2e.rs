//! Against a real Mosquitto broker started by the test, the `rtcam` binary
//! pointed at it by its config file (`mqtt.url`): the signaling protocol's
//! error codes, MQTT 3.1.1 (no "no local": the agent drops its own echoes),
//! a broker killed and restarted mid-stream while a viewer keeps decoding,
//! and GPIO over MQTT with Home Assistant discovery. Runs inside a private
//! network namespace.

mod common;

use bytes::Bytes;
use common::agent::{AgentProcess, TestConfig, start};
use common::mosquitto::Mosquitto;
use common::{
    WAIT, frames, free_port, malformed_messages_get_codes, no_error_before_barrier, viewer,
};
use rtcam::signaling::mqtt::{Link, LinkEvent};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc;

/// A test agent whose broker is the Mosquitto on `port`, speaking `protocol`.
fn through_mosquitto(prefix: &str, port: u16, protocol: &str) -> TestConfig {
    TestConfig::new(prefix)
        .with("mqtt.url", format!("mqtt://127.0.0.1:{port}"))
        .with("mqtt.protocol", protocol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_message_gets_its_error_code_through_mosquitto() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let agent = start(&through_mosquitto("mosq-malformed", port, "5")).await;
    let base = agent.stats().await;
    malformed_messages_get_codes(agent.settings()).await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_survives_a_broker_restart_and_new_viewers_join_after() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let agent = start(&through_mosquitto("mosq-restart", port, "5")).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    let mut v1 = viewer(&s, "restart-1", true).await;
    let run = frames(&mut v1, 15).await;
    assert!(run.first_keyframe);

    broker.kill();
    // The agent notices the broker is gone...
    agent.wait_mqtt(false).await;
    // ...and the connected viewer keeps decoding throughout: 90 frames
    // (3 s of the stream), counted, not timed.
    v1.drain_frames();
    let run = frames(&mut v1, 90).await;
    assert!(run.in_order(), "in order without a broker");
    assert!(
        run.missing() <= 9,
        "{} of {} frames lost without a broker",
        run.missing(),
        run.missing() + 90
    );
    assert!(
        agent.stats().await.connected == 1,
        "the session outlives the broker"
    );

    let broker = Mosquitto::start(port);
    // Connected means subscribed again: offers from now on are heard.
    agent.wait_mqtt(true).await;
    let mut v2 = viewer(&s, "restart-2", true).await;
    let run = frames(&mut v2, 30).await;
    assert!(
        run.first_keyframe && run.in_order(),
        "a new viewer joins after the restart"
    );
    v1.drain_frames();
    let run = frames(&mut v1, 30).await;
    assert!(run.in_order(), "the first viewer is still decoding");
    v1.bye().await;
    v2.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_3_1_1_agent_drops_its_own_echoes_through_mosquitto() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let agent = start(&through_mosquitto("mosq-311", port, "3.1.1")).await;
    let s = agent.settings().clone();
    assert_eq!(agent.stats().await.echoes_dropped, 0, "nothing echoed yet");
    let mut v = viewer(&s, "mosq-311-viewer", true).await;
    let run = frames(&mut v, 30).await;
    assert!(run.first_keyframe && run.in_order());
    // 3.1.1 has no "no local": Mosquitto sent the agent its own candidates
    // back, and the filter dropped them...
    let st = agent
        .wait_stats("the agent's echoes to be dropped", |st| {
            st.echoes_dropped > 0
        })
        .await;
    eprintln!("echoes dropped: {}", st.echoes_dropped);
    // ...rather than taking them for the viewer's (which would have earned
    // the viewer an error, or broken its session).
    no_error_before_barrier(&s, &mut v, "mosq-311-viewer").await;
    v.bye().await;
    agent.shutdown().await;
    broker.kill();
}

/// An MQTT client subscribed to `filters`, collecting what it receives.
struct Automation {
    publisher: rtcam::signaling::mqtt::LinkPublisher,
    rx: mpsc::UnboundedReceiver<(String, Bytes)>,
    task: tokio::task::JoinHandle<()>,
}

impl Automation {
    fn connect(s: &rtcam::config::Settings, filters: Vec<String>) -> Automation {
        let mut link = Link::new(&common::mqtt_for(s, "automation"), filters).expect("link");
        let publisher = link.publisher();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match link.next().await {
                    Ok(LinkEvent::Message(t, m)) => {
                        let _ = tx.send((t, m));
                    }
                    Ok(LinkEvent::Connected) | Err(_) => {}
                }
            }
        });
        Automation {
            publisher,
            rx,
            task,
        }
    }

    async fn next(&mut self, what: &str) -> (String, Bytes) {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("the link runs")
    }

    /// Takes messages until `topic` carries `payload`; returns those before it.
    async fn until(&mut self, topic: &str, payload: &str) -> Vec<(String, Bytes)> {
        let mut before = Vec::new();
        loop {
            let (t, m) = self.next(&format!("{payload} on {topic}")).await;
            if t == topic && &m[..] == payload.as_bytes() {
                return before;
            }
            before.push((t, m));
        }
    }

    fn publish(&self, topic: &str, payload: &'static str) {
        assert!(self.publisher.publish(topic, payload), "published {topic}");
    }
}

/// Waits until the simulator logs `change` (`relay1: high`) after `mark`.
async fn electrical(agent: &AgentProcess, mark: usize, change: &str) {
    let want = format!("simulated line {change}");
    let pred = move |l: &str| l.ends_with(&want);
    let before = agent.log().since(0)[..mark]
        .iter()
        .filter(|l| pred(l))
        .count();
    agent
        .log()
        .wait_count(
            &format!("the simulated line to go {change}"),
            before + 1,
            WAIT,
            pred,
        )
        .await;
}

/// A pin's logical value, read over the DataChannel.
async fn value(v: &rtcam::probe::Viewer, pin: &str) -> Value {
    let reply = v
        .command(json!({"cmd": "gpio.get", "pin": pin}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    reply["result"]["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_over_mqtt_with_home_assistant_discovery() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let cfg = through_mosquitto("mosq-gpio", port, "5")
        .with("gpio.backend", "sim")
        .with("gpio.mqtt", true)
        .with_env("RTCAM_LOG", "info,rtcam::gpio::sim=debug")
        .with_toml(
            r#"
[[gpio.pins]]
name = "relay1"
pin = 17
mode = "output"
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
max_duty = 0.9

[[gpio.pins]]
name = "pan"
pin = 12
mode = "servo"
"#,
        );
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let p = s.mqtt.topic_prefix.clone();
    let state = |pin: &str| format!("{p}/gpio/{pin}/state");
    let set = |pin: &str| format!("{p}/gpio/{pin}/set");
    let mut auto = Automation::connect(
        &s,
        vec![format!("{p}/gpio/+/state"), "homeassistant/#".into()],
    );
    // Retained discovery and state arrive on subscribing.
    let mut discovery = BTreeMap::new();
    let mut states = BTreeMap::new();
    while discovery.len() < 4 || states.len() < 4 {
        let (t, m) = auto.next("retained discovery and state").await;
        if t.starts_with("homeassistant/") {
            let doc: Value = serde_json::from_slice(&m).expect("discovery payloads are JSON");
            discovery.insert(t, doc);
        } else if t.ends_with("/state") {
            states.insert(t, String::from_utf8_lossy(&m).into_owned());
        }
    }
    let ids: BTreeSet<String> = discovery
        .values()
        .map(|d| d["unique_id"].as_str().expect("unique_id").to_string())
        .collect();
    assert_eq!(ids.len(), 4, "unique ids: {ids:?}");
    assert!(
        discovery
            .keys()
            .any(|t| t.starts_with("homeassistant/switch/") && t.ends_with("/relay1/config"))
    );
    assert!(
        discovery
            .keys()
            .any(|t| t.starts_with("homeassistant/binary_sensor/") && t.ends_with("/door/config"))
    );
    assert_eq!(
        discovery
            .keys()
            .filter(|t| t.starts_with("homeassistant/number/"))
            .count(),
        2
    );
    for d in discovery.values() {
        assert_eq!(d["availability_topic"], format!("{p}/status"));
    }
    assert_eq!(states[&state("relay1")], "OFF");
    assert_eq!(states[&state("door")], "ON", "pulled up");

    // A command drives the pin and the state follows.
    let mark = agent.log().len();
    auto.publish(&set("relay1"), "ON");
    auto.until(&state("relay1"), "ON").await;
    electrical(&agent, mark, "relay1: high").await;
    auto.publish(&set("pan"), "30");
    auto.until(&state("pan"), "30.0").await;

    // Bad commands change nothing: each would move its pin away from what
    // it is now (relay1 ON, door ON, pan 30) if it were taken.
    let panel = viewer(&s, "mosq-gpio-panel", false).await;
    let mark = agent.log().len();
    auto.publish(&set("relay1"), "MAYBE");
    auto.publish(&set("door"), "OFF");
    auto.publish(&set("pan"), "999");
    auto.publish(&set("relay9"), "ON");
    // The agent says so for each, in its log...
    let rejected = |l: &str| {
        l.contains("GPIO command over MQTT rejected") || l.contains("GPIO command over MQTT failed")
    };
    let before = agent.log().since(0)[..mark]
        .iter()
        .filter(|l| rejected(l))
        .count();
    agent
        .log()
        .wait_count(
            "the four bad commands to be refused",
            before + 4,
            WAIT,
            rejected,
        )
        .await;
    // ...and a good command sent after them is applied after them.
    auto.publish(&set("dim"), "0.5");
    let between = auto.until(&state("dim"), "0.5").await;
    assert!(
        between.is_empty(),
        "bad commands published state: {between:?}"
    );
    assert_eq!(value(&panel, "relay1").await, true, "relay1 still on");
    assert_eq!(value(&panel, "door").await, true, "door still high");
    assert_eq!(value(&panel, "pan").await, 30.0, "pan still at 30");
    // Electrically: nothing but dim changed (its line comes after anything
    // the bad commands could have driven: one log, in order).
    electrical(&agent, mark, "dim: pwm 1000 Hz duty 0.5").await;
    let driven: Vec<String> = agent
        .log()
        .since(mark)
        .into_iter()
        .filter(|l| l.contains("simulated line ") && !l.contains("simulated line dim: "))
        .collect();
    assert!(driven.is_empty(), "bad commands drove: {driven:#?}");
    panel.bye().await;
    auto.task.abort();
    agent.shutdown().await;
    broker.kill();
}
