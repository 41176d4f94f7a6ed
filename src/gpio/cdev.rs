//! The Linux GPIO character device backend (any board with
//! `/dev/gpiochip*`), through `gpiocdev`. Lines are addressed by number (on
//! `gpiochip0`), `gpiochipN:offset` or line name. PWM and servo pins use the
//! kernel's sysfs PWM (`pwmchipN:channel`).

use super::pins::{PinMode, PinRef, PinSpec, Pull};
use super::{Edge, GpioBackend, GpioError};
use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A sysfs PWM channel (`/sys/class/pwm/pwmchipN/pwmM`).
pub struct SysfsPwm {
    dir: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> GpioError {
    GpioError::Hardware(format!("{what} {}: {e}", path.display()))
}

impl SysfsPwm {
    /// Exports `channel` of `chip` under `root` (normally `/sys/class/pwm`).
    pub fn open(root: &Path, chip: &str, channel: u32) -> Result<Self, GpioError> {
        let chip_dir = root.join(chip);
        if !chip_dir.is_dir() {
            return Err(GpioError::Setup(format!(
                "{} does not exist: this board has no such PWM chip (enable it in the device tree)",
                chip_dir.display()
            )));
        }
        let dir = chip_dir.join(format!("pwm{channel}"));
        if !dir.exists() {
            let export = chip_dir.join("export");
            std::fs::write(&export, channel.to_string())
                .map_err(|e| io("exporting PWM via", &export, e))?;
        }
        Ok(Self { dir })
    }

    fn write(&self, file: &str, value: impl ToString) -> Result<(), GpioError> {
        let path = self.dir.join(file);
        std::fs::write(&path, value.to_string()).map_err(|e| io("writing", &path, e))
    }

    /// Sets period and high time (nanoseconds), then enables the output.
    pub fn set(&self, period: Duration, high: Duration) -> Result<(), GpioError> {
        let (period, high) = (
            period.as_nanos() as u64,
            high.as_nanos().min(period.as_nanos()) as u64,
        );
        // The duty cycle may never exceed the period: shrink it first.
        self.write("duty_cycle", 0)?;
        self.write("period", period)?;
        self.write("duty_cycle", high)?;
        self.write("enable", 1)
    }
}

enum Line {
    Gpio(Arc<gpiocdev::Request>),
    Pwm(SysfsPwm),
}

/// GPIO through the character device.
pub struct CdevBackend {
    lines: Vec<Line>,
    stop: Arc<AtomicBool>,
    watchers: Vec<std::thread::JoinHandle<()>>,
}

impl CdevBackend {
    /// An unconfigured backend.
    pub fn new() -> Self {
        Self {
            lines: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            watchers: Vec::new(),
        }
    }

    fn line(&self, index: usize) -> Result<&Line, GpioError> {
        self.lines
            .get(index)
            .ok_or(GpioError::Hardware("no such line".into()))
    }
}

impl Default for CdevBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// True when the system has GPIO character devices.
pub fn available() -> bool {
    std::fs::read_dir("/dev").is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("gpiochip"))
    })
}

fn chip_path(chip: &str) -> PathBuf {
    Path::new("/dev").join(chip)
}

fn builder_for(spec: &PinSpec) -> Result<gpiocdev::request::Builder, GpioError> {
    let mut b = gpiocdev::Request::builder();
    b.with_consumer("rtcam");
    match &spec.pin {
        PinRef::Number(n) => {
            b.on_chip(chip_path("gpiochip0")).with_line(*n);
        }
        PinRef::ChipOffset { chip, offset } => {
            b.on_chip(chip_path(chip)).with_line(*offset);
        }
        PinRef::LineName(name) => {
            let found = gpiocdev::find_named_line(name).ok_or_else(|| {
                GpioError::Setup(format!("pin {}: no GPIO line is named {name:?}", spec.name))
            })?;
            b.with_found_line(&found);
        }
    }
    Ok(b)
}

