//! The cdev backend against the kernel's GPIO simulator (gpio-sim, through
//! the `gpiosim` crate). It needs root, configfs and a kernel with
//! CONFIG_GPIO_SIM, which this project's CI host lacks: it is `#[ignore]`d
//! (reported as such by `cargo test`) and run with `--ignored` where the
//! driver exists; there it fails, never passes, if gpio-sim cannot be used.

use rtcam::gpio::cdev::CdevBackend;
use rtcam::gpio::pins::{PinMode, PinRef, PinSpec, Pull};
use rtcam::gpio::{Actor, Gpio, PinValue};
use std::time::Duration;

#[tokio::test]
#[ignore = "needs the kernel's gpio-sim driver (root, configfs): run with --ignored where it exists"]
async fn cdev_backend_drives_and_reads_simulated_lines() {
    let mut bank = gpiosim::Bank::new(8, "rtcam-test");
    bank.name(3, "RTCAM_DOOR");
    let sim = gpiosim::builder()
        .with_name(gpiosim::unique_name("rtcam", None))
        .with_bank(&bank)
        .live()
        .unwrap_or_else(|e| {
            panic!(
                "the kernel's GPIO simulator is unavailable ({e}): this test needs root, \
                 configfs at /sys/kernel/config and the gpio-sim module"
            )
        });
    let chip = &sim.chips()[0];
    let chip_name = chip
        .dev_path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a /dev/gpiochipN path")
        .to_string();
    let pins = vec![
        PinSpec {
            name: "relay".into(),
            pin: PinRef::ChipOffset {
                chip: chip_name,
                offset: 1,
            },
            active_low: false,
            mode: PinMode::Output {
                initial: false,
                failsafe: None,
            },
        },
        PinSpec {
            name: "door".into(),
            pin: PinRef::LineName("RTCAM_DOOR".into()),
            active_low: false,
            mode: PinMode::Input {
                pull: Pull::None,
                debounce: Duration::ZERO,
            },
        },
    ];
    let gpio = Gpio::start(
        pins,
        Box::new(CdevBackend::new()),
        None,
        Duration::from_secs(10),
    )
    .expect("cdev lines requested");
    assert_eq!(chip.get_level(1).expect("level"), gpiosim::Level::Low);
    gpio.set("relay", true, Actor::Agent).expect("set");
    assert_eq!(chip.get_level(1).expect("level"), gpiosim::Level::High);
    let mut events = gpio.subscribe();
    chip.set_pull(3, gpiosim::Level::High)
        .expect("drive the input");
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an edge event")
        .expect("open");
    assert_eq!((ev.pin.as_str(), ev.value), ("door", PinValue::Level(true)));
    eprintln!(
        "cdev/gpio-sim test ran against {}",
        chip.dev_path().display()
    );
}
