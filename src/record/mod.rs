//! Recording: the hub's H.264, and its Opus audio when the microphone is
//! on, written to fragmented MP4 segments on disk, never re-encoded.
//!
//! ```text
//!  hub ─▶ Subscription ─▶ task (policy: pure) ─▶ jobs ─▶ writer thread (mp4 → store: files, fsync)
//!          triggers: GPIO edges, commands ──▲                └─ retention after each segment
//! ```
//!
//! - [`mqtt`]: state and events on `P/record`, commands on `P/record/set`.
//! - [`policy`]: when segments and fragments start and end (pure).
//! - [`mp4`]: the fMP4 boxes of an init segment and of one fragment (pure).
//! - [`store`]: segment files: names, listing, crash repair, syncing.
//! - [`recorder`]: the task and writer thread at work, and the handle the agent holds.
//! - [`retention`]: which segments to delete (pure).
//! - [`annexb`]: `rtcam record`, the hub's output as a raw Annex B file.

pub mod annexb;
pub mod mp4;
pub mod mqtt;
pub mod policy;
pub mod recorder;
pub mod retention;
pub mod store;

pub use annexb::{FRAME_TIMEOUT, RecordError, RecordSummary, record};
