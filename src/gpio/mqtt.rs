//! GPIO over MQTT, for automations: each pin's state on `P/gpio/{name}/state`
//! (retained; `ON`/`OFF` or a number), commands on `P/gpio/{name}/set`, and
//! Home Assistant MQTT discovery so the pins appear there without YAML.
//! Discovery documents are pure; [`Bridge`] is the task. The `…/set` topic
//! scheme and payload parsing live in `rtcam_proto::gpio::mqtt` (fuzzed
//! there) and are re-exported here.

pub use rtcam_proto::gpio::mqtt::{SetRequest, parse_set, pin_of_set_topic, set_filter, set_topic};

use super::pins::{PinMode, PinSpec, ServoTarget};
use super::{Actor, Gpio, PinValue};
use crate::signaling::mqtt::Publisher;
use crate::signaling::topics::Topics;
use crate::throttle::LogBudget;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// `P/gpio/{name}/state`
pub fn state_topic(topics: &Topics, pin: &str) -> String {
    format!("{}/gpio/{pin}/state", topics.prefix())
}

/// A Home Assistant node id from the MQTT client id: lower-case
/// alphanumerics and `_`, starting with `rtcam` exactly once
/// (`rtcam-garage` → `rtcam_garage`, `garage` → `rtcam_garage`).
pub fn node_id(client_id: &str) -> String {
    let id: String = client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if id == "rtcam" || id.starts_with("rtcam_") {
        id
    } else {
        format!("rtcam_{id}")
    }
}

/// The state payload for a value.
pub fn state_payload(v: PinValue) -> String {
    match v {
        PinValue::Level(true) => "ON".into(),
        PinValue::Level(false) => "OFF".into(),
        other => other.json().to_string(),
    }
}

/// Home Assistant discovery settings.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Discovery prefix (`homeassistant`).
    pub prefix: String,
    /// Device name shown in Home Assistant.
    pub device: String,
    /// Node id (from the MQTT client id).
    pub node_id: String,
}

/// The `device` block every entity of this camera shares, so Home
/// Assistant groups pins, snapshots and motion as one device.
pub fn device_doc(d: &Discovery) -> Value {
    json!({
        "identifiers": [d.node_id],
        "name": d.device,
        "manufacturer": "rtcam",
        "model": "rtcam camera agent",
        "sw_version": env!("CARGO_PKG_VERSION"),
    })
}

/// The discovery topic and document for a pin.
pub fn discovery_config(d: &Discovery, topics: &Topics, spec: &PinSpec) -> (String, Value) {
    let component = match spec.mode {
        PinMode::Output { .. } => "switch",
        PinMode::Input { .. } => "binary_sensor",
        PinMode::Pwm { .. } | PinMode::Servo { .. } => "number",
    };
    let unique_id = format!("{}_{}", d.node_id, spec.name);
    let mut doc = json!({
        "name": spec.name,
        "unique_id": unique_id,
        "object_id": unique_id,
        "state_topic": state_topic(topics, &spec.name),
        "availability_topic": topics.status(),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_doc(d),
    });
    match &spec.mode {
        PinMode::Output { .. } => {
            doc["command_topic"] = json!(set_topic(topics, &spec.name));
            doc["payload_on"] = json!("ON");
            doc["payload_off"] = json!("OFF");
        }
        PinMode::Input { .. } => {
            doc["payload_on"] = json!("ON");
            doc["payload_off"] = json!("OFF");
        }
        PinMode::Pwm {
            min_duty, max_duty, ..
        } => {
            doc["command_topic"] = json!(set_topic(topics, &spec.name));
            doc["min"] = json!(min_duty);
            doc["max"] = json!(max_duty);
            doc["step"] = json!(0.01);
            doc["mode"] = json!("slider");
        }
        PinMode::Servo { max_angle, .. } => {
            doc["command_topic"] = json!(set_topic(topics, &spec.name));
            doc["min"] = json!(0);
            doc["max"] = json!(max_angle);
            doc["step"] = json!(1);
            doc["mode"] = json!("slider");
            doc["unit_of_measurement"] = json!("°");
        }
    }
    (
        format!(
            "{}/{component}/{}/{}/config",
            d.prefix, d.node_id, spec.name
        ),
        doc,
    )
}

/// The running bridge.
pub struct Bridge {
    /// Pins.
    pub gpio: Arc<Gpio>,
    /// MQTT output.
    pub publisher: Publisher,
    /// Topic scheme.
    pub topics: Topics,
    /// Home Assistant discovery, if enabled.
    pub discovery: Option<Discovery>,
    /// `…/set` commands applied per second, all automations together
    /// (`control.rate_limit`, like one viewer's DataChannel): a flood of
    /// toggles must not become a flood of changes for every viewer.
    pub rate_limit: u32,
}

impl Bridge {
    fn publish_all(&self) {
        for report in self.gpio.list() {
            if let Some(d) = &self.discovery {
                let (topic, doc) = discovery_config(d, &self.topics, &report.spec);
                self.publisher.publish_retained(&topic, doc.to_string());
            }
            self.publisher.publish_retained(
                &state_topic(&self.topics, &report.spec.name),
                state_payload(report.value),
            );
        }
    }

