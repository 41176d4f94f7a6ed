//! GPIO: declared, named pins behind one small [`GpioBackend`] trait (the
//! agent never talks to hardware outside it), and the [`Gpio`] service that
//! keeps their logical values, turns input edges into events, runs pulses,
//! and applies failsafe values when the last controlling session ends.

pub mod cdev;
pub mod demo;
pub mod failsafe;
pub mod mqtt;
pub mod rpi;
pub mod sim;

pub use rtcam_proto::gpio::pins;

use failsafe::{FailsafePolicy, SessionKey};
use pins::{Debouncer, PinMode, PinSpec, SERVO_PERIOD, servo_angle, servo_pulse_us};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// An electrical edge reported by a backend.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    /// Index of the pin in the declared list.
    pub index: usize,
    /// New electrical level.
    pub high: bool,
    /// When it was seen.
    pub at: Instant,
}

/// Why a GPIO operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpioError {
    /// No declared pin by that name.
    #[error("no pin named {0:?}")]
    UnknownPin(String),
    /// The pin's mode does not support the operation.
    #[error("pin {pin} is {mode}; {wanted}")]
    WrongMode {
        /// Pin name.
        pin: String,
        /// Its mode.
        mode: &'static str,
        /// What the operation needs.
        wanted: &'static str,
    },
    /// A value outside what the pin allows.
    #[error("{0}")]
    BadValue(String),
    /// The hardware refused.
    #[error("GPIO hardware error: {0}")]
    Hardware(String),
    /// A pin could not be set up.
    #[error("GPIO setup failed: {0}")]
    Setup(String),
    /// No GPIO hardware for the chosen backend.
    #[error("no GPIO hardware: {0}")]
    NoHardware(String),
}

/// The one interface to GPIO hardware. Levels are electrical (the service
/// applies `active_low`); PWM duty is the electrical high fraction.
pub trait GpioBackend: Send {
    /// Short name for logs and status.
    fn name(&self) -> &'static str;
    /// Claims and configures every pin; input edges go to `edges`.
    fn setup(&mut self, pins: &[PinSpec], edges: mpsc::Sender<Edge>) -> Result<(), GpioError>;
    /// Drives a digital output.
    fn write(&mut self, index: usize, high: bool) -> Result<(), GpioError>;
    /// Reads a digital line.
    fn read(&mut self, index: usize) -> Result<bool, GpioError>;
    /// Runs PWM at a frequency and duty (0–1).
    fn set_pwm(&mut self, index: usize, frequency_hz: f64, duty: f64) -> Result<(), GpioError>;
    /// Runs pulses of `pulse` every `period` (servos).
    fn set_pulse(
        &mut self,
        index: usize,
        period: Duration,
        pulse: Duration,
    ) -> Result<(), GpioError>;
}

pub use pins::{BackendKind, ServoTarget};

/// Who changed a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A viewer session (its key), for failsafe tracking.
    Session(SessionKey),
    /// An MQTT `…/set` command.
    Mqtt,
    /// The agent itself (pulse end, failsafe, start-up).
    Agent,
}

/// A pin's logical value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PinValue {
    /// Digital input or output.
    Level(bool),
    /// PWM duty (0–1) and frequency.
    Duty {
        /// Duty.
        duty: f64,
        /// Frequency.
        frequency_hz: f64,
    },
    /// Servo angle and pulse width.
    Angle {
        /// Degrees.
        angle: f64,
        /// Pulse width.
        pulse_us: u32,
    },
}

impl PinValue {
    /// The value as the protocol shows it: a bool, a duty or an angle.
    pub fn json(&self) -> Value {
        match *self {
            PinValue::Level(b) => json!(b),
            PinValue::Duty { duty, .. } => json!(round(duty, 4)),
            PinValue::Angle { angle, .. } => json!(round(angle, 2)),
        }
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// A change, broadcast to every control channel and the MQTT bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct GpioEvent {
    /// Pin name.
    pub pin: String,
    /// New value.
    pub value: PinValue,
    /// When, in ms since the UNIX epoch.
    pub ts_ms: u64,
}

impl GpioEvent {
    /// The `gpio.changed` event fields.
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("pin".into(), json!(self.pin));
        m.insert("value".into(), self.value.json());
        m.insert("ts_ms".into(), json!(self.ts_ms));
        m
    }
}

/// A pin as `gpio.list` / `P/info` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct PinReport {
    /// The declaration.
    pub spec: PinSpec,
    /// Current value.
    pub value: PinValue,
}

