//! Lists V4L2 capture devices with their formats, sizes and frame rates
//! (`rtcam devices`, and `source = "auto"`).

use super::format_choice::Mode;
use super::ioctl;
use crate::media::frame::PixelFormat;
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

/// Which V4L2 capture API a camera speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureApi {
    /// `V4L2_BUF_TYPE_VIDEO_CAPTURE` (USB cameras, most drivers).
    SinglePlanar,
    /// `V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE` only (many SoC camera drivers).
    Multiplanar,
}

impl CaptureApi {
    /// The V4L2 buffer type of its capture queue.
    pub fn buf_type(self) -> u32 {
        match self {
            CaptureApi::SinglePlanar => ioctl::BUF_CAPTURE,
            CaptureApi::Multiplanar => ioctl::BUF_CAPTURE_MPLANE,
        }
    }
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
    /// Single-planar or multiplanar.
    pub api: CaptureApi,
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

/// Why a video node is not used as the camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A memory-to-memory device: a codec, scaler or ISP (vicodec, the
    /// Raspberry Pi's /dev/video10-31), not a camera.
    MemToMem,
    /// A node of an image signal processor whose capture queues deliver
    /// only what its input queue is fed (the Pi 4's bcm2835-isp, the Pi 5's
    /// PiSP back end): not a camera, though they offer YUV formats.
    IspNode(String),
    /// A metadata node (UVC's second node, ISP statistics).
    Metadata,
    /// Neither kind of video capture (an output, radio, touch or SDR node).
    NotCapture,
    /// Only raw Bayer formats (a CSI receiver such as unicam: its pictures
    /// need an ISP, i.e. libcamera).
    RawBayerOnly(Vec<String>),
    /// Formats, but none rtcam can use.
    NoUsableFormat(Vec<String>),
    /// A capture queue with no format at all.
    NoFormats,
    /// It could not be opened or queried.
    Unreadable(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::MemToMem => {
                write!(
                    f,
                    "memory-to-memory device (codec, scaler or ISP), not a camera"
                )
            }
            SkipReason::IspNode(driver) => write!(
                f,
                "a node of the {driver} image signal processor (fed by a camera through libcamera), not a camera"
            ),
            SkipReason::Metadata => write!(f, "metadata node, not a picture"),
            SkipReason::NotCapture => write!(f, "not a video capture device"),
            SkipReason::RawBayerOnly(offered) => write!(
                f,
                "raw Bayer formats only ({}): a CSI sensor that needs an ISP (libcamera); \
                 rtcam accepts YUYV, MJPG, NV12, YU12, H264",
                offered.join(", ")
            ),
            SkipReason::NoUsableFormat(offered) => write!(
                f,
                "no usable format (offers {}; rtcam accepts YUYV, MJPG, NV12, YU12, H264)",
                offered.join(", ")
            ),
            SkipReason::NoFormats => write!(f, "its capture queue offers no format"),
            SkipReason::Unreadable(e) => write!(f, "cannot open it: {e}"),
        }
    }
}

/// Whether a FourCC is a raw Bayer sensor format (8 to 16 bits, packed or
/// not): `BA81`, `RGGB`, `RG10`, `pRAA`, `BYR2`, …
fn is_bayer(fourcc: &str) -> bool {
    let b = fourcc.as_bytes();
    if b.len() != 4 {
        return false;
    }
    let plain = ["BA81", "GBRG", "GRBG", "RGGB", "BYR2"].contains(&fourcc);
    let deep = ["BG", "GB", "BA", "RG", "GR"].contains(&&fourcc[..2])
        && ["10", "12", "14", "16"].contains(&&fourcc[2..]);
    let packed = b[0] == b'p' && b"BGgR".contains(&b[1]) && b"ACE".contains(&b[2]) && b[3] == b[2];
    plain || deep || packed
}

