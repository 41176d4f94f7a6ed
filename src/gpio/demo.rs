//! The demo pin set (simulated backend, no pins declared): a relay, a lamp,
//! a door sensor that opens and closes by itself now and then, a PWM dimmer
//! and a pan servo, so the control panel has something to show.

use super::pins::{PinMode, PinRef, PinSpec, Pull};
use super::sim::SimHandle;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The demo's pins.
pub fn pins() -> Vec<PinSpec> {
    vec![
        PinSpec {
            name: "relay1".into(),
            pin: PinRef::Number(17),
            active_low: false,
            mode: PinMode::Output {
                initial: false,
                failsafe: Some(false),
            },
        },
        PinSpec {
            name: "lamp".into(),
            pin: PinRef::Number(22),
            active_low: false,
            mode: PinMode::Output {
                initial: false,
                failsafe: None,
            },
        },
        PinSpec {
            name: "door".into(),
            pin: PinRef::Number(27),
            active_low: false,
            mode: PinMode::Input {
                pull: Pull::Up,
                debounce: Duration::from_millis(20),
            },
        },
        PinSpec {
            name: "dimmer".into(),
            pin: PinRef::Number(18),
            active_low: false,
            mode: PinMode::Pwm {
                frequency_hz: 1000.0,
                min_duty: 0.0,
                max_duty: 1.0,
                initial: 0.0,
                failsafe: Some(0.0),
            },
        },
        PinSpec {
            name: "pan".into(),
            pin: PinRef::Number(12),
            active_low: false,
            mode: PinMode::Servo {
                min_us: 1000,
                max_us: 2000,
                max_angle: 180.0,
                initial: 90.0,
                failsafe: None,
            },
        },
    ]
}

/// Opens and closes the demo door every `period` until `stop`.
pub async fn door_driver(sim: SimHandle, period: Duration, stop: CancellationToken) {
    let mut open = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(period) => {
                open = !open;
                // Pulled up: an open door reads high.
                sim.drive("door", !open);
            }
        }
    }
}
