//! Pin declarations and the arithmetic around them: servo angle ↔ pulse
//! width, PWM duty bounds, input debouncing. Pure: time is passed in.

use std::fmt;
use std::time::{Duration, Instant};

/// Which GPIO backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// rppal on a Raspberry Pi, else cdev when `/dev/gpiochip*` exists, else an error.
    Auto,
    /// rppal.
    Rppal,
    /// GPIO character device.
    Cdev,
    /// In memory.
    Sim,
}

/// Where a pin is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinRef {
    /// A number: BCM GPIO number (rppal) or offset on `gpiochip0` (cdev).
    Number(u32),
    /// `gpiochipN:offset` (cdev).
    ChipOffset {
        /// Chip name, e.g. `gpiochip0`.
        chip: String,
        /// Line offset on the chip.
        offset: u32,
    },
    /// A line name from the device tree, e.g. `GPIO17` (cdev).
    LineName(String),
}

impl fmt::Display for PinRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinRef::Number(n) => write!(f, "{n}"),
            PinRef::ChipOffset { chip, offset } => write!(f, "{chip}:{offset}"),
            PinRef::LineName(n) => write!(f, "{n:?}"),
        }
    }
}

impl PinRef {
    /// Parses `"gpiochip0:17"` or a line name (numbers come as TOML integers).
    pub fn parse_text(text: &str) -> Result<PinRef, String> {
        if let Some((chip, offset)) = text.split_once(':') {
            let offset: u32 = offset
                .parse()
                .map_err(|_| format!("{text:?}: the part after ':' must be a line offset"))?;
            if !(chip.starts_with("gpiochip") || chip.starts_with("pwmchip")) || chip.len() > 32 {
                return Err(format!(
                    "{text:?}: expected gpiochipN:offset or pwmchipN:channel"
                ));
            }
            return Ok(PinRef::ChipOffset {
                chip: chip.to_string(),
                offset,
            });
        }
        if text.is_empty() || text.len() > 64 || text.chars().any(|c| c.is_control() || c == '/') {
            return Err(format!(
                "{text:?}: expected a line name, gpiochipN:offset or a number"
            ));
        }
        Ok(PinRef::LineName(text.to_string()))
    }
}

/// Input bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// Pull-up.
    Up,
    /// Pull-down.
    Down,
    /// Floating.
    None,
}

/// What a pin does, with its mode's parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum PinMode {
    /// A digital output.
    Output {
        /// Value at start.
        initial: bool,
        /// Value forced when the last controlling session ends, and at shutdown.
        failsafe: Option<bool>,
    },
    /// A digital input.
    Input {
        /// Bias.
        pull: Pull,
        /// Edges closer together than this are ignored.
        debounce: Duration,
    },
    /// Pulse-width modulation.
    Pwm {
        /// Frequency.
        frequency_hz: f64,
        /// Smallest duty allowed.
        min_duty: f64,
        /// Largest duty allowed.
        max_duty: f64,
        /// Duty at start.
        initial: f64,
        /// Duty forced when the last controlling session ends, and at shutdown.
        failsafe: Option<f64>,
    },
    /// A hobby servo (50 Hz pulses).
    Servo {
        /// Pulse width at 0°, in µs.
        min_us: u32,
        /// Pulse width at `max_angle`, in µs.
        max_us: u32,
        /// Largest angle.
        max_angle: f64,
        /// Angle at start.
        initial: f64,
        /// Angle forced when the last controlling session ends, and at shutdown.
        failsafe: Option<f64>,
    },
}

impl PinMode {
    /// The mode's name as used in config and the protocol.
    pub fn name(&self) -> &'static str {
        match self {
            PinMode::Output { .. } => "output",
            PinMode::Input { .. } => "input",
            PinMode::Pwm { .. } => "pwm",
            PinMode::Servo { .. } => "servo",
        }
    }
}

/// A declared pin.
#[derive(Debug, Clone, PartialEq)]
pub struct PinSpec {
    /// Name used by commands.
    pub name: String,
    /// Where it is.
    pub pin: PinRef,
    /// Logical value is the inverse of the electrical level.
    pub active_low: bool,
    /// Mode and parameters.
    pub mode: PinMode,
}

