//! Control commands, parsed and validated from requests before anything is
//! touched. Unknown commands, missing or mistyped parameters and unknown
//! parameters are rejected with stable codes. Pure.

use super::protocol::{ControlCode, ControlError, Params, Request};
use crate::gpio::pins::{MAX_SERVO_PULSE_US, MIN_SERVO_PULSE_US, ServoTarget};

/// A validated command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `ping`
    Ping,
    /// `gpio.list`
    GpioList,
    /// `gpio.get {pin}`
    GpioGet {
        /// Pin name.
        pin: String,
    },
    /// `gpio.set {pin, value}`
    GpioSet {
        /// Pin name.
        pin: String,
        /// New level.
        value: bool,
    },
    /// `gpio.toggle {pin}`
    GpioToggle {
        /// Pin name.
        pin: String,
    },
    /// `gpio.pulse {pin, ms, value?}`
    GpioPulse {
        /// Pin name.
        pin: String,
        /// Duration in ms.
        ms: u64,
        /// Level during the pulse (default: the opposite of now).
        value: Option<bool>,
    },
    /// `pwm.set {pin, duty, frequency_hz?}`
    PwmSet {
        /// Pin name.
        pin: String,
        /// Duty 0–1.
        duty: f64,
        /// New frequency.
        frequency_hz: Option<f64>,
    },
    /// `servo.set {pin, angle | pulse_us}`
    ServoSet {
        /// Pin name.
        pin: String,
        /// Position.
        target: ServoTarget,
    },
    /// `video.keyframe`
    VideoKeyframe,
    /// `video.bitrate {kbps}`
    VideoBitrate {
        /// Requested bitrate (clamped by the controller).
        kbps: u32,
    },
    /// `video.status`
    VideoStatus,
    /// `camera.controls`
    CameraControls,
    /// `camera.set {control, value}`
    CameraSet {
        /// Control name.
        control: String,
        /// Value.
        value: i64,
    },
    /// `snapshot`
    Snapshot,
    /// `record.list`
    RecordList,
    /// `record.start`
    RecordStart,
    /// `record.stop`
    RecordStop,
    /// `record.delete {name}`
    RecordDelete {
        /// The recording (`YYYY-MM-DD/HH-MM-SS.mp4`).
        name: String,
    },
    /// `audio.talk {on}`: take (or release) the talkback floor.
    AudioTalk {
        /// Take the floor (true) or release it (false).
        on: bool,
    },
}

/// Every command name, in documentation order.
pub const NAMES: &[&str] = &[
    "ping",
    "gpio.list",
    "gpio.get",
    "gpio.set",
    "gpio.toggle",
    "gpio.pulse",
    "pwm.set",
    "servo.set",
    "video.keyframe",
    "video.bitrate",
    "video.status",
    "camera.controls",
    "camera.set",
    "snapshot",
    "record.list",
    "record.start",
    "record.stop",
    "record.delete",
    "audio.talk",
];

fn only(req: &Request, allowed: &[&str]) -> Result<(), ControlError> {
    if let Some(extra) = req.params.keys().find(|k| !allowed.contains(&k.as_str())) {
        let expected = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        };
        return Err(ControlError::new(
            ControlCode::BadParams,
            format!(
                "{} takes no parameter {extra:?} (parameters: {expected})",
                req.cmd
            ),
        ));
    }
    Ok(())
}

fn pin(p: &Params<'_>) -> Result<String, ControlError> {
    let name = p.str("pin")?;
    if name.is_empty() {
        return Err(ControlError::new(
            ControlCode::BadParams,
            "pin must not be empty",
        ));
    }
    Ok(name.to_string())
}

