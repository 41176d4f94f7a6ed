//! The simulated GPIO backend: pins live in memory. Tests (and the demo)
//! drive inputs through a [`SimHandle`] and read back what outputs were set.
//! Every electrical change is logged at DEBUG (`rtcam::gpio::sim`), so the
//! levels behind `active_low` and failsafes are visible from outside too.

use super::pins::{PinMode, PinSpec, Pull};
use super::{Edge, GpioBackend, GpioError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// The electrical state of one simulated pin.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SimPin {
    /// Level (outputs: last written; inputs: last driven).
    pub high: bool,
    /// PWM frequency and duty, when PWM is running.
    pub pwm: Option<(f64, f64)>,
    /// Servo period and pulse width, when pulses are running.
    pub pulse: Option<(Duration, Duration)>,
}

#[derive(Default)]
struct SimState {
    pins: Vec<SimPin>,
    names: HashMap<String, usize>,
    /// Pin names by index, for the log.
    labels: Vec<String>,
    edges: Option<mpsc::Sender<Edge>>,
    fail_writes: bool,
}

/// In-memory GPIO.
pub struct SimBackend {
    state: Arc<Mutex<SimState>>,
}

/// Drives and inspects a [`SimBackend`] from outside (tests, the demo).
#[derive(Clone)]
pub struct SimHandle {
    state: Arc<Mutex<SimState>>,
}

impl SimBackend {
    /// A backend and the handle that drives it.
    pub fn new() -> (SimBackend, SimHandle) {
        let state = Arc::new(Mutex::new(SimState::default()));
        (
            SimBackend {
                state: state.clone(),
            },
            SimHandle { state },
        )
    }

    fn with<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl SimHandle {
    fn with<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Drives an input's electrical level, as a wire would; returns false for an unknown pin.
    pub fn drive(&self, name: &str, high: bool) -> bool {
        self.with(|s| {
            let Some(&i) = s.names.get(name) else {
                return false;
            };
            s.pins[i].high = high;
            if let Some(tx) = &s.edges {
                let _ = tx.send(Edge {
                    index: i,
                    high,
                    at: Instant::now(),
                });
            }
            true
        })
    }

    /// The electrical state of a pin.
    pub fn pin(&self, name: &str) -> Option<SimPin> {
        self.with(|s| s.names.get(name).map(|&i| s.pins[i]))
    }

    /// Makes every later write fail, as broken hardware would.
    pub fn fail_writes(&self, fail: bool) {
        self.with(|s| s.fail_writes = fail);
    }
}

impl GpioBackend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn setup(&mut self, pins: &[PinSpec], edges: mpsc::Sender<Edge>) -> Result<(), GpioError> {
        self.with(|s| {
            // Inputs rest where their pull holds them.
            s.pins = pins
                .iter()
                .map(|p| SimPin {
                    high: matches!(p.mode, PinMode::Input { pull: Pull::Up, .. }),
                    ..SimPin::default()
                })
                .collect();
            s.names = pins
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i))
                .collect();
            s.labels = pins.iter().map(|p| p.name.clone()).collect();
            s.edges = Some(edges);
        });
        Ok(())
    }

    fn write(&mut self, index: usize, high: bool) -> Result<(), GpioError> {
        self.with(|s| {
            if s.fail_writes {
                return Err(GpioError::Hardware("simulated write failure".into()));
            }
            let p = s
                .pins
                .get_mut(index)
                .ok_or(GpioError::Hardware("no such line".into()))?;
            p.high = high;
            tracing::debug!(
                "simulated line {}: {}",
                s.labels[index],
                if high { "high" } else { "low" }
            );
            Ok(())
        })
    }

    fn read(&mut self, index: usize) -> Result<bool, GpioError> {
        self.with(|s| {
            s.pins
                .get(index)
                .map(|p| p.high)
                .ok_or(GpioError::Hardware("no such line".into()))
        })
    }

    fn set_pwm(&mut self, index: usize, frequency_hz: f64, duty: f64) -> Result<(), GpioError> {
        self.with(|s| {
            if s.fail_writes {
                return Err(GpioError::Hardware("simulated write failure".into()));
            }
            let p = s
                .pins
                .get_mut(index)
                .ok_or(GpioError::Hardware("no such line".into()))?;
            p.pwm = Some((frequency_hz, duty));
            tracing::debug!(
                "simulated line {}: pwm {frequency_hz} Hz duty {duty}",
                s.labels[index]
            );
            Ok(())
        })
    }

    fn set_pulse(
        &mut self,
        index: usize,
        period: Duration,
        pulse: Duration,
    ) -> Result<(), GpioError> {
        self.with(|s| {
            if s.fail_writes {
                return Err(GpioError::Hardware("simulated write failure".into()));
            }
            let p = s
                .pins
                .get_mut(index)
                .ok_or(GpioError::Hardware("no such line".into()))?;
            p.pulse = Some((period, pulse));
            tracing::debug!(
                "simulated line {}: pulse {} us every {} us",
                s.labels[index],
                pulse.as_micros(),
                period.as_micros()
            );
            Ok(())
        })
    }
}
