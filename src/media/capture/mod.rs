//! Frame sources behind one small trait. A source is opened by a factory and
//! then polled for frames on the pipeline's own thread (never on the async
//! runtime): `next_frame` blocks until the next frame is due or captured.

pub mod devices;
pub mod format_choice;
pub mod ioctl;
pub mod test_pattern;
pub mod v4l2;

use crate::config::{SourceSpec, TestScene, VideoSettings};
use crate::media::frame::{PixelFormat, RawFrame};
use std::path::PathBuf;

/// What a source delivers once opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// Human-readable name ("test pattern", "/dev/video0 (UVC Camera)").
    pub name: String,
    /// Pixel format of the frames.
    pub format: PixelFormat,
    /// Frame width.
    pub width: usize,
    /// Frame height.
    pub height: usize,
    /// Nominal frames per second.
    pub fps: u32,
}

/// Type of a camera control.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlKind {
    /// An integer in `min..=max` by `step`.
    Integer {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
        /// Increment.
        step: i64,
        /// Factory default.
        default: i64,
    },
    /// On/off (0 or 1).
    Boolean {
        /// Factory default.
        default: i64,
    },
    /// One of a list of numbered items.
    Menu {
        /// Smallest index.
        min: i64,
        /// Largest index.
        max: i64,
        /// Factory default.
        default: i64,
        /// `(index, label)` of each item.
        items: Vec<(i64, String)>,
    },
}

/// A camera control (V4L2 control, or the test pattern's own).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ControlInfo {
    /// Stable name used by `camera.set`, e.g. `brightness`.
    pub name: String,
    /// Type and range.
    #[serde(flatten)]
    pub kind: ControlKind,
    /// Current value.
    pub value: i64,
}

/// Why a source could not open or deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No capture device exists (for `auto`).
    #[error("no V4L2 capture device found")]
    NoDevice,
    /// `auto` found video nodes, none of them a usable camera.
    #[error("no usable camera among the video nodes: {0}")]
    NoCamera(String),
    /// The configured node is not a camera rtcam can use.
    #[error("{path} is not a usable camera: {reason}")]
    NotACamera {
        /// Device path.
        path: PathBuf,
        /// Why (memory-to-memory, metadata, raw Bayer, …).
        reason: devices::SkipReason,
    },
    /// The device could not be opened or queried.
    #[error("{path}: {source}")]
    Device {
        /// Device path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The device offers nothing rtcam can use.
    #[error(
        "{path}: no usable format (rtcam accepts YUYV, MJPG, NV12, YU12, H264); device offers {offered}"
    )]
    NoUsableFormat {
        /// Device path.
        path: PathBuf,
        /// FourCCs the device offered.
        offered: String,
    },
    /// Reading a frame failed (camera unplugged, timeout, …).
    #[error("capture failed: {0}")]
    Read(String),
    /// The source ended on purpose (test sources that are told to fail).
    #[error("source stopped: {0}")]
    Stopped(String),
    /// A control name that the source does not have.
    #[error("unknown camera control {0:?}")]
    UnknownControl(String),
    /// A control value out of range, or a control that cannot be set.
    #[error("camera control {name}: {reason}")]
    BadControl {
        /// Control name.
        name: String,
        /// What was wrong.
        reason: String,
    },
}

/// An open frame source.
pub trait Source: Send {
    /// What this source delivers.
    fn info(&self) -> SourceInfo;

    /// Blocks until the next frame is available and returns it.
    fn next_frame(&mut self) -> Result<RawFrame<'_>, SourceError>;

    /// Asks a source that encodes by itself (H.264 passthrough) for an IDR.
    fn request_keyframe(&mut self) {}

    /// The source's controls with their current values.
    fn controls(&mut self) -> Result<Vec<ControlInfo>, SourceError> {
        Ok(Vec::new())
    }

    /// Sets a control by name; returns the value actually applied.
    fn set_control(&mut self, name: &str, _value: i64) -> Result<i64, SourceError> {
        Err(SourceError::UnknownControl(name.to_string()))
    }
}

/// Opens a source; called again (with backoff) after every failure.
pub trait SourceFactory: Send + Sync {
    /// Opens the source, ready to deliver frames.
    fn open(&self) -> Result<Box<dyn Source>, SourceError>;
}

/// The factory for the configured `[video] source`.
pub fn factory_for(video: &VideoSettings) -> Box<dyn SourceFactory> {
    match &video.source {
        SourceSpec::Test => Box::new(
            test_pattern::TestPatternFactory::new(
                video.width as usize,
                video.height as usize,
                video.fps,
            )
            .with_scene(match video.test_scene {
                TestScene::Moving => test_pattern::Scene::Moving,
                TestScene::Still { object_after } => test_pattern::Scene::Still { object_after },
            }),
        ),
        SourceSpec::Auto => Box::new(v4l2::V4l2Factory::new(None, video)),
        SourceSpec::Device(path) => Box::new(v4l2::V4l2Factory::new(Some(path.clone()), video)),
    }
}
