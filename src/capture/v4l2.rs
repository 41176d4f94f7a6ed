//! The `v4l2` source: a USB/CSI camera through the `v4l` crate with mmap
//! streaming. Chooses the mode nearest the configured one, and with
//! `passthrough` forwards the camera's own H.264.

use super::devices::{self, DeviceInfo};
use super::format_choice::{self, Choice};
use super::{ControlInfo, ControlKind, Source, SourceError, SourceFactory, SourceInfo};
use crate::config::VideoSettings;
use crate::frame::{PixelFormat, RawFrame};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use v4l::buffer::Type;
use v4l::control::{Control, Type as CtrlType, Value};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
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
}

impl V4l2Factory {
    /// `path` = `None` means `auto`: the first capture device with a usable format.
    pub fn new(path: Option<PathBuf>, video: &VideoSettings) -> Self {
        Self {
            path,
            want: (video.width, video.height, video.fps),
            passthrough: video.passthrough,
        }
    }

    fn find_device(&self) -> Result<DeviceInfo, SourceError> {
        if let Some(path) = &self.path {
            return match devices::probe_device(path, self.want) {
                Ok(Some(info)) => Ok(info),
                Ok(None) => Err(SourceError::NoUsableFormat {
                    path: path.clone(),
                    offered: "nothing (not a video capture device)".into(),
                }),
                Err(source) => Err(SourceError::Device {
                    path: path.clone(),
                    source,
                }),
            };
        }
        devices::list(self.want)
            .into_iter()
            .filter_map(Result::ok)
            .find(|d| !d.modes().is_empty())
            .ok_or(SourceError::NoDevice)
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
    device: v4l::Device,
    stream: Stream<'static>,
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
    fn open(info: &DeviceInfo, choice: Choice) -> Result<Self, SourceError> {
        let path = info.path.clone();
        let device = v4l::Device::with_path(&path).map_err(dev_err(&path))?;
        let fourcc = v4l::FourCC::new(&choice.format.fourcc());
        let fmt = device
            .set_format(&v4l::Format::new(choice.width, choice.height, fourcc))
            .map_err(dev_err(&path))?;
        let format = PixelFormat::from_fourcc(fmt.fourcc.repr).ok_or_else(|| {
            SourceError::NoUsableFormat {
                path: path.clone(),
                offered: format!("{} after negotiation", fmt.fourcc),
            }
        })?;
        // Not every driver supports frame-rate control; the camera's own rate is fine then.
        let fps = device
            .set_params(&v4l::video::capture::Parameters::with_fps(choice.fps))
            .ok()
            .and_then(|p| {
                (p.interval.numerator > 0).then(|| p.interval.denominator / p.interval.numerator)
            })
            .unwrap_or(choice.fps);
        let mut stream =
            Stream::with_buffers(&device, Type::VideoCapture, BUFFERS).map_err(dev_err(&path))?;
        stream.set_timeout(READ_TIMEOUT);
        tracing::info!(
            device = %path.display(), card = %info.card, format = %format,
            width = fmt.width, height = fmt.height, fps, "camera opened"
        );
        Ok(Self {
            device,
            stream,
            info: SourceInfo {
                name: format!("{} ({})", path.display(), info.card),
                format,
                width: fmt.width as usize,
                height: fmt.height as usize,
                fps,
            },
            stride: fmt.stride as usize,
            path,
        })
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
        let (buf, meta) = self
            .stream
            .next()
            .map_err(|e| SourceError::Read(format!("{}: {e}", self.path.display())))?;
        let used = (meta.bytesused as usize).min(buf.len());
        Ok(RawFrame {
            format: self.info.format,
            width: self.info.width,
            height: self.info.height,
            stride: self.stride,
            data: &buf[..used],
            captured: Instant::now(),
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
        let descs = self.device.query_controls().map_err(dev_err(&self.path))?;
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
        let descs = self.device.query_controls().map_err(dev_err(&self.path))?;
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
        Ok(value)
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