impl PinReport {
    /// JSON for `gpio.list` and `gpio.get`.
    pub fn json(&self) -> Value {
        let mut v = json!({
            "name": self.spec.name,
            "mode": self.spec.mode.name(),
            "value": self.value.json(),
        });
        match (&self.spec.mode, self.value) {
            (
                PinMode::Pwm {
                    min_duty, max_duty, ..
                },
                PinValue::Duty { frequency_hz, .. },
            ) => {
                v["frequency_hz"] = json!(frequency_hz);
                v["min_duty"] = json!(min_duty);
                v["max_duty"] = json!(max_duty);
            }
            (
                PinMode::Servo {
                    min_us,
                    max_us,
                    max_angle,
                    ..
                },
                PinValue::Angle { pulse_us, .. },
            ) => {
                v["pulse_us"] = json!(pulse_us);
                v["min_us"] = json!(min_us);
                v["max_us"] = json!(max_us);
                v["max_angle"] = json!(max_angle);
            }
            _ => {}
        }
        v
    }
}

struct Inner {
    backend: Box<dyn GpioBackend>,
    values: Vec<PinValue>,
    debounce: Vec<Debouncer>,
    failsafe: FailsafePolicy,
    /// Bumped on every change, so a pulse only restores what it set.
    generation: Vec<u64>,
}

/// The GPIO service.
pub struct Gpio {
    pins: Vec<PinSpec>,
    index: HashMap<String, usize>,
    inner: Mutex<Inner>,
    events: broadcast::Sender<GpioEvent>,
    backend_name: &'static str,
    max_pulse: Duration,
    sim: Option<sim::SimHandle>,
}

fn now_ms() -> u64 {
    crate::media::capture::test_pattern::wall_clock_ms()
}

/// Opens the configured backend.
pub fn open_backend(
    kind: BackendKind,
) -> Result<(Box<dyn GpioBackend>, Option<sim::SimHandle>), GpioError> {
    let kind = match kind {
        BackendKind::Auto if rpi::is_raspberry_pi() => BackendKind::Rppal,
        BackendKind::Auto if cdev::available() => BackendKind::Cdev,
        BackendKind::Auto => {
            return Err(GpioError::NoHardware(
                "gpio.backend = \"auto\" found no Raspberry Pi and no /dev/gpiochip*; \
                 set gpio.backend = \"sim\" to simulate, or remove the [[gpio.pins]] declarations"
                    .into(),
            ));
        }
        k => k,
    };
    Ok(match kind {
        BackendKind::Rppal => (Box::new(rpi::RppalBackend::new()?), None),
        BackendKind::Cdev => (Box::new(cdev::CdevBackend::new()), None),
        _ => {
            let (b, h) = sim::SimBackend::new();
            (Box::new(b), Some(h))
        }
    })
}

