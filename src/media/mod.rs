//! The media chain, one stage per module, in the order data flows:
//!
//! ```text
//!  capture ─▶ convert ─▶ encode ─▶ hub ─▶ subscribers (viewers, `rtcam record`)
//!  (Source)   (→ I420,    (VideoEncoder:     (Packets of tracks,
//!              only when   OpenH264, V4L2     bounded queue per
//!              the encoder M2M, passthrough)  subscriber)
//!              needs it)      ▲
//!                             └── EncoderControl: keyframe requests, bitrate,
//!                                 frame rate ◀── rate: viewers' receiver
//!                                 reports → one bitrate for all
//! ```
//!
//! [`pipeline`] is the media thread that drives these stages and
//! [`stage_times`] records how long each frame spends in each; [`frame`]
//! holds the types passed between them and [`h264`] the Annex B parsing
//! the H.264 stages share. [`tap`] takes raw pictures off the media thread
//! (snapshots, the motion detector's luma) and [`still`] makes JPEG stills.
//! Nothing here names WebRTC or MQTT types.

pub mod capture;
pub mod convert;
pub mod encode;
pub mod frame;
pub mod h264;
pub mod hub;
pub mod pipeline;
pub mod rate;
pub mod stage_times;
pub mod still;
pub mod tap;