impl GpioBackend for CdevBackend {
    fn name(&self) -> &'static str {
        "cdev"
    }

    fn setup(&mut self, pins: &[PinSpec], edges: mpsc::Sender<Edge>) -> Result<(), GpioError> {
        for (index, spec) in pins.iter().enumerate() {
            let setup_err = |e: gpiocdev::Error| {
                GpioError::Setup(format!("pin {} ({}): {e}", spec.name, spec.pin))
            };
            let line = match &spec.mode {
                PinMode::Output { initial, .. } => {
                    let high = *initial != spec.active_low;
                    let mut b = builder_for(spec)?;
                    b.as_output(if high { Value::Active } else { Value::Inactive });
                    Line::Gpio(Arc::new(b.request().map_err(setup_err)?))
                }
                PinMode::Input { pull, debounce } => {
                    let mut b = builder_for(spec)?;
                    b.as_input()
                        .with_bias(match pull {
                            Pull::Up => Bias::PullUp,
                            Pull::Down => Bias::PullDown,
                            Pull::None => Bias::Disabled,
                        })
                        .with_edge_detection(EdgeDetection::BothEdges);
                    if !debounce.is_zero() {
                        b.with_debounce_period(*debounce);
                    }
                    let req = Arc::new(b.request().map_err(setup_err)?);
                    let watcher = req.clone();
                    let (tx, stop) = (edges.clone(), self.stop.clone());
                    let handle = std::thread::Builder::new()
                        .name(format!("rtcam-gpio-{}", spec.name))
                        .spawn(move || {
                            while !stop.load(Ordering::Acquire) {
                                // Wake now and then to notice shutdown.
                                match watcher.wait_edge_event(Duration::from_millis(250)) {
                                    Ok(true) => {
                                        if let Ok(ev) = watcher.read_edge_event() {
                                            let _ = tx.send(Edge {
                                                index,
                                                high: ev.kind == EdgeKind::Rising,
                                                at: Instant::now(),
                                            });
                                        }
                                    }
                                    Ok(false) => {}
                                    Err(_) => break,
                                }
                            }
                        })
                        .map_err(|e| {
                            GpioError::Setup(format!(
                                "pin {}: cannot start its watcher: {e}",
                                spec.name
                            ))
                        })?;
                    self.watchers.push(handle);
                    Line::Gpio(req)
                }
                PinMode::Pwm { .. } | PinMode::Servo { .. } => match &spec.pin {
                    PinRef::ChipOffset { chip, offset } if chip.starts_with("pwmchip") => {
                        Line::Pwm(SysfsPwm::open(Path::new("/sys/class/pwm"), chip, *offset)?)
                    }
                    other => {
                        return Err(GpioError::Setup(format!(
                            "pin {}: with the cdev backend, {} pins are sysfs PWM channels written \"pwmchipN:channel\", not {other}",
                            spec.name,
                            spec.mode.name()
                        )));
                    }
                },
            };
            self.lines.push(line);
        }
        Ok(())
    }

    fn write(&mut self, index: usize, high: bool) -> Result<(), GpioError> {
        match self.line(index)? {
            Line::Gpio(r) => r
                .set_lone_value(if high { Value::Active } else { Value::Inactive })
                .map_err(|e| GpioError::Hardware(e.to_string())),
            Line::Pwm(_) => Err(GpioError::Hardware("not a digital line".into())),
        }
    }

    fn read(&mut self, index: usize) -> Result<bool, GpioError> {
        match self.line(index)? {
            Line::Gpio(r) => r
                .lone_value()
                .map(|v| v == Value::Active)
                .map_err(|e| GpioError::Hardware(e.to_string())),
            Line::Pwm(_) => Err(GpioError::Hardware("not a digital line".into())),
        }
    }

    fn set_pwm(&mut self, index: usize, frequency_hz: f64, duty: f64) -> Result<(), GpioError> {
        match self.line(index)? {
            Line::Pwm(p) => {
                let period = Duration::from_secs_f64(1.0 / frequency_hz);
                p.set(period, period.mul_f64(duty.clamp(0.0, 1.0)))
            }
            Line::Gpio(_) => Err(GpioError::Hardware("not a PWM channel".into())),
        }
    }

    fn set_pulse(
        &mut self,
        index: usize,
        period: Duration,
        pulse: Duration,
    ) -> Result<(), GpioError> {
        match self.line(index)? {
            Line::Pwm(p) => p.set(period, pulse),
            Line::Gpio(_) => Err(GpioError::Hardware("not a PWM channel".into())),
        }
    }
}

impl Drop for CdevBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in self.watchers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_pwm_exports_and_writes_period_then_duty() {
        let root = tempfile::tempdir().expect("temp dir");
        let chip = root.path().join("pwmchip0");
        std::fs::create_dir_all(&chip).expect("chip dir");
        // The kernel creates pwm0/ when "0" is written to export; do it for it.
        std::fs::create_dir_all(chip.join("pwm0")).expect("channel dir");
        let pwm = SysfsPwm::open(root.path(), "pwmchip0", 0).expect("opens");
        pwm.set(Duration::from_millis(20), Duration::from_micros(1500))
            .expect("writes");
        let read = |f: &str| std::fs::read_to_string(chip.join("pwm0").join(f)).expect("written");
        assert_eq!(read("period"), "20000000");
        assert_eq!(read("duty_cycle"), "1500000");
        assert_eq!(read("enable"), "1");
    }

    #[test]
    fn missing_pwm_chip_is_a_clear_error() {
        let root = tempfile::tempdir().expect("temp dir");
        match SysfsPwm::open(root.path(), "pwmchip3", 1) {
            Err(GpioError::Setup(m)) => assert!(m.contains("pwmchip3"), "{m}"),
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => panic!("must fail"),
        }
    }

    #[test]
    fn missing_chip_device_is_reported_per_pin() {
        let spec = PinSpec {
            name: "relay".into(),
            pin: PinRef::ChipOffset {
                chip: "gpiochip99".into(),
                offset: 3,
            },
            active_low: false,
            mode: PinMode::Output {
                initial: false,
                failsafe: None,
            },
        };
        let (tx, _rx) = mpsc::channel();
        match CdevBackend::new().setup(&[spec], tx) {
            Err(GpioError::Setup(m)) => {
                assert!(m.contains("relay") && m.contains("gpiochip99"), "{m}")
            }
            Err(e) => panic!("unexpected {e}"),
            Ok(()) => panic!("gpiochip99 does not exist here"),
        }
    }
}
