//! ALSA devices (the `alsa` crate over alsa-lib): opening a capture or
//! playback PCM at 48 kHz, 16-bit, in 20 ms periods, and recovering from
//! over- and underruns. Anything alsa-lib can name works, its userspace
//! plugins included (the tests use `file` and `null`).

use super::{AudioError, FRAME_SAMPLES, SAMPLE_RATE};
use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

fn dev(device: &str) -> impl Fn(alsa::Error) -> AudioError + '_ {
    move |e| AudioError::Device {
        device: device.to_string(),
        message: e.to_string(),
    }
}

/// Opens `device` for capture or playback with `channels`, 48 kHz S16.
pub fn open(device: &str, playback: bool, channels: u8) -> Result<PCM, AudioError> {
    let dir = if playback {
        Direction::Playback
    } else {
        Direction::Capture
    };
    let pcm = PCM::new(device, dir, false).map_err(dev(device))?;
    {
        let hw = HwParams::any(&pcm).map_err(dev(device))?;
        hw.set_access(Access::RWInterleaved).map_err(dev(device))?;
        hw.set_format(Format::s16()).map_err(dev(device))?;
        hw.set_channels(u32::from(channels)).map_err(dev(device))?;
        // alsa-lib's "plug" layers resample; a raw hw device that cannot do
        // 48 kHz is refused with a clear message rather than played wrong.
        let rate = hw
            .set_rate_near(SAMPLE_RATE, ValueOr::Nearest)
            .map_err(dev(device))?;
        if rate != SAMPLE_RATE {
            return Err(AudioError::Device {
                device: device.to_string(),
                message: format!(
                    "runs at {rate} Hz, not {SAMPLE_RATE} (use its plughw: name to resample)"
                ),
            });
        }
        let period = FRAME_SAMPLES as alsa::pcm::Frames;
        hw.set_period_size_near(period, ValueOr::Nearest)
            .map_err(dev(device))?;
        // Four periods: room for a late wake-up without adding much delay.
        hw.set_buffer_size_near(period * 4).map_err(dev(device))?;
        pcm.hw_params(&hw).map_err(dev(device))?;
    }
    pcm.prepare().map_err(dev(device))?;
    Ok(pcm)
}

/// Reads one 20 ms frame (interleaved) from a capture PCM, recovering from
/// an overrun once.
pub fn read_frame(pcm: &PCM, device: &str, out: &mut [i16]) -> Result<(), AudioError> {
    let io = pcm.io_i16().map_err(dev(device))?;
    let channels = (out.len() / FRAME_SAMPLES).max(1);
    let mut done = 0;
    let mut recovered = false;
    while done < FRAME_SAMPLES {
        match io.readi(&mut out[done * channels..]) {
            Ok(0) => {
                return Err(AudioError::Device {
                    device: device.to_string(),
                    message: "the device gave no samples".into(),
                });
            }
            Ok(n) => done += n,
            Err(e) if !recovered => {
                recovered = true;
                pcm.try_recover(e, true).map_err(dev(device))?;
            }
            Err(e) => return Err(dev(device)(e)),
        }
    }
    Ok(())
}

/// Writes interleaved samples to a playback PCM, recovering from an
/// underrun once.
pub fn write(pcm: &PCM, device: &str, samples: &[i16], channels: usize) -> Result<(), AudioError> {
    let io = pcm.io_i16().map_err(dev(device))?;
    let frames = samples.len() / channels.max(1);
    let mut done = 0;
    let mut recovered = false;
    while done < frames {
        match io.writei(&samples[done * channels..]) {
            Ok(n) => done += n,
            Err(e) if !recovered => {
                recovered = true;
                pcm.try_recover(e, true).map_err(dev(device))?;
            }
            Err(e) => return Err(dev(device)(e)),
        }
    }
    Ok(())
}

/// Samples queued in the device (capture: waiting to be read; playback:
/// not yet played), 0 when it cannot tell.
pub fn queued(pcm: &PCM) -> u64 {
    pcm.delay().map_or(0, |d| d.max(0) as u64)
}