impl Gpio {
    /// Sets every pin up on `backend` and starts watching inputs.
    pub fn start(
        pins: Vec<PinSpec>,
        mut backend: Box<dyn GpioBackend>,
        sim: Option<sim::SimHandle>,
        max_pulse: Duration,
    ) -> Result<Arc<Gpio>, GpioError> {
        let (edge_tx, edge_rx) = mpsc::channel();
        backend.setup(&pins, edge_tx)?;
        let mut values = Vec::with_capacity(pins.len());
        let mut debounce = Vec::with_capacity(pins.len());
        for (i, p) in pins.iter().enumerate() {
            let mut d = Debouncer::new(Duration::ZERO);
            let v = match &p.mode {
                PinMode::Output { initial, .. } => {
                    backend.write(i, *initial != p.active_low)?;
                    PinValue::Level(*initial)
                }
                PinMode::Input {
                    debounce: period, ..
                } => {
                    d = Debouncer::new(*period);
                    let level = backend.read(i)? != p.active_low;
                    d.prime(level);
                    PinValue::Level(level)
                }
                PinMode::Pwm {
                    initial,
                    frequency_hz,
                    ..
                } => {
                    let electrical = if p.active_low {
                        1.0 - initial
                    } else {
                        *initial
                    };
                    backend.set_pwm(i, *frequency_hz, electrical)?;
                    PinValue::Duty {
                        duty: *initial,
                        frequency_hz: *frequency_hz,
                    }
                }
                PinMode::Servo {
                    min_us,
                    max_us,
                    max_angle,
                    initial,
                    ..
                } => {
                    let pulse_us = servo_pulse_us(*min_us, *max_us, *max_angle, *initial);
                    backend.set_pulse(
                        i,
                        SERVO_PERIOD,
                        Duration::from_micros(u64::from(pulse_us)),
                    )?;
                    PinValue::Angle {
                        angle: *initial,
                        pulse_us,
                    }
                }
            };
            values.push(v);
            debounce.push(d);
        }
        let (events, _) = broadcast::channel(256);
        let gpio = Arc::new(Gpio {
            index: pins
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i))
                .collect(),
            backend_name: backend.name(),
            inner: Mutex::new(Inner {
                backend,
                generation: vec![0; pins.len()],
                values,
                debounce,
                failsafe: FailsafePolicy::new(),
            }),
            pins,
            events,
            max_pulse,
            sim,
        });
        let weak = Arc::downgrade(&gpio);
        std::thread::Builder::new()
            .name("rtcam-gpio".into())
            .spawn(move || {
                // Ends when the backend (holding the sender) is dropped with the service.
                while let Ok(edge) = edge_rx.recv() {
                    let Some(g) = weak.upgrade() else { break };
                    g.input_edge(edge);
                }
            })
            .map_err(|e| GpioError::Setup(format!("cannot start the GPIO event thread: {e}")))?;
        tracing::info!(
            backend = gpio.backend_name,
            pins = gpio.pins.len(),
            "GPIO ready"
        );
        Ok(gpio)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn find(&self, name: &str) -> Result<usize, GpioError> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| GpioError::UnknownPin(name.to_string()))
    }

    /// The backend in use.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// The simulator's handle, when the backend is `sim`.
    pub fn simulator(&self) -> Option<&sim::SimHandle> {
        self.sim.as_ref()
    }

    /// Subscribes to changes.
    pub fn subscribe(&self) -> broadcast::Receiver<GpioEvent> {
        self.events.subscribe()
    }

    /// The declared pins.
    pub fn specs(&self) -> &[PinSpec] {
        &self.pins
    }

    /// Every pin and its value.
    pub fn list(&self) -> Vec<PinReport> {
        let inner = self.lock();
        self.pins
            .iter()
            .zip(&inner.values)
            .map(|(spec, value)| PinReport {
                spec: spec.clone(),
                value: *value,
            })
            .collect()
    }

    /// One pin and its value.
    pub fn get(&self, name: &str) -> Result<PinReport, GpioError> {
        let i = self.find(name)?;
        let value = self.lock().values[i];
        Ok(PinReport {
            spec: self.pins[i].clone(),
            value,
        })
    }

    fn changed(&self, inner: &mut Inner, i: usize, value: PinValue, actor: Actor) {
        inner.values[i] = value;
        inner.generation[i] += 1;
        if let Actor::Session(key) = actor
            && self.has_failsafe(i)
        {
            inner.failsafe.changed(&self.pins[i].name, key);
        }
        let _ = self.events.send(GpioEvent {
            pin: self.pins[i].name.clone(),
            value,
            ts_ms: now_ms(),
        });
    }

    fn has_failsafe(&self, i: usize) -> bool {
        matches!(
            self.pins[i].mode,
            PinMode::Output {
                failsafe: Some(_),
                ..
            } | PinMode::Pwm {
                failsafe: Some(_),
                ..
            } | PinMode::Servo {
                failsafe: Some(_),
                ..
            }
        )
    }

    fn output_index(&self, name: &str) -> Result<usize, GpioError> {
        let i = self.find(name)?;
        match self.pins[i].mode {
            PinMode::Output { .. } => Ok(i),
            ref m => Err(GpioError::WrongMode {
                pin: name.into(),
                mode: m.name(),
                wanted: "this command drives outputs",
            }),
        }
    }

    fn write_level(
        &self,
        inner: &mut Inner,
        i: usize,
        value: bool,
        actor: Actor,
    ) -> Result<(), GpioError> {
        inner.backend.write(i, value != self.pins[i].active_low)?;
        if inner.values[i] != PinValue::Level(value) || matches!(actor, Actor::Session(_)) {
            self.changed(inner, i, PinValue::Level(value), actor);
        }
        Ok(())
    }

    /// Sets a digital output.
    pub fn set(&self, name: &str, value: bool, actor: Actor) -> Result<PinValue, GpioError> {
        let i = self.output_index(name)?;
        let mut inner = self.lock();
        self.write_level(&mut inner, i, value, actor)?;
        Ok(inner.values[i])
    }

    /// Inverts a digital output.
    pub fn toggle(&self, name: &str, actor: Actor) -> Result<PinValue, GpioError> {
        let i = self.output_index(name)?;
        let mut inner = self.lock();
        let PinValue::Level(current) = inner.values[i] else {
            return Err(GpioError::Hardware("output holds no level".into()));
        };
        self.write_level(&mut inner, i, !current, actor)?;
        Ok(inner.values[i])
    }

    /// Sets an output to `value` (default: the opposite of now) for `duration`,
    /// then back to its previous value unless something changed it meanwhile.
    pub fn pulse(
        self: &Arc<Self>,
        name: &str,
        duration: Duration,
        value: Option<bool>,
        actor: Actor,
    ) -> Result<PinValue, GpioError> {
        if duration.is_zero() || duration > self.max_pulse {
            return Err(GpioError::BadValue(format!(
                "ms must be 1-{} (gpio.max_pulse_ms)",
                self.max_pulse.as_millis()
            )));
        }
        let i = self.output_index(name)?;
        let (previous, generation) = {
            let mut inner = self.lock();
            let PinValue::Level(previous) = inner.values[i] else {
                return Err(GpioError::Hardware("output holds no level".into()));
            };
            self.write_level(&mut inner, i, value.unwrap_or(!previous), actor)?;
            (previous, inner.generation[i])
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            let mut inner = this.lock();
            if inner.generation[i] == generation
                && let Err(e) = this.write_level(&mut inner, i, previous, Actor::Agent)
            {
                tracing::warn!(pin = %this.pins[i].name, error = %e, "pulse could not restore the output");
            }
        });
        Ok(PinValue::Level(previous))
    }

    /// Sets a PWM pin's duty (within its bounds) and optionally its frequency.
    pub fn set_pwm(
        &self,
        name: &str,
        duty: f64,
        frequency_hz: Option<f64>,
        actor: Actor,
    ) -> Result<PinValue, GpioError> {
        let i = self.find(name)?;
        let PinMode::Pwm {
            min_duty, max_duty, ..
        } = self.pins[i].mode
        else {
            return Err(GpioError::WrongMode {
                pin: name.into(),
                mode: self.pins[i].mode.name(),
                wanted: "pwm.set drives pwm pins",
            });
        };
        if !(min_duty..=max_duty).contains(&duty) {
            return Err(GpioError::BadValue(format!(
                "duty must be within {min_duty}-{max_duty} for pin {name}"
            )));
        }
        let mut inner = self.lock();
        let PinValue::Duty {
            frequency_hz: current,
            ..
        } = inner.values[i]
        else {
            return Err(GpioError::Hardware("pwm pin holds no duty".into()));
        };
        let frequency_hz = frequency_hz.unwrap_or(current);
        if !(0.1..=1_000_000.0).contains(&frequency_hz) {
            return Err(GpioError::BadValue(
                "frequency_hz must be within 0.1-1000000".into(),
            ));
        }
        let electrical = if self.pins[i].active_low {
            1.0 - duty
        } else {
            duty
        };
        inner.backend.set_pwm(i, frequency_hz, electrical)?;
        let v = PinValue::Duty { duty, frequency_hz };
        self.changed(&mut inner, i, v, actor);
        Ok(v)
    }

    /// Moves a servo to an angle or a pulse width.
    pub fn set_servo(
        &self,
        name: &str,
        target: ServoTarget,
        actor: Actor,
    ) -> Result<PinValue, GpioError> {
        let i = self.find(name)?;
        let PinMode::Servo {
            min_us,
            max_us,
            max_angle,
            ..
        } = self.pins[i].mode
        else {
            return Err(GpioError::WrongMode {
                pin: name.into(),
                mode: self.pins[i].mode.name(),
                wanted: "servo.set drives servo pins",
            });
        };
        let (angle, pulse_us) = match target {
            ServoTarget::Angle(a) if (0.0..=max_angle).contains(&a) => {
                (a, servo_pulse_us(min_us, max_us, max_angle, a))
            }
            ServoTarget::Angle(_) => {
                return Err(GpioError::BadValue(format!(
                    "angle must be within 0-{max_angle} for pin {name}"
                )));
            }
            ServoTarget::PulseUs(p) if (min_us..=max_us).contains(&p) => {
                (servo_angle(min_us, max_us, max_angle, p), p)
            }
            ServoTarget::PulseUs(_) => {
                return Err(GpioError::BadValue(format!(
                    "pulse_us must be within {min_us}-{max_us} for pin {name}"
                )));
            }
        };
        let mut inner = self.lock();
        inner
            .backend
            .set_pulse(i, SERVO_PERIOD, Duration::from_micros(u64::from(pulse_us)))?;
        let v = PinValue::Angle { angle, pulse_us };
        self.changed(&mut inner, i, v, actor);
        Ok(v)
    }

    fn input_edge(&self, edge: Edge) {
        let Some(spec) = self.pins.get(edge.index) else {
            return;
        };
        if !matches!(spec.mode, PinMode::Input { .. }) {
            return;
        }
        let level = edge.high != spec.active_low;
        let mut inner = self.lock();
        if inner.debounce[edge.index].accept(level, edge.at) {
            self.changed(&mut inner, edge.index, PinValue::Level(level), Actor::Agent);
        }
    }

    fn force_failsafe(&self, inner: &mut Inner, i: usize) {
        let spec = &self.pins[i];
        // A pulse still running must not undo the failsafe when it ends, even
        // when the failsafe value equals the pulse's level (no change recorded).
        inner.generation[i] += 1;
        let result = match spec.mode {
            PinMode::Output {
                failsafe: Some(v), ..
            } => self.write_level(inner, i, v, Actor::Agent),
            PinMode::Pwm {
                failsafe: Some(duty),
                ..
            } => {
                let PinValue::Duty { frequency_hz, .. } = inner.values[i] else {
                    return;
                };
                let electrical = if spec.active_low { 1.0 - duty } else { duty };
                inner
                    .backend
                    .set_pwm(i, frequency_hz, electrical)
                    .map(|()| {
                        self.changed(
                            inner,
                            i,
                            PinValue::Duty { duty, frequency_hz },
                            Actor::Agent,
                        );
                    })
            }
            PinMode::Servo {
                failsafe: Some(angle),
                min_us,
                max_us,
                max_angle,
                ..
            } => {
                let pulse_us = servo_pulse_us(min_us, max_us, max_angle, angle);
                inner
                    .backend
                    .set_pulse(i, SERVO_PERIOD, Duration::from_micros(u64::from(pulse_us)))
                    .map(|()| {
                        self.changed(inner, i, PinValue::Angle { angle, pulse_us }, Actor::Agent)
                    })
            }
            _ => return,
        };
        match result {
            Ok(()) => tracing::info!(pin = %spec.name, "failsafe applied"),
            Err(e) => {
                tracing::error!(pin = %spec.name, error = %e, "failsafe could not be applied")
            }
        }
    }

    /// A session ended: force the failsafe of pins it was the last to control.
    pub fn session_ended(&self, key: SessionKey) {
        let mut inner = self.lock();
        for name in inner.failsafe.session_ended(key) {
            if let Some(&i) = self.index.get(&name) {
                self.force_failsafe(&mut inner, i);
            }
        }
    }

    /// Forces every failsafe value (agent shutdown).
    pub fn apply_all_failsafes(&self) {
        let mut inner = self.lock();
        for i in 0..self.pins.len() {
            if self.has_failsafe(i) {
                self.force_failsafe(&mut inner, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pins::{PinRef, Pull};
    use super::*;

    fn specs() -> Vec<PinSpec> {
        vec![
            PinSpec {
                name: "relay".into(),
                pin: PinRef::Number(17),
                active_low: true,
                mode: PinMode::Output {
                    initial: false,
                    failsafe: Some(false),
                },
            },
            PinSpec {
                name: "door".into(),
                pin: PinRef::Number(27),
                active_low: false,
                mode: PinMode::Input {
                    pull: Pull::Up,
                    debounce: Duration::ZERO,
                },
            },
            PinSpec {
                name: "dimmer".into(),
                pin: PinRef::Number(18),
                active_low: false,
                mode: PinMode::Pwm {
                    frequency_hz: 1000.0,
                    min_duty: 0.0,
                    max_duty: 0.8,
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

    fn gpio() -> (Arc<Gpio>, sim::SimHandle) {
        let (b, h) = sim::SimBackend::new();
        let g = Gpio::start(
            specs(),
            Box::new(b),
            Some(h.clone()),
            Duration::from_secs(10),
        )
        .expect("sim starts");
        (g, h)
    }

    #[test]
    fn active_low_outputs_invert_the_level() {
        let (g, sim) = gpio();
        assert_eq!(
            sim.pin("relay").map(|p| p.high),
            Some(true),
            "logical false = high when active low"
        );
        g.set("relay", true, Actor::Agent).expect("set");
        assert_eq!(sim.pin("relay").map(|p| p.high), Some(false));
        assert_eq!(g.toggle("relay", Actor::Agent), Ok(PinValue::Level(false)));
    }

    #[test]
    fn modes_are_enforced_and_names_checked() {
        let (g, _) = gpio();
        assert!(matches!(
            g.set("door", true, Actor::Agent),
            Err(GpioError::WrongMode { .. })
        ));
        assert!(matches!(
            g.set_pwm("relay", 0.5, None, Actor::Agent),
            Err(GpioError::WrongMode { .. })
        ));
        assert!(matches!(
            g.set("nope", true, Actor::Agent),
            Err(GpioError::UnknownPin(_))
        ));
        assert!(matches!(
            g.set_pwm("dimmer", 0.9, None, Actor::Agent),
            Err(GpioError::BadValue(_))
        ));
        assert!(matches!(
            g.set_servo("pan", ServoTarget::Angle(181.0), Actor::Agent),
            Err(GpioError::BadValue(_))
        ));
    }

    #[test]
    fn pwm_and_servo_reach_the_backend() {
        let (g, sim) = gpio();
        g.set_pwm("dimmer", 0.5, Some(500.0), Actor::Agent)
            .expect("pwm");
        assert_eq!(sim.pin("dimmer").and_then(|p| p.pwm), Some((500.0, 0.5)));
        g.set_servo("pan", ServoTarget::PulseUs(2000), Actor::Agent)
            .expect("servo");
        assert_eq!(
            sim.pin("pan").and_then(|p| p.pulse),
            Some((SERVO_PERIOD, Duration::from_micros(2000)))
        );
        assert_eq!(g.get("pan").map(|r| r.value.json()), Ok(json!(180.0)));
    }

    #[test]
    fn failsafe_follows_the_last_controlling_session() {
        let (g, sim) = gpio();
        g.set("relay", true, Actor::Session(1)).expect("set");
        g.set_pwm("dimmer", 0.7, None, Actor::Session(2))
            .expect("pwm");
        g.session_ended(1);
        assert_eq!(
            g.get("relay").map(|r| r.value),
            Ok(PinValue::Level(false)),
            "relay back to failsafe"
        );
        assert_eq!(
            sim.pin("dimmer").and_then(|p| p.pwm).map(|p| p.1),
            Some(0.7),
            "dimmer untouched"
        );
        g.session_ended(2);
        assert_eq!(
            sim.pin("dimmer").and_then(|p| p.pwm).map(|p| p.1),
            Some(0.0)
        );
    }

    #[test]
    fn hardware_errors_surface() {
        let (g, sim) = gpio();
        sim.fail_writes(true);
        assert!(matches!(
            g.set("relay", true, Actor::Agent),
            Err(GpioError::Hardware(_))
        ));
        assert_eq!(
            g.get("relay").map(|r| r.value),
            Ok(PinValue::Level(false)),
            "value unchanged"
        );
    }

    #[tokio::test]
    async fn input_edges_become_events_and_pulses_restore() {
        let (g, sim) = gpio();
        let mut events = g.subscribe();
        assert!(sim.drive("door", false));
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event")
            .expect("open");
        assert_eq!(
            (ev.pin.as_str(), ev.value),
            ("door", PinValue::Level(false))
        );
        g.pulse("relay", Duration::from_millis(30), None, Actor::Agent)
            .expect("pulse");
        let on = events.recv().await.expect("on");
        let off = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("restored")
            .expect("open");
        assert_eq!(
            (on.value, off.value),
            (PinValue::Level(true), PinValue::Level(false))
        );
        assert!(matches!(
            g.pulse("relay", Duration::from_secs(11), None, Actor::Agent),
            Err(GpioError::BadValue(_))
        ));
    }

    #[test]
    fn auto_backend_off_hardware_explains_itself() {
        if rpi::is_raspberry_pi() || cdev::available() {
            return;
        }
        match open_backend(BackendKind::Auto) {
            Err(GpioError::NoHardware(m)) => assert!(m.contains("sim"), "{m}"),
            _ => panic!("auto must fail without GPIO hardware"),
        }
    }
}