impl Command {
    /// Parses a request into a command.
    pub fn parse(req: &Request) -> Result<Command, ControlError> {
        let p = Params(&req.params);
        let cmd = match req.cmd.as_str() {
            "ping" => {
                only(req, &[])?;
                Command::Ping
            }
            "gpio.list" => {
                only(req, &[])?;
                Command::GpioList
            }
            "gpio.get" => {
                only(req, &["pin"])?;
                Command::GpioGet { pin: pin(&p)? }
            }
            "gpio.set" => {
                only(req, &["pin", "value"])?;
                Command::GpioSet {
                    pin: pin(&p)?,
                    value: p.bool("value")?,
                }
            }
            "gpio.toggle" => {
                only(req, &["pin"])?;
                Command::GpioToggle { pin: pin(&p)? }
            }
            "gpio.pulse" => {
                only(req, &["pin", "ms", "value"])?;
                let ms = p.i64("ms")?;
                if ms <= 0 {
                    return Err(ControlError::new(
                        ControlCode::BadParams,
                        "ms must be positive",
                    ));
                }
                let value = match req.params.get("value") {
                    None => None,
                    Some(_) => Some(p.bool("value")?),
                };
                Command::GpioPulse {
                    pin: pin(&p)?,
                    ms: ms as u64,
                    value,
                }
            }
            "pwm.set" => {
                only(req, &["pin", "duty", "frequency_hz"])?;
                let duty = p.f64("duty")?;
                if !(0.0..=1.0).contains(&duty) {
                    return Err(ControlError::new(
                        ControlCode::BadParams,
                        "duty must be within 0-1",
                    ));
                }
                Command::PwmSet {
                    pin: pin(&p)?,
                    duty,
                    frequency_hz: p.opt_f64("frequency_hz")?,
                }
            }
            "servo.set" => {
                only(req, &["pin", "angle", "pulse_us"])?;
                let target = match (p.opt_f64("angle")?, req.params.get("pulse_us")) {
                    (Some(a), None) => ServoTarget::Angle(a),
                    (None, Some(_)) => {
                        // Only widths some servo pin may be configured for; the
                        // pin's own min_us-max_us is checked when it moves.
                        let us = p.i64("pulse_us")?;
                        let us = u32::try_from(us)
                            .ok()
                            .filter(|us| (MIN_SERVO_PULSE_US..=MAX_SERVO_PULSE_US).contains(us))
                            .ok_or_else(|| {
                                ControlError::new(
                                    ControlCode::BadParams,
                                    format!(
                                        "pulse_us must be {MIN_SERVO_PULSE_US}-{MAX_SERVO_PULSE_US} µs, not {us}"
                                    ),
                                )
                            })?;
                        ServoTarget::PulseUs(us)
                    }
                    _ => {
                        return Err(ControlError::new(
                            ControlCode::BadParams,
                            "servo.set takes either angle or pulse_us",
                        ));
                    }
                };
                Command::ServoSet {
                    pin: pin(&p)?,
                    target,
                }
            }
            "video.keyframe" => {
                only(req, &[])?;
                Command::VideoKeyframe
            }
            "video.bitrate" => {
                only(req, &["kbps"])?;
                let kbps = p.i64("kbps")?;
                let kbps = u32::try_from(kbps).ok().filter(|k| *k > 0).ok_or_else(|| {
                    ControlError::new(ControlCode::BadParams, "kbps must be a positive integer")
                })?;
                Command::VideoBitrate { kbps }
            }
            "video.status" => {
                only(req, &[])?;
                Command::VideoStatus
            }
            "camera.controls" => {
                only(req, &[])?;
                Command::CameraControls
            }
            "camera.set" => {
                only(req, &["control", "value"])?;
                Command::CameraSet {
                    control: p.str("control")?.to_string(),
                    value: p.i64("value")?,
                }
            }
            "snapshot" => {
                only(req, &[])?;
                Command::Snapshot
            }
            "record.list" => {
                only(req, &[])?;
                Command::RecordList
            }
            "record.start" => {
                only(req, &[])?;
                Command::RecordStart
            }
            "record.stop" => {
                only(req, &[])?;
                Command::RecordStop
            }
            "record.delete" => {
                only(req, &["name"])?;
                let name = p.str("name")?;
                if name.is_empty() || name.len() > 64 {
                    return Err(ControlError::new(
                        ControlCode::BadParams,
                        "name must be a recording's name, e.g. 2026-11-30/17-45-03.mp4",
                    ));
                }
                Command::RecordDelete {
                    name: name.to_string(),
                }
            }
            "audio.talk" => {
                only(req, &["on"])?;
                Command::AudioTalk { on: p.bool("on")? }
            }
            other => {
                return Err(ControlError::new(
                    ControlCode::UnknownCmd,
                    format!(
                        "unknown command {other:?}; commands are {}",
                        NAMES.join(", ")
                    ),
                ));
            }
        };
        Ok(cmd)
    }

