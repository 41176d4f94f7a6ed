//! H.264 encoding with OpenH264, set up for WebRTC rather than the crate's
//! defaults: Constrained Baseline, bitrate rate control, no frame skipping,
//! an IDR every `keyframe_interval` (by presentation time), SPS/PPS in-band
//! before every IDR, on-demand keyframes and run-time bitrate changes.
//! With more than one thread, each picture is cut into as many slices,
//! encoded in parallel (as libwebrtc does with OpenH264).

use super::{
    EncodeError, EncodedAu, EncoderInput, EncoderKind, EncoderSettings, KeyframeBy, VideoEncoder,
};
use crate::media::convert;
use crate::media::frame::{I420Image, I420View, PixelFormat};
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
/// Most threads OpenH264 encodes with (its `MAX_THREADS_NUM`); it clips higher counts.
pub const MAX_THREADS: u32 = 4;

/// The thread count `video.encoder_threads = 0` means: one per core
/// available to rtcam, at most [`MAX_THREADS`].
pub fn auto_threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS as usize) as u32)
}

/// The thread count to encode with for a configured one (0: automatic).
pub fn resolve_threads(configured: u32) -> u32 {
    match configured {
        0 => auto_threads(),
        n => n.min(MAX_THREADS),
    }
}

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
        let mut threads = resolve_threads(settings.threads);
        let mut enc = open(settings, threads)?;
        if threads > 1
            && let Err(reason) = use_slices(&mut enc, settings, threads)
        {
            // Small pictures cannot be cut into slices under rate control;
            // one thread still encodes them, so fall back rather than fail.
            tracing::warn!(threads, width = settings.width, height = settings.height, %reason, "OpenH264 refused multi-threaded encoding; using one thread");
            enc = open(settings, 1)?;
            threads = 1;
        }
        Ok(Self {
            enc,
            settings: EncoderSettings {
                threads,
                ..settings.clone()
            },
            schedule: KeyframeSchedule::new(settings.keyframe_interval),
            out: Vec::new(),
        })
    }

    /// Threads (and slices per picture) this encoder asked OpenH264 for.
    pub fn threads(&self) -> u32 {
        self.settings.threads
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

/// A fresh OpenH264 encoder with rtcam's WebRTC settings.
fn open(settings: &EncoderSettings, threads: u32) -> Result<Encoder, EncodeError> {
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
        .num_threads(threads as u16);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| EncodeError::Init(e.to_string()))?;
    route_logs(&mut enc);
    Ok(enc)
}

/// Switches `enc` to `threads` slices per picture, one per thread.
///
/// OpenH264 only runs threads over slices (it clips its thread count to the
/// slice count), and the `openh264` crate always asks for a single slice.
/// OpenH264 accepts new parameters only once initialised, which the crate
/// does on the first frame; so one throw-away frame initialises it, then the
/// parameters are replaced. That change re-creates the encoder's context
/// (fresh rate control, next frame an IDR), so nothing of the throw-away
/// frame reaches the stream. Multiple slices per picture are allowed in
/// Constrained Baseline, and libwebrtc sends the same for its OpenH264 path.
fn use_slices(enc: &mut Encoder, settings: &EncoderSettings, threads: u32) -> Result<(), String> {
    if !settings.width.is_multiple_of(2) || !settings.height.is_multiple_of(2) {
        // The crate's picture wrapper asserts on odd sizes; say no instead.
        return Err(format!(
            "odd picture size {}x{}",
            settings.width, settings.height
        ));
    }
    let blank = I420Image::new(settings.width as usize, settings.height as usize);
    let pic = blank.view();
    let src = YUVSlices::new(
        (pic.y, pic.u, pic.v),
        (pic.width, pic.height),
        (pic.y_stride, pic.uv_stride, pic.uv_stride),
    );
    enc.encode_at(&src, Timestamp::ZERO)
        .map_err(|e| e.to_string())?;
    let mut params = openh264_sys2::SEncParamExt::default();
    let rc = svc_params(enc, &mut params, false);
    if rc != 0 {
        return Err(format!("reading parameters: OpenH264 returned {rc}"));
    }
    params.iMultipleThreadIdc = threads as u16;
    let slices = &mut params.sSpatialLayers[0].sSliceArgument;
    slices.uiSliceMode = openh264_sys2::SM_FIXEDSLCNUM_SLICE;
    slices.uiSliceNum = threads;
    slices.uiSliceSizeConstraint = 0;
    // Zero lets OpenH264 share the macroblock rows out evenly.
    slices.uiSliceMbNum.fill(0);
    let rc = svc_params(enc, &mut params, true);
    if rc != 0 {
        return Err(format!("{threads} slices: OpenH264 returned {rc}"));
    }
    Ok(())
}

