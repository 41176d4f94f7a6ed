//! H.264 encoding with OpenH264, set up for WebRTC rather than the crate's
//! defaults: Constrained Baseline, bitrate rate control, no frame skipping,
//! an IDR every `keyframe_interval` (by presentation time), SPS/PPS in-band
//! before every IDR, on-demand keyframes and run-time bitrate changes.

use super::{
    EncodeError, EncodedAu, EncoderInput, EncoderKind, EncoderSettings, KeyframeBy, VideoEncoder,
};
use crate::media::convert;
use crate::media::frame::{I420View, PixelFormat};
use crate::media::h264;
use bytes::Bytes;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level,
    Profile, QpRange, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};
use std::time::Duration;

/// Lowest QP: finer than this spends bits a viewer cannot see.
const MIN_QP: u8 = 16;
/// Highest QP (H.264's maximum), so low bitrates are reachable without skipping frames.
const MAX_QP: u8 = 51;
/// SPS constraint flags byte for Constrained Baseline (constraint_set0..2).
const CONSTRAINED_BASELINE_FLAGS: u8 = 0xe0;

/// Decides when the next IDR is due: periodically by presentation time, or
/// at once on request. Pure, so the policy is tested without an encoder.
#[derive(Debug, Clone)]
pub struct KeyframeSchedule {
    interval: Duration,
    last_idr: Option<Duration>,
    requested: bool,
}

impl KeyframeSchedule {
    /// A schedule with an IDR every `interval`; the first frame is always one.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_idr: None,
            requested: true,
        }
    }

    /// Makes the next frame an IDR.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// Whether the frame at `pts` must be forced to an IDR.
    pub fn due(&self, pts: Duration) -> bool {
        self.requested
            || self
                .last_idr
                .is_none_or(|last| pts.saturating_sub(last) >= self.interval)
    }

    /// Records what the encoder produced at `pts`.
    pub fn produced(&mut self, pts: Duration, keyframe: bool) {
        if keyframe {
            self.last_idr = Some(pts);
            self.requested = false;
        }
    }
}

/// The level to signal for a picture size and rate (Baseline limits, Table A-1).
fn level_for(width: u32, height: u32, fps: u32) -> Level {
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let mbps = mbs * u64::from(fps.max(1));
    match (mbs, mbps) {
        (..=1_620, ..=40_500) => Level::Level_3_0,
        (..=3_600, ..=108_000) => Level::Level_3_1,
        (..=5_120, ..=216_000) => Level::Level_3_2,
        (..=8_192, ..=245_760) => Level::Level_4_0,
        (..=8_704, ..=522_240) => Level::Level_4_2,
        (..=22_080, ..=589_824) => Level::Level_5_0,
        _ => Level::Level_5_1,
    }
}

/// OpenH264 configured for WebRTC.
pub struct OpenH264Encoder {
    enc: Encoder,
    settings: EncoderSettings,
    schedule: KeyframeSchedule,
    out: Vec<u8>,
}

impl OpenH264Encoder {
    /// Creates the encoder; the first frame it produces is an IDR.
    pub fn new(settings: &EncoderSettings) -> Result<Self, EncodeError> {
        let config = EncoderConfig::new()
            .profile(Profile::Baseline)
            .level(level_for(settings.width, settings.height, settings.fps))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(
                settings.bitrate_kbps.saturating_mul(1000),
            ))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            .skip_frames(false)
            // An explicit QP range: left at 0, OpenH264 caps QP at 42, too fine
            // to reach low bitrates without skipping frames.
            .qp(QpRange::new(MIN_QP, MAX_QP))
            // Periodic IDRs are scheduled here by time, not by OpenH264's frame count.
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .complexity(Complexity::Low)
            .num_threads(1);
        let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| EncodeError::Init(e.to_string()))?;
        route_logs(&mut enc);
        Ok(Self {
            enc,
            settings: settings.clone(),
            schedule: KeyframeSchedule::new(settings.keyframe_interval),
            out: Vec::new(),
        })
    }

    /// Makes the next frame an IDR.
    pub fn request_keyframe(&mut self) {
        self.schedule.request();
    }

    /// Changes the target bitrate while running.
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        let bps = i32::try_from(u64::from(kbps) * 1000).map_err(|_| EncodeError::Bitrate {
            kbps,
            reason: "too large".into(),
        })?;
        let raising = kbps > self.settings.bitrate_kbps;
        // The target may not exceed the maximum: raise the ceiling first, lower it last.
        let order = if raising {
            [
                openh264_sys2::ENCODER_OPTION_MAX_BITRATE,
                openh264_sys2::ENCODER_OPTION_BITRATE,
            ]
        } else {
            [
                openh264_sys2::ENCODER_OPTION_BITRATE,
                openh264_sys2::ENCODER_OPTION_MAX_BITRATE,
            ]
        };
        for option in order {
            let mut info = openh264_sys2::TagBitrateInfo {
                iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
                iBitrate: bps,
            };
            // SAFETY: a documented run-time option; `info` outlives the call and
            // has the layout OpenH264 expects for these two options.
            let rc = unsafe {
                self.enc
                    .raw_api()
                    .set_option(option, (&raw mut info).cast())
            };
            if rc != 0 {
                return Err(EncodeError::Bitrate {
                    kbps,
                    reason: format!("OpenH264 returned {rc}"),
                });
            }
        }
        self.settings.bitrate_kbps = kbps;
        Ok(())
    }

    /// Encodes one I420 picture presented at `pts`. `None` when the encoder emitted nothing.
    pub fn encode_i420(
        &mut self,
        pic: &I420View<'_>,
        pts: Duration,
    ) -> Result<Option<EncodedAu>, EncodeError> {
        if self.schedule.due(pts) {
            self.enc.force_intra_frame();
        }
        let src = YUVSlices::new(
            (pic.y, pic.u, pic.v),
            (pic.width, pic.height),
            (pic.y_stride, pic.uv_stride, pic.uv_stride),
        );
        let ts = Timestamp::from_millis(pts.as_millis() as u64);
        let bs = self
            .enc
            .encode_at(&src, ts)
            .map_err(|e| EncodeError::Encode(e.to_string()))?;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR);
        if matches!(bs.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.out.clear();
        bs.write_vec(&mut self.out);
        if self.out.is_empty() {
            return Ok(None);
        }
        if keyframe {
            mark_constrained_baseline(&mut self.out);
        }
        self.schedule.produced(pts, keyframe);
        Ok(Some(EncodedAu {
            data: Bytes::copy_from_slice(&self.out),
            keyframe,
        }))
    }
}

