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
    SIM_PINS, TWO_OUTPUTS, WAIT, Watch, frames, free_port, malformed_messages_get_codes,
    no_error_before_barrier, viewer,
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
        .with_toml(SIM_PINS);
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
    // Four pins and the snapshot camera.
    while discovery.len() < 5 || states.len() < 4 {
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
    assert_eq!(ids.len(), 5, "unique ids: {ids:?}");
    assert!(
        discovery
            .keys()
            .any(|t| t.starts_with("homeassistant/camera/") && t.ends_with("/snapshot/config"))
    );
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

/// The Mosquitto setup `docs/SECURITY.md` documents ("Locking the broker
/// down"), as written there: its `rtcam.conf` (with the test's own listener
/// instead of the TLS ones, and the files in `dir`) and its ACL file (with
/// the test's prefixes and account names), plus a password file holding
/// `accounts`.
struct Documented {
    broker: Mosquitto,
    port: u16,
}

/// The topic of a PUBLISH packet's body.
fn publish_topic(body: &[u8]) -> String {
    let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    String::from_utf8_lossy(&body[2..2 + len]).into_owned()
}

/// One fenced block of `docs/SECURITY.md`: the first after the line
/// holding `marker`.
fn documented_block(marker: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SECURITY.md"))
        .expect("docs/SECURITY.md is readable");
    let after = doc
        .split_once(marker)
        .unwrap_or_else(|| panic!("docs/SECURITY.md mentions {marker}"))
        .1;
    let block = after
        .split_once("```conf\n")
        .expect("a conf block follows")
        .1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_string()
}

impl Documented {
    fn start(prefix: &str, ha: &str, agent: &str, accounts: &[(&str, &str)]) -> Documented {
        let dir = tempfile::tempdir().expect("temp dir");
        let passwd = dir.path().join("rtcam.passwd");
        let acl = dir.path().join("rtcam.acl");
        for (i, (user, password)) in accounts.iter().enumerate() {
            let mut c = std::process::Command::new("mosquitto_passwd");
            if i == 0 {
                c.arg("-c");
            }
            let out = c
                .arg("-b")
                .arg(&passwd)
                .args([user, password])
                .output()
                .expect("mosquitto_passwd runs (it comes with Mosquitto)");
            assert!(out.status.success(), "mosquitto_passwd: {out:?}");
        }
        let rules = documented_block("`/etc/mosquitto/rtcam.acl` (prefix")
            .replace("rtcam/garage", prefix)
            .replace("user rtcam-garage", &format!("user {agent}"))
            .replace("homeassistant/#", &format!("{ha}/#"));
        std::fs::write(&acl, rules).expect("the ACL file is written");
        let port = free_port();
        let mut conf: String = documented_block("`/etc/mosquitto/conf.d/rtcam.conf`")
            .lines()
            .filter(|l| {
                !["listener", "certfile", "keyfile", "protocol"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(|l| {
                l.replace("/etc/mosquitto/rtcam.passwd", &passwd.display().to_string())
                    .replace("/etc/mosquitto/rtcam.acl", &acl.display().to_string())
                    + "\n"
            })
            .collect();
        assert!(
            conf.contains("max_packet_size") && conf.contains("acl_file"),
            "the documented settings: {conf}"
        );
        conf.push_str(&format!("listener {port} 127.0.0.1\n"));
        Documented {
            broker: Mosquitto::start_with(dir, &conf),
            port,
        }
    }
}

const AGENT_ACCOUNT: &str = "rtcam-camera";
const AGENT_PASSWORD: &str = "camera-password-0123456789";
const AUTOMATION_PASSWORD: &str = "automation-password-0123456789";

/// The documented Mosquitto, and the camera on it with its account.
async fn on_documented_mosquitto(prefix: &str, protocol: &str) -> (AgentProcess, Documented) {
    let ha = format!("ha-{prefix}");
    let topic_prefix = format!("rtcam-test/{prefix}");
    let broker = Documented::start(
        &topic_prefix,
        &ha,
        AGENT_ACCOUNT,
        &[
            (AGENT_ACCOUNT, AGENT_PASSWORD),
            ("homeassistant", AUTOMATION_PASSWORD),
        ],
    );
    let cfg = through_mosquitto(prefix, broker.port, protocol)
        .with("mqtt.username", AGENT_ACCOUNT)
        .with_env("RTCAM_MQTT_PASSWORD", AGENT_PASSWORD)
        .with("gpio.backend", "sim")
        .with("gpio.mqtt", true)
        .with("gpio.ha_prefix", ha.as_str())
        .with_env("RTCAM_LOG", "info,rtcam::gpio::sim=debug")
        .with_toml(TWO_OUTPUTS);
    let agent = start(&cfg).await;
    (agent, broker)
}

/// The documented ACL against a real Mosquitto: the camera works end to
/// end through its account; an anonymous viewer is confined to its own
/// topics (no other viewer's offer, answer or ICE), cannot spoof or delete
/// `P/status`, and cannot drive a pin, which the automation account can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_mosquitto_acl_confines_viewers_and_serves_the_camera() {
    use common::mqtt_raw::{ACCEPTED, RawConn, V5_NOT_AUTHORIZED, wire};
    let (agent, broker) = on_documented_mosquitto("mosq-acl", "5").await;
    let s = agent.settings().clone();
    let p = s.mqtt.topic_prefix.clone();
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], broker.port));
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    // End to end: an anonymous viewer (client id = signaling id) streams.
    let mut v = viewer(&s, "acl-viewer", true).await;
    assert!(frames(&mut v, 10).await.first_keyframe);
    // An anonymous client trying everything that is not its own.
    for v5 in [true, false] {
        let id = if v5 { "intruder5" } else { "intruder4" };
        let (c, code) = RawConn::mqtt(to, local, wire::Connect::new(v5, id)).await;
        assert_eq!(code, Some(ACCEPTED), "anonymous clients connect");
        let mut c = c.expect("connected");
        let denied = if v5 { V5_NOT_AUTHORIZED } else { 0 };
        let status = format!("{p}/status");
        assert_eq!(c.publish_acked(v5, &status, b"offline", true).await, denied);
        assert_eq!(c.publish_acked(v5, &status, b"", true).await, denied);
        let answer = br#"{"type":"answer","sdp":"v=0"}"#;
        let forged = format!("{p}/answer/acl-viewer");
        assert_eq!(c.publish_acked(v5, &forged, answer, false).await, denied);
        let relay = format!("{p}/gpio/relay1/set");
        assert_eq!(c.publish_acked(v5, &relay, b"ON", false).await, denied);
        // Mosquitto grants any subscription and checks each message on
        // delivery: what matters is what reaches the intruder.
        for filter in [
            format!("{p}/offer/+"),
            format!("{p}/answer/+"),
            format!("{p}/ice/+"),
            format!("{p}/#"),
            format!("{p}/error/{id}"),
        ] {
            c.subscribe_code(v5, &filter).await;
        }
        // Another viewer signals meanwhile (offer, answer, candidates)...
        let mut other = viewer(&s, &format!("acl-other-{id}"), true).await;
        frames(&mut other, 3).await;
        // ...and a bad offer of the intruder's own earns it an error, which
        // the camera publishes after that viewer's answer and candidates.
        c.send(&wire::publish(
            v5,
            &format!("{p}/offer/{id}"),
            b"{",
            1,
            false,
        ))
        .await
        .expect("sent");
        let mine = format!("{p}/error/{id}");
        loop {
            let (first, body) = c.packet().await.expect("the error reply");
            if first >> 4 != 3 {
                continue;
            }
            let topic = publish_topic(&body);
            if topic == mine {
                break;
            }
            assert!(
                [format!("{p}/status"), format!("{p}/info")].contains(&topic)
                    || topic.ends_with("/state"),
                "{id} read another client's message on {topic}"
            );
        }
        other.bye().await;
    }
    // The camera is still online for a newcomer, and still serves viewers.
    let mut status = Watch::start(&s, "acl-status", &format!("{p}/status")).await;
    let (_, first) = status.next().await.expect("the retained status");
    assert_eq!(
        &first[..],
        b"online",
        "P/status was neither spoofed nor deleted"
    );
    assert!(frames(&mut v, 10).await.in_order());
    // The automation's account drives the pins; the intruder's relay1
    // command, which came first, drove nothing (commands apply in order).
    let mark = agent.log().len();
    let mut ha = wire::Connect::new(true, "ha-automation");
    ha.username = Some("homeassistant");
    ha.password = Some(AUTOMATION_PASSWORD);
    let (c, code) = RawConn::mqtt(to, local, ha).await;
    assert_eq!(code, Some(ACCEPTED), "the automation's account");
    let mut c = c.expect("connected");
    let lamp = format!("{p}/gpio/lamp/set");
    assert_eq!(c.publish_acked(true, &lamp, b"ON", false).await, ACCEPTED);
    electrical(&agent, mark, "lamp: high").await;
    assert!(
        !agent
            .log()
            .text()
            .lines()
            .any(|l| l.ends_with("simulated line relay1: high")),
        "no anonymous command drove relay1"
    );
    v.bye().await;
    agent.shutdown().await;
    broker.broker.kill();
}

