//! GPIO over MQTT, for automations: each pin's state on `P/gpio/{name}/state`
//! (retained; `ON`/`OFF` or a number), commands on `P/gpio/{name}/set`, and
//! Home Assistant MQTT discovery so the pins appear there without YAML.
//! Payload parsing and discovery documents are pure; [`Bridge`] is the task.

use super::pins::{PinMode, PinSpec, ServoTarget};
use super::{Actor, Gpio, PinValue};
use crate::signaling::mqtt::Publisher;
use crate::signaling::topics::Topics;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// `P/gpio/+/set`
pub fn set_filter(topics: &Topics) -> String {
    format!("{}/gpio/+/set", topics.prefix())
}

/// `P/gpio/{name}/state`
pub fn state_topic(topics: &Topics, pin: &str) -> String {
    format!("{}/gpio/{pin}/state", topics.prefix())
}

/// `P/gpio/{name}/set`
pub fn set_topic(topics: &Topics, pin: &str) -> String {
    format!("{}/gpio/{pin}/set", topics.prefix())
}

/// The pin named by a `P/gpio/{name}/set` topic.
pub fn pin_of_set_topic<'a>(topics: &Topics, topic: &'a str) -> Option<&'a str> {
    topic
        .strip_prefix(topics.prefix())?
        .strip_prefix("/gpio/")?
        .strip_suffix("/set")
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// A Home Assistant object id from the MQTT client id.
pub fn node_id(client_id: &str) -> String {
    client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The state payload for a value.
pub fn state_payload(v: PinValue) -> String {
    match v {
        PinValue::Level(true) => "ON".into(),
        PinValue::Level(false) => "OFF".into(),
        other => other.json().to_string(),
    }
}

/// What a `…/set` payload asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SetRequest {
    /// A level for an output.
    Level(bool),
    /// Invert an output.
    Toggle,
    /// A PWM duty.
    Duty(f64),
    /// A servo angle.
    Angle(f64),
}

/// Parses a `…/set` payload for a pin's mode.
pub fn parse_set(mode: &PinMode, payload: &[u8]) -> Result<SetRequest, String> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| "payload is not UTF-8".to_string())?
        .trim();
    match mode {
        PinMode::Output { .. } => match text.to_ascii_uppercase().as_str() {
            "ON" | "TRUE" | "1" => Ok(SetRequest::Level(true)),
            "OFF" | "FALSE" | "0" => Ok(SetRequest::Level(false)),
            "TOGGLE" => Ok(SetRequest::Toggle),
            _ => Err(format!("expected ON, OFF or TOGGLE, got {text:?}")),
        },
        PinMode::Pwm { .. } => text
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite())
            .map(SetRequest::Duty)
            .ok_or_else(|| format!("expected a duty between 0 and 1, got {text:?}")),
        PinMode::Servo { .. } => text
            .parse::<f64>()
            .ok()
            .filter(|a| a.is_finite())
            .map(SetRequest::Angle)
            .ok_or_else(|| format!("expected an angle, got {text:?}")),
        PinMode::Input { .. } => Err("inputs cannot be set".into()),
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

/// The discovery topic and document for a pin.
pub fn discovery_config(d: &Discovery, topics: &Topics, spec: &PinSpec) -> (String, Value) {
    let component = match spec.mode {
        PinMode::Output { .. } => "switch",
        PinMode::Input { .. } => "binary_sensor",
        PinMode::Pwm { .. } | PinMode::Servo { .. } => "number",
    };
    let unique_id = format!("rtcam_{}_{}", d.node_id, spec.name);
    let mut doc = json!({
        "name": spec.name,
        "unique_id": unique_id,
        "object_id": unique_id,
        "state_topic": state_topic(topics, &spec.name),
        "availability_topic": topics.status(),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [format!("rtcam_{}", d.node_id)],
            "name": d.device,
            "manufacturer": "rtcam",
            "model": "rtcam camera agent",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
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
        let Some(name) = pin_of_set_topic(&self.topics, topic) else {
            return;
        };
        let report = match self.gpio.get(name) {
            Ok(r) => r,
            Err(e) => return tracing::warn!(topic, error = %e, "GPIO command over MQTT rejected"),
        };
        let result = match parse_set(&report.spec.mode, payload) {
            Ok(SetRequest::Level(v)) => self.gpio.set(name, v, Actor::Mqtt),
            Ok(SetRequest::Toggle) => self.gpio.toggle(name, Actor::Mqtt),
            Ok(SetRequest::Duty(d)) => self.gpio.set_pwm(name, d, None, Actor::Mqtt),
            Ok(SetRequest::Angle(a)) => {
                self.gpio
                    .set_servo(name, ServoTarget::Angle(a), Actor::Mqtt)
            }
            Err(why) => return tracing::warn!(topic, why, "GPIO command over MQTT rejected"),
        };
        if let Err(e) = result {
            tracing::warn!(topic, error = %e, "GPIO command over MQTT failed");
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
        if *connected.borrow_and_update() {
            self.publish_all();
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = connected.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Retained state may be gone after a broker restart: publish it all again.
                    if *connected.borrow_and_update() {
                        self.publish_all();
                    }
                }
                ev = events.recv() => match ev {
                    Ok(e) => self.publisher.publish_retained(&state_topic(&self.topics, &e.pin), state_payload(e.value)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.publish_all(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                Some((topic, payload)) = sets.recv() => self.apply(&topic, &payload),
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
    fn set_topics_name_their_pin() {
        let t = Topics::new("home/cam");
        assert_eq!(set_filter(&t), "home/cam/gpio/+/set");
        assert_eq!(
            pin_of_set_topic(&t, "home/cam/gpio/relay1/set"),
            Some("relay1")
        );
        assert_eq!(pin_of_set_topic(&t, "home/cam/gpio/relay1/state"), None);
        assert_eq!(pin_of_set_topic(&t, "home/cam/gpio//set"), None);
        assert_eq!(pin_of_set_topic(&t, "other/gpio/x/set"), None);
    }

    #[test]
    fn set_payloads_parse_by_mode() {
        assert_eq!(parse_set(&OUT, b"ON"), Ok(SetRequest::Level(true)));
        assert_eq!(parse_set(&OUT, b" off\n"), Ok(SetRequest::Level(false)));
        assert_eq!(parse_set(&OUT, b"toggle"), Ok(SetRequest::Toggle));
        assert!(parse_set(&OUT, b"maybe").is_err());
        let pwm = PinMode::Pwm {
            frequency_hz: 1000.0,
            min_duty: 0.0,
            max_duty: 1.0,
            initial: 0.0,
            failsafe: None,
        };
        assert_eq!(parse_set(&pwm, b"0.25"), Ok(SetRequest::Duty(0.25)));
        assert!(parse_set(&pwm, b"NaN").is_err());
        let input = PinMode::Input {
            pull: Pull::Up,
            debounce: Duration::ZERO,
        };
        assert!(parse_set(&input, b"ON").is_err());
        assert!(parse_set(&OUT, &[0xff]).is_err());
    }

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
    fn discovery_documents_are_complete_and_unique() {
        let t = Topics::new("rtcam/garage");
        let d = Discovery {
            prefix: "homeassistant".into(),
            device: "garage".into(),
            node_id: node_id("rtcam-garage"),
        };
        let (topic, doc) = discovery_config(&d, &t, &spec("relay1", OUT));
        assert_eq!(topic, "homeassistant/switch/rtcam_garage/relay1/config");
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
