//! Finding V4L2 memory-to-memory encoders: nodes whose output queue takes
//! raw pictures and whose capture queue gives a compressed format (the
//! Raspberry Pi 4's bcm2835-codec at `/dev/video11`, the kernel's vicodec).
//! Decoders, scalers and ISPs are M2M nodes too; they are not listed.

use super::m2m_params::CodedFormat;
use crate::media::capture::devices::{fourcc_text, video_nodes};
use crate::media::capture::ioctl::{self, cap};
use crate::media::frame::PixelFormat;
use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE` / `_OUTPUT_MPLANE` and the single-planar pair.
const CAPTURE: u32 = 1;
const OUTPUT: u32 = 2;
const CAPTURE_MPLANE: u32 = 9;
const OUTPUT_MPLANE: u32 = 10;

/// Compressed formats an encoder's capture queue may give.
const CODED: [&str; 7] = ["H264", "HEVC", "FWHT", "VP80", "VP90", "MJPG", "JPEG"];

/// A memory-to-memory encoder node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct M2mEncoder {
    /// Device node.
    pub path: PathBuf,
    /// Card name.
    pub card: String,
    /// Driver name.
    pub driver: String,
    /// Whether it speaks the multiplanar API (rtcam drives only that).
    pub multiplanar: bool,
    /// FourCCs its capture queue gives.
    pub coded: Vec<String>,
    /// FourCCs its output queue takes.
    pub raw: Vec<String>,
}

impl M2mEncoder {
    /// Whether it produces `coded`.
    pub fn offers(&self, coded: CodedFormat) -> bool {
        let want = fourcc_text(u32::from_le_bytes(coded.fourcc()));
        self.coded.contains(&want)
    }

    /// The raw formats rtcam can hand it.
    pub fn accepts(&self) -> Vec<PixelFormat> {
        self.raw
            .iter()
            .filter_map(|f| {
                let b: [u8; 4] = f.as_bytes().try_into().ok()?;
                PixelFormat::from_fourcc(b).filter(|p| !p.is_compressed())
            })
            .collect()
    }

    /// Why rtcam cannot encode `coded` with it, if it cannot.
    pub fn unusable_for(&self, coded: CodedFormat) -> Option<String> {
        if !self.offers(coded) {
            Some(format!(
                "{} ({}) gives {}, not {coded}",
                self.path.display(),
                self.driver,
                self.coded.join(", ")
            ))
        } else if !self.multiplanar {
            Some(format!(
                "{} ({}) has only the single-planar API; rtcam drives multiplanar encoders",
                self.path.display(),
                self.driver
            ))
        } else if !self.accepts().contains(&PixelFormat::I420) {
            Some(format!(
                "{} ({}) takes {}, and not YU12",
                self.path.display(),
                self.driver,
                self.raw.join(", ")
            ))
        } else {
            None
        }
    }
}

/// Queries one node: `Some` when it is an M2M encoder.
pub fn probe(path: &Path) -> Option<M2mEncoder> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    let fd = file.as_raw_fd();
    let caps = ioctl::querycap(fd).ok()?;
    let multiplanar = caps.device_caps & cap::VIDEO_M2M_MPLANE != 0;
    if !multiplanar && caps.device_caps & cap::VIDEO_M2M == 0 {
        return None;
    }
    let (capture, output) = if multiplanar {
        (CAPTURE_MPLANE, OUTPUT_MPLANE)
    } else {
        (CAPTURE, OUTPUT)
    };
    let names = |t| -> Vec<String> {
        ioctl::enum_formats(fd, t)
            .into_iter()
            .map(|(code, _)| fourcc_text(code))
            .collect()
    };
    let coded: Vec<String> = names(capture)
        .into_iter()
        .filter(|f| CODED.contains(&f.as_str()))
        .collect();
    let raw: Vec<String> = names(output)
        .into_iter()
        .filter(|f| !CODED.contains(&f.as_str()))
        .collect();
    (!coded.is_empty() && !raw.is_empty()).then(|| M2mEncoder {
        path: path.to_path_buf(),
        card: caps.card,
        driver: caps.driver,
        multiplanar,
        coded,
        raw,
    })
}

/// Every M2M encoder node, in numeric order.
pub fn list() -> Vec<M2mEncoder> {
    video_nodes().iter().filter_map(|p| probe(p)).collect()
}

/// The encoders section of `rtcam devices`.
pub fn render(list: &[M2mEncoder]) -> String {
    let mut out = String::from("encoders (V4L2 memory-to-memory):\n");
    if list.is_empty() {
        out.push_str("  none: H.264 is encoded in software (OpenH264)\n");
        return out;
    }
    for e in list {
        let usable = match e.unusable_for(CodedFormat::H264) {
            None => "usable for H.264".to_string(),
            Some(why) => format!("not used: {why}"),
        };
        let _ = writeln!(
            out,
            "  {}: {} (driver {}{}): {usable}",
            e.path.display(),
            e.card,
            e.driver,
            if e.multiplanar { ", multiplanar" } else { "" }
        );
        let _ = writeln!(out, "    gives {}", e.coded.join(", "));
        let _ = writeln!(out, "    takes {}", e.raw.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(coded: &[&str], raw: &[&str], multiplanar: bool) -> M2mEncoder {
        M2mEncoder {
            path: "/dev/video11".into(),
            card: "bcm2835-codec-encode".into(),
            driver: "bcm2835-codec".into(),
            multiplanar,
            coded: coded.iter().map(|s| s.to_string()).collect(),
            raw: raw.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_encoder_is_usable_when_it_gives_the_codec_multiplanar_and_takes_i420() {
        let pi = enc(&["H264"], &["YU12", "NV12", "YUYV", "RGB3"], true);
        assert_eq!(pi.unusable_for(CodedFormat::H264), None);
        assert_eq!(
            pi.accepts(),
            [PixelFormat::I420, PixelFormat::Nv12, PixelFormat::Yuyv]
        );
        let vicodec = enc(&["FWHT"], &["YU12", "YUYV"], true);
        let why = vicodec.unusable_for(CodedFormat::H264).expect("no H.264");
        assert!(why.contains("gives FWHT, not H264"), "{why}");
        assert_eq!(vicodec.unusable_for(CodedFormat::Fwht), None);
        let single = enc(&["H264"], &["YU12"], false);
        assert!(
            single
                .unusable_for(CodedFormat::H264)
                .expect("single-planar")
                .contains("single-planar")
        );
        let rgb_only = enc(&["H264"], &["RGB3"], true);
        assert!(
            rgb_only
                .unusable_for(CodedFormat::H264)
                .expect("no YU12")
                .contains("not YU12")
        );
    }

    #[test]
    fn rendering_says_which_encoder_is_usable() {
        let text = render(&[
            enc(&["H264"], &["YU12"], true),
            enc(&["FWHT"], &["YU12"], true),
        ]);
        assert!(text.contains("usable for H.264"), "{text}");
        assert!(text.contains("not used: /dev/video11"), "{text}");
        assert!(render(&[]).contains("OpenH264"));
    }
}
