//! The Raspberry Pi backend (Pi 1–5, including the Pi 5's RP1) through
//! `rppal`: digital I/O with pulls and edge interrupts, hardware PWM on the
//! PWM-capable pins when the kernel exposes it, software PWM elsewhere, and
//! servo pulses.

use super::pins::{PinMode, PinRef, PinSpec, Pull};
use super::{Edge, GpioBackend, GpioError};
use rppal::gpio::{Gpio, InputPin, OutputPin, Trigger};
use rppal::pwm::{Channel, Polarity, Pwm};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Highest BCM number rppal addresses.
pub const MAX_BCM: u32 = 53;

enum Line {
    Output(OutputPin),
    // Kept alive: dropping it stops its interrupt thread.
    Input(InputPin),
    HardwarePwm(Pwm),
    SoftwarePwm(OutputPin),
}

/// GPIO through rppal.
pub struct RppalBackend {
    gpio: Gpio,
    lines: Vec<Line>,
}

/// True on a Raspberry Pi (by the device tree's model string).
pub fn is_raspberry_pi() -> bool {
    std::fs::read_to_string("/proc/device-tree/model").is_ok_and(|m| m.contains("Raspberry Pi"))
}

/// The hardware PWM channel wired to a BCM pin, where there is one (PWM0/1 on GPIO 12, 13, 18, 19).
pub fn hardware_channel(bcm: u32) -> Option<Channel> {
    match bcm {
        12 | 18 => Some(Channel::Pwm0),
        13 | 19 => Some(Channel::Pwm1),
        _ => None,
    }
}

impl RppalBackend {
    /// Opens the Pi's GPIO; fails on other machines (rppal reports an unknown model).
    pub fn new() -> Result<Self, GpioError> {
        let gpio =
            Gpio::new().map_err(|e| GpioError::NoHardware(format!("Raspberry Pi GPIO: {e}")))?;
        Ok(Self {
            gpio,
            lines: Vec::new(),
        })
    }

    fn line(&mut self, index: usize) -> Result<&mut Line, GpioError> {
        self.lines
            .get_mut(index)
            .ok_or(GpioError::Hardware("no such line".into()))
    }
}

fn hw(e: impl std::fmt::Display) -> GpioError {
    GpioError::Hardware(e.to_string())
}

impl GpioBackend for RppalBackend {
    fn name(&self) -> &'static str {
        "rppal"
    }

    fn setup(&mut self, pins: &[PinSpec], edges: mpsc::Sender<Edge>) -> Result<(), GpioError> {
        for (index, spec) in pins.iter().enumerate() {
            let bcm = match &spec.pin {
                PinRef::Number(n) if *n <= MAX_BCM => *n,
                other => {
                    return Err(GpioError::Setup(format!(
                        "pin {}: the rppal backend takes BCM numbers 0-{MAX_BCM}, not {other}",
                        spec.name
                    )));
                }
            };
            let setup = |e: rppal::gpio::Error| {
                GpioError::Setup(format!("pin {} (BCM {bcm}): {e}", spec.name))
            };
            let pin = self.gpio.get(bcm as u8).map_err(setup)?;
            let line = match &spec.mode {
                PinMode::Output { initial, .. } => {
                    let mut out = pin.into_output();
                    if *initial != spec.active_low {
                        out.set_high();
                    } else {
                        out.set_low();
                    }
                    Line::Output(out)
                }
                PinMode::Input { pull, debounce } => {
                    let mut input = match pull {
                        Pull::Up => pin.into_input_pullup(),
                        Pull::Down => pin.into_input_pulldown(),
                        Pull::None => pin.into_input(),
                    };
                    let tx = edges.clone();
                    let debounce = (!debounce.is_zero()).then_some(*debounce);
                    input
                        .set_async_interrupt(Trigger::Both, debounce, move |ev| {
                            let _ = tx.send(Edge {
                                index,
                                high: ev.trigger == Trigger::RisingEdge,
                                at: Instant::now(),
                            });
                        })
                        .map_err(setup)?;
                    Line::Input(input)
                }
                PinMode::Pwm { .. } | PinMode::Servo { .. } => {
                    let channel = hardware_channel(bcm);
                    // Hardware PWM needs the pwm overlay; without it fall back to software PWM.
                    match channel.map(|c| {
                        Pwm::with_period(
                            c,
                            Duration::from_millis(20),
                            Duration::ZERO,
                            Polarity::Normal,
                            false,
                        )
                    }) {
                        Some(Ok(p)) => Line::HardwarePwm(p),
                        other => {
                            if let Some(Err(e)) = other {
                                tracing::info!(pin = %spec.name, bcm, error = %e, "hardware PWM unavailable; using software PWM");
                            }
                            Line::SoftwarePwm(pin.into_output())
                        }
                    }
                }
            };
            self.lines.push(line);
        }
        Ok(())
    }

    fn write(&mut self, index: usize, high: bool) -> Result<(), GpioError> {
        match self.line(index)? {
            Line::Output(p) => {
                if high {
                    p.set_high();
                } else {
                    p.set_low();
                }
                Ok(())
            }
            _ => Err(GpioError::Hardware("not a digital output".into())),
        }
    }

    fn read(&mut self, index: usize) -> Result<bool, GpioError> {
        match self.line(index)? {
            Line::Input(p) => Ok(p.is_high()),
            Line::Output(p) => Ok(p.is_set_high()),
            _ => Err(GpioError::Hardware("not a digital line".into())),
        }
    }

    fn set_pwm(&mut self, index: usize, frequency_hz: f64, duty: f64) -> Result<(), GpioError> {
        let duty = duty.clamp(0.0, 1.0);
        match self.line(index)? {
            Line::HardwarePwm(p) => {
                p.set_frequency(frequency_hz, duty).map_err(hw)?;
                p.enable().map_err(hw)
            }
            Line::SoftwarePwm(p) => p.set_pwm_frequency(frequency_hz, duty).map_err(hw),
            _ => Err(GpioError::Hardware("not a PWM pin".into())),
        }
    }

    fn set_pulse(
        &mut self,
        index: usize,
        period: Duration,
        pulse: Duration,
    ) -> Result<(), GpioError> {
        match self.line(index)? {
            Line::HardwarePwm(p) => {
                p.set_period(period).map_err(hw)?;
                p.set_pulse_width(pulse).map_err(hw)?;
                p.enable().map_err(hw)
            }
            Line::SoftwarePwm(p) => p.set_pwm(period, pulse).map_err(hw),
            _ => Err(GpioError::Hardware("not a PWM pin".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_pwm_channels_match_the_pi_pinout() {
        assert_eq!(hardware_channel(18), Some(Channel::Pwm0));
        assert_eq!(hardware_channel(13), Some(Channel::Pwm1));
        assert_eq!(hardware_channel(17), None);
    }

    #[test]
    fn off_a_pi_it_fails_cleanly() {
        if is_raspberry_pi() {
            return;
        }
        match RppalBackend::new() {
            Err(GpioError::NoHardware(m)) => assert!(m.contains("Raspberry Pi"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("rppal must not open GPIO off a Raspberry Pi"),
        }
    }
}
