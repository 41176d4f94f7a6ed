//! Video encoders behind one small trait, and the factory that picks one
//! for what the source delivers. The pipeline only sees [`VideoEncoder`]:
//! it hands over the source's frame when the encoder accepts its format and
//! an I420 picture otherwise, and never asks which encoder it drives.
//!
//! Adding an encoder is one file here plus an arm in [`EncoderKind`] and
//! [`open`]. Steering (keyframe requests, bitrate) reaches the media thread
//! through [`EncoderControl`], not through the hub.
//!
//! Which encoder runs ([`choose`], pure): the camera's H.264 passed through
//! when `passthrough = true` and the camera delivers it; else, for
//! `encoder = "auto"`, the board's V4L2 memory-to-memory encoder when one
//! offers H.264 and opens, else OpenH264.

mod control;
pub mod m2m_devices;
pub mod m2m_params;
pub mod openh264;
pub mod passthrough;
pub mod v4l2m2m;

pub use control::{EncoderControl, KeyframeRation};
pub use m2m_params::CodedFormat;

use crate::config::{EncoderPref, VideoSettings};
use crate::media::capture::SourceInfo;
use crate::media::convert::ConvertError;
use crate::media::frame::{I420View, PixelFormat, RawFrame};
use bytes::Bytes;
use m2m_devices::M2mEncoder;
use std::fmt;
use std::path::PathBuf;
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
    /// Which encoder `[video] encoder` asks for.
    pub pref: EncoderPref,
    /// The M2M encoder node (`video.encoder_device`); `None`: the first that fits.
    pub device: Option<PathBuf>,
    /// What an M2M encoder produces: H.264, or FWHT in the kernel lab.
    pub coded: CodedFormat,
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
            pref: v.encoder,
            device: v.encoder_device.clone(),
            coded: CodedFormat::H264,
        }
    }

    /// What an M2M encoder is opened with for these settings.
    pub fn m2m_params(&self) -> m2m_params::OpenParams {
        m2m_params::OpenParams {
            width: self.width,
            height: self.height,
            fps: self.fps,
            bitrate_kbps: self.bitrate_kbps,
            keyframe_interval: self.keyframe_interval,
            coded: self.coded,
        }
    }
}

/// Why an encoder could not be opened or failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoder refused the configuration.
    #[error("cannot open the video encoder: {0}")]
    Init(String),
    /// The encoder failed on a frame.
    #[error("encoding failed: {0}")]
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

    /// CPU copies of input pictures it has made so far (0 for encoders
    /// that read the picture where it lies).
    fn input_copies(&self) -> u64 {
        0
    }
}

/// The encoders rtcam has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// The camera's own H.264, passed through.
    Passthrough,
    /// OpenH264 in software.
    OpenH264,
    /// A V4L2 memory-to-memory (hardware) encoder.
    V4l2M2m,
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncoderKind::Passthrough => "passthrough",
            EncoderKind::OpenH264 => "openh264",
            EncoderKind::V4l2M2m => "v4l2m2m",
        })
    }
}

/// The encoder chosen for a source, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The encoder.
    pub kind: EncoderKind,
    /// Its device node (hardware encoders).
    pub device: Option<PathBuf>,
    /// Why it was chosen.
    pub why: String,
}

