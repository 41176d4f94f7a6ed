//! Sound both ways.
//!
//! ```text
//!  microphone (ALSA, or the test tone) ─▶ capture thread ─▶ Opus ─▶ hub (audio track) ─▶ viewers
//!  a viewer holding the floor ─▶ its Opus track ─▶ Talkback ─▶ jitter buffer ─▶ Opus ─▶ ALSA speaker
//! ```
//!
//! The microphone runs while the camera does (someone watches), on its own
//! thread, encoded once for everyone like the video. Talkback plays one
//! viewer at a time: the floor is taken and given up with the `audio.talk`
//! command, and released when its session ends.

pub mod capture;
pub mod codec;
pub mod floor;
pub mod jitter;
pub mod pcm;
pub mod playback;
pub mod tone;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

pub use playback::Talkback;

/// Every audio stream here runs at 48 kHz (Opus's own rate).
pub const SAMPLE_RATE: u32 = 48_000;
/// One Opus frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// Samples per channel in one frame.
pub const FRAME_SAMPLES: usize = 960;

/// What went wrong with sound.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// ALSA refused or lost the device.
    #[error("audio device {device:?}: {message}")]
    Device {
        /// The ALSA name.
        device: String,
        /// What alsa-lib said.
        message: String,
    },
    /// libopus refused.
    #[error("{0}")]
    Opus(String),
    /// `[audio] input = "off"`.
    #[error("no audio input configured")]
    Off,
}

/// Counters of the audio paths, for logs and `/metrics`.
#[derive(Debug, Default)]
pub struct AudioStats {
    /// The microphone is capturing now.
    pub running: AtomicBool,
    /// Microphone frames encoded and published.
    pub frames: AtomicU64,
    /// Opus bytes published.
    pub bytes: AtomicU64,
    /// Device failures (microphone or speaker).
    pub errors: AtomicU64,
    /// Talkback packets queued for the speaker.
    pub talk_packets: AtomicU64,
    /// Talkback packets dropped (the speaker's queue was full).
    pub talk_dropped: AtomicU64,
    /// Frames written to the speaker (silence included).
    pub played: AtomicU64,
}
