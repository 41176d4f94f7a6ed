//! Picks the camera mode nearest the requested size and rate from what a
//! device offers. Pure: the V4L2 source feeds it the device's enumeration.

use crate::media::frame::PixelFormat;

/// One size a device offers in one format, with its frame rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Mode {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rates offered at this size (frames per second); empty if unknown.
    pub fps: Vec<u32>,
}

/// What to ask the device for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate.
    pub fps: u32,
}

/// Conversion cost rank when size and rate tie: cheapest to turn into I420 first.
fn format_rank(f: PixelFormat) -> u32 {
    match f {
        PixelFormat::H264 => 0,
        PixelFormat::I420 => 1,
        PixelFormat::Nv12 => 2,
        PixelFormat::Yuyv => 3,
        PixelFormat::Mjpeg => 4,
    }
}

/// The rate to request at a size: the lowest offered rate at or above `want`,
/// else the highest offered; `want` when the device does not say.
fn pick_fps(offered: &[u32], want: u32) -> u32 {
    offered
        .iter()
        .copied()
        .filter(|&f| f >= want)
        .min()
        .or_else(|| offered.iter().copied().max())
        .unwrap_or(want)
}

/// Chooses a mode: nearest size first, then enough frame rate, then the
/// cheapest format. H.264 modes are used only with `passthrough` (and then
/// preferred); without it they are ignored. `None` when nothing is usable.
pub fn choose(
    modes: &[Mode],
    width: u32,
    height: u32,
    fps: u32,
    passthrough: bool,
) -> Option<Choice> {
    let has_h264 = modes.iter().any(|m| m.format == PixelFormat::H264);
    let usable = |m: &&Mode| {
        if passthrough && has_h264 {
            m.format == PixelFormat::H264
        } else {
            m.format != PixelFormat::H264
        }
    };
    modes
        .iter()
        .filter(usable)
        .filter(|m| m.width > 0 && m.height > 0)
        .map(|m| {
            let rate = pick_fps(&m.fps, fps);
            let size_penalty = m.width.abs_diff(width) + m.height.abs_diff(height);
            let fps_penalty = fps.saturating_sub(rate);
            let choice = Choice {
                format: m.format,
                width: m.width,
                height: m.height,
                fps: rate,
            };
            ((size_penalty, fps_penalty, format_rank(m.format)), choice)
        })
        .min_by_key(|(score, _)| *score)
        .map(|(_, choice)| choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PixelFormat::*;

    fn mode(format: PixelFormat, width: u32, height: u32, fps: &[u32]) -> Mode {
        Mode {
            format,
            width,
            height,
            fps: fps.to_vec(),
        }
    }

    /// A typical USB webcam: YUYV is slow at 720p, MJPEG is not.
    fn webcam() -> Vec<Mode> {
        vec![
            mode(Yuyv, 640, 480, &[30, 15]),
            mode(Yuyv, 1280, 720, &[10, 5]),
            mode(Mjpeg, 640, 480, &[30]),
            mode(Mjpeg, 1280, 720, &[30, 15]),
            mode(H264, 1280, 720, &[30]),
        ]
    }

    #[test]
    fn exact_size_with_enough_rate_wins() {
        let c = choose(&webcam(), 1280, 720, 30, false).expect("a mode");
        assert_eq!((c.format, c.width, c.height, c.fps), (Mjpeg, 1280, 720, 30));
    }

    #[test]
    fn cheaper_format_wins_a_tie() {
        let c = choose(&webcam(), 640, 480, 30, false).expect("a mode");
        assert_eq!(c.format, Yuyv);
    }

    #[test]
    fn nearest_size_when_exact_is_missing() {
        let c = choose(&webcam(), 1280, 800, 30, false).expect("a mode");
        assert_eq!((c.width, c.height), (1280, 720));
        let c = choose(&webcam(), 320, 240, 30, false).expect("a mode");
        assert_eq!((c.width, c.height), (640, 480));
    }

    #[test]
    fn lowest_sufficient_rate_is_requested() {
        let c = choose(&webcam(), 1280, 720, 15, false).expect("a mode");
        assert_eq!((c.format, c.fps), (Mjpeg, 15));
    }

    #[test]
    fn passthrough_prefers_h264_only_when_asked() {
        let c = choose(&webcam(), 1280, 720, 30, true).expect("a mode");
        assert_eq!(c.format, H264);
        let c = choose(&webcam(), 640, 480, 30, true).expect("a mode");
        assert_eq!(
            (c.format, c.width),
            (H264, 1280),
            "passthrough keeps H.264 even at another size"
        );
        let no_h264: Vec<Mode> = webcam().into_iter().filter(|m| m.format != H264).collect();
        let c = choose(&no_h264, 1280, 720, 30, true).expect("a mode");
        assert_eq!(
            c.format, Mjpeg,
            "passthrough without H.264 falls back to encoding"
        );
    }

    #[test]
    fn unknown_rates_and_empty_lists() {
        assert_eq!(choose(&[], 640, 480, 30, false), None);
        assert_eq!(
            choose(&[mode(H264, 640, 480, &[30])], 640, 480, 30, false),
            None
        );
        let c = choose(&[mode(Nv12, 640, 480, &[])], 640, 480, 25, false).expect("a mode");
        assert_eq!(c.fps, 25);
    }
}