/// Drivers of image signal processors whose nodes are not flagged
/// memory-to-memory but are no cameras: their capture nodes offer YUV and
/// deliver only what libcamera feeds them.
const ISP_DRIVERS: [&str; 4] = ["bcm2835-isp", "pispbe", "rkisp1", "mali-c55"];

/// Whether `driver` is an image signal processor's (see [`ISP_DRIVERS`]). Pure.
pub fn is_isp_driver(driver: &str) -> bool {
    ISP_DRIVERS.contains(&driver)
}

/// The capture API of a node with these device caps, or why it is no camera.
/// Pure: the first half of [`classify`].
pub fn classify_caps(device_caps: u32) -> Result<CaptureApi, SkipReason> {
    use ioctl::cap;
    if device_caps & (cap::VIDEO_M2M | cap::VIDEO_M2M_MPLANE) != 0 {
        return Err(SkipReason::MemToMem);
    }
    if device_caps & cap::VIDEO_CAPTURE != 0 {
        return Ok(CaptureApi::SinglePlanar);
    }
    if device_caps & cap::VIDEO_CAPTURE_MPLANE != 0 {
        return Ok(CaptureApi::Multiplanar);
    }
    if device_caps & cap::META_CAPTURE != 0 {
        return Err(SkipReason::Metadata);
    }
    Err(SkipReason::NotCapture)
}

/// Whether a node with these caps and these offered FourCCs is a camera
/// rtcam can use, and through which API. Pure.
pub fn classify(device_caps: u32, offered: &[String]) -> Result<CaptureApi, SkipReason> {
    let api = classify_caps(device_caps)?;
    if offered.is_empty() {
        return Err(SkipReason::NoFormats);
    }
    if offered.iter().any(|f| fourcc_format(f).is_some()) {
        return Ok(api);
    }
    if offered.iter().all(|f| is_bayer(f)) {
        return Err(SkipReason::RawBayerOnly(offered.to_vec()));
    }
    Err(SkipReason::NoUsableFormat(offered.to_vec()))
}

/// A video node that is not used as the camera, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Device node.
    pub path: PathBuf,
    /// Card name.
    pub card: String,
    /// Driver name.
    pub driver: String,
    /// Why.
    pub reason: SkipReason,
}

