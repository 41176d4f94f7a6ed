//! `rtcam record`: subscribes to the hub like any viewer and writes what it
//! receives as an Annex B H.264 file, so anyone can check the stream with ffmpeg.

use crate::hub::Subscription;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long to wait for a frame before declaring the source dead.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(15);

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
    #[error("no frame within {0:?} (after {1} frames): is the camera working? see `rtcam devices`")]
    Timeout(Duration, u32),
    /// The hub closed (agent shutting down).
    #[error("the stream ended after {0} frames")]
    Ended(u32),
}

/// Writes `frames` access units from `sub` to `output` (`-` = stdout).
/// The first one is a keyframe: the hub guarantees it for new subscribers.
pub async fn record(
    sub: &mut Subscription,
    frames: u32,
    output: &Path,
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
        let frame = tokio::time::timeout(FRAME_TIMEOUT, sub.recv())
            .await
            .map_err(|_| RecordError::Timeout(FRAME_TIMEOUT, summary.frames))?
            .ok_or(RecordError::Ended(summary.frames))?;
        out.write_all(&frame.data).await.map_err(io)?;
        summary.frames += 1;
        summary.keyframes += u32::from(frame.keyframe);
        summary.bytes += frame.data.len() as u64;
    }
    out.flush().await.map_err(io)?;
    Ok(summary)
}
