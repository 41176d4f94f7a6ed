//! What a V4L2 memory-to-memory encoder is told, decided without touching
//! a device: the coded format, the H.264 level for a size and rate, and the
//! controls set when it opens (the values µStreamer and mediamtx run on the
//! Raspberry Pi's bcm2835-codec). Pure: [`super::v4l2m2m`] applies them.

use std::fmt;
use std::time::Duration;

/// `V4L2_CID_CODEC_BASE`: the codec class's first control id.
const CODEC_BASE: u32 = 0x0099_0900;

/// Codec-class control ids (`linux/v4l2-controls.h`), checked against the
/// kernel header's values by a test of the encoder.
pub mod cid {
    use super::CODEC_BASE;
    /// `V4L2_CID_MPEG_VIDEO_GOP_SIZE`.
    pub const GOP_SIZE: u32 = CODEC_BASE + 203;
    /// `V4L2_CID_MPEG_VIDEO_BITRATE_MODE` (0 VBR, 1 CBR).
    pub const BITRATE_MODE: u32 = CODEC_BASE + 206;
    /// `V4L2_CID_MPEG_VIDEO_BITRATE` in bit/s.
    pub const BITRATE: u32 = CODEC_BASE + 207;
    /// `V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER`.
    pub const REPEAT_SEQ_HEADER: u32 = CODEC_BASE + 226;
    /// `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME` (a button).
    pub const FORCE_KEY_FRAME: u32 = CODEC_BASE + 229;
    /// `V4L2_CID_MPEG_VIDEO_H264_MIN_QP`.
    pub const H264_MIN_QP: u32 = CODEC_BASE + 353;
    /// `V4L2_CID_MPEG_VIDEO_H264_MAX_QP`.
    pub const H264_MAX_QP: u32 = CODEC_BASE + 354;
    /// `V4L2_CID_MPEG_VIDEO_H264_I_PERIOD`.
    pub const H264_I_PERIOD: u32 = CODEC_BASE + 358;
    /// `V4L2_CID_MPEG_VIDEO_H264_LEVEL` (a menu, see [`super::H264Level`]).
    pub const H264_LEVEL: u32 = CODEC_BASE + 359;
    /// `V4L2_CID_MPEG_VIDEO_H264_PROFILE` (a menu).
    pub const H264_PROFILE: u32 = CODEC_BASE + 363;
}

/// `V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE`.
pub const PROFILE_CONSTRAINED_BASELINE: i32 = 1;
/// `V4L2_MPEG_VIDEO_BITRATE_MODE_CBR`: steady rate for real-time links.
pub const BITRATE_MODE_CBR: i32 = 1;
/// QP bounds µStreamer sets on the Pi: 16 keeps still scenes from eating
/// the bitrate, 32 keeps moving ones recognisable.
pub const QP_RANGE: (i32, i32) = (16, 32);

/// What a memory-to-memory encoder's capture queue produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodedFormat {
    /// H.264 (what viewers get).
    #[default]
    H264,
    /// FWHT, the kernel's `vicodec` test codec: only for the kernel lab,
    /// where vicodec stands in for the board's H.264 encoder.
    Fwht,
}

impl CodedFormat {
    /// The V4L2 FourCC.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            CodedFormat::H264 => *b"H264",
            CodedFormat::Fwht => *b"FWHT",
        }
    }
}

impl fmt::Display for CodedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.fourcc()))
    }
}

/// An H.264 level: its V4L2 menu index and its limits (ITU-T H.264 table A-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Level {
    /// The level as written ("4.0").
    pub name: &'static str,
    /// `V4L2_MPEG_VIDEO_H264_LEVEL_*`.
    pub menu: i32,
    /// Macroblocks per second.
    pub max_mbps: u64,
    /// Macroblocks per frame.
    pub max_fs: u64,
    /// Baseline bitrate limit in kbit/s.
    pub max_kbps: u64,
}

const fn level(
    name: &'static str,
    menu: i32,
    max_mbps: u64,
    max_fs: u64,
    max_kbps: u64,
) -> H264Level {
    H264Level {
        name,
        menu,
        max_mbps,
        max_fs,
        max_kbps,
    }
}

/// Levels from 4.0 up: below 4.0 is never chosen (see [`h264_level`]).
const LEVELS: [H264Level; 6] = [
    level("4.0", 11, 245_760, 8_192, 20_000),
    level("4.1", 12, 245_760, 8_192, 50_000),
    level("4.2", 13, 522_240, 8_704, 50_000),
    level("5.0", 14, 589_824, 22_080, 135_000),
    level("5.1", 15, 983_040, 36_864, 240_000),
    level("5.2", 16, 2_073_600, 36_864, 240_000),
];

/// The level announced for a size, rate and bitrate: 4.0 (what µStreamer
/// and mediamtx run the Pi's encoder at) up to 1080p30, else the lowest
/// level whose frame size, macroblock rate and bitrate limits fit; the
/// highest when nothing fits (the encoder then clamps or refuses).
pub fn h264_level(width: u32, height: u32, fps: u32, kbps: u32) -> H264Level {
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let rate = mbs * u64::from(fps.max(1));
    LEVELS
        .iter()
        .copied()
        .find(|l| mbs <= l.max_fs && rate <= l.max_mbps && u64::from(kbps) <= l.max_kbps)
        .unwrap_or(LEVELS[LEVELS.len() - 1])
}

