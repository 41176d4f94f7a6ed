//! `rtcam record`: subscribes to the hub like any viewer and writes what it
//! receives as an Annex B H.264 file, so anyone can check the stream with ffmpeg.
//!
//! A camera that goes away (unplugged, driver reset) is waited for: the
//! media thread reopens it (every 2 s at most for `record`) and the
//! recording goes on from its next keyframe. `record` gives up, keeping
//! what it wrote, once no frame has come for its timeout (`--timeout`,
//! [`FRAME_TIMEOUT`] by default).

use crate::media::frame::TrackId;
use crate::media::hub::Subscription;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long `record` waits without a frame (camera away or stuck) by default.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    /// Access units written.
    pub frames: u32,
    /// Of which keyframes.
    pub keyframes: u32,
    /// Bytes written.
    pub bytes: u64,
}

/// Why recording stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// Output path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// No frame arrived in time.
    #[error(
        "no frame within {0:?} (after {1} frames, which were kept): is the camera working? see `rtcam devices`"
    )]
    Timeout(Duration, u32),
    /// The hub closed (agent shutting down).
    #[error("the stream ended after {0} frames")]
    Ended(u32),
}

/// Writes `frames` access units from `sub` to `output` (`-` = stdout),
/// waiting at most `timeout` for each. The first one is a keyframe: the hub
/// guarantees it for new subscribers, and again after the camera reopens.
pub async fn record(
    sub: &mut Subscription,
    frames: u32,
    output: &Path,
    timeout: Duration,
) -> Result<RecordSummary, RecordError> {
    let name = output.display().to_string();
    let io = |source| RecordError::Io {
        path: name.clone(),
        source,
    };
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if name == "-" {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(tokio::fs::File::create(output).await.map_err(io)?)
    };
    let mut summary = RecordSummary {
        frames: 0,
        keyframes: 0,
        bytes: 0,
    };
    while summary.frames < frames {
        let frame = match tokio::time::timeout(timeout, sub.recv()).await {
            Ok(Some(frame)) if frame.track == TrackId::VIDEO => frame,
            // The file is the video track's Annex B stream only.
            Ok(Some(_)) => continue,
            Ok(None) => {
                out.flush().await.map_err(io)?;
                return Err(RecordError::Ended(summary.frames));
            }
            Err(_) => {
                out.flush().await.map_err(io)?;
                return Err(RecordError::Timeout(timeout, summary.frames));
            }
        };
        out.write_all(&frame.data).await.map_err(io)?;
        summary.frames += 1;
        summary.keyframes += u32::from(frame.keyframe);
        summary.bytes += frame.data.len() as u64;
    }
    out.flush().await.map_err(io)?;
    Ok(summary)
}