    fn apply(&self, topic: &str, payload: &[u8]) {
        // Anyone who may publish on P/gpio/+/set can send these as fast as
        // the broker takes them: refusals are logged a few a minute, with
        // the count of those left out.
        static REFUSALS: LogBudget = LogBudget::new(5, Duration::from_secs(60));
        let refused = |why: &dyn std::fmt::Display, what: &str| {
            if let Some(suppressed) = REFUSALS.check() {
                tracing::warn!(topic, error = %why, more_since_last = suppressed, "{what}");
            }
        };
        let Some(name) = pin_of_set_topic(&self.topics, topic) else {
            return;
        };
        let report = match self.gpio.get(name) {
            Ok(r) => r,
            Err(e) => return refused(&e, "GPIO command over MQTT rejected"),
        };
        let result = match parse_set(&report.spec.mode, payload) {
            Ok(SetRequest::Level(v)) => self.gpio.set(name, v, Actor::Mqtt),
            Ok(SetRequest::Toggle) => self.gpio.toggle(name, Actor::Mqtt),
            Ok(SetRequest::Duty(d)) => self.gpio.set_pwm(name, d, None, Actor::Mqtt),
            Ok(SetRequest::Angle(a)) => {
                self.gpio
                    .set_servo(name, ServoTarget::Angle(a), Actor::Mqtt)
            }
            Err(why) => return refused(&why, "GPIO command over MQTT rejected"),
        };
        if let Err(e) = result {
            refused(&e, "GPIO command over MQTT failed");
        }
    }

    /// Publishes state (and discovery) on every (re)connect and change;
    /// applies `…/set` commands. Ends on `stop`.
    pub async fn run(
        self,
        mut sets: mpsc::Receiver<(String, Bytes)>,
        mut connected: watch::Receiver<bool>,
        stop: CancellationToken,
    ) {
        let mut events = self.gpio.subscribe();
        let mut budget = crate::control::ratelimit::TokenBucket::new(self.rate_limit);
        if *connected.borrow_and_update() {
            self.publish_all();
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                // Retained state may be gone after a broker restart: publish it all again.
                up = crate::signaling::mqtt::connected_again(&mut connected) => match up {
                    Some(()) => self.publish_all(),
                    None => break,
                },
                ev = events.recv() => match ev {
                    Ok(e) => self.publisher.publish_retained(&state_topic(&self.topics, &e.pin), state_payload(e.value)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.publish_all(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                Some((topic, payload)) = sets.recv() => {
                    if budget.allow(std::time::Instant::now()) {
                        self.apply(&topic, &payload);
                    } else {
                        static OVER: LogBudget = LogBudget::new(1, Duration::from_secs(10));
                        if let Some(suppressed) = OVER.check() {
                            tracing::warn!(
                                topic,
                                more_since_last = suppressed,
                                "GPIO commands over MQTT beyond control.rate_limit per second are dropped"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pins::{PinRef, Pull};
    use super::*;
    use std::time::Duration;

    fn spec(name: &str, mode: PinMode) -> PinSpec {
        PinSpec {
            name: name.into(),
            pin: PinRef::Number(1),
            active_low: false,
            mode,
        }
    }

    const OUT: PinMode = PinMode::Output {
        initial: false,
        failsafe: None,
    };

    #[test]
    fn states_are_on_off_or_numbers() {
        assert_eq!(state_payload(PinValue::Level(true)), "ON");
        assert_eq!(
            state_payload(PinValue::Duty {
                duty: 0.5,
                frequency_hz: 1000.0
            }),
            "0.5"
        );
    }

    #[test]
    fn node_ids_carry_the_rtcam_prefix_once() {
        assert_eq!(node_id("rtcam-garage"), "rtcam_garage");
        assert_eq!(node_id("RTCAM.Garage"), "rtcam_garage");
        assert_eq!(node_id("rtcam"), "rtcam");
        assert_eq!(node_id("garage-cam"), "rtcam_garage_cam");
        assert_eq!(node_id("rtcamx"), "rtcam_rtcamx");
    }

    #[test]
    fn discovery_documents_are_complete_and_unique() {
        let t = Topics::new("rtcam/garage");
        let d = Discovery {
            prefix: "homeassistant".into(),
            device: "garage".into(),
            node_id: node_id("rtcam-garage"),
        };
        let (topic, doc) = discovery_config(&d, &t, &spec("relay1", OUT));
        assert_eq!(topic, "homeassistant/switch/rtcam_garage/relay1/config");
        assert_eq!(doc["unique_id"], "rtcam_garage_relay1", "the prefix once");
        assert_eq!(doc["object_id"], "rtcam_garage_relay1");
        assert_eq!(doc["device"]["identifiers"][0], "rtcam_garage");
        assert_eq!(doc["command_topic"], "rtcam/garage/gpio/relay1/set");
        assert_eq!(doc["availability_topic"], "rtcam/garage/status");
        let (t2, d2) = discovery_config(
            &d,
            &t,
            &spec(
                "door",
                PinMode::Input {
                    pull: Pull::None,
                    debounce: Duration::ZERO,
                },
            ),
        );
        assert!(t2.starts_with("homeassistant/binary_sensor/"));
        assert!(d2.get("command_topic").is_none());
        assert_ne!(doc["unique_id"], d2["unique_id"]);
    }
}
