//! The `v4l2` source: a USB/CSI camera, single- or multiplanar. The `v4l`
//! crate sets formats, rates and controls; frames come through rtcam's own
//! mmap stream ([`super::ioctl::MmapStream`]: `v4l`'s streams only
//! single-planar queues and panics when dropped after a driver error).
//! Chooses the mode nearest the configured one, and with `passthrough`
//! forwards the camera's own H.264.

use super::devices::{self, CaptureApi, DeviceInfo, Node};
use super::format_choice::{self, Choice};
use super::ioctl::{self, MmapStream};
use super::{ControlInfo, ControlKind, Source, SourceError, SourceFactory, SourceInfo};
use crate::config::VideoSettings;
use crate::media::frame::{DmaBufRef, PixelFormat, RawFrame};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use v4l::control::{Control, Type as CtrlType, Value};
use v4l::video::Capture;

/// `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME`: asks an encoding camera for an
/// IDR. From the kernel's headers, through the bindings the `v4l` crate
/// generates from them at build time.
const CID_FORCE_KEY_FRAME: u32 = v4l::v4l_sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME;
/// A camera that sends nothing for this long is treated as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
const BUFFERS: u32 = 4;

/// Opens the configured (or first) capture device.
pub struct V4l2Factory {
    path: Option<PathBuf>,
    want: (u32, u32, u32),
    passthrough: bool,
    /// Whether `auto` already logged the nodes it passed over at INFO
    /// (later reopens log them at DEBUG).
    announced: AtomicBool,
}

impl V4l2Factory {
    /// `path` = `None` means `auto`: the first capture device with a usable format.
    pub fn new(path: Option<PathBuf>, video: &VideoSettings) -> Self {
        Self {
            path,
            want: (video.width, video.height, video.fps),
            passthrough: video.passthrough,
            announced: AtomicBool::new(false),
        }
    }