/// Finding 13: with MQTT 3.1.1 (no way to tell the broker its limit) one
/// message over the agent's 1 MiB dropped the agent's connection. The
/// documented Mosquitto (`max_packet_size`) drops the sender instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_the_agent_drops_its_sender_not_the_agent() {
    use common::mqtt_raw::{ACCEPTED, RawConn, wire};
    let (agent, broker) = on_documented_mosquitto("mosq-big", "3.1.1").await;
    let s = agent.settings().clone();
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], broker.port));
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    let mark = agent.log().len();
    let (c, code) = RawConn::mqtt(to, local, wire::Connect::new(false, "big")).await;
    assert_eq!(code, Some(ACCEPTED));
    let mut c = c.expect("connected");
    let topic = format!("{}/offer/big", s.mqtt.topic_prefix);
    let _ = c
        .send(&wire::publish(
            false,
            &topic,
            &vec![b'x'; 1100 * 1024],
            1,
            false,
        ))
        .await;
    assert!(
        c.closed().await,
        "the sender is dropped; the broker's log:\n{}",
        broker.broker.log().tail(20)
    );
    // A viewer is answered through the agent's connection afterwards: had
    // the message reached the agent, its connection would have failed (and
    // said so) before the viewer's offer came through it.
    let mut v = viewer(&s, "after-big", true).await;
    frames(&mut v, 5).await;
    let failed: Vec<String> = agent
        .log()
        .since(mark)
        .into_iter()
        .filter(|l| l.contains("MQTT connection failed"))
        .collect();
    assert!(failed.is_empty(), "the agent's connection held: {failed:?}");
    assert!(agent.stats().await.mqtt_connected);
    v.bye().await;
    agent.shutdown().await;
    broker.broker.kill();
}

