//! DataChannel control: text requests from a viewer's `control` channel are
//! parsed ([`protocol`], [`commands`]), checked against the session's role
//! and rate limit, and carried out on GPIO, the shared encoder and the
//! camera. Every reply carries the request's id; events carry none.

pub mod ratelimit;

pub use rtcam_proto::control::{commands, protocol};

use crate::audio::Talkback;
use crate::gpio::failsafe::SessionKey;
use crate::gpio::{Actor, Gpio, GpioError, PinValue};
use crate::media::capture::SourceError;
use crate::media::encode::EncoderControl;
use crate::media::hub::Hub;
use crate::media::pipeline::{CameraControls, CameraState, PipelineStatus};
use crate::media::rate::RateControl;
use crate::record::recorder::{Command as RecordCommand, DeleteError, Recorder};
use crate::record::store::StoreError;
use crate::snapshot::{SnapshotError, Snapshots};
use base64::Engine as _;
use commands::Command;
use protocol::{ControlCode, ControlError, error_reply, ok_reply, parse_request};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Largest JPEG sent in a `snapshot` reply: with base64 (4/3 larger) the
/// reply stays under 64 KiB, the message size every peer takes (larger
/// sends failed with the WebRTC stack here and close the channel). The
/// quality is lowered to fit; `GET /snapshot.jpg` has the full one.
const MAX_SNAPSHOT_JPEG: usize = 46 * 1024;

/// The label of the control DataChannel.
pub const CHANNEL_LABEL: &str = "control";

pub use crate::auth::Role;

/// One session's control state, shared by its channels: the command budget
/// is per session, so opening more channels buys no more commands.
#[derive(Debug, Clone)]
pub struct ControlSession {
    key: SessionKey,
    role: Role,
    limiter: std::sync::Arc<std::sync::Mutex<ratelimit::TokenBucket>>,
}

impl ControlSession {
    /// The session's key (for failsafe tracking).
    pub fn key(&self) -> SessionKey {
        self.key
    }

    fn allow(&self, now: Instant) -> bool {
        self.limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow(now)
    }
}

/// What the controller needs from the rest of the agent.
pub struct Controller {
    hub: Arc<Hub>,
    encoder: Arc<EncoderControl>,
    rate: Arc<RateControl>,
    camera: Arc<PipelineStatus>,
    camera_controls: CameraControls,
    gpio: Option<Arc<Gpio>>,
    viewers: watch::Receiver<usize>,
    size: (u32, u32, u32),
    bitrate_bounds: (u32, u32),
    rate_limit: u32,
    max_message: usize,
    recorder: Option<Recorder>,
    snapshots: Arc<Snapshots>,
    talk: Option<Arc<Talkback>>,
    notices: tokio::sync::broadcast::Sender<Notice>,
}

/// An event for every control channel (motion, recording), sent as
/// `{"event": name, …fields}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The event's name, e.g. `motion.start`.
    pub name: &'static str,
    /// Its fields.
    pub fields: serde_json::Map<String, Value>,
}

/// Controller construction parameters.
pub struct ControllerParts {
    /// The shared encoded stream.
    pub hub: Arc<Hub>,
    /// Keyframe and bitrate requests to the encoder, and what it applied.
    pub encoder: Arc<EncoderControl>,
    /// Congestion control: `video.bitrate` sets its ceiling.
    pub rate: Arc<RateControl>,
    /// Camera state and counters.
    pub camera: Arc<PipelineStatus>,
    /// Camera controls.
    pub camera_controls: CameraControls,
    /// GPIO, if any pins are declared.
    pub gpio: Option<Arc<Gpio>>,
    /// Number of sessions.
    pub viewers: watch::Receiver<usize>,
    /// Configured width, height, fps.
    pub size: (u32, u32, u32),
    /// `[video] min_bitrate_kbps`, `max_bitrate_kbps`.
    pub bitrate_bounds: (u32, u32),
    /// Commands per second per session.
    pub rate_limit: u32,
    /// Largest command accepted (bytes).
    pub max_message: usize,
    /// The recorder, when `[record] mode` is on.
    pub recorder: Option<Recorder>,
    /// Snapshots.
    pub snapshots: Arc<Snapshots>,
    /// Talkback, when `[audio] output` is set.
    pub talk: Option<Arc<Talkback>>,
}

