//! Video encoders behind one small trait, and the factory that picks one
//! for what the source delivers. The pipeline only sees [`VideoEncoder`]:
//! it hands over the source's frame when the encoder accepts its format and
//! an I420 picture otherwise, and never asks which encoder it drives.
//!
//! Adding an encoder is one file here plus an arm in [`EncoderKind`] and
//! [`open`]. Steering (keyframe requests, bitrate) reaches the media thread
//! through [`EncoderControl`], not through the hub.

mod control;
pub mod openh264;
pub mod passthrough;

pub use control::{EncoderControl, KeyframeRation};

use crate::config::VideoSettings;
use crate::media::capture::SourceInfo;
use crate::media::convert::ConvertError;
use crate::media::frame::{I420View, PixelFormat, RawFrame};
use bytes::Bytes;
use std::fmt;
use std::time::Duration;

/// The `profile-level-id` rtcam announces: Constrained Baseline, level 3.1.
pub const PROFILE_LEVEL_ID: &str = "42e01f";

/// Encoder parameters (from `[video]`).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSettings {
    /// Picture width (even).
    pub width: u32,
    /// Picture height (even).
    pub height: u32,
    /// Nominal frame rate.
    pub fps: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Time between periodic IDRs.
    pub keyframe_interval: Duration,
    /// Pass a camera's own H.264 through instead of encoding (`video.passthrough`).
    pub passthrough: bool,
    /// OpenH264 threads (and slices per picture); 0 picks one per core, at most 4.
    pub threads: u32,
}

impl EncoderSettings {
    /// The encoder parameters of a `[video]` section.
    pub fn from_video(v: &VideoSettings) -> Self {
        Self {
            width: v.width,
            height: v.height,
            fps: v.fps,
            bitrate_kbps: v.bitrate_kbps,
            keyframe_interval: v.keyframe_interval,
            passthrough: v.passthrough,
            threads: v.encoder_threads,
        }
    }
}

/// Why an encoder could not be opened or failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoder refused the configuration.
    #[error("cannot initialise the H.264 encoder: {0}")]
    Init(String),
    /// The encoder failed on a frame.
    #[error("H.264 encoding failed: {0}")]
    Encode(String),
    /// The run-time bitrate change was refused.
    #[error("cannot set bitrate to {kbps} kbit/s: {reason}")]
    Bitrate {
        /// Requested bitrate.
        kbps: u32,
        /// The encoder's answer.
        reason: String,
    },
    /// No encoder takes what the source delivers.
    #[error("the {encoder} encoder cannot take {format} frames")]
    Unsupported {
        /// The source's format.
        format: PixelFormat,
        /// The encoder chosen.
        encoder: EncoderKind,
    },
    /// One frame was unusable (short, odd size); the next may be fine.
    #[error(transparent)]
    BadFrame(#[from] ConvertError),
}

/// One encoded access unit.
#[derive(Debug, Clone)]
pub struct EncodedAu {
    /// Annex B bytes.
    pub data: Bytes,
    /// True for an IDR (then SPS and PPS come first).
    pub keyframe: bool,
}

/// A picture handed to an encoder.
#[derive(Debug, Clone, Copy)]
pub enum EncoderInput<'a> {
    /// The source's frame as delivered: its format is one the encoder accepts.
    Frame(RawFrame<'a>),
    /// The source's frame converted to I420 (its own format is not accepted).
    I420(I420View<'a>),
}

impl EncoderInput<'_> {
    /// The picture's pixel format.
    pub fn format(&self) -> PixelFormat {
        match self {
            EncoderInput::Frame(f) => f.format,
            EncoderInput::I420(_) => PixelFormat::I420,
        }
    }
}

/// Who makes the keyframe that was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeBy {
    /// The encoder's next output will be one.
    Encoder,
    /// Only the source can make one (it encodes by itself); ask it.
    Source,
}

/// A video encoder as the pipeline drives it.
pub trait VideoEncoder: Send {
    /// Which encoder this is (for logs and errors).
    fn kind(&self) -> EncoderKind;

    /// Formats `encode` takes as [`EncoderInput::Frame`]; an encoder that
    /// does not accept the source's format must accept I420.
    fn accepts(&self) -> &[PixelFormat];

    /// Encodes one picture presented at `pts`; `None` when nothing came out.
    fn encode(
        &mut self,
        input: EncoderInput<'_>,
        pts: Duration,
    ) -> Result<Option<EncodedAu>, EncodeError>;

    /// Makes a keyframe come as soon as possible.
    fn request_keyframe(&mut self) -> KeyframeBy;

    /// Changes the target bitrate while running; returns the bitrate applied,
    /// or `None` when this encoder has no bitrate to set.
    fn set_bitrate(&mut self, kbps: u32) -> Result<Option<u32>, EncodeError>;

    /// The bitrate it runs at; `None` when it has none to set.
    fn bitrate_kbps(&self) -> Option<u32>;
}

/// The encoders rtcam has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// The camera's own H.264, passed through.
    Passthrough,
    /// OpenH264 in software.
    OpenH264,
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncoderKind::Passthrough => "passthrough",
            EncoderKind::OpenH264 => "openh264",
        })
    }
}

/// Which encoder serves a source delivering `format`: the camera's H.264
/// passed through when it offers it and passthrough is on, else OpenH264.
pub fn choose(format: PixelFormat, settings: &EncoderSettings) -> EncoderKind {
    if format == PixelFormat::H264 && settings.passthrough {
        EncoderKind::Passthrough
    } else {
        EncoderKind::OpenH264
    }
}

