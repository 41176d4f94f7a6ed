//! The microphone's thread: while the hub wants its sources (someone
//! watches), it reads 20 ms frames from the input (ALSA, or the test
//! tone), encodes each once with Opus and publishes it to the hub as the
//! audio track. A device that fails or vanishes is reopened with backoff;
//! the video never waits for it.

use super::codec::OpusEncoder;
use super::{AudioError, AudioStats, FRAME, FRAME_SAMPLES, SAMPLE_RATE, pcm, tone};
use crate::backoff::Backoff;
use crate::config::{AudioInput, AudioSettings};
use crate::media::frame::{Packet, TrackId};
use crate::media::hub::Hub;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where frames come from.
trait Source {
    /// Fills `out` with the next frame; returns when its first sample was captured.
    fn read(&mut self, out: &mut [i16]) -> Result<Instant, AudioError>;
}

fn wall_samples() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000) as u64
}

/// The test tone, paced by the wall clock it is drawn from.
struct ToneSource {
    channels: usize,
    next: u64,
}

impl Source for ToneSource {
    fn read(&mut self, out: &mut [i16]) -> Result<Instant, AudioError> {
        let end = self.next + FRAME_SAMPLES as u64;
        // Wait until the frame's last sample has "happened".
        let now = wall_samples();
        if end > now {
            let wait = (end - now) * 1_000_000 / u64::from(SAMPLE_RATE);
            std::thread::sleep(Duration::from_micros(wait.min(100_000)));
        }
        let first = self.next;
        self.next = tone::fill(out, self.channels, first);
        // A stall (a suspended machine) skips ahead rather than bursting.
        let now = wall_samples();
        if now > self.next + u64::from(SAMPLE_RATE) / 5 {
            self.next = now - now % FRAME_SAMPLES as u64;
        }
        let age = now.saturating_sub(first) * 1_000_000 / u64::from(SAMPLE_RATE);
        Ok(Instant::now()
            .checked_sub(Duration::from_micros(age))
            .unwrap_or_else(Instant::now))
    }
}

/// An ALSA capture device.
struct AlsaSource {
    pcm: alsa::PCM,
    device: String,
    channels: u64,
    started: Instant,
    frames: u32,
}

impl Source for AlsaSource {
    fn read(&mut self, out: &mut [i16]) -> Result<Instant, AudioError> {
        pcm::read_frame(&self.pcm, &self.device, out)?;
        let now = Instant::now();
        self.frames = self.frames.wrapping_add(1);
        // A device with no clock of its own (alsa-lib's null and file
        // plugins) delivers as fast as it is read: held to real time.
        let due = self.started + FRAME * self.frames;
        if due > now + FRAME * 2 {
            std::thread::sleep(due - now - FRAME);
        }
        let queued = pcm::queued(&self.pcm) / self.channels.max(1);
        let age = Duration::from_micros(
            (FRAME_SAMPLES as u64 + queued) * 1_000_000 / u64::from(SAMPLE_RATE),
        );
        Ok(Instant::now().checked_sub(age).unwrap_or_else(Instant::now))
    }
}

fn open(input: &AudioInput, channels: u8) -> Result<Box<dyn Source>, AudioError> {
    match input {
        AudioInput::Off => Err(AudioError::Off),
        AudioInput::Test => Ok(Box::new(ToneSource {
            channels: usize::from(channels),
            next: wall_samples() / FRAME_SAMPLES as u64 * FRAME_SAMPLES as u64,
        })),
        AudioInput::Alsa(device) => Ok(Box::new(AlsaSource {
            pcm: pcm::open(device, false, channels)?,
            device: device.clone(),
            channels: u64::from(channels),
            started: Instant::now(),
            frames: 0,
        })),
    }
}

/// Starts the microphone's thread; it ends when the hub closes.
pub fn spawn(
    settings: &AudioSettings,
    hub: Arc<Hub>,
    stats: Arc<AudioStats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let input = settings.input.clone();
    let channels = settings.channels;
    let bitrate = settings.bitrate_kbps;
    std::thread::Builder::new()
        .name("rtcam-audio-in".into())
        .spawn(move || run(&input, channels, bitrate, &hub, &stats))
}

fn run(input: &AudioInput, channels: u8, bitrate: u32, hub: &Hub, stats: &AudioStats) {
    let mut backoff = Backoff::standard();
    let mut failing = false;
    while !hub.is_closed() {
        if !hub.wait_for_demand(Duration::from_secs(1)) {
            continue;
        }
        match capture(input, channels, bitrate, hub, stats) {
            Ok(()) => {
                backoff.reset();
                if failing {
                    tracing::info!(input = input.as_config(), "microphone back");
                    failing = false;
                }
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.running.store(false, Ordering::Relaxed);
                let delay = backoff.next_delay();
                if !failing {
                    tracing::warn!(input = input.as_config(), error = %e, "microphone failed; retrying with backoff (the video goes on)");
                } else {
                    tracing::debug!(input = input.as_config(), error = %e, retry_in = ?delay, "microphone still failing");
                }
                failing = true;
                hub.sleep_unless_closed(delay);
            }
        }
    }
}

/// Captures while someone watches; Ok when nobody does any more.
fn capture(
    input: &AudioInput,
    channels: u8,
    bitrate: u32,
    hub: &Hub,
    stats: &AudioStats,
) -> Result<(), AudioError> {
    let mut source = open(input, channels)?;
    let mut enc = OpusEncoder::new(channels, bitrate)?;
    let mut pcm = vec![0i16; FRAME_SAMPLES * usize::from(channels)];
    stats.running.store(true, Ordering::Relaxed);
    tracing::info!(
        input = input.as_config(),
        channels,
        bitrate_kbps = bitrate,
        "microphone started"
    );
    let epoch = hub.epoch();
    let mut frames = 0u64;
    while hub.wants_source() {
        let captured = source.read(&mut pcm)?;
        let data = enc.encode(&pcm)?;
        stats.frames.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        frames += 1;
        hub.publish(Packet {
            track: TrackId::AUDIO,
            data,
            pts: captured.saturating_duration_since(epoch),
            keyframe: true,
        });
    }
    stats.running.store(false, Ordering::Relaxed);
    tracing::info!(
        input = input.as_config(),
        frames,
        "microphone stopped: nobody listens"
    );
    Ok(())
}