fn gpio_error(e: GpioError) -> ControlError {
    let code = match &e {
        GpioError::UnknownPin(_) => ControlCode::UnknownPin,
        GpioError::WrongMode { .. } => ControlCode::WrongMode,
        GpioError::BadValue(_) => ControlCode::BadParams,
        GpioError::Hardware(_) | GpioError::Setup(_) | GpioError::NoHardware(_) => {
            ControlCode::Hardware
        }
    };
    ControlError::new(code, e.to_string())
}

fn camera_error(e: SourceError) -> ControlError {
    let code = match &e {
        SourceError::UnknownControl(_) | SourceError::BadControl { .. } => ControlCode::BadParams,
        _ => ControlCode::Hardware,
    };
    ControlError::new(code, e.to_string())
}

fn pin_result(pin: &str, v: PinValue) -> Value {
    json!({ "pin": pin, "value": v.json() })
}

impl Controller {
    /// A controller over the agent's parts.
    pub fn new(parts: ControllerParts) -> Self {
        Self {
            hub: parts.hub,
            encoder: parts.encoder,
            rate: parts.rate,
            camera: parts.camera,
            camera_controls: parts.camera_controls,
            gpio: parts.gpio,
            viewers: parts.viewers,
            size: parts.size,
            bitrate_bounds: parts.bitrate_bounds,
            rate_limit: parts.rate_limit,
            max_message: parts.max_message,
            recorder: parts.recorder,
            snapshots: parts.snapshots,
            talk: parts.talk,
            // A channel that falls this far behind misses some notices.
            notices: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// State for a new session.
    pub fn session(&self, key: SessionKey, role: Role) -> ControlSession {
        ControlSession {
            key,
            role,
            limiter: std::sync::Arc::new(std::sync::Mutex::new(ratelimit::TokenBucket::new(
                self.rate_limit,
            ))),
        }
    }

    /// GPIO, if configured.
    pub fn gpio(&self) -> Option<&Arc<Gpio>> {
        self.gpio.as_ref()
    }

    /// Handles one text message; returns the reply to send.
    pub async fn handle(&self, session: &mut ControlSession, text: &str) -> String {
        if text.len() > self.max_message {
            let e = ControlError::new(
                ControlCode::BadJson,
                format!(
                    "message is {} bytes; the limit is {}",
                    text.len(),
                    self.max_message
                ),
            );
            return error_reply(&serde_json::Value::Null, &e);
        }
        let req = match parse_request(text) {
            Ok(r) => r,
            Err((id, e)) => return error_reply(&id, &e),
        };
        if !session.allow(Instant::now()) {
            let e = ControlError::new(
                ControlCode::RateLimited,
                format!("more than {} commands per second", self.rate_limit),
            );
            return error_reply(&req.id, &e);
        }
        let result = match Command::parse(&req) {
            Ok(cmd) if cmd.mutates() && session.role == Role::View => Err(ControlError::new(
                ControlCode::NotAllowed,
                format!(
                    "{} needs the control role; this session may only view",
                    req.cmd
                ),
            )),
            Ok(cmd) => self.run(session, cmd).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => ok_reply(&req.id, v),
            Err(e) => error_reply(&req.id, &e),
        }
    }

    fn gpio_or_unknown(&self, pin: &str) -> Result<&Arc<Gpio>, ControlError> {
        self.gpio
            .as_ref()
            .ok_or_else(|| gpio_error(GpioError::UnknownPin(pin.to_string())))
    }

    async fn run(&self, session: &ControlSession, cmd: Command) -> Result<Value, ControlError> {
        let actor = Actor::Session(session.key);
        match cmd {
            Command::Ping => Ok(json!({ "pong": true })),
            Command::GpioList => Ok(json!({
                "pins": self
                    .gpio
                    .as_ref()
                    .map(|g| g.list().iter().map(|p| p.json()).collect::<Vec<_>>())
                    .unwrap_or_default()
            })),
            Command::GpioGet { pin } => self
                .gpio_or_unknown(&pin)?
                .get(&pin)
                .map(|r| r.json())
                .map_err(gpio_error),
            Command::GpioSet { pin, value } => {
                let v = self
                    .gpio_or_unknown(&pin)?
                    .set(&pin, value, actor)
                    .map_err(gpio_error)?;
                Ok(pin_result(&pin, v))
            }
            Command::GpioToggle { pin } => {
                let v = self
                    .gpio_or_unknown(&pin)?
                    .toggle(&pin, actor)
                    .map_err(gpio_error)?;
                Ok(pin_result(&pin, v))
            }
            Command::GpioPulse { pin, ms, value } => {
                let g = self.gpio_or_unknown(&pin)?;
                let restore = g
                    .pulse(&pin, Duration::from_millis(ms), value, actor)
                    .map_err(gpio_error)?;
                Ok(json!({ "pin": pin, "ms": ms, "restores_to": restore.json() }))
            }
            Command::PwmSet {
                pin,
                duty,
                frequency_hz,
            } => {
                let v = self
                    .gpio_or_unknown(&pin)?
                    .set_pwm(&pin, duty, frequency_hz, actor)
                    .map_err(gpio_error)?;
                let mut r = pin_result(&pin, v);
                if let PinValue::Duty { frequency_hz, .. } = v {
                    r["frequency_hz"] = json!(frequency_hz);
                }
                Ok(r)
            }
            Command::ServoSet { pin, target } => {
                let v = self
                    .gpio_or_unknown(&pin)?
                    .set_servo(&pin, target, actor)
                    .map_err(gpio_error)?;
                let mut r = pin_result(&pin, v);
                if let PinValue::Angle { pulse_us, .. } = v {
                    r["pulse_us"] = json!(pulse_us);
                }
                Ok(r)
            }
            Command::VideoKeyframe => {
                self.encoder.request_keyframe();
                Ok(json!({ "requested": true }))
            }
            Command::VideoBitrate { kbps } => {
                let (lo, hi) = self.bitrate_bounds;
                let applied = kbps.clamp(lo, hi);
                // It is the ceiling: congestion control keeps the encoder
                // at or below it, and at it when no viewer's link holds it
                // down; the encoder applies a change with its next frame
                // (`video.status` reports what it applied).
                self.rate.set_ceiling(applied);
                Ok(
                    json!({ "kbps": applied, "requested_kbps": kbps, "min_kbps": lo, "max_kbps": hi }),
                )
            }
            Command::VideoStatus => Ok(self.video_status()),
            Command::Snapshot => {
                let shot = self
                    .snapshots
                    .take_within(MAX_SNAPSHOT_JPEG)
                    .await
                    .map_err(|e| {
                        let code = match e {
                            SnapshotError::Timeout(_) | SnapshotError::Stopped => {
                                ControlCode::Hardware
                            }
                            SnapshotError::TooLarge(..) | SnapshotError::Still(_) => {
                                ControlCode::Internal
                            }
                        };
                        ControlError::new(code, e.to_string())
                    })?;
                Ok(json!({
                    "width": shot.width,
                    "height": shot.height,
                    "bytes": shot.jpeg.len(),
                    "jpeg": base64::engine::general_purpose::STANDARD.encode(&shot.jpeg),
                }))
            }
            Command::RecordList => {
                let r = self.recorder()?.clone();
                let (status, list, motion) =
                    tokio::task::spawn_blocking(move || (r.status(), r.list(), r.motion()))
                        .await
                        .map_err(|e| ControlError::new(ControlCode::Internal, e.to_string()))?;
                Ok(json!({ "status": status, "recordings": list, "motion": motion }))
            }
            Command::RecordStart | Command::RecordStop => {
                let start = matches!(cmd, Command::RecordStart);
                let r = self.recorder()?;
                let cmd = if start {
                    RecordCommand::Start
                } else {
                    RecordCommand::Stop
                };
                if !r.command(cmd) {
                    return Err(ControlError::new(
                        ControlCode::Internal,
                        "the recorder has stopped",
                    ));
                }
                Ok(json!({ "recording": start, "mode": r.status().mode }))
            }
            Command::RecordDelete { name } => {
                let r = self.recorder()?.clone();
                let n = name.clone();
                tokio::task::spawn_blocking(move || r.delete(&n))
                    .await
                    .map_err(|e| ControlError::new(ControlCode::Internal, e.to_string()))?
                    .map_err(|e| {
                        let code = match &e {
                            DeleteError::Open(_) => ControlCode::InUse,
                            DeleteError::Store(StoreError::NotFound(_)) => ControlCode::NotFound,
                            DeleteError::Store(StoreError::BadName(_)) => ControlCode::BadParams,
                            DeleteError::Store(StoreError::Io { .. }) => ControlCode::Hardware,
                        };
                        ControlError::new(code, e.to_string())
                    })?;
                Ok(json!({ "deleted": name }))
            }
            Command::CameraControls => {
                let cc = self.camera_controls.clone();
                let list = tokio::task::spawn_blocking(move || cc.list())
                    .await
                    .map_err(|e| ControlError::new(ControlCode::Internal, e.to_string()))?
                    .map_err(camera_error)?;
                Ok(json!({ "controls": list }))
            }
            Command::AudioTalk { on } => {
                let talk = self.talk.as_ref().ok_or_else(|| {
                    ControlError::new(
                        ControlCode::TalkOff,
                        "talkback is off: no speaker is configured ([audio] output)",
                    )
                })?;
                if on {
                    talk.take(session.key()).map_err(|e| {
                        ControlError::new(
                            ControlCode::FloorTaken,
                            format!("{e}: the floor is taken until they release it"),
                        )
                    })?;
                    self.notify_floor(true);
                } else if talk.release(session.key()) {
                    self.notify_floor(false);
                }
                Ok(json!({ "talking": on }))
            }
            Command::CameraSet { control, value } => {
                let cc = self.camera_controls.clone();
                let name = control.clone();
                let applied = tokio::task::spawn_blocking(move || cc.set(&name, value))
                    .await
                    .map_err(|e| ControlError::new(ControlCode::Internal, e.to_string()))?
                    .map_err(camera_error)?;
                Ok(json!({ "control": control, "value": applied }))
            }
        }
    }

    /// Sends `name` with `fields` to every control channel.
    pub fn notify(&self, name: &'static str, fields: serde_json::Map<String, Value>) {
        // No channel open: nobody to tell.
        let _ = self.notices.send(Notice { name, fields });
    }

    /// Tells every control channel whether someone holds the talkback floor.
    fn notify_floor(&self, busy: bool) {
        let mut fields = serde_json::Map::new();
        fields.insert("busy".into(), busy.into());
        self.notify("audio.floor", fields);
    }

    /// A session ended: the talkback floor is released if it held it.
    pub fn session_ended(&self, key: SessionKey) {
        if self.talk.as_ref().is_some_and(|t| t.release(key)) {
            self.notify_floor(false);
        }
    }

    /// Talkback, when a speaker is configured.
    pub fn talk(&self) -> Option<&Arc<Talkback>> {
        self.talk.as_ref()
    }

    /// Notices from now on.
    pub fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    fn recorder(&self) -> Result<&Recorder, ControlError> {
        self.recorder.as_ref().ok_or_else(|| {
            ControlError::new(
                ControlCode::RecordingOff,
                "recording is off ([record] mode = \"off\")",
            )
        })
    }

    fn video_status(&self) -> Value {
        let stats = self.hub.stats();
        let (w, h, fps) = match self.camera.state() {
            CameraState::Running(info) => (info.width as u32, info.height as u32, info.fps),
            _ => self.size,
        };
        json!({
            "width": w,
            "height": h,
            "fps": fps,
            // Null when the encoder has no bitrate to set (camera H.264 passthrough).
            "bitrate_kbps": self.encoder.applied_kbps(),
            "min_bitrate_kbps": self.bitrate_bounds.0,
            "max_bitrate_kbps": self.bitrate_bounds.1,
            // The ceiling `video.bitrate` set, the policy, and the encoded
            // share of camera frames (congestion control lowers it first).
            "ceiling_kbps": self.rate.ceiling_kbps(),
            "congestion": self.rate.mode().as_config(),
            "frame_divisor": self.encoder.frame_divisor(),
            "viewers": *self.viewers.borrow(),
            "frames": self.camera.frames(),
            // Which encoder runs, and the CPU copies of pictures on their way to it.
            "encoder": self.camera.encoder().map(|k| k.to_string()),
            "frame_copies": self.camera.copies(),
            "frames_dropped": stats.dropped,
            "camera": match self.camera.state() {
                CameraState::Idle => "idle".to_string(),
                CameraState::Running(_) => "running".to_string(),
                CameraState::Failed(e) => format!("failed: {e}"),
                CameraState::Stopped => "stopped".to_string(),
            },
        })
    }
}