/// Reads OpenH264's whole parameter set into `params`, or (`set`) replaces
/// it with `params`; OpenH264's return code. Only valid once initialised.
fn svc_params(enc: &mut Encoder, params: &mut openh264_sys2::SEncParamExt, set: bool) -> i32 {
    let option = openh264_sys2::ENCODER_OPTION_SVC_ENCODE_PARAM_EXT;
    let ptr = std::ptr::from_mut(params).cast();
    // SAFETY: `params` is a complete SEncParamExt, valid for the duration
    // of the call, which copies this option's value out of or into it;
    // OpenH264 refuses the call (without touching it) before initialisation.
    unsafe {
        if set {
            enc.raw_api().set_option(option, ptr)
        } else {
            enc.raw_api().get_option(option, ptr)
        }
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
    fn thread_counts_resolve_within_openh264s_limit() {
        assert!((1..=MAX_THREADS).contains(&resolve_threads(0)));
        assert_eq!(resolve_threads(0), auto_threads());
        assert_eq!(resolve_threads(1), 1);
        assert_eq!(resolve_threads(2), 2);
        assert_eq!(resolve_threads(9), MAX_THREADS);
    }

    /// Encodes `frames` test-pattern pictures, asking for a keyframe halfway.
    fn encode_pattern(
        settings: &EncoderSettings,
        frames: u32,
    ) -> (OpenH264Encoder, Vec<EncodedAu>) {
        let mut enc = OpenH264Encoder::new(settings).expect("encoder opens");
        let mut pattern = crate::media::capture::test_pattern::PatternGenerator::new(
            settings.width as usize,
            settings.height as usize,
        );
        let mut aus = Vec::new();
        for i in 0..frames {
            if i == frames / 2 {
                enc.request_keyframe();
            }
            let pts = Duration::from_millis(u64::from(i) * 33);
            let pic = pattern.render(1_700_000_000_000 + u64::from(i) * 33);
            if let Some(au) = enc.encode_i420(&pic.view(), pts).expect("frame encodes") {
                aus.push(au);
            }
        }
        (enc, aus)
    }

    #[test]
    fn threaded_encoding_stays_constrained_baseline_and_decodes() {
        use openh264::formats::YUVSource;
        const FRAMES: u32 = 20;
        for threads in [1, 2, 4] {
            let settings = EncoderSettings {
                width: 640,
                height: 480,
                fps: 30,
                bitrate_kbps: 1000,
                keyframe_interval: Duration::from_secs(60),
                passthrough: false,
                threads,
                pref: crate::config::EncoderPref::OpenH264,
                device: None,
                coded: crate::media::encode::CodedFormat::H264,
            };
            let (enc, aus) = encode_pattern(&settings, FRAMES);
            assert_eq!(enc.threads(), threads);
            assert_eq!(
                aus.len(),
                FRAMES as usize,
                "{threads} threads: one AU per frame"
            );
            assert!(aus[0].keyframe && aus[FRAMES as usize / 2].keyframe);
            let mut decoder = openh264::decoder::Decoder::new().expect("decoder opens");
            let mut decoded = 0;
            for au in &aus {
                let units: Vec<&[u8]> = h264::nal_units(&au.data).collect();
                // One slice per thread: that is what OpenH264 runs threads over.
                let slices = units
                    .iter()
                    .filter(|n| matches!(h264::nal_type(n), h264::NAL_IDR | h264::NAL_SLICE))
                    .count();
                assert_eq!(
                    slices, threads as usize,
                    "{threads} threads: slices per picture"
                );
                if let Some(sps) = units.iter().find(|n| h264::nal_type(n) == h264::NAL_SPS) {
                    assert_eq!(sps[1], 66, "profile_idc Baseline");
                    assert_ne!(sps[2] & 0x40, 0, "constraint_set1: Constrained Baseline");
                    assert_eq!(h264::profile_level_id(sps).as_deref(), Some("42e01e"));
                }
                assert_eq!(au.keyframe, h264::is_keyframe(&au.data));
                if let Some(pic) = decoder.decode(&au.data).expect("AU decodes") {
                    assert_eq!(pic.dimensions(), (640, 480));
                    decoded += 1;
                }
            }
            decoded += decoder.flush_remaining().expect("decoder flushes").len();
            assert_eq!(
                decoded, FRAMES as usize,
                "{threads} threads: frames decoded"
            );
        }
    }

    #[test]
    fn pictures_too_small_to_slice_still_encode() {
        let settings = EncoderSettings {
            width: 160,
            height: 120,
            fps: 30,
            bitrate_kbps: 300,
            keyframe_interval: Duration::from_secs(60),
            passthrough: false,
            threads: 4,
            pref: crate::config::EncoderPref::OpenH264,
            device: None,
            coded: crate::media::encode::CodedFormat::H264,
        };
        let (_, aus) = encode_pattern(&settings, 4);
        assert_eq!(aus.len(), 4);
        let mut decoder = openh264::decoder::Decoder::new().expect("decoder opens");
        for au in &aus {
            decoder.decode(&au.data).expect("AU decodes");
        }
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