/// Which encoder serves a source delivering `format`, given the M2M
/// encoders found (`hardware`, in node order). Refused: `encoder =
/// "v4l2m2m"` with no usable hardware encoder, which names each one tried.
pub fn choose(
    format: PixelFormat,
    settings: &EncoderSettings,
    hardware: &[M2mEncoder],
) -> Result<Choice, EncodeError> {
    let software = |why: String| Choice {
        kind: EncoderKind::OpenH264,
        device: None,
        why,
    };
    if format == PixelFormat::H264 && settings.passthrough {
        return Ok(Choice {
            kind: EncoderKind::Passthrough,
            device: None,
            why: "the camera delivers H.264 and video.passthrough is on".into(),
        });
    }
    if settings.pref == EncoderPref::OpenH264 {
        return Ok(software("video.encoder = \"openh264\"".into()));
    }
    let candidates: Vec<&M2mEncoder> = match &settings.device {
        Some(path) => hardware.iter().filter(|e| &e.path == path).collect(),
        None => hardware.iter().collect(),
    };
    let mut refused = Vec::new();
    for e in &candidates {
        match e.unusable_for(settings.coded) {
            None => {
                return Ok(Choice {
                    kind: EncoderKind::V4l2M2m,
                    device: Some(e.path.clone()),
                    why: format!(
                        "{} ({}) gives {}",
                        e.path.display(),
                        e.driver,
                        settings.coded
                    ),
                });
            }
            Some(why) => refused.push(why),
        }
    }
    let none = match (&settings.device, refused.is_empty()) {
        (Some(path), true) => format!(
            "video.encoder_device {} is not a memory-to-memory encoder",
            path.display()
        ),
        (None, true) => "no V4L2 memory-to-memory encoder found".to_string(),
        (_, false) => format!(
            "no usable V4L2 memory-to-memory {} encoder: {}",
            settings.coded,
            refused.join("; ")
        ),
    };
    match settings.pref {
        EncoderPref::V4l2M2m => Err(EncodeError::Init(none)),
        _ => Ok(software(none)),
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
/// rate (the other parameters from `settings`), with how to feed it. The
/// M2M encoders are looked up only when the choice can use one.
pub fn open(
    source: &SourceInfo,
    settings: &EncoderSettings,
) -> Result<(Box<dyn VideoEncoder>, InputPlan), EncodeError> {
    let wants_hardware = settings.pref != EncoderPref::OpenH264
        && !(source.format == PixelFormat::H264 && settings.passthrough);
    let hardware = if wants_hardware {
        m2m_devices::list()
    } else {
        Vec::new()
    };
    open_with(source, settings, &hardware)
}

/// [`open`] with the M2M encoders already listed.
pub fn open_with(
    source: &SourceInfo,
    settings: &EncoderSettings,
    hardware: &[M2mEncoder],
) -> Result<(Box<dyn VideoEncoder>, InputPlan), EncodeError> {
    let settings = EncoderSettings {
        width: source.width as u32,
        height: source.height as u32,
        fps: source.fps,
        ..settings.clone()
    };
    let choice = choose(source.format, &settings, hardware)?;
    tracing::info!(encoder = %choice.kind, why = %choice.why, "encoder chosen");
    let encoder: Box<dyn VideoEncoder> = match (choice.kind, &choice.device) {
        (EncoderKind::Passthrough, _) => Box::new(passthrough::Passthrough::new()),
        (EncoderKind::V4l2M2m, Some(device)) => {
            let accepts = hardware
                .iter()
                .find(|e| &e.path == device)
                .map(M2mEncoder::accepts)
                .unwrap_or_default();
            // The camera's own format when the encoder takes it: nothing is converted.
            let input = if accepts.contains(&source.format) {
                source.format
            } else {
                PixelFormat::I420
            };
            match v4l2m2m::V4l2M2mEncoder::open(device, settings.m2m_params(), input) {
                Ok(e) => Box::new(e),
                Err(e) if settings.pref == EncoderPref::Auto => {
                    tracing::warn!(error = %e, "the hardware encoder cannot be opened; encoding with OpenH264");
                    Box::new(openh264::OpenH264Encoder::new(&settings)?)
                }
                Err(e) => return Err(e),
            }
        }
        _ => Box::new(openh264::OpenH264Encoder::new(&settings)?),
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
            pref: EncoderPref::Auto,
            device: None,
            coded: CodedFormat::H264,
        }
    }

    fn hw(path: &str, coded: &str) -> M2mEncoder {
        M2mEncoder {
            path: path.into(),
            card: "card".into(),
            driver: "drv".into(),
            multiplanar: true,
            coded: vec![coded.into()],
            raw: vec!["YU12".into(), "YUYV".into()],
        }
    }

    fn kind(format: PixelFormat, s: &EncoderSettings, hardware: &[M2mEncoder]) -> EncoderKind {
        choose(format, s, hardware).expect("a choice").kind
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
            kind(PixelFormat::H264, &settings(true), &[]),
            EncoderKind::Passthrough
        );
        for f in [
            PixelFormat::I420,
            PixelFormat::Nv12,
            PixelFormat::Yuyv,
            PixelFormat::Mjpeg,
        ] {
            assert_eq!(kind(f, &settings(true), &[]), EncoderKind::OpenH264, "{f}");
            assert_eq!(kind(f, &settings(false), &[]), EncoderKind::OpenH264, "{f}");
        }
        assert_eq!(
            kind(PixelFormat::H264, &settings(false), &[]),
            EncoderKind::OpenH264
        );
    }

    #[test]
    fn auto_takes_passthrough_then_hardware_then_openh264() {
        let pi = [hw("/dev/video10", "FWHT"), hw("/dev/video11", "H264")];
        let auto = settings(true);
        // Passthrough wins over the hardware encoder.
        assert_eq!(
            kind(PixelFormat::H264, &auto, &pi),
            EncoderKind::Passthrough
        );
        // The first encoder giving H.264, not the first M2M node.
        let c = choose(PixelFormat::Yuyv, &auto, &pi).expect("hardware");
        assert_eq!(c.kind, EncoderKind::V4l2M2m);
        assert_eq!(c.device, Some(PathBuf::from("/dev/video11")));
        // None giving H.264: OpenH264, saying what each one gives.
        let c = choose(PixelFormat::Yuyv, &auto, &pi[..1]).expect("software");
        assert_eq!(c.kind, EncoderKind::OpenH264);
        assert!(c.why.contains("gives FWHT, not H264"), "{}", c.why);
        assert!(
            choose(PixelFormat::Yuyv, &auto, &[])
                .expect("software")
                .why
                .contains("no V4L2 memory-to-memory encoder found")
        );
        // The lab's stand-in: vicodec chosen when FWHT is what is wanted.
        let lab = EncoderSettings {
            coded: CodedFormat::Fwht,
            ..settings(false)
        };
        assert_eq!(
            choose(PixelFormat::Yuyv, &lab, &pi)
                .expect("vicodec")
                .device,
            Some(PathBuf::from("/dev/video10"))
        );
    }

    #[test]
    fn explicit_choices_are_kept_or_refused_by_name() {
        let pi = [hw("/dev/video10", "H264"), hw("/dev/video11", "H264")];
        let soft = EncoderSettings {
            pref: EncoderPref::OpenH264,
            ..settings(false)
        };
        assert_eq!(kind(PixelFormat::Yuyv, &soft, &pi), EncoderKind::OpenH264);
        let pinned = EncoderSettings {
            pref: EncoderPref::V4l2M2m,
            device: Some("/dev/video11".into()),
            ..settings(false)
        };
        assert_eq!(
            choose(PixelFormat::Yuyv, &pinned, &pi)
                .expect("pinned")
                .device,
            Some(PathBuf::from("/dev/video11"))
        );
        let missing = EncoderSettings {
            device: Some("/dev/video3".into()),
            ..pinned.clone()
        };
        match choose(PixelFormat::Yuyv, &missing, &pi) {
            Err(EncodeError::Init(why)) => {
                assert!(why.contains("video.encoder_device /dev/video3"), "{why}")
            }
            other => panic!("refused expected, got {other:?}"),
        }
        let fwht_only = [hw("/dev/video10", "FWHT")];
        match choose(
            PixelFormat::Yuyv,
            &EncoderSettings {
                device: None,
                ..pinned
            },
            &fwht_only,
        ) {
            Err(EncodeError::Init(why)) => assert!(why.contains("gives FWHT"), "{why}"),
            other => panic!("refused expected, got {other:?}"),
        }
    }

    #[test]
    fn a_hardware_encoder_that_will_not_open_falls_back_to_openh264_only_under_auto() {
        // /dev/null opens but is no V4L2 device: the open fails at VIDIOC_QUERYCAP.
        let broken = [hw("/dev/null", "H264")];
        let (enc, plan) = open_with(&source(PixelFormat::Yuyv), &settings(false), &broken)
            .expect("auto falls back");
        assert_eq!(
            (enc.kind(), plan),
            (EncoderKind::OpenH264, InputPlan::ToI420)
        );
        let pinned = EncoderSettings {
            pref: EncoderPref::V4l2M2m,
            ..settings(false)
        };
        match open_with(&source(PixelFormat::Yuyv), &pinned, &broken) {
            Err(EncodeError::Init(why)) => assert!(why.starts_with("/dev/null: "), "{why}"),
            Err(other) => panic!("an Init error naming the node expected, got {other}"),
            Ok(_) => panic!("v4l2m2m must not fall back"),
        }
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
        let (enc, plan) =
            open_with(&source(PixelFormat::H264), &settings(true), &[]).expect("passthrough");
        assert_eq!(
            (enc.kind(), plan),
            (EncoderKind::Passthrough, InputPlan::AsIs)
        );
        assert_eq!(
            enc.bitrate_kbps(),
            None,
            "passthrough has no bitrate to set"
        );

        let (enc, plan) =
            open_with(&source(PixelFormat::Yuyv), &settings(true), &[]).expect("openh264");
        assert_eq!(
            (enc.kind(), plan),
            (EncoderKind::OpenH264, InputPlan::ToI420)
        );
        assert_eq!(enc.bitrate_kbps(), Some(300));

        let (enc, plan) =
            open_with(&source(PixelFormat::I420), &settings(false), &[]).expect("openh264");
        assert_eq!((enc.kind(), plan), (EncoderKind::OpenH264, InputPlan::AsIs));

        assert!(
            matches!(
                open_with(&source(PixelFormat::H264), &settings(false), &[]),
                Err(EncodeError::Unsupported {
                    encoder: EncoderKind::OpenH264,
                    ..
                })
            ),
            "H.264 from the camera without passthrough has no encoder"
        );
    }
}