/// Token mode on a broker rtcam reaches without credentials: anyone there
/// may spoof the camera's status and answers, so the agent warns at start,
/// naming the keys to set; with `gpio.mqtt` (outputs driven by whoever
/// publishes on `…/set`) it refuses to start, naming `gpio.mqtt` and
/// `mqtt.username`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_on_an_unauthenticated_broker_warns_and_gpio_over_mqtt_is_refused() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("token.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("write");
    let cfg = through_mosquitto("mosq-open-token", port, "5")
        .with("auth.mode", "token")
        .with("auth.secret_file", key.display().to_string());
    let agent = start(&cfg).await;
    let warning = agent
        .log()
        .wait_line("the warning", WAIT, |l| {
            l.contains("WARN") && l.contains("without credentials")
        })
        .await;
    for key in ["mqtt.username", "ACL"] {
        assert!(warning.contains(key), "the warning names {key}: {warning}");
    }
    agent.shutdown().await;

    let refused = cfg
        .with("gpio.backend", "sim")
        .with("gpio.mqtt", true)
        .with_toml("[[gpio.pins]]\nname = \"relay1\"\npin = 17\nmode = \"output\"\n");
    let path = refused.write(dir.path());
    let mut run = common::process::rtcam();
    run.arg("--config").arg(&path).arg("run");
    let out = tokio::time::timeout(WAIT, tokio::process::Command::from(run).output())
        .await
        .expect("rtcam exits at once")
        .expect("rtcam runs");
    let said = common::process::all_output(&out);
    assert!(!out.status.success(), "rtcam refuses to start: {said}");
    for key in ["gpio.mqtt", "mqtt.username"] {
        assert!(said.contains(key), "the error names {key}: {said}");
    }
    broker.kill();
}