/// Frames between IDRs for a keyframe interval at `fps` (at least 1).
pub fn keyframe_period(interval: Duration, fps: u32) -> i32 {
    let frames = (interval.as_millis() * u128::from(fps.max(1)) + 500) / 1000;
    i32::try_from(frames.max(1)).unwrap_or(i32::MAX)
}

/// One control set when the encoder opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlSetting {
    /// Control id.
    pub id: u32,
    /// Value.
    pub value: i32,
    /// Name for logs ("h264_i_period").
    pub name: &'static str,
}

/// What the encoder is opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenParams {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Time between periodic IDRs.
    pub keyframe_interval: Duration,
    /// What comes out.
    pub coded: CodedFormat,
}

/// The controls to set, in order. Drivers lacking one keep their default
/// (the encoder logs which); codec-specific ones only for that codec.
pub fn open_controls(p: &OpenParams) -> Vec<ControlSetting> {
    let period = keyframe_period(p.keyframe_interval, p.fps);
    let bitrate = i32::try_from(u64::from(p.bitrate_kbps) * 1000).unwrap_or(i32::MAX);
    let set = |id, value, name| ControlSetting { id, value, name };
    let mut out = vec![
        set(cid::BITRATE_MODE, BITRATE_MODE_CBR, "bitrate_mode"),
        set(cid::BITRATE, bitrate, "bitrate"),
        set(cid::GOP_SIZE, period, "gop_size"),
    ];
    if p.coded == CodedFormat::H264 {
        let level = h264_level(p.width, p.height, p.fps, p.bitrate_kbps);
        out.extend([
            set(
                cid::H264_PROFILE,
                PROFILE_CONSTRAINED_BASELINE,
                "h264_profile",
            ),
            set(cid::H264_LEVEL, level.menu, "h264_level"),
            set(cid::H264_I_PERIOD, period, "h264_i_period"),
            set(cid::REPEAT_SEQ_HEADER, 1, "repeat_seq_header"),
            set(cid::H264_MIN_QP, QP_RANGE.0, "h264_min_qp"),
            set(cid::H264_MAX_QP, QP_RANGE.1, "h264_max_qp"),
        ]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_is_4_0_up_to_1080p30_and_rises_with_size_and_rate() {
        assert_eq!(h264_level(640, 480, 30, 1000).name, "4.0");
        assert_eq!(h264_level(1280, 720, 30, 2000).name, "4.0");
        assert_eq!(h264_level(1280, 720, 60, 4000).name, "4.0");
        assert_eq!(h264_level(1920, 1080, 30, 8000).name, "4.0");
        assert_eq!(h264_level(1920, 1080, 30, 25_000).name, "4.1", "bitrate");
        assert_eq!(h264_level(1920, 1080, 60, 8000).name, "4.2");
        assert_eq!(h264_level(2560, 1440, 30, 8000).name, "5.0");
        assert_eq!(h264_level(3840, 2160, 30, 20_000).name, "5.1");
        assert_eq!(h264_level(3840, 2160, 60, 20_000).name, "5.2");
        assert_eq!(h264_level(8192, 8192, 60, 20_000).name, "5.2", "clamped");
        assert_eq!(h264_level(1920, 1080, 30, 8000).menu, 11);
    }

    #[test]
    fn keyframe_period_is_frames_between_idrs() {
        assert_eq!(keyframe_period(Duration::from_secs(2), 30), 60);
        assert_eq!(keyframe_period(Duration::from_millis(1500), 25), 38);
        assert_eq!(keyframe_period(Duration::from_millis(10), 30), 1);
        assert_eq!(keyframe_period(Duration::from_secs(2), 0), 2);
    }

    fn params(coded: CodedFormat) -> OpenParams {
        OpenParams {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2500,
            keyframe_interval: Duration::from_secs(2),
            coded,
        }
    }

    #[test]
    fn h264_gets_constrained_baseline_with_period_header_and_qp() {
        let c = open_controls(&params(CodedFormat::H264));
        let get = |id| c.iter().find(|s| s.id == id).map(|s| s.value);
        assert_eq!(get(cid::H264_PROFILE), Some(PROFILE_CONSTRAINED_BASELINE));
        assert_eq!(get(cid::H264_LEVEL), Some(11));
        assert_eq!(get(cid::H264_I_PERIOD), Some(60));
        assert_eq!(get(cid::GOP_SIZE), Some(60));
        assert_eq!(get(cid::REPEAT_SEQ_HEADER), Some(1));
        assert_eq!(get(cid::BITRATE), Some(2_500_000));
        assert_eq!(get(cid::BITRATE_MODE), Some(BITRATE_MODE_CBR));
        assert_eq!(
            (get(cid::H264_MIN_QP), get(cid::H264_MAX_QP)),
            (Some(16), Some(32))
        );
        assert_eq!(
            get(cid::FORCE_KEY_FRAME),
            None,
            "a button, pressed on request"
        );
    }

    #[test]
    fn other_codecs_get_only_the_generic_controls() {
        let c = open_controls(&params(CodedFormat::Fwht));
        let ids: Vec<u32> = c.iter().map(|s| s.id).collect();
        assert_eq!(ids, [cid::BITRATE_MODE, cid::BITRATE, cid::GOP_SIZE]);
        assert_eq!(CodedFormat::Fwht.to_string(), "FWHT");
    }
}
