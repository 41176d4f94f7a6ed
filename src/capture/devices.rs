//! Lists V4L2 capture devices with their formats, sizes and frame rates
//! (`rtcam devices`, and `source = "auto"`).

use super::format_choice::Mode;
use crate::frame::PixelFormat;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::Capture;

/// One format a device offers, with every size and its rates.
#[derive(Debug, Clone)]
pub struct FormatInfo {
    /// FourCC as text, e.g. `YUYV`.
    pub fourcc: String,
    /// The driver's description, e.g. `YUYV 4:2:2`.
    pub description: String,
    /// Whether rtcam can use it.
    pub usable: bool,
    /// `(width, height, rates)` for each size.
    pub sizes: Vec<(u32, u32, Vec<u32>)>,
}

/// A capture device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Device node, e.g. `/dev/video0`.
    pub path: PathBuf,
    /// Card name reported by the driver.
    pub card: String,
    /// Driver name (`uvcvideo`, `bcm2835-v4l2`, …).
    pub driver: String,
    /// Bus info.
    pub bus: String,
    /// Formats offered.
    pub formats: Vec<FormatInfo>,
}

impl DeviceInfo {
    /// The modes rtcam can use, for [`super::format_choice::choose`].
    pub fn modes(&self) -> Vec<Mode> {
        let mut modes = Vec::new();
        for f in &self.formats {
            let Some(format) = fourcc_format(&f.fourcc) else {
                continue;
            };
            for (width, height, fps) in &f.sizes {
                modes.push(Mode {
                    format,
                    width: *width,
                    height: *height,
                    fps: fps.clone(),
                });
            }
        }
        modes
    }
}

fn fourcc_format(fourcc: &str) -> Option<PixelFormat> {
    let bytes: [u8; 4] = fourcc.as_bytes().try_into().ok()?;
    PixelFormat::from_fourcc(bytes)
}

/// Sizes to consider from a stepwise/continuous range: the wanted size
/// snapped into the range, and the largest.
fn stepwise_sizes(s: &v4l::framesize::Stepwise, want: (u32, u32)) -> Vec<(u32, u32)> {
    let snap = |v: u32, min: u32, max: u32, step: u32| {
        let v = v.clamp(min, max);
        min + (v - min) / step.max(1) * step.max(1)
    };
    let wanted = (
        snap(want.0, s.min_width, s.max_width, s.step_width),
        snap(want.1, s.min_height, s.max_height, s.step_height),
    );
    let largest = (s.max_width, s.max_height);
    if wanted == largest {
        vec![wanted]
    } else {
        vec![wanted, largest]
    }
}

fn fps_of(num: u32, den: u32) -> Option<u32> {
    (num > 0).then(|| (den + num / 2) / num)
}

fn rates(dev: &v4l::Device, fourcc: v4l::FourCC, w: u32, h: u32, want_fps: u32) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for iv in dev.enum_frameintervals(fourcc, w, h).unwrap_or_default() {
        match iv.interval {
            FrameIntervalEnum::Discrete(f) => out.extend(fps_of(f.numerator, f.denominator)),
            FrameIntervalEnum::Stepwise(s) => {
                // min interval = max rate.
                let hi = fps_of(s.min.numerator, s.min.denominator).unwrap_or(want_fps);
                let lo = fps_of(s.max.numerator, s.max.denominator).unwrap_or(1);
                out.push(want_fps.clamp(lo.min(hi), hi));
                out.push(hi);
            }
        }
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    out.dedup();
    out
}