    fn find_device(&self) -> Result<DeviceInfo, SourceError> {
        if let Some(path) = &self.path {
            return match devices::probe_node(path, self.want) {
                Node::Camera(info) => Ok(info),
                Node::Skipped(s) => Err(SourceError::NotACamera {
                    path: s.path,
                    reason: s.reason,
                }),
                Node::Unreadable(path, source) => Err(SourceError::Device { path, source }),
            };
        }
        let nodes = devices::list(self.want);
        let found = nodes.len();
        let (camera, skipped) = devices::pick_auto(nodes);
        let loud = !self.announced.swap(true, Ordering::Relaxed);
        for s in &skipped {
            if loud {
                tracing::info!(device = %s.path.display(), card = %s.card, driver = %s.driver,
                    reason = %s.reason, "video.source = auto: skipping this node");
            } else {
                tracing::debug!(device = %s.path.display(), reason = %s.reason, "video.source = auto: skipping this node");
            }
        }
        match camera {
            Some(c) => {
                tracing::info!(device = %c.path.display(), card = %c.card, driver = %c.driver,
                    "video.source = auto: using this camera");
                Ok(c)
            }
            None if found == 0 => Err(SourceError::NoDevice),
            None => Err(SourceError::NoCamera(
                skipped
                    .iter()
                    .map(|s| format!("{} ({}): {}", s.path.display(), s.card, s.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}

impl SourceFactory for V4l2Factory {
    fn open(&self) -> Result<Box<dyn Source>, SourceError> {
        let info = self.find_device()?;
        let (w, h, fps) = self.want;
        let choice =
            format_choice::choose(&info.modes(), w, h, fps, self.passthrough).ok_or_else(|| {
                SourceError::NoUsableFormat {
                    path: info.path.clone(),
                    offered: info
                        .formats
                        .iter()
                        .map(|f| f.fourcc.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
        V4l2Source::open(&info, choice).map(|s| Box::new(s) as Box<dyn Source>)
    }
}

/// A streaming camera.
pub struct V4l2Source {
    /// Declared before the device: the stream stops and unmaps first.
    stream: MmapStream,
    device: v4l::Device,
    info: SourceInfo,
    stride: usize,
    path: PathBuf,
}

fn dev_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Device {
        path: path.to_path_buf(),
        source,
    }
}

impl V4l2Source {
    /// Opens `path` in exactly this mode (size, rate and format are still
    /// the driver's nearest): what [`V4l2Factory`] does once it has chosen.
    /// Tests use it to capture one device in each of its formats.
    pub fn open_path(path: &std::path::Path, choice: Choice) -> Result<Self, SourceError> {
        match devices::probe_node(path, (choice.width, choice.height, choice.fps)) {
            Node::Camera(info) => Self::open(&info, choice),
            Node::Skipped(s) => Err(SourceError::NotACamera {
                path: s.path,
                reason: s.reason,
            }),
            Node::Unreadable(path, source) => Err(SourceError::Device { path, source }),
        }
    }

    fn open(info: &DeviceInfo, choice: Choice) -> Result<Self, SourceError> {
        let path = info.path.clone();
        let device = v4l::Device::with_path(&path).map_err(dev_err(&path))?;
        let code = u32::from_le_bytes(choice.format.fourcc());
        let (width, height, got, stride, fps, stream) = match info.api {
            CaptureApi::SinglePlanar => {
                let fmt = device
                    .set_format(&v4l::Format::new(
                        choice.width,
                        choice.height,
                        v4l::FourCC::from(code),
                    ))
                    .map_err(dev_err(&path))?;
                // Not every driver supports frame-rate control; the camera's own rate is fine then.
                let fps = device
                    .set_params(&v4l::video::capture::Parameters::with_fps(choice.fps))
                    .ok()
                    .and_then(|p| {
                        let (n, d) = (p.interval.numerator, p.interval.denominator);
                        // 2/25 s is 12.5 fps: rounded as the listing rounds it.
                        (n > 0).then(|| (d + n / 2) / n)
                    })
                    .unwrap_or(choice.fps);
                let stream =
                    MmapStream::start(device.handle(), ioctl::BUF_CAPTURE, BUFFERS, READ_TIMEOUT)
                        .map_err(dev_err(&path))?;
                (
                    fmt.width,
                    fmt.height,
                    u32::from(fmt.fourcc),
                    fmt.stride,
                    fps,
                    stream,
                )
            }
            CaptureApi::Multiplanar => {
                let fd = device.handle().fd();
                let fmt = ioctl::set_format_mplane(fd, choice.width, choice.height, code)
                    .map_err(dev_err(&path))?;
                if fmt.planes != 1 {
                    return Err(SourceError::NoUsableFormat {
                        path: path.clone(),
                        offered: format!(
                            "{} in {} memory planes (rtcam reads one)",
                            devices::fourcc_text(fmt.fourcc),
                            fmt.planes
                        ),
                    });
                }
                let fps =
                    ioctl::set_fps(fd, ioctl::BUF_CAPTURE_MPLANE, choice.fps).unwrap_or(choice.fps);
                let stream = MmapStream::start(
                    device.handle(),
                    ioctl::BUF_CAPTURE_MPLANE,
                    BUFFERS,
                    READ_TIMEOUT,
                )
                .map_err(dev_err(&path))?;
                (fmt.width, fmt.height, fmt.fourcc, fmt.stride, fps, stream)
            }
        };
        let format = PixelFormat::from_fourcc(got.to_le_bytes()).ok_or_else(|| {
            SourceError::NoUsableFormat {
                path: path.clone(),
                offered: format!("{} after negotiation", devices::fourcc_text(got)),
            }
        })?;
        tracing::info!(
            device = %path.display(), card = %info.card, format = %format,
            width, height, fps, multiplanar = info.api == CaptureApi::Multiplanar, "camera opened"
        );
        Ok(Self {
            device,
            stream,
            info: SourceInfo {
                name: format!("{} ({})", path.display(), info.card),
                format,
                width: width as usize,
                height: height as usize,
                fps,
            },
            stride: stride as usize,
            path,
        })
    }
}

impl V4l2Source {
    /// The device's controls. The `v4l` crate panics on control types and
    /// strings it does not know: a driver's oddity becomes an error here.
    fn query_controls(&self) -> Result<Vec<v4l::control::Description>, SourceError> {
        let device = &self.device;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.query_controls())) {
            Ok(r) => r.map_err(dev_err(&self.path)),
            Err(_) => Err(SourceError::Read(format!(
                "{}: the driver lists a control rtcam cannot read",
                self.path.display()
            ))),
        }
    }
}

/// Control names as commands use them: lowercase words joined by `_`.
fn control_name(label: &str) -> String {
    let mut out = String::new();
    for word in label
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    out
}

impl Source for V4l2Source {
    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn next_frame(&mut self) -> Result<RawFrame<'_>, SourceError> {
        let path = &self.path;
        let read = |e: std::io::Error| SourceError::Read(format!("{}: {e}", path.display()));
        let filled = self.stream.next_frame().map_err(read)?;
        Ok(RawFrame {
            format: self.info.format,
            width: self.info.width,
            height: self.info.height,
            stride: self.stride,
            data: filled.data,
            captured: Instant::now(),
            dmabuf: filled.dmabuf.map(|fd| DmaBufRef {
                fd,
                index: filled.index,
                length: filled.length,
                offset: filled.offset,
            }),
        })
    }

    fn request_keyframe(&mut self) {
        if self.info.format == PixelFormat::H264 {
            let ctrl = Control {
                id: CID_FORCE_KEY_FRAME,
                value: Value::None,
            };
            if let Err(e) = self.device.set_control(ctrl) {
                tracing::debug!(error = %e, "camera cannot force a key frame; waiting for its next one");
            }
        }
    }

    fn controls(&mut self) -> Result<Vec<ControlInfo>, SourceError> {
        let descs = self.query_controls()?;
        let mut out = Vec::new();
        for d in descs {
            let kind = match d.typ {
                CtrlType::Integer | CtrlType::Integer64 => ControlKind::Integer {
                    min: d.minimum,
                    max: d.maximum,
                    step: d.step as i64,
                    default: d.default,
                },
                CtrlType::Boolean => ControlKind::Boolean { default: d.default },
                CtrlType::Menu | CtrlType::IntegerMenu => ControlKind::Menu {
                    min: d.minimum,
                    max: d.maximum,
                    default: d.default,
                    items: d
                        .items
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(i, item)| (i64::from(i), item.to_string()))
                        .collect(),
                },
                _ => continue,
            };
            let value = match self.device.control(d.id).map(|c| c.value) {
                Ok(Value::Integer(v)) => v,
                Ok(Value::Boolean(b)) => i64::from(b),
                _ => continue,
            };
            out.push(ControlInfo {
                name: control_name(&d.name),
                kind,
                value,
            });
        }
        Ok(out)
    }

    fn set_control(&mut self, name: &str, value: i64) -> Result<i64, SourceError> {
        let descs = self.query_controls()?;
        let d = descs
            .into_iter()
            .find(|d| control_name(&d.name) == name)
            .ok_or_else(|| SourceError::UnknownControl(name.to_string()))?;
        if !(d.minimum..=d.maximum).contains(&value) {
            return Err(SourceError::BadControl {
                name: name.to_string(),
                reason: format!("value {value} is outside {}..={}", d.minimum, d.maximum),
            });
        }
        let v = match d.typ {
            CtrlType::Boolean => Value::Boolean(value != 0),
            CtrlType::Integer | CtrlType::Integer64 | CtrlType::Menu | CtrlType::IntegerMenu => {
                Value::Integer(value)
            }
            other => {
                return Err(SourceError::BadControl {
                    name: name.to_string(),
                    reason: format!("control type {other} cannot be set"),
                });
            }
        };
        self.device
            .set_control(Control { id: d.id, value: v })
            .map_err(|e| SourceError::BadControl {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        // The driver may round to its step: report what it holds now.
        match self.device.control(d.id).map(|c| c.value) {
            Ok(Value::Integer(v)) => Ok(v),
            Ok(Value::Boolean(b)) => Ok(i64::from(b)),
            _ => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_names_are_snake_case() {
        assert_eq!(control_name("Brightness"), "brightness");
        assert_eq!(
            control_name("White Balance Temperature, Auto"),
            "white_balance_temperature_auto"
        );
        assert_eq!(control_name("  Exposure (Absolute) "), "exposure_absolute");
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let video = crate::config::Settings::default().video;
        let f = V4l2Factory::new(Some("/dev/rtcam-no-such-video".into()), &video);
        match f.open() {
            Err(SourceError::Device { path, .. }) => {
                assert_eq!(path, PathBuf::from("/dev/rtcam-no-such-video"))
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a missing device must not open"),
        }
    }
}
