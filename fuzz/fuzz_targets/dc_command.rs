//! DataChannel control requests (text from a viewer) parsed into commands,
//! and GPIO-over-MQTT `…/set` payloads. No input may panic; a failed parse
//! carries a documented code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcam_proto::control::commands::{Command, NAMES};
use rtcam_proto::control::protocol::{ControlCode, MAX_MESSAGE, parse_request};
use rtcam_proto::gpio::mqtt::{SetRequest, parse_set};
use rtcam_proto::gpio::pins::{PinMode, Pull};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let modes = [
        PinMode::Output {
            initial: false,
            failsafe: None,
        },
        PinMode::Input {
            pull: Pull::None,
            debounce: Duration::ZERO,
        },
        PinMode::Pwm {
            frequency_hz: 1000.0,
            min_duty: 0.0,
            max_duty: 1.0,
            initial: 0.0,
            failsafe: None,
        },
        PinMode::Servo {
            min_us: 1000,
            max_us: 2000,
            max_angle: 180.0,
            initial: 90.0,
            failsafe: None,
        },
    ];
    for mode in &modes {
        match parse_set(mode, data) {
            Ok(SetRequest::Duty(x) | SetRequest::Angle(x)) => assert!(x.is_finite()),
            Ok(_) | Err(_) => {}
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let req = match parse_request(text) {
        Ok(req) => req,
        Err((id, e)) => {
            assert!(
                matches!(e.code, ControlCode::BadJson | ControlCode::BadParams),
                "{e}"
            );
            assert!(id.is_null() || id.is_number() || id.is_string());
            if text.len() > MAX_MESSAGE {
                assert_eq!(e.code, ControlCode::BadJson);
            }
            return;
        }
    };
    assert!(text.len() <= MAX_MESSAGE && !req.cmd.is_empty());
    assert!(!req.params.contains_key("id") && !req.params.contains_key("cmd"));
    match Command::parse(&req) {
        Ok(_) => assert!(NAMES.contains(&req.cmd.as_str())),
        Err(e) if NAMES.contains(&req.cmd.as_str()) => {
            assert_eq!(e.code, ControlCode::BadParams, "{e}")
        }
        Err(e) => assert_eq!(e.code, ControlCode::UnknownCmd, "{e}"),
    }
});