/// Queries one device node; `Ok(None)` when it is not a video capture device
/// (UVC also creates metadata nodes).
pub fn probe_device(path: &Path, want: (u32, u32, u32)) -> io::Result<Option<DeviceInfo>> {
    let dev = v4l::Device::with_path(path)?;
    let caps = dev.query_caps()?;
    let Ok(formats) = dev.enum_formats() else {
        return Ok(None);
    };
    if formats.is_empty() {
        return Ok(None);
    }
    let mut infos = Vec::new();
    for desc in formats {
        let fourcc = desc.fourcc;
        let text = fourcc.str().unwrap_or("????").to_string();
        let mut sizes = Vec::new();
        for fs in dev.enum_framesizes(fourcc).unwrap_or_default() {
            let list = match fs.size {
                FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                FrameSizeEnum::Stepwise(s) => stepwise_sizes(&s, (want.0, want.1)),
            };
            for (w, h) in list {
                sizes.push((w, h, rates(&dev, fourcc, w, h, want.2)));
            }
        }
        infos.push(FormatInfo {
            usable: fourcc_format(&text).is_some(),
            fourcc: text,
            description: desc.description,
            sizes,
        });
    }
    Ok(Some(DeviceInfo {
        path: path.to_path_buf(),
        card: caps.card,
        driver: caps.driver,
        bus: caps.bus,
        formats: infos,
    }))
}

/// `/dev/video*` nodes in numeric order.
pub fn video_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(usize, PathBuf)> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let index = name.strip_prefix("video")?.parse().ok()?;
                    Some((index, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// Every capture device; nodes that fail to open are reported as errors.
pub fn list(want: (u32, u32, u32)) -> Vec<Result<DeviceInfo, (PathBuf, io::Error)>> {
    video_nodes()
        .into_iter()
        .filter_map(|p| match probe_device(&p, want) {
            Ok(Some(info)) => Some(Ok(info)),
            Ok(None) => None,
            Err(e) => Some(Err((p, e))),
        })
        .collect()
}

/// Human-readable listing for `rtcam devices`.
pub fn render(list: &[Result<DeviceInfo, (PathBuf, io::Error)>]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("no V4L2 capture devices found (looked for /dev/video*)\n");
        return out;
    }
    for entry in list {
        match entry {
            Err((path, e)) => {
                let _ = writeln!(out, "{}: cannot open: {e}", path.display());
            }
            Ok(d) => {
                let _ = writeln!(
                    out,
                    "{}: {} (driver {}, {})",
                    d.path.display(),
                    d.card,
                    d.driver,
                    d.bus
                );
                for f in &d.formats {
                    let tag = if f.usable {
                        ""
                    } else {
                        "  [not supported by rtcam]"
                    };
                    let _ = writeln!(out, "  {} ({}){tag}", f.fourcc, f.description);
                    for (w, h, fps) in &f.sizes {
                        let rates: Vec<String> = fps.iter().map(u32::to_string).collect();
                        let _ = writeln!(out, "    {w}x{h} @ {} fps", rates.join(", "));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stepwise_snaps_wanted_size_into_range() {
        let s = v4l::framesize::Stepwise {
            min_width: 32,
            max_width: 1920,
            step_width: 16,
            min_height: 32,
            max_height: 1080,
            step_height: 8,
        };
        assert_eq!(
            stepwise_sizes(&s, (1281, 721)),
            vec![(1280, 720), (1920, 1080)]
        );
        assert_eq!(stepwise_sizes(&s, (9999, 9999)), vec![(1920, 1080)]);
    }

    #[test]
    fn fractions_become_rates() {
        assert_eq!(fps_of(1, 30), Some(30));
        assert_eq!(fps_of(1001, 30000), Some(30));
        assert_eq!(fps_of(0, 30), None);
    }

    #[test]
    fn empty_listing_says_so() {
        assert!(render(&[]).contains("no V4L2 capture devices"));
    }

    #[test]
    fn modes_skip_unsupported_formats() {
        let d = DeviceInfo {
            path: "/dev/video0".into(),
            card: "cam".into(),
            driver: "uvcvideo".into(),
            bus: "usb".into(),
            formats: vec![
                FormatInfo {
                    fourcc: "RGB3".into(),
                    description: "RGB".into(),
                    usable: false,
                    sizes: vec![(640, 480, vec![30])],
                },
                FormatInfo {
                    fourcc: "MJPG".into(),
                    description: "Motion-JPEG".into(),
                    usable: true,
                    sizes: vec![(1280, 720, vec![30])],
                },
            ],
        };
        let modes = d.modes();
        assert_eq!(modes.len(), 1);
        assert_eq!(modes[0].format, PixelFormat::Mjpeg);
        assert!(render(&[Ok(d)]).contains("RGB3 (RGB)  [not supported by rtcam]"));
    }
}
