//! GPIO over MQTT, the pure part: the `P/gpio/{name}/set` topic scheme and
//! what a `…/set` payload asks of a pin. The bridge that subscribes and
//! applies them is `rtcam::gpio::mqtt`.

use super::pins::PinMode;
use crate::signaling::topics::Topics;

/// `P/gpio/+/set`
pub fn set_filter(topics: &Topics) -> String {
    format!("{}/gpio/+/set", topics.prefix())
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

#[cfg(test)]
mod tests {
    use super::super::pins::Pull;
    use super::*;
    use std::time::Duration;

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
}