    /// Whether the command changes anything: a `view` session may only read
    /// (`ping`, `gpio.list`, `gpio.get`, `video.status`, `camera.controls`,
    /// `record.list`, `snapshot`).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Command::Ping
                | Command::GpioList
                | Command::GpioGet { .. }
                | Command::VideoStatus
                | Command::CameraControls
                | Command::RecordList
                | Command::Snapshot
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::parse_request;
    use super::*;

    fn parse(text: &str) -> Result<Command, ControlError> {
        Command::parse(&parse_request(text).expect("a request"))
    }

    fn code(text: &str) -> ControlCode {
        parse(text).expect_err(text).code
    }

    #[test]
    fn every_command_parses() {
        let cases: Vec<(&str, Command)> = vec![
            (r#"{"cmd":"ping"}"#, Command::Ping),
            (r#"{"cmd":"gpio.list"}"#, Command::GpioList),
            (
                r#"{"cmd":"gpio.get","pin":"door"}"#,
                Command::GpioGet { pin: "door".into() },
            ),
            (
                r#"{"cmd":"gpio.set","pin":"relay1","value":true}"#,
                Command::GpioSet {
                    pin: "relay1".into(),
                    value: true,
                },
            ),
            (
                r#"{"cmd":"gpio.toggle","pin":"relay1"}"#,
                Command::GpioToggle {
                    pin: "relay1".into(),
                },
            ),
            (
                r#"{"cmd":"gpio.pulse","pin":"relay1","ms":500}"#,
                Command::GpioPulse {
                    pin: "relay1".into(),
                    ms: 500,
                    value: None,
                },
            ),
            (
                r#"{"cmd":"pwm.set","pin":"dim","duty":0.25,"frequency_hz":200}"#,
                Command::PwmSet {
                    pin: "dim".into(),
                    duty: 0.25,
                    frequency_hz: Some(200.0),
                },
            ),
            (
                r#"{"cmd":"servo.set","pin":"pan","angle":45}"#,
                Command::ServoSet {
                    pin: "pan".into(),
                    target: ServoTarget::Angle(45.0),
                },
            ),
            (
                r#"{"cmd":"servo.set","pin":"pan","pulse_us":1200}"#,
                Command::ServoSet {
                    pin: "pan".into(),
                    target: ServoTarget::PulseUs(1200),
                },
            ),
            (r#"{"cmd":"video.keyframe"}"#, Command::VideoKeyframe),
            (
                r#"{"cmd":"video.bitrate","kbps":800}"#,
                Command::VideoBitrate { kbps: 800 },
            ),
            (r#"{"cmd":"video.status"}"#, Command::VideoStatus),
            (r#"{"cmd":"camera.controls"}"#, Command::CameraControls),
            (
                r#"{"cmd":"camera.set","control":"brightness","value":-10}"#,
                Command::CameraSet {
                    control: "brightness".into(),
                    value: -10,
                },
            ),
            (r#"{"cmd":"snapshot"}"#, Command::Snapshot),
            (
                r#"{"cmd":"audio.talk","on":true}"#,
                Command::AudioTalk { on: true },
            ),
            (r#"{"cmd":"record.list"}"#, Command::RecordList),
            (r#"{"cmd":"record.start"}"#, Command::RecordStart),
            (r#"{"cmd":"record.stop"}"#, Command::RecordStop),
            (
                r#"{"cmd":"record.delete","name":"2026-11-30/17-45-03.mp4"}"#,
                Command::RecordDelete {
                    name: "2026-11-30/17-45-03.mp4".into(),
                },
            ),
        ];
        assert_eq!(
            cases.len(),
            NAMES.len() + 1,
            "one case per command (two for servo.set)"
        );
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_params_are_named() {
        for text in [
            r#"{"cmd":"gpio.set","pin":"relay1"}"#,
            r#"{"cmd":"gpio.set","pin":"relay1","value":"on"}"#,
            r#"{"cmd":"gpio.get"}"#,
            r#"{"cmd":"gpio.get","pin":""}"#,
            r#"{"cmd":"gpio.get","pin":7}"#,
            r#"{"cmd":"gpio.pulse","pin":"r","ms":0}"#,
            r#"{"cmd":"gpio.pulse","pin":"r","ms":1.5}"#,
            r#"{"cmd":"pwm.set","pin":"d","duty":1.5}"#,
            r#"{"cmd":"pwm.set","pin":"d","duty":0.5,"frequency_hz":"x"}"#,
            r#"{"cmd":"servo.set","pin":"p"}"#,
            r#"{"cmd":"servo.set","pin":"p","angle":1,"pulse_us":1000}"#,
            r#"{"cmd":"servo.set","pin":"p","pulse_us":-5}"#,
            r#"{"cmd":"video.bitrate","kbps":0}"#,
            r#"{"cmd":"video.bitrate"}"#,
            r#"{"cmd":"camera.set","control":"brightness"}"#,
            r#"{"cmd":"record.delete"}"#,
            r#"{"cmd":"record.delete","name":""}"#,
            r#"{"cmd":"record.start","now":true}"#,
            r#"{"cmd":"ping","extra":1}"#,
            r#"{"cmd":"gpio.set","pin":"r","value":true,"valeu":false}"#,
        ] {
            assert_eq!(code(text), ControlCode::BadParams, "{text}");
        }
        let e = parse(r#"{"cmd":"gpio.set","pin":"relay1"}"#).expect_err("missing value");
        assert!(e.message.contains("value"), "{}", e.message);
    }

    #[test]
    fn servo_pulses_must_be_within_the_configurable_range() {
        for us in [0, MIN_SERVO_PULSE_US - 1, MAX_SERVO_PULSE_US + 1, 1_000_000] {
            let text = format!(r#"{{"cmd":"servo.set","pin":"p","pulse_us":{us}}}"#);
            let e = parse(&text).expect_err(&text);
            assert_eq!(e.code, ControlCode::BadParams, "{text}");
            assert!(
                e.message.contains("pulse_us") && e.message.contains("100-5000"),
                "names the field and the range: {}",
                e.message
            );
        }
        for us in [MIN_SERVO_PULSE_US, 1500, MAX_SERVO_PULSE_US] {
            let text = format!(r#"{{"cmd":"servo.set","pin":"p","pulse_us":{us}}}"#);
            assert_eq!(
                parse(&text),
                Ok(Command::ServoSet {
                    pin: "p".into(),
                    target: ServoTarget::PulseUs(us),
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_commands_list_the_known_ones() {
        let e = parse(r#"{"cmd":"gpio.explode"}"#).expect_err("unknown");
        assert_eq!(e.code, ControlCode::UnknownCmd);
        assert!(e.message.contains("gpio.set"));
    }

    #[test]
    fn read_only_commands_are_marked() {
        assert!(!Command::Ping.mutates());
        assert!(!Command::GpioList.mutates());
        assert!(!Command::VideoStatus.mutates());
        assert!(!Command::RecordList.mutates());
        assert!(Command::RecordStart.mutates());
        assert!(Command::RecordDelete { name: "x".into() }.mutates());
        assert!(!Command::GpioGet { pin: "x".into() }.mutates());
        assert!(Command::VideoKeyframe.mutates());
        assert!(Command::GpioToggle { pin: "x".into() }.mutates());
        assert!(Command::VideoBitrate { kbps: 1 }.mutates());
    }
}