/// What probing one video node found.
#[derive(Debug)]
pub enum Node {
    /// A camera rtcam can use.
    Camera(DeviceInfo),
    /// Some other kind of node.
    Skipped(Skipped),
    /// A node that could not be opened or queried.
    Unreadable(PathBuf, io::Error),
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

/// A FourCC code as text (`YUYV`); bytes that are not printable ASCII
/// (big-endian variants set bit 31) become `?`.
pub fn fourcc_text(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Queries one device node: a camera with its formats, sizes and rates, or
/// the reason it is not one.
pub fn probe_node(path: &Path, want: (u32, u32, u32)) -> Node {
    let dev = match v4l::Device::with_path(path) {
        Ok(d) => d,
        Err(e) => return Node::Unreadable(path.to_path_buf(), e),
    };
    let fd = dev.handle().fd();
    let caps = match ioctl::querycap(fd) {
        Ok(c) => c,
        Err(e) => return Node::Unreadable(path.to_path_buf(), e),
    };
    let skipped = |reason| {
        Node::Skipped(Skipped {
            path: path.to_path_buf(),
            card: caps.card.clone(),
            driver: caps.driver.clone(),
            reason,
        })
    };
    if is_isp_driver(&caps.driver) {
        return skipped(SkipReason::IspNode(caps.driver.clone()));
    }
    let api = match classify_caps(caps.device_caps) {
        Ok(api) => api,
        Err(reason) => return skipped(reason),
    };
    let formats = ioctl::enum_formats(fd, api.buf_type());
    let offered: Vec<String> = formats.iter().map(|(c, _)| fourcc_text(*c)).collect();
    if let Err(reason) = classify(caps.device_caps, &offered) {
        return skipped(reason);
    }
    let mut infos = Vec::new();
    for ((code, description), text) in formats.into_iter().zip(offered) {
        let fourcc = v4l::FourCC::from(code);
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
            description,
            sizes,
        });
    }
    Node::Camera(DeviceInfo {
        path: path.to_path_buf(),
        card: caps.card,
        driver: caps.driver,
        bus: caps.bus,
        api,
        formats: infos,
    })
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

/// Every video node, probed.
pub fn list(want: (u32, u32, u32)) -> Vec<Node> {
    video_nodes()
        .into_iter()
        .map(|p| probe_node(&p, want))
        .collect()
}

/// The camera `video.source = "auto"` takes: the first node (in numeric
/// order) that is a capture device with a usable mode. Every node passed
/// over is returned too, with its reason, for the log.
pub fn pick_auto(nodes: Vec<Node>) -> (Option<DeviceInfo>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    for node in nodes {
        match node {
            Node::Camera(d) if !d.modes().is_empty() => return (Some(d), skipped),
            Node::Camera(d) => skipped.push(Skipped {
                reason: SkipReason::NoUsableFormat(
                    d.formats.iter().map(|f| f.fourcc.clone()).collect(),
                ),
                path: d.path,
                card: d.card,
                driver: d.driver,
            }),
            Node::Skipped(s) => skipped.push(s),
            Node::Unreadable(path, e) => skipped.push(Skipped {
                path,
                card: String::new(),
                driver: String::new(),
                reason: SkipReason::Unreadable(e.to_string()),
            }),
        }
    }
    (None, skipped)
}

/// Human-readable listing for `rtcam devices`.
pub fn render(list: &[Node]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("no V4L2 capture devices found (no /dev/video* node)\n");
        return out;
    }
    for entry in list {
        match entry {
            Node::Unreadable(path, e) => {
                let _ = writeln!(out, "{}: cannot open: {e}", path.display());
            }
            Node::Skipped(s) => {
                let _ = writeln!(
                    out,
                    "{}: {} (driver {}): not used: {}",
                    s.path.display(),
                    s.card,
                    s.driver,
                    s.reason
                );
            }
            Node::Camera(d) => {
                let api = match d.api {
                    CaptureApi::SinglePlanar => "",
                    CaptureApi::Multiplanar => ", multiplanar",
                };
                let _ = writeln!(
                    out,
                    "{}: {} (driver {}, {}{api})",
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
    if !list.iter().any(|n| matches!(n, Node::Camera(_))) {
        out.push_str("no usable camera among them\n");
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

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nodes_are_classified_by_caps_then_formats() {
        use ioctl::cap::*;
        let yuyv = strings(&["YUYV", "MJPG"]);
        // a USB camera, and its metadata node
        assert_eq!(classify(VIDEO_CAPTURE, &yuyv), Ok(CaptureApi::SinglePlanar));
        assert_eq!(classify(META_CAPTURE, &[]), Err(SkipReason::Metadata));
        // a SoC camera with only the multiplanar API
        assert_eq!(
            classify(VIDEO_CAPTURE_MPLANE, &strings(&["NV12"])),
            Ok(CaptureApi::Multiplanar)
        );
        // codecs and ISPs: vicodec, the Pi's bcm2835-codec and -isp, even
        // when they announce capture caps and offer YU12 on that queue
        assert_eq!(
            classify(VIDEO_M2M, &strings(&["YU12"])),
            Err(SkipReason::MemToMem)
        );
        assert_eq!(
            classify(
                VIDEO_M2M_MPLANE | VIDEO_CAPTURE_MPLANE | VIDEO_OUTPUT_MPLANE,
                &yuyv
            ),
            Err(SkipReason::MemToMem)
        );
        assert_eq!(classify(VIDEO_OUTPUT, &yuyv), Err(SkipReason::NotCapture));
        // unicam: a CSI receiver with raw Bayer only
        assert_eq!(
            classify(
                VIDEO_CAPTURE,
                &strings(&["pRAA", "RG10", "BA81", "RGGB", "pgCC"])
            ),
            Err(SkipReason::RawBayerOnly(strings(&[
                "pRAA", "RG10", "BA81", "RGGB", "pgCC"
            ])))
        );
        assert_eq!(
            classify(VIDEO_CAPTURE, &strings(&["RGB3", "BA24"])),
            Err(SkipReason::NoUsableFormat(strings(&["RGB3", "BA24"])))
        );
        assert_eq!(classify(VIDEO_CAPTURE, &[]), Err(SkipReason::NoFormats));
        // a loopback device announcing capture and output (no M2M flag) is a camera
        assert_eq!(
            classify(VIDEO_CAPTURE | VIDEO_OUTPUT, &yuyv),
            Ok(CaptureApi::SinglePlanar)
        );
        assert!(!is_bayer("RGB3") && !is_bayer("BA24") && !is_bayer("GREY") && !is_bayer("YU12"));
        // ISP nodes are refused by driver whatever their caps.
        assert!(is_isp_driver("bcm2835-isp") && is_isp_driver("pispbe"));
        assert!(!is_isp_driver("uvcvideo") && !is_isp_driver("unicam") && !is_isp_driver("vivid"));
        assert!(
            SkipReason::IspNode("pispbe".into())
                .to_string()
                .contains("image signal processor")
        );
    }

    #[test]
    fn auto_takes_the_first_usable_camera_and_says_why_it_skipped_the_rest() {
        let cam = |path: &str, fourcc: &str, usable: bool| DeviceInfo {
            path: path.into(),
            card: "cam".into(),
            driver: "drv".into(),
            bus: "platform:x".into(),
            api: CaptureApi::SinglePlanar,
            formats: vec![FormatInfo {
                fourcc: fourcc.into(),
                description: String::new(),
                usable,
                sizes: vec![(640, 480, vec![30])],
            }],
        };
        let skipped = |path: &str, reason| {
            Node::Skipped(Skipped {
                path: path.into(),
                card: "c".into(),
                driver: "d".into(),
                reason,
            })
        };
        let nodes = vec![
            skipped("/dev/video0", SkipReason::RawBayerOnly(strings(&["pRAA"]))),
            Node::Unreadable("/dev/video1".into(), io::Error::other("busy")),
            skipped("/dev/video10", SkipReason::MemToMem),
            Node::Camera(cam("/dev/video20", "YUYV", true)),
            Node::Camera(cam("/dev/video21", "NV12", true)),
        ];
        let (got, passed) = pick_auto(nodes);
        assert_eq!(got.expect("a camera").path, PathBuf::from("/dev/video20"));
        let reasons: Vec<String> = passed.iter().map(|s| s.reason.to_string()).collect();
        assert_eq!(passed.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("raw Bayer") && reasons[0].contains("libcamera"));
        assert!(reasons[1].contains("busy"));
        assert!(reasons[2].contains("memory-to-memory"));
        let (none, passed) = pick_auto(vec![skipped("/dev/video10", SkipReason::MemToMem)]);
        assert!(none.is_none() && passed.len() == 1);
    }

    #[test]
    fn fourcc_text_never_holds_control_bytes() {
        assert_eq!(fourcc_text(u32::from_le_bytes(*b"YUYV")), "YUYV");
        assert_eq!(fourcc_text(u32::from_le_bytes(*b"Y16 ") | 1 << 31), "Y16?");
        assert_eq!(fourcc_text(0), "????");
    }

    #[test]
    fn modes_skip_unsupported_formats() {
        let d = DeviceInfo {
            path: "/dev/video0".into(),
            card: "cam".into(),
            driver: "uvcvideo".into(),
            bus: "usb".into(),
            api: CaptureApi::SinglePlanar,
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
        assert!(render(&[Node::Camera(d)]).contains("RGB3 (RGB)  [not supported by rtcam]"));
    }
}