/// How the pipeline feeds an encoder frames of one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPlan {
    /// As delivered: the encoder accepts the format.
    AsIs,
    /// Converted to I420 first.
    ToI420,
}

/// How frames in `format` reach an encoder accepting `accepts`: as they are
/// when accepted, converted when the encoder takes I420 and the converter
/// reads the format, or not at all.
pub fn input_plan(
    format: PixelFormat,
    accepts: &[PixelFormat],
    encoder: EncoderKind,
) -> Result<InputPlan, EncodeError> {
    if accepts.contains(&format) {
        Ok(InputPlan::AsIs)
    } else if accepts.contains(&PixelFormat::I420) && format != PixelFormat::H264 {
        Ok(InputPlan::ToI420)
    } else {
        Err(EncodeError::Unsupported { format, encoder })
    }
}

/// Opens the encoder for what `source` delivers, at the source's size and
/// rate (the other parameters from `settings`), with how to feed it.
pub fn open(
    source: &SourceInfo,
    settings: &EncoderSettings,
) -> Result<(Box<dyn VideoEncoder>, InputPlan), EncodeError> {
    let settings = EncoderSettings {
        width: source.width as u32,
        height: source.height as u32,
        fps: source.fps,
        ..settings.clone()
    };
    let encoder: Box<dyn VideoEncoder> = match choose(source.format, &settings) {
        EncoderKind::Passthrough => Box::new(passthrough::Passthrough::new()),
        EncoderKind::OpenH264 => Box::new(openh264::OpenH264Encoder::new(&settings)?),
    };
    let plan = input_plan(source.format, encoder.accepts(), encoder.kind())?;
    Ok((encoder, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(passthrough: bool) -> EncoderSettings {
        EncoderSettings {
            width: 64,
            height: 48,
            fps: 10,
            bitrate_kbps: 300,
            keyframe_interval: Duration::from_secs(2),
            passthrough,
            threads: 1,
        }
    }

    fn source(format: PixelFormat) -> SourceInfo {
        SourceInfo {
            name: "test".into(),
            format,
            width: 64,
            height: 48,
            fps: 10,
        }
    }

    #[test]
    fn passthrough_only_for_offered_h264_with_passthrough_on() {
        assert_eq!(
            choose(PixelFormat::H264, &settings(true)),
            EncoderKind::Passthrough
        );
        for f in [
            PixelFormat::I420,
            PixelFormat::Nv12,
            PixelFormat::Yuyv,
            PixelFormat::Mjpeg,
        ] {
            assert_eq!(choose(f, &settings(true)), EncoderKind::OpenH264, "{f}");
            assert_eq!(choose(f, &settings(false)), EncoderKind::OpenH264, "{f}");
        }
        assert_eq!(
            choose(PixelFormat::H264, &settings(false)),
            EncoderKind::OpenH264
        );
    }

    #[test]
    fn frames_are_converted_only_when_the_encoder_does_not_accept_them() {
        let i420_only = [PixelFormat::I420];
        let k = EncoderKind::OpenH264;
        assert_eq!(
            input_plan(PixelFormat::I420, &i420_only, k).ok(),
            Some(InputPlan::AsIs)
        );
        for f in [PixelFormat::Nv12, PixelFormat::Yuyv, PixelFormat::Mjpeg] {
            assert_eq!(
                input_plan(f, &i420_only, k).ok(),
                Some(InputPlan::ToI420),
                "{f}"
            );
        }
        // An encoder taking several raw formats (a hardware one) gets them unconverted.
        let several = [PixelFormat::I420, PixelFormat::Nv12, PixelFormat::Yuyv];
        assert_eq!(
            input_plan(PixelFormat::Nv12, &several, k).ok(),
            Some(InputPlan::AsIs)
        );
        assert_eq!(
            input_plan(PixelFormat::Mjpeg, &several, k).ok(),
            Some(InputPlan::ToI420)
        );
        // H.264 cannot be converted (rtcam has no decoder in the pipeline).
        assert!(matches!(
            input_plan(PixelFormat::H264, &i420_only, k),
            Err(EncodeError::Unsupported {
                format: PixelFormat::H264,
                ..
            })
        ));
        // Nor can anything become H.264 for passthrough.
        assert!(input_plan(PixelFormat::Yuyv, &[PixelFormat::H264], k).is_err());
    }

    #[test]
    fn factory_opens_the_chosen_encoder_with_its_plan() {
        let (enc, plan) = open(&source(PixelFormat::H264), &settings(true)).expect("passthrough");
        assert_eq!(
            (enc.kind(), plan),
            (EncoderKind::Passthrough, InputPlan::AsIs)
        );
        assert_eq!(
            enc.bitrate_kbps(),
            None,
            "passthrough has no bitrate to set"
        );

        let (enc, plan) = open(&source(PixelFormat::Yuyv), &settings(true)).expect("openh264");
        assert_eq!(
            (enc.kind(), plan),
            (EncoderKind::OpenH264, InputPlan::ToI420)
        );
        assert_eq!(enc.bitrate_kbps(), Some(300));

        let (enc, plan) = open(&source(PixelFormat::I420), &settings(false)).expect("openh264");
        assert_eq!((enc.kind(), plan), (EncoderKind::OpenH264, InputPlan::AsIs));

        assert!(
            matches!(
                open(&source(PixelFormat::H264), &settings(false)),
                Err(EncodeError::Unsupported {
                    encoder: EncoderKind::OpenH264,
                    ..
                })
            ),
            "H.264 from the camera without passthrough has no encoder"
        );
    }
}