/// A servo position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServoTarget {
    /// Degrees.
    Angle(f64),
    /// Pulse width in µs.
    PulseUs(u32),
}

/// Servo pulse period (50 Hz).
pub const SERVO_PERIOD: Duration = Duration::from_millis(20);

/// Shortest servo pulse (µs) a pin's `min_us` may be configured to.
pub const MIN_SERVO_PULSE_US: u32 = 100;
/// Longest servo pulse (µs) a pin's `max_us` may be configured to; with
/// [`MIN_SERVO_PULSE_US`] it bounds every pulse width rtcam sends.
pub const MAX_SERVO_PULSE_US: u32 = 5000;

/// Pulse width for a servo angle.
pub fn servo_pulse_us(min_us: u32, max_us: u32, max_angle: f64, angle: f64) -> u32 {
    let a = angle.clamp(0.0, max_angle);
    let span = f64::from(max_us) - f64::from(min_us);
    (f64::from(min_us) + span * a / max_angle).round() as u32
}

/// Servo angle for a pulse width.
pub fn servo_angle(min_us: u32, max_us: u32, max_angle: f64, pulse_us: u32) -> f64 {
    let p = f64::from(pulse_us.clamp(min_us, max_us));
    (p - f64::from(min_us)) / (f64::from(max_us) - f64::from(min_us)) * max_angle
}

/// A pin name: 1–32 characters of `[A-Za-z0-9_-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Drops input edges that repeat the current level or come within the
/// debounce period of the last accepted one.
#[derive(Debug, Clone)]
pub struct Debouncer {
    period: Duration,
    level: Option<bool>,
    last: Option<Instant>,
}

impl Debouncer {
    /// A debouncer with `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            level: None,
            last: None,
        }
    }

    /// Sets the known level without an event (initial read).
    pub fn prime(&mut self, level: bool) {
        self.level = Some(level);
    }

    /// Whether an edge to `level` at `at` is a real change.
    pub fn accept(&mut self, level: bool, at: Instant) -> bool {
        if self.level == Some(level) {
            return false;
        }
        if self
            .last
            .is_some_and(|t| at.saturating_duration_since(t) < self.period)
        {
            return false;
        }
        self.level = Some(level);
        self.last = Some(at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servo_math_round_trips() {
        assert_eq!(servo_pulse_us(1000, 2000, 180.0, 0.0), 1000);
        assert_eq!(servo_pulse_us(1000, 2000, 180.0, 90.0), 1500);
        assert_eq!(servo_pulse_us(1000, 2000, 180.0, 180.0), 2000);
        assert_eq!(servo_pulse_us(1000, 2000, 180.0, 500.0), 2000, "clamped");
        assert!((servo_angle(1000, 2000, 180.0, 1500) - 90.0).abs() < 1e-9);
        assert_eq!(servo_angle(1000, 2000, 180.0, 9999), 180.0);
    }

    #[test]
    fn pin_refs_parse() {
        assert_eq!(
            PinRef::parse_text("gpiochip1:5"),
            Ok(PinRef::ChipOffset {
                chip: "gpiochip1".into(),
                offset: 5
            })
        );
        assert_eq!(
            PinRef::parse_text("GPIO17"),
            Ok(PinRef::LineName("GPIO17".into()))
        );
        for bad in ["gpiochip0:x", "chip:1", "", "a/b"] {
            assert!(PinRef::parse_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_bounded() {
        assert!(valid_name("relay_1-a"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(33)));
        assert!(!valid_name("re lay"));
    }

    #[test]
    fn debouncer_ignores_repeats_and_bounces() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(20));
        d.prime(true);
        assert!(!d.accept(true, t0), "same level");
        assert!(d.accept(false, t0));
        assert!(!d.accept(true, t0 + ms(5)), "bounce within 20 ms");
        assert!(d.accept(true, t0 + ms(25)));
        let mut none = Debouncer::new(Duration::ZERO);
        assert!(none.accept(true, t0));
        assert!(none.accept(false, t0));
    }
}
