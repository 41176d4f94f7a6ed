//! Against a real Mosquitto broker started by the test: the signaling
//! protocol's error codes, and a broker killed and restarted mid-stream
//! while a viewer keeps decoding. Runs inside a private network namespace.

mod common;

use common::mosquitto::Mosquitto;
use common::{
    WAIT, free_port, malformed_messages_get_codes, settings, start, use_broker, viewer, watch,
    watch_from_now,
};
use rtcam::config::settings::MqttProtocol;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_message_gets_its_error_code_through_mosquitto() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let mut s = settings("mosq-malformed");
    use_broker(&mut s, port, MqttProtocol::V5);
    let agent = start(s.clone()).await;
    malformed_messages_get_codes(&s).await;
    agent.shutdown().await;
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_survives_a_broker_restart_and_new_viewers_join_after() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let mut s = settings("mosq-restart");
    use_broker(&mut s, port, MqttProtocol::V5);
    let agent = start(s.clone()).await;
    let mut v1 = viewer(&s, "restart-1", true).await;
    watch(&mut v1, Duration::from_millis(500)).await;

    broker.kill();
    // The agent notices the broker is gone...
    assert!(
        agent.wait_mqtt(false, WAIT).await,
        "the agent sees the broker go"
    );
    // ...and the connected viewer keeps decoding throughout.
    let (n, _, seqs) = watch_from_now(&mut v1, Duration::from_secs(3)).await;
    // Counts, not rates: under emulation (.ci/cross) the stream is slower.
    assert!(n > 0, "decoded {n} frames in 3 s without a broker");
    assert!(seqs.windows(2).all(|w| w[1] > w[0]));

    let broker = Mosquitto::start(port);
    assert!(
        agent.wait_mqtt(true, WAIT).await,
        "the agent reconnects with backoff"
    );
    let mut v2 = viewer(&s, "restart-2", true).await;
    let (n2, first_key, _) = watch(&mut v2, Duration::from_secs(1)).await;
    assert!(
        first_key && n2 > 0,
        "a new viewer joins after the restart ({n2} frames)"
    );
    let (n1, _, _) = watch_from_now(&mut v1, Duration::from_secs(1)).await;
    assert!(n1 > 0, "the first viewer is still decoding ({n1} frames)");
    v1.bye().await;
    v2.bye().await;
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 0 && c.tasks == 0)
            .await
    );
    agent.shutdown().await;
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_through_mosquitto() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let mut s = settings("mosq-311");
    use_broker(&mut s, port, MqttProtocol::V311);
    let agent = start(s.clone()).await;
    let mut v = viewer(&s, "mosq-311-viewer", true).await;
    let (n, first_key, _) = watch(&mut v, Duration::from_secs(1)).await;
    assert!(first_key && n > 0, "{n} frames");
    v.bye().await;
    agent.shutdown().await;
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_over_mqtt_with_home_assistant_discovery() {
    use rtcam::signaling::mqtt::{Link, LinkEvent};
    let port = free_port();
    let broker = Mosquitto::start(port);
    let mut s = common::gpio_settings("mosq-gpio");
    use_broker(&mut s, port, MqttProtocol::V5);
    s.gpio.mqtt = true;
    let agent = start(s.clone()).await;
    let sim = agent
        .gpio()
        .and_then(|g| g.simulator())
        .expect("simulated pins")
        .clone();
    let p = s.mqtt.topic_prefix.clone();
    let mut link = Link::new(
        &common::mqtt_for(&s, "automation"),
        vec![format!("{p}/gpio/+/state"), "homeassistant/#".into()],
    )
    .expect("link");
    let publisher = link.publisher();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match link.next().await {
                Ok(LinkEvent::Message(t, m)) => {
                    let _ = tx.send((t, m));
                }
                Ok(LinkEvent::Connected) => {
                    let _ = tx.send(("(connected)".into(), bytes::Bytes::new()));
                }
                Err(_) => {}
            }
        }
    });
    // Retained discovery and state arrive on subscribing.
    let mut discovery = std::collections::BTreeMap::new();
    let mut states = std::collections::BTreeMap::new();
    while discovery.len() < 4 || states.len() < 4 {
        let (t, m) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("retained messages")
            .expect("open");
        if t.starts_with("homeassistant/") {
            let doc: serde_json::Value =
                serde_json::from_slice(&m).expect("discovery payloads are JSON");
            discovery.insert(t, doc);
        } else if t.ends_with("/state") {
            states.insert(t, String::from_utf8_lossy(&m).into_owned());
        }
    }
    let ids: std::collections::BTreeSet<String> = discovery
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
    assert_eq!(states[&format!("{p}/gpio/relay1/state")], "OFF");

    // A command drives the pin and the state follows.
    assert!(publisher.publish(&format!("{p}/gpio/relay1/set"), "ON"));
    loop {
        let (t, m) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("state update")
            .expect("open");
        if t == format!("{p}/gpio/relay1/state") && &m[..] == b"ON" {
            break;
        }
    }
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(true));
    assert!(publisher.publish(&format!("{p}/gpio/pan/set"), "30"));
    loop {
        let (t, m) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("state update")
            .expect("open");
        if t == format!("{p}/gpio/pan/state") && &m[..] == b"30.0" {
            break;
        }
    }
    // Bad commands change nothing.
    assert!(publisher.publish(&format!("{p}/gpio/relay1/set"), "MAYBE"));
    assert!(publisher.publish(&format!("{p}/gpio/door/set"), "ON"));
    assert!(publisher.publish(&format!("{p}/gpio/relay1/set"), "OFF"));
    loop {
        let (t, m) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("state update")
            .expect("open");
        if t == format!("{p}/gpio/relay1/state") && &m[..] == b"OFF" {
            break;
        }
    }
    assert_eq!(
        agent.gpio().expect("gpio").get("door").map(|r| r.value),
        Ok(rtcam::gpio::PinValue::Level(true))
    );
    task.abort();
    agent.shutdown().await;
    broker.kill();
}