impl VideoEncoder for OpenH264Encoder {
    fn kind(&self) -> EncoderKind {
        EncoderKind::OpenH264
    }

    fn accepts(&self) -> &[PixelFormat] {
        &[PixelFormat::I420]
    }

    fn encode(
        &mut self,
        input: EncoderInput<'_>,
        pts: Duration,
    ) -> Result<Option<EncodedAu>, EncodeError> {
        match input {
            EncoderInput::I420(pic) => self.encode_i420(&pic, pts),
            EncoderInput::Frame(frame) if frame.format == PixelFormat::I420 => {
                self.encode_i420(&convert::i420_view(&frame)?, pts)
            }
            other => Err(EncodeError::Unsupported {
                format: other.format(),
                encoder: EncoderKind::OpenH264,
            }),
        }
    }

    fn request_keyframe(&mut self) -> KeyframeBy {
        OpenH264Encoder::request_keyframe(self);
        KeyframeBy::Encoder
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<Option<u32>, EncodeError> {
        OpenH264Encoder::set_bitrate(self, kbps)?;
        Ok(Some(self.settings.bitrate_kbps))
    }

    fn bitrate_kbps(&self) -> Option<u32> {
        Some(self.settings.bitrate_kbps)
    }
}

/// OpenH264 prints to stderr by itself; send its messages to `tracing` instead.
fn route_logs(enc: &mut Encoder) {
    let mut callback: openh264_sys2::WelsTraceCallback = Some(wels_log);
    // SAFETY: trace options are accepted before initialisation; OpenH264 copies
    // the function pointer out of `callback` during the call.
    unsafe {
        enc.raw_api().set_option(
            openh264_sys2::ENCODER_OPTION_TRACE_CALLBACK,
            (&raw mut callback).cast(),
        );
    }
}

/// Receives OpenH264's log lines. Its warnings are routine (e.g. about frame
/// skipping being off, which WebRTC wants), so they go to debug.
unsafe extern "C" fn wels_log(
    _ctx: *mut std::ffi::c_void,
    level: std::ffi::c_int,
    text: *const std::ffi::c_char,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: OpenH264 passes a NUL-terminated string valid for this call.
    let text = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
    let text = text.trim_end();
    if level <= openh264_sys2::WELS_LOG_ERROR as std::ffi::c_int {
        tracing::warn!(target: "openh264", "{text}");
    } else {
        tracing::debug!(target: "openh264", "{text}");
    }
}

/// OpenH264 writes Baseline SPSs with only constraint_set1 set; browsers
/// negotiate `42e01f`, so mark the stream Constrained Baseline explicitly.
/// The stream already obeys those constraints (no FMO/ASO/B-slices).
fn mark_constrained_baseline(au: &mut [u8]) {
    let mut i = 0;
    while i + 5 < au.len() {
        if au[i..i + 3] == [0, 0, 1] && au[i + 3] & 0x1f == h264::NAL_SPS && au[i + 4] == 66 {
            au[i + 5] |= CONSTRAINED_BASELINE_FLAGS;
            return;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_forces_first_periodic_and_requested_idrs() {
        let mut s = KeyframeSchedule::new(Duration::from_secs(2));
        let ms = Duration::from_millis;
        assert!(s.due(ms(0)), "first frame");
        s.produced(ms(0), true);
        assert!(!s.due(ms(1999)));
        assert!(s.due(ms(2000)));
        s.produced(ms(2000), true);
        assert!(!s.due(ms(2100)));
        s.request();
        assert!(s.due(ms(2100)));
        s.produced(ms(2100), false);
        assert!(
            s.due(ms(2133)),
            "a request stays pending until an IDR comes out"
        );
        s.produced(ms(2133), true);
        assert!(!s.due(ms(2166)));
    }

    #[test]
    fn levels_follow_picture_size() {
        assert!(matches!(level_for(640, 480, 30), Level::Level_3_0));
        assert!(matches!(level_for(1280, 720, 30), Level::Level_3_1));
        assert!(matches!(level_for(1920, 1080, 30), Level::Level_4_0));
        assert!(matches!(level_for(3840, 2160, 30), Level::Level_5_1));
    }

    #[test]
    fn sps_gets_constrained_baseline_flags() {
        let mut au = vec![0, 0, 0, 1, 0x67, 66, 0x40, 0x1f, 0xaa, 0, 0, 0, 1, 0x68, 1];
        mark_constrained_baseline(&mut au);
        assert_eq!(
            h264::profile_level_id(h264::nal_units(&au).next().expect("sps")).as_deref(),
            Some("42e01f")
        );
    }
}
