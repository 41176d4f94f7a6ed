//! Validated, typed settings, and the rules that turn [`RawConfig`] into them.
//! Defaults live here, once. Pure.

use super::error::{ConfigError, Origin};
use super::raw::{
    RawAudio, RawAuth, RawBroker, RawConfig, RawControl, RawDevice, RawGpio, RawHttp, RawIceServer,
    RawMotion, RawMqtt, RawPin, RawRecord, RawToken, RawVideo, RawWebrtc, RawZone,
};
use crate::auth::{MIN_SECRET_LEN, Role};
use crate::gpio::pins::{
    BackendKind, MAX_SERVO_PULSE_US, MIN_SERVO_PULSE_US, PinMode, PinRef, PinSpec, Pull, valid_name,
};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The synthetic test pattern.
    Test,
    /// The first V4L2 capture device.
    Auto,
    /// A V4L2 device node.
    Device(PathBuf),
}

impl SourceSpec {
    /// The config text for this source.
    pub fn as_config(&self) -> String {
        match self {
            SourceSpec::Test => "test".into(),
            SourceSpec::Auto => "auto".into(),
            SourceSpec::Device(p) => p.display().to_string(),
        }
    }
}

/// Which H.264 encoder `[video] encoder` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderPref {
    /// Camera H.264 passed through when `passthrough = true` and offered; else a hardware (V4L2 M2M) encoder when one exists and opens; else OpenH264.
    #[default]
    Auto,
    /// OpenH264 in software.
    OpenH264,
    /// The board's V4L2 memory-to-memory H.264 encoder (e.g. the Raspberry Pi 4's /dev/video11).
    V4l2M2m,
}

impl EncoderPref {
    /// The config text for this preference.
    pub fn as_config(&self) -> &'static str {
        match self {
            EncoderPref::Auto => "auto",
            EncoderPref::OpenH264 => "openh264",
            EncoderPref::V4l2M2m => "v4l2m2m",
        }
    }
}

/// How `[video] congestion` lets viewers' links steer the one encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionPolicy {
    /// The bitrate follows the weakest viewer that still reports (the frame rate drops first when it is low).
    #[default]
    FollowWeakest,
    /// The bitrate stays; a viewer whose link cannot carry it gets keyframes only.
    KeepQuality,
    /// Viewers' feedback is ignored: the bitrate is what was configured or commanded.
    Off,
}

impl CongestionPolicy {
    /// The config text for this policy.
    pub fn as_config(&self) -> &'static str {
        match self {
            CongestionPolicy::FollowWeakest => "follow-weakest",
            CongestionPolicy::KeepQuality => "keep-quality",
            CongestionPolicy::Off => "off",
        }
    }
}

/// `[video]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSettings {
    /// Frame source.
    pub source: SourceSpec,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Encoder target bitrate.
    pub bitrate_kbps: u32,
    /// Time between periodic IDRs.
    pub keyframe_interval: Duration,
    /// OpenH264 threads (1-4), or 0 for one per core up to 4 (decided by the encoder).
    pub encoder_threads: u32,
    /// Forward camera H.264 without re-encoding.
    pub passthrough: bool,
    /// Which H.264 encoder to use.
    pub encoder: EncoderPref,
    /// The V4L2 memory-to-memory encoder node; `None`: the first
    /// memory-to-memory device whose capture queue offers H.264.
    pub encoder_device: Option<PathBuf>,
    /// Keep the camera running with no viewers.
    pub always_on: bool,
    /// Lowest bitrate a command may set.
    pub min_bitrate_kbps: u32,
    /// Highest bitrate a command may set.
    pub max_bitrate_kbps: u32,
    /// How viewers' links steer the encoder's bitrate.
    pub congestion: CongestionPolicy,
    /// The test source's scene.
    pub test_scene: TestScene,
}

/// `video.test_scene` and `video.test_object_after_s`: what the test source shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestScene {
    /// Scrolling bars and a bouncing box.
    Moving,
    /// Still bars; only the grain, the clock and the block code change. A
    /// box starts moving after the given time, if any.
    Still {
        /// When the box appears, after the camera starts.
        object_after: Option<Duration>,
    },
}

/// A secret that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[device]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    /// Name shown to viewers.
    pub name: String,
}

/// A STUN or TURN server. A TURN server without `username` and
/// `credential` gets short-lived ones minted from `webrtc.turn_secret_file`
/// ([`WebrtcSettings::turn_secret`]).
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN credential (a static password: never logged, printed or served
    /// unless `http.serve_static_turn_credentials`).
    pub credential: Option<String>,
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "***"))
            .finish()
    }
}

impl IceServer {
    /// Whether any URL is a TURN one (`turn:` or `turns:`).
    pub fn is_turn(&self) -> bool {
        self.urls.iter().any(|u| u.starts_with("turn"))
    }

    /// Whether its credentials are minted from the shared TURN secret
    /// (a TURN server configured without `username` and `credential`).
    pub fn minted(&self) -> bool {
        self.is_turn() && self.username.is_none() && self.credential.is_none()
    }
}

/// How the WebRTC stack uses mDNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdnsMode {
    /// No mDNS at all.
    Disabled,
    /// Resolve viewers' `.local` candidates (browsers hide LAN IPs behind them).
    Query,
    /// Also publish our own host candidate under a `.local` name.
    Gather,
}

impl MdnsMode {
    fn as_config(self) -> &'static str {
        match self {
            MdnsMode::Disabled => "disabled",
            MdnsMode::Query => "query",
            MdnsMode::Gather => "gather",
        }
    }
}

/// `[webrtc]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcSettings {
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// File holding the secret shared with the TURN server.
    pub turn_secret_file: Option<PathBuf>,
    /// The secret itself, read from `turn_secret_file` at load time.
    pub turn_secret: Option<Secret>,
    /// How long a minted TURN credential is valid.
    pub turn_credential_ttl: Duration,
    /// Interfaces to gather on; empty = all non-loopback.
    pub interfaces: Vec<String>,
    /// Gather loopback candidates too.
    pub loopback: bool,
    /// mDNS behaviour.
    pub mdns: MdnsMode,
    /// Most simultaneous viewers.
    pub max_viewers: usize,
    /// Drop a session not connected this long after its offer.
    pub negotiation_timeout: Duration,
    /// End a session disconnected this long.
    pub disconnected_timeout: Duration,
    /// Most time a viewer may buffer video before showing it, sent as the
    /// playout-delay extension; `None` sends none (the browser's own buffer).
    pub playout_delay: Option<Duration>,
    /// Most sessions negotiating at once.
    pub max_negotiating: usize,
    /// Candidates kept per viewer before its offer.
    pub early_ice_candidates: usize,
    /// Viewers whose early candidates are kept at once.
    pub early_ice_clients: usize,
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 3.1.1.
    V311,
    /// MQTT 5.
    V5,
}

/// Transport of a broker URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttScheme {
    /// `mqtt://` plain TCP.
    Mqtt,
    /// `mqtts://` TLS.
    Mqtts,
    /// `ws://` WebSocket.
    Ws,
    /// `wss://` WebSocket over TLS.
    Wss,
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// Transport.
    pub scheme: MqttScheme,
    /// Host name or IP.
    pub host: String,
    /// Port (scheme default when omitted).
    pub port: u16,
    /// Path, for WebSocket URLs (e.g. `/mqtt`).
    pub path: String,
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            MqttScheme::Mqtt => "mqtt",
            MqttScheme::Mqtts => "mqtts",
            MqttScheme::Ws => "ws",
            MqttScheme::Wss => "wss",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// External broker; `None` runs the embedded one.
    pub url: Option<MqttUrl>,
    /// Protocol version.
    pub protocol: MqttProtocol,
    /// User name.
    pub username: Option<String>,
    /// Password (from `password` or, after loading, `password_file`).
    pub password: Option<Secret>,
    /// File the password is read from at load time.
    pub password_file: Option<PathBuf>,
    /// Client id.
    pub client_id: String,
    /// Topic prefix `P`.
    pub topic_prefix: String,
    /// CA certificates to trust for TLS; `None` = the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for TLS.
    pub client_cert: Option<PathBuf>,
    /// Its private key.
    pub client_key: Option<PathBuf>,
    /// Largest signaling payload accepted.
    pub max_payload_bytes: usize,
    /// Offers accepted per client id per minute.
    pub offers_per_minute: u32,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Listen address; `None` = no web viewer.
    pub listen: Option<SocketAddr>,
    /// WebSocket URL browsers use for MQTT; `None` = derive from the embedded broker.
    pub mqtt_ws_url: Option<String>,
    /// Host names the viewer is reached by (lowercase, no port), besides IP
    /// addresses, `localhost` and the machine's own name.
    pub hosts: Vec<String>,
    /// Most open connections.
    pub max_connections: usize,
    /// Time allowed for a request's headers (and for an idle keep-alive connection).
    pub header_timeout: Duration,
    /// A connection moving no byte this long is closed.
    pub idle_timeout: Duration,
    /// Give the page static TURN credentials.
    pub serve_static_turn_credentials: bool,
    /// HTTPS.
    pub tls: HttpTls,
}

/// `http.tls`, `http.tls_cert`, `http.tls_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTls {
    /// Plain HTTP.
    Off,
    /// The user's certificate chain and key (PEM files).
    Files {
        /// `http.tls_cert`.
        cert: PathBuf,
        /// `http.tls_key`.
        key: PathBuf,
    },
    /// A certificate the agent makes on first start and keeps.
    SelfSigned,
}

/// `[broker]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// MQTT 3.1.1 listener.
    pub listen: SocketAddr,
    /// MQTT 5 listener.
    pub v5_listen: SocketAddr,
    /// WebSocket listener.
    pub ws_listen: SocketAddr,
    /// Origins allowed on the WebSocket listener besides the web viewer's own.
    pub ws_origins: Vec<String>,
}

/// Everything the agent needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `[video]`
    pub video: VideoSettings,
    /// `[device]`
    pub device: DeviceSettings,
    /// `[webrtc]`
    pub webrtc: WebrtcSettings,
    /// `[mqtt]`
    pub mqtt: MqttSettings,
    /// `[http]`
    pub http: HttpSettings,
    /// `[broker]`
    pub broker: BrokerSettings,
    /// `[gpio]`
    pub gpio: GpioSettings,
    /// `[control]`
    pub control: ControlSettings,
    /// `[auth]`
    pub auth: AuthSettings,
    /// `[record]`
    pub record: RecordSettings,
    /// `[motion]`
    pub motion: MotionSettings,
    /// `[audio]`
    pub audio: AudioSettings,
    /// `[rtsp]`
    pub rtsp: super::rtsp::RtspSettings,
}

/// Where the microphone's sound comes from (`audio.input`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioInput {
    /// No audio track.
    Off,
    /// A generated 1 kHz beep during the first 100 ms of every whole second
    /// of the wall clock, for tests and latency measurements.
    Test,
    /// An ALSA capture device.
    Alsa(String),
}

impl AudioInput {
    /// The input as written in config.
    pub fn as_config(&self) -> &str {
        match self {
            AudioInput::Off => "off",
            AudioInput::Test => "test",
            AudioInput::Alsa(d) => d,
        }
    }
}

/// `[audio]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSettings {
    /// The microphone.
    pub input: AudioInput,
    /// The ALSA device talkback plays on; `None`: no talkback.
    pub output: Option<String>,
    /// Opus bitrate of the microphone, kbit/s.
    pub bitrate_kbps: u32,
    /// Microphone channels (1 or 2).
    pub channels: u8,
    /// Talkback volume, percent.
    pub volume_percent: u32,
    /// Talkback held before playing.
    pub jitter: Duration,
}

/// ALSA names its devices with letters, digits and a few separators; a
/// name with anything else (a newline, a quote) is a config mistake.
fn alsa_device(key: &str, v: &str, origin: OriginOf<'_>) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":,._-=/".contains(c));
    if !ok {
        return Err(invalid(
            key,
            format!("{v:?}"),
            "expected \"off\" or an ALSA device name such as \"default\", \"hw:1,0\" or \"plughw:CARD=Mic,DEV=0\" (letters, digits and : , . _ - = /)",
            origin,
        ));
    }
    Ok(v.to_string())
}

fn audio(raw: &RawAudio, origin: OriginOf<'_>) -> Result<AudioSettings, ConfigError> {
    let input = match raw.input.as_deref().map(str::trim) {
        None | Some("off") => AudioInput::Off,
        Some("test") => AudioInput::Test,
        Some(d) => AudioInput::Alsa(alsa_device("audio.input", d, origin)?),
    };
    let output = match raw.output.as_deref().map(str::trim) {
        None | Some("off") => None,
        Some(d) => Some(alsa_device("audio.output", d, origin)?),
    };
    Ok(AudioSettings {
        input,
        output,
        bitrate_kbps: int(
            "audio.bitrate_kbps",
            raw.bitrate_kbps,
            32,
            (6, 256),
            false,
            origin,
        )?,
        channels: int("audio.channels", raw.channels, 1, (1, 2), false, origin)? as u8,
        volume_percent: int(
            "audio.volume_percent",
            raw.volume_percent,
            100,
            (0, 400),
            false,
            origin,
        )?,
        jitter: Duration::from_millis(u64::from(int(
            "audio.jitter_ms",
            raw.jitter_ms,
            60,
            (20, 500),
            false,
            origin,
        )?)),
    })
}

/// A rectangle relative to the picture (each value 0-1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zone {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

/// `[motion]`
#[derive(Debug, Clone, PartialEq)]
pub struct MotionSettings {
    /// Whether motion is detected.
    pub enabled: bool,
    /// Luma change that counts a pixel as changed.
    pub threshold: u8,
    /// Share of the watched picture that must change (0-1).
    pub min_area: f64,
    /// Quiet time that ends motion.
    pub end_after: Duration,
    /// Watched rectangles (empty: the whole picture).
    pub include: Vec<Zone>,
    /// Ignored rectangles.
    pub exclude: Vec<Zone>,
    /// Motion triggers a recording.
    pub record: bool,
    /// A snapshot is published when motion starts.
    pub snapshot: bool,
}

fn zones(
    key: &str,
    raw: Option<&Vec<RawZone>>,
    origin: OriginOf<'_>,
) -> Result<Vec<Zone>, ConfigError> {
    let mut out = Vec::new();
    for (i, z) in raw.into_iter().flatten().enumerate() {
        let ok = [z.x, z.y, z.w, z.h]
            .iter()
            .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
            && z.w > 0.0
            && z.h > 0.0
            && z.x + z.w <= 1.0 + 1e-9
            && z.y + z.h <= 1.0 + 1e-9;
        if !ok {
            return Err(invalid(
                &format!("{key}[{i}]"),
                format!("{{ x = {}, y = {}, w = {}, h = {} }}", z.x, z.y, z.w, z.h),
                "expected a rectangle inside the picture: x, y, w, h from 0 to 1, w and h above 0, x + w and y + h at most 1",
                &|_| origin(key),
            ));
        }
        out.push(Zone {
            x: z.x,
            y: z.y,
            w: z.w,
            h: z.h,
        });
    }
    Ok(out)
}

fn motion(raw: &RawMotion, origin: OriginOf<'_>) -> Result<MotionSettings, ConfigError> {
    let min_area = num(
        "motion.min_area_percent",
        raw.min_area_percent,
        1.0,
        (0.1, 100.0),
        origin,
    )? / 100.0;
    Ok(MotionSettings {
        enabled: raw.enabled.unwrap_or(false),
        threshold: int(
            "motion.threshold",
            raw.threshold,
            25,
            (1, 255),
            false,
            origin,
        )? as u8,
        min_area,
        end_after: Duration::from_secs(u64::from(int(
            "motion.end_after_s",
            raw.end_after_s,
            5,
            (1, 600),
            false,
            origin,
        )?)),
        include: zones("motion.include", raw.include.as_ref(), origin)?,
        exclude: zones("motion.exclude", raw.exclude.as_ref(), origin)?,
        record: raw.record.unwrap_or(true),
        snapshot: raw.snapshot.unwrap_or(true),
    })
}

/// `record.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordMode {
    /// Nothing is recorded.
    Off,
    /// Always recording (the camera stays on).
    Continuous,
    /// Recording around triggers, with pre- and post-roll (the camera stays on for the pre-roll).
    Events,
}

impl RecordMode {
    /// The mode as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordMode::Off => "off",
            RecordMode::Continuous => "continuous",
            RecordMode::Events => "events",
        }
    }
}

/// `[record]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSettings {
    /// What is recorded.
    pub mode: RecordMode,
    /// Where segments go.
    pub dir: PathBuf,
    /// Length of one segment file.
    pub segment: Duration,
    /// Length of one fragment (written and synced at once).
    pub fragment: Duration,
    /// Kept before a trigger.
    pub pre: Duration,
    /// Recorded after the last trigger.
    pub post: Duration,
    /// Input pins whose edges trigger a recording.
    pub triggers: Vec<String>,
    /// Segments older than this are deleted.
    pub max_age: Option<Duration>,
    /// The segments together take at most this many bytes.
    pub max_bytes: Option<u64>,
    /// Free space kept on the disk (bytes).
    pub min_free_bytes: u64,
}

/// Where recordings go by default: the service's state directory.
pub const DEFAULT_RECORD_DIR: &str = "/var/lib/rtcam/recordings";

fn record(
    raw: &RawRecord,
    gpio: &GpioSettings,
    origin: OriginOf<'_>,
) -> Result<RecordSettings, ConfigError> {
    let mode = match raw.mode.as_deref() {
        None | Some("off") => RecordMode::Off,
        Some("continuous") => RecordMode::Continuous,
        Some("events") => RecordMode::Events,
        Some(other) => {
            return Err(invalid(
                "record.mode",
                format!("{other:?}"),
                "expected \"off\", \"continuous\" or \"events\"",
                origin,
            ));
        }
    };
    let dir = raw.dir.clone().unwrap_or_else(|| DEFAULT_RECORD_DIR.into());
    if dir.is_empty() || dir.contains('\0') {
        return Err(invalid(
            "record.dir",
            format!("{dir:?}"),
            "expected a directory path",
            origin,
        ));
    }
    let triggers = raw.triggers.clone().unwrap_or_default();
    for (i, name) in triggers.iter().enumerate() {
        match gpio.pins.iter().find(|p| &p.name == name) {
            Some(p) if matches!(p.mode, PinMode::Input { .. }) => {}
            Some(p) => {
                return Err(invalid(
                    &format!("record.triggers[{i}]"),
                    format!("{name:?}"),
                    format!(
                        "expected an input pin; {name:?} has mode = {:?}",
                        p.mode.name()
                    ),
                    &|_| origin("record.triggers"),
                ));
            }
            None => {
                return Err(invalid(
                    &format!("record.triggers[{i}]"),
                    format!("{name:?}"),
                    "expected the name of an input pin in gpio.pins",
                    &|_| origin("record.triggers"),
                ));
            }
        }
    }
    let secs = |key: &str, v: Option<i64>, default: u32, range: (u32, u32)| {
        int(key, v, default, range, false, origin).map(|n| Duration::from_secs(n.into()))
    };
    let max_bytes = match raw.max_bytes {
        None | Some(0) => None,
        Some(n) if n >= 1 << 20 => Some(n as u64),
        Some(n) => {
            return Err(invalid(
                "record.max_bytes",
                n,
                "expected 0 (no limit) or at least 1048576 (1 MiB)",
                origin,
            ));
        }
    };
    Ok(RecordSettings {
        mode,
        dir: PathBuf::from(dir),
        segment: secs("record.segment_s", raw.segment_s, 60, (2, 3600))?,
        fragment: ms(
            "record.fragment_ms",
            raw.fragment_ms,
            1000,
            (200, 10_000),
            origin,
        )?,
        pre: secs("record.pre_s", raw.pre_s, 5, (0, 60))?,
        post: secs("record.post_s", raw.post_s, 10, (0, 3600))?,
        triggers,
        max_age: match int(
            "record.max_age_days",
            raw.max_age_days,
            0,
            (0, 36_500),
            false,
            origin,
        )? {
            0 => None,
            d => Some(Duration::from_secs(u64::from(d) * 86_400)),
        },
        max_bytes,
        min_free_bytes: u64::from(int(
            "record.min_free_mb",
            raw.min_free_mb,
            256,
            (0, 1 << 20),
            false,
            origin,
        )?) << 20,
    })
}

/// `[gpio]`
#[derive(Debug, Clone, PartialEq)]
pub struct GpioSettings {
    /// Backend.
    pub backend: BackendKind,
    /// Declared pins.
    pub pins: Vec<PinSpec>,
    /// No pins declared and the simulator in use: run the demo pin set.
    pub demo: bool,
    /// Longest pulse.
    pub max_pulse: Duration,
    /// Expose pins over MQTT.
    pub mqtt: bool,
    /// Publish Home Assistant discovery.
    pub ha_discovery: bool,
    /// Home Assistant discovery prefix.
    pub ha_prefix: String,
    /// Whether `backend` was set explicitly (for printing).
    backend_explicit: bool,
}

/// `[control]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// Commands per second per session.
    pub rate_limit: u32,
    /// Largest command accepted (bytes).
    pub max_message_bytes: usize,
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who can publish an offer may watch and control.
    None,
    /// Offers must carry a valid token; its role decides what the session may do.
    Token,
}

/// One static token from `[[auth.tokens]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The token.
    pub token: Secret,
    /// What it grants.
    pub role: Role,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Whether offers need a token.
    pub mode: AuthMode,
    /// File holding the token-signing secret.
    pub secret_file: Option<PathBuf>,
    /// The secret itself, read from `secret_file` at load time.
    pub secret: Option<Secret>,
    /// Static tokens.
    pub tokens: Vec<TokenSpec>,
    /// The longest a signed token may live from now (`auth.max_token_ttl`).
    pub max_token_ttl: Duration,
    /// The camera signed tokens must name: its topic prefix (`mqtt.topic_prefix`).
    pub audience: String,
}

/// Default of `webrtc.turn_credential_ttl`.
pub const DEFAULT_TURN_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bounds of `webrtc.turn_credential_ttl`.
pub const TURN_CREDENTIAL_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600));

/// Default of `auth.max_token_ttl`.
pub const DEFAULT_MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl AuthSettings {
    /// The authoriser these settings describe.
    pub fn authorizer(&self) -> crate::auth::Authorizer {
        match self.mode {
            AuthMode::None => crate::auth::Authorizer::open(),
            AuthMode::Token => crate::auth::Authorizer::with_tokens(
                self.tokens
                    .iter()
                    .map(|t| crate::auth::StaticToken::new(t.token.expose(), t.role))
                    .collect(),
                self.secret.as_ref().map(|s| s.expose().as_bytes()),
                &self.audience,
                self.max_token_ttl,
            ),
        }
    }
}

fn auth(raw: &RawAuth, origin: OriginOf<'_>) -> Result<AuthSettings, ConfigError> {
    let mode = match raw.mode.as_deref() {
        None | Some("none") => AuthMode::None,
        Some("token") => AuthMode::Token,
        Some(other) => {
            return Err(invalid(
                "auth.mode",
                format!("{other:?}"),
                "expected \"none\" or \"token\"",
                origin,
            ));
        }
    };
    let mut tokens = Vec::new();
    for (i, RawToken { token, role }) in raw.tokens.iter().flatten().enumerate() {
        let key = format!("auth.tokens[{i}]");
        let role = Role::parse(role).ok_or_else(|| {
            invalid(
                &key,
                format!("role = {role:?}"),
                "expected role \"view\" or \"control\"",
                &|_| origin("auth.tokens"),
            )
        })?;
        if token.len() < MIN_SECRET_LEN
            || token.len() > crate::auth::MAX_TOKEN_LEN
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            // The value itself is a secret: never echo it.
            return Err(invalid(
                &key,
                format!("token of {} characters", token.len()),
                format!(
                    "tokens need {MIN_SECRET_LEN}-{} characters without spaces",
                    crate::auth::MAX_TOKEN_LEN
                ),
                &|_| origin("auth.tokens"),
            ));
        }
        tokens.push(TokenSpec {
            token: Secret::new(token.clone()),
            role,
        });
    }
    let secret_file = raw
        .secret_file
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if mode == AuthMode::Token && tokens.is_empty() && secret_file.is_none() {
        return Err(invalid(
            "auth.mode",
            "\"token\"",
            "token mode needs [[auth.tokens]] entries or auth.secret_file (or both)",
            origin,
        ));
    }
    let max_token_ttl = match raw.max_token_ttl.as_deref() {
        None => DEFAULT_MAX_TOKEN_TTL,
        Some(text) => crate::auth::parse_ttl(text)
            .map_err(|why| invalid("auth.max_token_ttl", format!("{text:?}"), why, origin))?,
    };
    Ok(AuthSettings {
        mode,
        secret_file,
        secret: None,
        tokens,
        max_token_ttl,
        // Set by `validate` once the topic prefix is known.
        audience: String::new(),
    })
}

impl Settings {
    /// Signed tokens name the camera by its topic prefix.
    fn with_audience(mut self) -> Self {
        self.auth.audience = self.mqtt.topic_prefix.clone();
        self
    }

    /// Whether the agent runs its own broker (no `mqtt.url`).
    pub fn embedded_broker(&self) -> bool {
        self.mqtt.url.is_none()
    }

    /// Listen addresses reachable from other machines (the web viewer, and
    /// the embedded broker's listeners when it runs).
    pub fn exposed_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out: Vec<(&'static str, SocketAddr)> = Vec::new();
        if let Some(a) = self.http.listen {
            out.push(("http.listen", a));
        }
        if self.embedded_broker() {
            out.push(("broker.listen", self.broker.listen));
            out.push(("broker.v5_listen", self.broker.v5_listen));
            out.push(("broker.ws_listen", self.broker.ws_listen));
        }
        out.retain(|(_, a)| !a.ip().is_loopback());
        out
    }

    /// Why this configuration is risky, for a loud warning at start: anyone
    /// on the network may drive the outputs when no token is required.
    pub fn security_warning(&self) -> Option<String> {
        let outputs = self.gpio.demo
            || self
                .gpio
                .pins
                .iter()
                .any(|p| !matches!(p.mode, PinMode::Input { .. }));
        let exposed = self.exposed_listeners();
        if self.auth.mode != AuthMode::None || !outputs || exposed.is_empty() {
            return None;
        }
        let list: Vec<String> = exposed.iter().map(|(k, a)| format!("{k} = {a}")).collect();
        Some(format!(
            "SECURITY: auth.mode = \"none\" with GPIO outputs and a listener open to the network ({}): \
             anyone who can reach it can watch the camera and drive the outputs. \
             Set [auth] mode = \"token\" (see docs/SECURITY.md) or listen on 127.0.0.1 only.",
            list.join(", ")
        ))
    }
}

/// The machine's host name, reduced to characters safe in topics and client ids.
pub fn hostname() -> String {
    let raw = ::hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if clean.is_empty() {
        "camera".into()
    } else {
        clean
    }
}

impl Default for Settings {
    fn default() -> Self {
        validate(&RawConfig::default(), &|_| Origin::Default)
            .expect("the built-in defaults are valid (checked by a unit test)")
    }
}

/// Looks up where a dotted key's value came from.
pub type OriginOf<'a> = &'a dyn Fn(&str) -> Origin;

/// The error for `key`'s `value`, saying what is allowed instead.
pub(crate) fn invalid(
    key: &str,
    value: impl ToString,
    allowed: impl Into<String>,
    origin: OriginOf<'_>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.into(),
        origin: origin(key),
    }
}

/// Two keys that mean something only together (a certificate and its key,
/// a user name and its password): both, neither, or an error naming the
/// one missing.
pub(crate) fn pair<A, B>(
    (key_a, a): (&str, Option<A>),
    (key_b, b): (&str, Option<B>),
    origin: OriginOf<'_>,
) -> Result<Option<(A, B)>, ConfigError> {
    let missing = |key: &str| {
        invalid(
            key,
            "(not set)",
            format!("{key_a} and {key_b} go together: set both or neither"),
            origin,
        )
    };
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(missing(key_b)),
        (None, Some(_)) => Err(missing(key_a)),
    }
}

/// An integer key within `min..=max` (and even, when asked).
fn int(
    key: &str,
    raw: Option<i64>,
    default: u32,
    (min, max): (u32, u32),
    even: bool,
    origin: OriginOf<'_>,
) -> Result<u32, ConfigError> {
    let Some(v) = raw else {
        return Ok(default);
    };
    let ok = (i64::from(min)..=i64::from(max)).contains(&v) && (!even || v % 2 == 0);
    if !ok {
        let parity = if even {
            "an even number"
        } else {
            "a whole number"
        };
        return Err(invalid(
            key,
            v,
            format!("expected {parity} from {min} to {max}"),
            origin,
        ));
    }
    Ok(v as u32)
}

fn video(raw: &RawVideo, origin: OriginOf<'_>) -> Result<VideoSettings, ConfigError> {
    let source = match raw.source.as_deref().map(str::trim) {
        None | Some("test") => SourceSpec::Test,
        Some("auto") => SourceSpec::Auto,
        Some(p) if p.starts_with('/') => SourceSpec::Device(PathBuf::from(p)),
        Some(other) => {
            return Err(invalid(
                "video.source",
                format!("{other:?}"),
                "expected \"test\", \"auto\" or an absolute device path such as \"/dev/video0\"",
                origin,
            ));
        }
    };
    let encoder = match raw.encoder.as_deref() {
        None | Some("auto") => EncoderPref::Auto,
        Some("openh264") => EncoderPref::OpenH264,
        Some("v4l2m2m") => EncoderPref::V4l2M2m,
        Some(other) => {
            return Err(invalid(
                "video.encoder",
                format!("{other:?}"),
                "expected \"auto\", \"openh264\" or \"v4l2m2m\"",
                origin,
            ));
        }
    };
    let congestion = match raw.congestion.as_deref() {
        None | Some("follow-weakest") => CongestionPolicy::FollowWeakest,
        Some("keep-quality") => CongestionPolicy::KeepQuality,
        Some("off") => CongestionPolicy::Off,
        Some(other) => {
            return Err(invalid(
                "video.congestion",
                format!("{other:?}"),
                "expected \"follow-weakest\", \"keep-quality\" or \"off\"",
                origin,
            ));
        }
    };
    // Empty means unset, as for the other path keys.
    let encoder_device = match raw.encoder_device.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(p) if !p.starts_with('/') => {
            return Err(invalid(
                "video.encoder_device",
                format!("{p:?}"),
                "expected an absolute device path such as \"/dev/video11\"",
                origin,
            ));
        }
        Some(p) if encoder == EncoderPref::OpenH264 => {
            return Err(invalid(
                "video.encoder_device",
                format!("{p:?}"),
                "only used by the v4l2m2m and auto encoders (video.encoder is \"openh264\")",
                origin,
            ));
        }
        Some(p) => Some(PathBuf::from(p)),
    };
    Ok(VideoSettings {
        source,
        width: int("video.width", raw.width, 1280, (160, 3840), true, origin)?,
        height: int("video.height", raw.height, 720, (120, 2160), true, origin)?,
        fps: int("video.fps", raw.fps, 30, (1, 60), false, origin)?,
        bitrate_kbps: int(
            "video.bitrate_kbps",
            raw.bitrate_kbps,
            2000,
            (50, 50_000),
            false,
            origin,
        )?,
        keyframe_interval: Duration::from_millis(u64::from(int(
            "video.keyframe_interval_ms",
            raw.keyframe_interval_ms,
            2000,
            (100, 60_000),
            false,
            origin,
        )?)),
        // OpenH264 clips its thread count at 4 (MAX_THREADS_NUM): a larger
        // value would not do what it says, so it is refused.
        encoder_threads: int(
            "video.encoder_threads",
            raw.encoder_threads,
            0,
            (0, 4),
            false,
            origin,
        )?,
        passthrough: raw.passthrough.unwrap_or(false),
        encoder,
        encoder_device,
        always_on: raw.always_on.unwrap_or(false),
        min_bitrate_kbps: int(
            "video.min_bitrate_kbps",
            raw.min_bitrate_kbps,
            100,
            (50, 50_000),
            false,
            origin,
        )?,
        max_bitrate_kbps: int(
            "video.max_bitrate_kbps",
            raw.max_bitrate_kbps,
            8000,
            (50, 50_000),
            false,
            origin,
        )?,
        congestion,
        test_scene: match (raw.test_scene.as_deref(), raw.test_object_after_s) {
            (None | Some("moving"), None) => TestScene::Moving,
            (None | Some("moving"), Some(n)) => {
                return Err(invalid(
                    "video.test_object_after_s",
                    n,
                    "only with video.test_scene = \"still\" (the moving scene always has its box)",
                    origin,
                ));
            }
            (Some("still"), after) => TestScene::Still {
                object_after: match after {
                    None => None,
                    Some(_) => Some(Duration::from_secs(u64::from(int(
                        "video.test_object_after_s",
                        after,
                        0,
                        (0, 3600),
                        false,
                        origin,
                    )?))),
                },
            },
            (Some(other), _) => {
                return Err(invalid(
                    "video.test_scene",
                    format!("{other:?}"),
                    "expected \"moving\" or \"still\"",
                    origin,
                ));
            }
        },
    })
    .and_then(|v| {
        if v.min_bitrate_kbps > v.max_bitrate_kbps {
            return Err(invalid(
                "video.min_bitrate_kbps",
                v.min_bitrate_kbps,
                "must not exceed video.max_bitrate_kbps",
                origin,
            ));
        }
        Ok(v)
    })
}

fn ms(
    key: &str,
    raw: Option<i64>,
    default: u32,
    range: (u32, u32),
    origin: OriginOf<'_>,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(u64::from(int(
        key, raw, default, range, false, origin,
    )?)))
}

fn device(raw: &RawDevice, origin: OriginOf<'_>) -> Result<DeviceSettings, ConfigError> {
    let name = match raw.name.as_deref() {
        None => hostname(),
        Some(n)
            if !n.trim().is_empty()
                && n.chars().count() <= 64
                && !n.chars().any(char::is_control) =>
        {
            n.trim().to_string()
        }
        Some(n) => {
            return Err(invalid(
                "device.name",
                format!("{n:?}"),
                "expected 1-64 printable characters",
                origin,
            ));
        }
    };
    Ok(DeviceSettings { name })
}

fn ice_server(
    i: usize,
    raw: &RawIceServer,
    minting: bool,
    origin: OriginOf<'_>,
) -> Result<IceServer, ConfigError> {
    let key = "webrtc.ice_servers";
    if raw.urls.is_empty() {
        return Err(invalid(
            key,
            format!("entry {i}"),
            "each server needs at least one URL in urls",
            origin,
        ));
    }
    for url in &raw.urls {
        let ok = ["stun:", "turn:", "turns:"]
            .iter()
            .any(|p| url.starts_with(p) && url.len() > p.len());
        if !ok {
            return Err(invalid(
                key,
                format!("{url:?}"),
                "URLs must start with stun:, turn: or turns:",
                origin,
            ));
        }
        let statics = (raw.username.is_some(), raw.credential.is_some());
        if url.starts_with("turn")
            && statics != (true, true)
            && (statics != (false, false) || !minting)
        {
            return Err(invalid(
                key,
                format!("{url:?}"),
                "TURN servers need username and credential, or neither with webrtc.turn_secret_file set (minted credentials)",
                origin,
            ));
        }
    }
    Ok(IceServer {
        urls: raw.urls.clone(),
        username: raw.username.clone(),
        credential: raw.credential.clone(),
    })
}

fn webrtc(raw: &RawWebrtc, origin: OriginOf<'_>) -> Result<WebrtcSettings, ConfigError> {
    let turn_secret_file = raw
        .turn_secret_file
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let turn_credential_ttl = match raw.turn_credential_ttl.as_deref() {
        None => DEFAULT_TURN_CREDENTIAL_TTL,
        Some(text) => {
            let (lo, hi) = TURN_CREDENTIAL_TTL_RANGE;
            humantime::parse_duration(text.trim())
                .ok()
                .filter(|d| (lo..=hi).contains(d))
                .ok_or_else(|| {
                    invalid(
                        "webrtc.turn_credential_ttl",
                        format!("{text:?}"),
                        "expected a duration from 1m to 7d, such as \"12h\"",
                        origin,
                    )
                })?
        }
    };
    let ice_servers = raw
        .ice_servers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| ice_server(i, s, turn_secret_file.is_some(), origin))
        .collect::<Result<Vec<_>, _>>()?;
    let interfaces = raw.interfaces.clone().unwrap_or_default();
    if let Some(bad) = interfaces
        .iter()
        .find(|n| n.is_empty() || n.len() > 15 || n.contains(['/', ' ']))
    {
        return Err(invalid(
            "webrtc.interfaces",
            format!("{bad:?}"),
            "expected interface names such as \"eth0\"",
            origin,
        ));
    }
    let mdns = match raw.mdns.as_deref() {
        None | Some("query") => MdnsMode::Query,
        Some("gather") => MdnsMode::Gather,
        Some("disabled") => MdnsMode::Disabled,
        Some(other) => {
            return Err(invalid(
                "webrtc.mdns",
                format!("{other:?}"),
                "expected \"query\", \"gather\" or \"disabled\"",
                origin,
            ));
        }
    };
    Ok(WebrtcSettings {
        ice_servers,
        turn_secret_file,
        turn_secret: None,
        turn_credential_ttl,
        interfaces,
        loopback: raw.loopback.unwrap_or(false),
        mdns,
        max_viewers: int(
            "webrtc.max_viewers",
            raw.max_viewers,
            8,
            (1, 64),
            false,
            origin,
        )? as usize,
        negotiation_timeout: ms(
            "webrtc.negotiation_timeout_ms",
            raw.negotiation_timeout_ms,
            30_000,
            (1_000, 300_000),
            origin,
        )?,
        disconnected_timeout: ms(
            "webrtc.disconnected_timeout_ms",
            raw.disconnected_timeout_ms,
            10_000,
            (1_000, 300_000),
            origin,
        )?,
        playout_delay: raw
            .playout_delay_ms
            .map(|v| ms("webrtc.playout_delay_ms", Some(v), 0, (0, 10_000), origin))
            .transpose()?,
        max_negotiating: int(
            "webrtc.max_negotiating",
            raw.max_negotiating,
            8,
            (1, 64),
            false,
            origin,
        )? as usize,
        early_ice_candidates: int(
            "webrtc.early_ice_candidates",
            raw.early_ice_candidates,
            32,
            (1, 256),
            false,
            origin,
        )? as usize,
        early_ice_clients: int(
            "webrtc.early_ice_clients",
            raw.early_ice_clients,
            64,
            (1, 1024),
            false,
            origin,
        )? as usize,
    })
}

/// Parses `mqtt://`, `mqtts://`, `ws://` and `wss://` broker URLs. An IPv6
/// host goes in brackets (`mqtt://[::1]:1883`); whatever parses prints back
/// (`Display`) as the same URL.
pub fn parse_mqtt_url(text: &str) -> Result<MqttUrl, String> {
    // A control character would end up in the WebSocket handshake or the TLS
    // server name; none belongs in a URL.
    if text.contains(char::is_control) {
        return Err("the URL must not contain control characters".into());
    }
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("expected scheme://host[:port]")?;
    let (scheme, default_port) = match scheme {
        "mqtt" | "tcp" => (MqttScheme::Mqtt, 1883),
        "mqtts" | "ssl" => (MqttScheme::Mqtts, 8883),
        "ws" => (MqttScheme::Ws, 80),
        "wss" => (MqttScheme::Wss, 443),
        _ => return Err("scheme must be mqtt, mqtts, ws or wss".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("put credentials in mqtt.username/password, not in the URL".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
        // Brackets are for IPv6 addresses only; `Display` brackets a host
        // exactly when it holds a ':', so anything else would not print back.
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "{h:?} in brackets is not an IPv6 address (e.g. mqtt://[::1]:1883)"
            ));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("expected :port after [{h}], not {after:?}"))?,
            ),
        };
        (h, port)
    } else {
        let (h, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if h.contains(['[', ']']) {
            return Err(format!(
                "the host {h:?} holds [ or ]: only a whole IPv6 address goes in brackets (e.g. mqtt://[::1]:1883)"
            ));
        }
        if h.contains(':') {
            return Err(format!(
                "the host {h:?} holds a ':': an IPv6 address must be in brackets (e.g. mqtt://[::1]:1883)"
            ));
        }
        (h, port)
    };
    if host.is_empty() {
        return Err("a host is required".into());
    }
    if host.contains(char::is_whitespace) {
        return Err(format!("the host {host:?} must not contain spaces"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or("port must be 1-65535")?,
    };
    if !path.is_empty() && matches!(scheme, MqttScheme::Mqtt | MqttScheme::Mqtts) {
        return Err("mqtt:// and mqtts:// URLs take no path".into());
    }
    Ok(MqttUrl {
        scheme,
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// A topic prefix: MQTT levels without wildcards or empty levels.
pub fn check_topic_prefix(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 200 {
        return Err("expected 1-200 characters".into());
    }
    if p.contains(['+', '#', '\0']) || p.chars().any(char::is_control) {
        return Err("wildcards (+, #) and control characters are not allowed".into());
    }
    if p.split('/').any(str::is_empty) {
        return Err("no empty levels (leading, trailing or double /)".into());
    }
    Ok(())
}

fn mqtt(raw: &RawMqtt, origin: OriginOf<'_>) -> Result<MqttSettings, ConfigError> {
    let url = match raw.url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => Some(
            parse_mqtt_url(u).map_err(|why| invalid("mqtt.url", format!("{u:?}"), why, origin))?,
        ),
    };
    let protocol = match raw.protocol.as_deref() {
        None | Some("5") | Some("5.0") => MqttProtocol::V5,
        Some("3.1.1") | Some("4") => MqttProtocol::V311,
        Some(other) => {
            return Err(invalid(
                "mqtt.protocol",
                format!("{other:?}"),
                "expected \"5\" or \"3.1.1\"",
                origin,
            ));
        }
    };
    if raw.password.is_some() && raw.password_file.is_some() {
        return Err(invalid(
            "mqtt.password_file",
            "(set)",
            "set either mqtt.password or mqtt.password_file, not both",
            origin,
        ));
    }
    let client_id = raw
        .client_id
        .clone()
        .unwrap_or_else(|| format!("rtcam-{}", hostname()));
    if client_id.is_empty()
        || client_id.len() > 128
        || client_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "mqtt.client_id",
            format!("{client_id:?}"),
            "expected 1-128 characters without spaces",
            origin,
        ));
    }
    let topic_prefix = raw
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("rtcam/{}", hostname()));
    check_topic_prefix(&topic_prefix).map_err(|why| {
        invalid(
            "mqtt.topic_prefix",
            format!("{topic_prefix:?}"),
            why,
            origin,
        )
    })?;
    let path = |p: &Option<String>| p.as_deref().filter(|p| !p.is_empty()).map(PathBuf::from);
    let ca_file = path(&raw.ca_file);
    let (client_cert, client_key) = pair(
        ("mqtt.client_cert", path(&raw.client_cert)),
        ("mqtt.client_key", path(&raw.client_key)),
        origin,
    )?
    .unzip();
    let tls = matches!(
        url.as_ref().map(|u| u.scheme),
        Some(MqttScheme::Mqtts | MqttScheme::Wss)
    );
    if !tls && (ca_file.is_some() || client_cert.is_some()) {
        return Err(invalid(
            if ca_file.is_some() {
                "mqtt.ca_file"
            } else {
                "mqtt.client_cert"
            },
            "(set)",
            "TLS files need an mqtts:// or wss:// mqtt.url",
            origin,
        ));
    }
    Ok(MqttSettings {
        url,
        protocol,
        username: raw.username.clone().filter(|u| !u.is_empty()),
        password: raw.password.clone().map(Secret::new),
        password_file: raw.password_file.clone().map(PathBuf::from),
        client_id,
        topic_prefix,
        ca_file,
        client_cert,
        client_key,
        max_payload_bytes: int(
            "mqtt.max_payload_bytes",
            raw.max_payload_bytes,
            crate::signaling::messages::MAX_PAYLOAD as u32,
            (1024, crate::signaling::messages::MAX_PAYLOAD as u32),
            false,
            origin,
        )? as usize,
        offers_per_minute: int(
            "mqtt.offers_per_minute",
            raw.offers_per_minute,
            20,
            (1, 600),
            false,
            origin,
        )?,
    })
}

fn addr(
    key: &str,
    raw: Option<&str>,
    default: &str,
    origin: OriginOf<'_>,
) -> Result<SocketAddr, ConfigError> {
    let text = raw.unwrap_or(default);
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?}"),
            "expected ip:port such as 127.0.0.1:8080 or 0.0.0.0:8080",
            origin,
        )
    })
}

fn http(raw: &RawHttp, origin: OriginOf<'_>) -> Result<HttpSettings, ConfigError> {
    let listen = match raw.listen.as_deref() {
        Some("off") | Some("") => None,
        other => Some(addr("http.listen", other, "127.0.0.1:8080", origin)?),
    };
    let mqtt_ws_url = match raw.mqtt_ws_url.as_deref() {
        None | Some("") => None,
        Some(u) => {
            let parsed = parse_mqtt_url(u)
                .map_err(|why| invalid("http.mqtt_ws_url", format!("{u:?}"), why, origin))?;
            if !matches!(parsed.scheme, MqttScheme::Ws | MqttScheme::Wss) {
                return Err(invalid(
                    "http.mqtt_ws_url",
                    format!("{u:?}"),
                    "browsers need a ws:// or wss:// URL",
                    origin,
                ));
            }
            Some(u.to_string())
        }
    };
    let mut hosts = Vec::new();
    for h in raw.hosts.iter().flatten() {
        let name = crate::http::parse_host_name(h.trim()).map_err(|why| {
            invalid(
                "http.hosts",
                format!("{h:?}"),
                format!("expected host names or IP addresses without a port ({why})"),
                origin,
            )
        })?;
        let name = name.to_string();
        if !hosts.contains(&name) {
            hosts.push(name);
        }
    }
    Ok(HttpSettings {
        listen,
        mqtt_ws_url,
        hosts,
        max_connections: int(
            "http.max_connections",
            raw.max_connections,
            128,
            (4, 4096),
            false,
            origin,
        )? as usize,
        header_timeout: ms(
            "http.header_timeout_ms",
            raw.header_timeout_ms,
            10_000,
            (500, 300_000),
            origin,
        )?,
        idle_timeout: ms(
            "http.idle_timeout_ms",
            raw.idle_timeout_ms,
            30_000,
            (1_000, 3_600_000),
            origin,
        )?,
        serve_static_turn_credentials: raw.serve_static_turn_credentials.unwrap_or(false),
        tls: http_tls(raw, origin)?,
    })
}

fn http_tls(raw: &RawHttp, origin: OriginOf<'_>) -> Result<HttpTls, ConfigError> {
    let path = |p: &Option<String>| {
        p.as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from)
    };
    let files = pair(
        ("http.tls_cert", path(&raw.tls_cert)),
        ("http.tls_key", path(&raw.tls_key)),
        origin,
    )?;
    match (raw.tls.as_deref().map(str::trim), files) {
        (None | Some("off") | Some(""), None) => Ok(HttpTls::Off),
        (None | Some("on") | Some("files"), Some((cert, key))) => Ok(HttpTls::Files { cert, key }),
        (Some("self-signed"), None) => Ok(HttpTls::SelfSigned),
        (Some("self-signed"), Some(_)) => Err(invalid(
            "http.tls",
            "\"self-signed\"",
            "either a self-signed certificate or http.tls_cert/http.tls_key, not both",
            origin,
        )),
        (Some("off"), Some(_)) => Err(invalid(
            "http.tls",
            "\"off\"",
            "http.tls_cert/http.tls_key are set: remove them, or tls = \"off\"",
            origin,
        )),
        (Some(other), _) => Err(invalid(
            "http.tls",
            format!("{other:?}"),
            "expected \"off\" or \"self-signed\" (or set http.tls_cert and http.tls_key)",
            origin,
        )),
    }
}

fn broker(raw: &RawBroker, origin: OriginOf<'_>) -> Result<BrokerSettings, ConfigError> {
    let b = BrokerSettings {
        listen: addr(
            "broker.listen",
            raw.listen.as_deref(),
            "127.0.0.1:1883",
            origin,
        )?,
        v5_listen: addr(
            "broker.v5_listen",
            raw.v5_listen.as_deref(),
            "127.0.0.1:1884",
            origin,
        )?,
        ws_listen: addr(
            "broker.ws_listen",
            raw.ws_listen.as_deref(),
            "127.0.0.1:9001",
            origin,
        )?,
        ws_origins: raw.ws_origins.clone().unwrap_or_default(),
    };
    for o in &b.ws_origins {
        crate::signaling::origin::check_listed(o)
            .map_err(|why| invalid("broker.ws_origins", format!("{o:?}"), why, origin))?;
    }
    let ports = [b.listen, b.v5_listen, b.ws_listen];
    if ports[0] == ports[1] || ports[0] == ports[2] || ports[1] == ports[2] {
        return Err(invalid(
            "broker.ws_listen",
            b.ws_listen,
            "the three broker listeners need different addresses",
            origin,
        ));
    }
    Ok(b)
}

/// Validates raw config into settings; the error names the first bad key.
pub fn validate(raw: &RawConfig, origin: OriginOf<'_>) -> Result<Settings, ConfigError> {
    let gpio = gpio(&raw.gpio, origin)?;
    // Triggers name input pins, so the pins are validated first.
    let record = record(&raw.record, &gpio, origin)?;
    let settings = Settings {
        video: video(&raw.video, origin)?,
        device: device(&raw.device, origin)?,
        webrtc: webrtc(&raw.webrtc, origin)?,
        mqtt: mqtt(&raw.mqtt, origin)?,
        http: http(&raw.http, origin)?,
        broker: broker(&raw.broker, origin)?,
        gpio,
        control: ControlSettings {
            rate_limit: int(
                "control.rate_limit",
                raw.control.rate_limit,
                50,
                (1, 1000),
                false,
                origin,
            )?,
            max_message_bytes: int(
                "control.max_message_bytes",
                raw.control.max_message_bytes,
                crate::control::protocol::MAX_MESSAGE as u32,
                (256, crate::control::protocol::MAX_MESSAGE as u32),
                false,
                origin,
            )? as usize,
        },
        auth: auth(&raw.auth, origin)?,
        record,
        motion: motion(&raw.motion, origin)?,
        audio: audio(&raw.audio, origin)?,
        rtsp: super::rtsp::validate(&raw.rtsp, origin)?,
    }
    .with_audience();
    rtsp_credentials_with_tokens(&settings, origin)?;
    Ok(settings)
}

/// Across sections: with `auth.mode = "token"` watching needs a token, but
/// RTSP clients (NVRs, VLC, ffmpeg) cannot carry one, so an RTSP server
/// other machines can reach must then have its own credentials. On
/// loopback it may stay open (a local relay, the demo).
fn rtsp_credentials_with_tokens(s: &Settings, origin: OriginOf<'_>) -> Result<(), ConfigError> {
    let Some(listen) = s.rtsp.listen else {
        return Ok(());
    };
    if s.auth.mode != AuthMode::Token || s.rtsp.credentials.is_some() || listen.ip().is_loopback() {
        return Ok(());
    }
    Err(invalid(
        "rtsp.username",
        "(not set)",
        format!(
            "auth.mode = \"token\" makes the camera require a token, and RTSP clients cannot carry one, \
             so rtsp.listen = {listen} would show the stream to anyone on the network: \
             set rtsp.username and rtsp.password, or listen on 127.0.0.1"
        ),
        origin,
    ))
}

fn pin_value_bool(key: &str, v: &toml::Value, origin: OriginOf<'_>) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| invalid(key, v, "expected true or false for an output", origin))
}

fn pin_value_num(
    key: &str,
    v: &toml::Value,
    (lo, hi): (f64, f64),
    origin: OriginOf<'_>,
) -> Result<f64, ConfigError> {
    let n = v
        .as_float()
        .or_else(|| v.as_integer().map(|i| i as f64))
        .ok_or_else(|| invalid(key, v, "expected a number", origin))?;
    if !(lo..=hi).contains(&n) {
        return Err(invalid(key, n, format!("expected {lo} to {hi}"), origin));
    }
    Ok(n)
}

fn num(
    key: &str,
    v: Option<f64>,
    default: f64,
    (lo, hi): (f64, f64),
    origin: OriginOf<'_>,
) -> Result<f64, ConfigError> {
    let n = v.unwrap_or(default);
    if !n.is_finite() || !(lo..=hi).contains(&n) {
        return Err(invalid(key, n, format!("expected {lo} to {hi}"), origin));
    }
    Ok(n)
}

fn pin(i: usize, raw: &RawPin, origin: OriginOf<'_>) -> Result<PinSpec, ConfigError> {
    let key = |f: &str| format!("gpio.pins[{i}].{f}");
    // Origins are tracked per top-level key; report the array's.
    let o = |_: &str| origin("gpio.pins");
    let origin: OriginOf<'_> = &o;
    if !valid_name(&raw.name) {
        return Err(invalid(
            &key("name"),
            format!("{:?}", raw.name),
            "expected 1-32 characters of A-Z a-z 0-9 _ -",
            origin,
        ));
    }
    let pin_ref = match &raw.pin {
        toml::Value::Integer(n) if (0..=1023).contains(n) => PinRef::Number(*n as u32),
        toml::Value::Integer(n) => {
            return Err(invalid(
                &key("pin"),
                n,
                "expected a line number 0-1023",
                origin,
            ));
        }
        toml::Value::String(s) => PinRef::parse_text(s)
            .map_err(|why| invalid(&key("pin"), format!("{s:?}"), why, origin))?,
        other => {
            return Err(invalid(
                &key("pin"),
                other,
                "expected a number or a string",
                origin,
            ));
        }
    };
    let not_for = |field: &str, present: bool, mode: &str| -> Result<(), ConfigError> {
        if present {
            return Err(invalid(
                &key(field),
                "(set)",
                format!("{field} does not apply to {mode} pins"),
                origin,
            ));
        }
        Ok(())
    };
    let mode = match raw.mode.as_str() {
        "output" => {
            for (f, present) in [
                ("pull", raw.pull.is_some()),
                ("debounce_ms", raw.debounce_ms.is_some()),
                ("frequency_hz", raw.frequency_hz.is_some()),
                ("min_duty", raw.min_duty.is_some()),
                ("max_duty", raw.max_duty.is_some()),
                ("min_us", raw.min_us.is_some()),
                ("max_us", raw.max_us.is_some()),
                ("max_angle", raw.max_angle.is_some()),
            ] {
                not_for(f, present, "output")?;
            }
            PinMode::Output {
                initial: raw
                    .initial
                    .as_ref()
                    .map(|v| pin_value_bool(&key("initial"), v, origin))
                    .transpose()?
                    .unwrap_or(false),
                failsafe: raw
                    .failsafe
                    .as_ref()
                    .map(|v| pin_value_bool(&key("failsafe"), v, origin))
                    .transpose()?,
            }
        }
        "input" => {
            for (f, present) in [
                ("initial", raw.initial.is_some()),
                ("failsafe", raw.failsafe.is_some()),
                ("frequency_hz", raw.frequency_hz.is_some()),
                ("min_duty", raw.min_duty.is_some()),
                ("max_duty", raw.max_duty.is_some()),
                ("min_us", raw.min_us.is_some()),
                ("max_us", raw.max_us.is_some()),
                ("max_angle", raw.max_angle.is_some()),
            ] {
                not_for(f, present, "input")?;
            }
            let pull = match raw.pull.as_deref() {
                None | Some("none") => Pull::None,
                Some("up") => Pull::Up,
                Some("down") => Pull::Down,
                Some(other) => {
                    return Err(invalid(
                        &key("pull"),
                        format!("{other:?}"),
                        "expected \"up\", \"down\" or \"none\"",
                        origin,
                    ));
                }
            };
            let debounce = int(
                &key("debounce_ms"),
                raw.debounce_ms,
                20,
                (0, 10_000),
                false,
                origin,
            )?;
            PinMode::Input {
                pull,
                debounce: Duration::from_millis(u64::from(debounce)),
            }
        }
        "pwm" => {
            for (f, present) in [
                ("pull", raw.pull.is_some()),
                ("debounce_ms", raw.debounce_ms.is_some()),
                ("min_us", raw.min_us.is_some()),
                ("max_us", raw.max_us.is_some()),
                ("max_angle", raw.max_angle.is_some()),
            ] {
                not_for(f, present, "pwm")?;
            }
            let frequency_hz = num(
                &key("frequency_hz"),
                raw.frequency_hz,
                1000.0,
                (0.1, 1_000_000.0),
                origin,
            )?;
            let min_duty = num(&key("min_duty"), raw.min_duty, 0.0, (0.0, 1.0), origin)?;
            let max_duty = num(&key("max_duty"), raw.max_duty, 1.0, (0.0, 1.0), origin)?;
            if min_duty > max_duty {
                return Err(invalid(
                    &key("min_duty"),
                    min_duty,
                    "must not exceed max_duty",
                    origin,
                ));
            }
            let bounds = (min_duty, max_duty);
            PinMode::Pwm {
                frequency_hz,
                min_duty,
                max_duty,
                initial: raw
                    .initial
                    .as_ref()
                    .map(|v| pin_value_num(&key("initial"), v, bounds, origin))
                    .transpose()?
                    .unwrap_or(min_duty),
                failsafe: raw
                    .failsafe
                    .as_ref()
                    .map(|v| pin_value_num(&key("failsafe"), v, bounds, origin))
                    .transpose()?,
            }
        }
        "servo" => {
            for (f, present) in [
                ("pull", raw.pull.is_some()),
                ("debounce_ms", raw.debounce_ms.is_some()),
                ("frequency_hz", raw.frequency_hz.is_some()),
                ("min_duty", raw.min_duty.is_some()),
                ("max_duty", raw.max_duty.is_some()),
            ] {
                not_for(f, present, "servo")?;
            }
            let pulse_range = (MIN_SERVO_PULSE_US, MAX_SERVO_PULSE_US);
            let min_us = int(&key("min_us"), raw.min_us, 1000, pulse_range, false, origin)?;
            let max_us = int(&key("max_us"), raw.max_us, 2000, pulse_range, false, origin)?;
            if min_us >= max_us {
                return Err(invalid(
                    &key("min_us"),
                    min_us,
                    "must be less than max_us",
                    origin,
                ));
            }
            let max_angle = num(
                &key("max_angle"),
                raw.max_angle,
                180.0,
                (1.0, 360.0),
                origin,
            )?;
            let range = (0.0, max_angle);
            PinMode::Servo {
                min_us,
                max_us,
                max_angle,
                initial: raw
                    .initial
                    .as_ref()
                    .map(|v| pin_value_num(&key("initial"), v, range, origin))
                    .transpose()?
                    .unwrap_or(max_angle / 2.0),
                failsafe: raw
                    .failsafe
                    .as_ref()
                    .map(|v| pin_value_num(&key("failsafe"), v, range, origin))
                    .transpose()?,
            }
        }
        other => {
            return Err(invalid(
                &key("mode"),
                format!("{other:?}"),
                "expected \"output\", \"input\", \"pwm\" or \"servo\"",
                origin,
            ));
        }
    };
    Ok(PinSpec {
        name: raw.name.clone(),
        pin: pin_ref,
        active_low: raw.active_low.unwrap_or(false),
        mode,
    })
}

fn gpio(raw: &RawGpio, origin: OriginOf<'_>) -> Result<GpioSettings, ConfigError> {
    let pins = raw
        .pins
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| pin(i, p, origin))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, p) in pins.iter().enumerate() {
        if let Some(j) = pins[..i].iter().position(|q| q.name == p.name) {
            return Err(invalid(
                &format!("gpio.pins[{i}].name"),
                format!("{:?}", p.name),
                format!("duplicates gpio.pins[{j}]"),
                origin,
            ));
        }
        if let Some(j) = pins[..i].iter().position(|q| q.pin == p.pin) {
            return Err(invalid(
                &format!("gpio.pins[{i}].pin"),
                p.pin.to_string(),
                format!("gpio.pins[{j}] uses the same line"),
                origin,
            ));
        }
    }
    let backend = match raw.backend.as_deref() {
        None if pins.is_empty() => BackendKind::Sim,
        None | Some("auto") => BackendKind::Auto,
        Some("rppal") => BackendKind::Rppal,
        Some("cdev") => BackendKind::Cdev,
        Some("sim") => BackendKind::Sim,
        Some(other) => {
            return Err(invalid(
                "gpio.backend",
                format!("{other:?}"),
                "expected \"auto\", \"rppal\", \"cdev\" or \"sim\"",
                origin,
            ));
        }
    };
    let ha_prefix = raw
        .ha_prefix
        .clone()
        .unwrap_or_else(|| "homeassistant".into());
    check_topic_prefix(&ha_prefix)
        .map_err(|why| invalid("gpio.ha_prefix", format!("{ha_prefix:?}"), why, origin))?;
    Ok(GpioSettings {
        demo: backend == BackendKind::Sim && pins.is_empty(),
        backend,
        pins,
        max_pulse: ms(
            "gpio.max_pulse_ms",
            raw.max_pulse_ms,
            10_000,
            (1, 600_000),
            origin,
        )?,
        mqtt: raw.mqtt.unwrap_or(false),
        ha_discovery: raw.ha_discovery.unwrap_or(true),
        ha_prefix,
        backend_explicit: raw.backend.is_some(),
    })
}

fn raw_zone(z: &Zone) -> RawZone {
    RawZone {
        x: z.x,
        y: z.y,
        w: z.w,
        h: z.h,
    }
}

fn raw_pin(p: &PinSpec) -> RawPin {
    let mut r = RawPin {
        name: p.name.clone(),
        pin: match &p.pin {
            PinRef::Number(n) => toml::Value::Integer(i64::from(*n)),
            other => toml::Value::String(match other {
                PinRef::LineName(n) => n.clone(),
                _ => other.to_string(),
            }),
        },
        mode: p.mode.name().into(),
        initial: None,
        active_low: Some(p.active_low),
        failsafe: None,
        pull: None,
        debounce_ms: None,
        frequency_hz: None,
        min_duty: None,
        max_duty: None,
        min_us: None,
        max_us: None,
        max_angle: None,
    };
    match &p.mode {
        PinMode::Output { initial, failsafe } => {
            r.initial = Some(toml::Value::Boolean(*initial));
            r.failsafe = failsafe.map(toml::Value::Boolean);
        }
        PinMode::Input { pull, debounce } => {
            r.pull = Some(
                match pull {
                    Pull::Up => "up",
                    Pull::Down => "down",
                    Pull::None => "none",
                }
                .into(),
            );
            r.debounce_ms = Some(debounce.as_millis() as i64);
        }
        PinMode::Pwm {
            frequency_hz,
            min_duty,
            max_duty,
            initial,
            failsafe,
        } => {
            r.frequency_hz = Some(*frequency_hz);
            r.min_duty = Some(*min_duty);
            r.max_duty = Some(*max_duty);
            r.initial = Some(toml::Value::Float(*initial));
            r.failsafe = failsafe.map(toml::Value::Float);
        }
        PinMode::Servo {
            min_us,
            max_us,
            max_angle,
            initial,
            failsafe,
        } => {
            r.min_us = Some(i64::from(*min_us));
            r.max_us = Some(i64::from(*max_us));
            r.max_angle = Some(*max_angle);
            r.initial = Some(toml::Value::Float(*initial));
            r.failsafe = failsafe.map(toml::Value::Float);
        }
    }
    r
}

impl Settings {
    /// The effective configuration in raw form (every key with a value filled in).
    pub fn to_raw(&self) -> RawConfig {
        let v = &self.video;
        RawConfig {
            video: RawVideo {
                source: Some(v.source.as_config()),
                width: Some(v.width.into()),
                height: Some(v.height.into()),
                fps: Some(v.fps.into()),
                bitrate_kbps: Some(v.bitrate_kbps.into()),
                keyframe_interval_ms: Some(v.keyframe_interval.as_millis() as i64),
                encoder_threads: Some(v.encoder_threads.into()),
                passthrough: Some(v.passthrough),
                encoder: Some(v.encoder.as_config().into()),
                encoder_device: v.encoder_device.as_ref().map(|p| p.display().to_string()),
                always_on: Some(v.always_on),
                min_bitrate_kbps: Some(v.min_bitrate_kbps.into()),
                max_bitrate_kbps: Some(v.max_bitrate_kbps.into()),
                congestion: Some(v.congestion.as_config().into()),
                test_scene: Some(
                    match v.test_scene {
                        TestScene::Moving => "moving",
                        TestScene::Still { .. } => "still",
                    }
                    .into(),
                ),
                test_object_after_s: match v.test_scene {
                    TestScene::Still {
                        object_after: Some(d),
                    } => Some(d.as_secs() as i64),
                    _ => None,
                },
            },
            device: RawDevice {
                name: Some(self.device.name.clone()),
            },
            webrtc: RawWebrtc {
                ice_servers: Some(
                    self.webrtc
                        .ice_servers
                        .iter()
                        .map(|s| RawIceServer {
                            urls: s.urls.clone(),
                            username: s.username.clone(),
                            // A credential is a password: never printed
                            // (`render_effective` says which are set).
                            credential: None,
                        })
                        .collect(),
                ),
                turn_secret_file: self
                    .webrtc
                    .turn_secret_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                turn_credential_ttl: Some(
                    humantime::format_duration(self.webrtc.turn_credential_ttl).to_string(),
                ),
                interfaces: Some(self.webrtc.interfaces.clone()),
                loopback: Some(self.webrtc.loopback),
                mdns: Some(self.webrtc.mdns.as_config().into()),
                max_viewers: Some(self.webrtc.max_viewers as i64),
                negotiation_timeout_ms: Some(self.webrtc.negotiation_timeout.as_millis() as i64),
                disconnected_timeout_ms: Some(self.webrtc.disconnected_timeout.as_millis() as i64),
                playout_delay_ms: self.webrtc.playout_delay.map(|d| d.as_millis() as i64),
                max_negotiating: Some(self.webrtc.max_negotiating as i64),
                early_ice_candidates: Some(self.webrtc.early_ice_candidates as i64),
                early_ice_clients: Some(self.webrtc.early_ice_clients as i64),
            },
            mqtt: RawMqtt {
                url: self.mqtt.url.as_ref().map(ToString::to_string),
                protocol: Some(match self.mqtt.protocol {
                    MqttProtocol::V5 => "5".into(),
                    MqttProtocol::V311 => "3.1.1".into(),
                }),
                username: self.mqtt.username.clone(),
                // Secrets are never printed; `password_file` is shown instead.
                password: None,
                password_file: self
                    .mqtt
                    .password_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                client_id: Some(self.mqtt.client_id.clone()),
                topic_prefix: Some(self.mqtt.topic_prefix.clone()),
                ca_file: self.mqtt.ca_file.as_ref().map(|p| p.display().to_string()),
                client_cert: self
                    .mqtt
                    .client_cert
                    .as_ref()
                    .map(|p| p.display().to_string()),
                client_key: self
                    .mqtt
                    .client_key
                    .as_ref()
                    .map(|p| p.display().to_string()),
                max_payload_bytes: Some(self.mqtt.max_payload_bytes as i64),
                offers_per_minute: Some(self.mqtt.offers_per_minute.into()),
            },
            http: RawHttp {
                listen: Some(
                    self.http
                        .listen
                        .map_or_else(|| "off".into(), |a| a.to_string()),
                ),
                mqtt_ws_url: self.http.mqtt_ws_url.clone(),
                hosts: Some(self.http.hosts.clone()),
                max_connections: Some(self.http.max_connections as i64),
                header_timeout_ms: Some(self.http.header_timeout.as_millis() as i64),
                idle_timeout_ms: Some(self.http.idle_timeout.as_millis() as i64),
                serve_static_turn_credentials: Some(self.http.serve_static_turn_credentials),
                tls: Some(
                    match self.http.tls {
                        HttpTls::Off => "off",
                        HttpTls::Files { .. } => "on",
                        HttpTls::SelfSigned => "self-signed",
                    }
                    .into(),
                ),
                tls_cert: match &self.http.tls {
                    HttpTls::Files { cert, .. } => Some(cert.display().to_string()),
                    _ => None,
                },
                tls_key: match &self.http.tls {
                    HttpTls::Files { key, .. } => Some(key.display().to_string()),
                    _ => None,
                },
            },
            broker: RawBroker {
                listen: Some(self.broker.listen.to_string()),
                v5_listen: Some(self.broker.v5_listen.to_string()),
                ws_listen: Some(self.broker.ws_listen.to_string()),
                ws_origins: (!self.broker.ws_origins.is_empty())
                    .then(|| self.broker.ws_origins.clone()),
            },
            gpio: RawGpio {
                // The default depends on whether pins are declared: print it only when set.
                backend: self.gpio.backend_explicit.then(|| {
                    match self.gpio.backend {
                        BackendKind::Auto => "auto",
                        BackendKind::Rppal => "rppal",
                        BackendKind::Cdev => "cdev",
                        BackendKind::Sim => "sim",
                    }
                    .to_string()
                }),
                pins: Some(self.gpio.pins.iter().map(raw_pin).collect()),
                max_pulse_ms: Some(self.gpio.max_pulse.as_millis() as i64),
                mqtt: Some(self.gpio.mqtt),
                ha_discovery: Some(self.gpio.ha_discovery),
                ha_prefix: Some(self.gpio.ha_prefix.clone()),
            },
            control: RawControl {
                rate_limit: Some(self.control.rate_limit.into()),
                max_message_bytes: Some(self.control.max_message_bytes as i64),
            },
            auth: RawAuth {
                mode: Some(
                    match self.auth.mode {
                        AuthMode::None => "none",
                        AuthMode::Token => "token",
                    }
                    .into(),
                ),
                secret_file: self
                    .auth
                    .secret_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                max_token_ttl: Some(
                    humantime::format_duration(self.auth.max_token_ttl).to_string(),
                ),
                // Static tokens are secrets, like the password: never printed
                // (`render_effective` says how many there are, as a comment).
                tokens: None,
            },
            audio: RawAudio {
                input: Some(self.audio.input.as_config().into()),
                output: Some(self.audio.output.clone().unwrap_or_else(|| "off".into())),
                bitrate_kbps: Some(self.audio.bitrate_kbps.into()),
                channels: Some(self.audio.channels.into()),
                volume_percent: Some(self.audio.volume_percent.into()),
                jitter_ms: Some(self.audio.jitter.as_millis() as i64),
            },
            motion: RawMotion {
                enabled: Some(self.motion.enabled),
                threshold: Some(self.motion.threshold.into()),
                min_area_percent: Some(self.motion.min_area * 100.0),
                end_after_s: Some(self.motion.end_after.as_secs() as i64),
                include: Some(self.motion.include.iter().map(raw_zone).collect()),
                exclude: Some(self.motion.exclude.iter().map(raw_zone).collect()),
                record: Some(self.motion.record),
                snapshot: Some(self.motion.snapshot),
            },
            record: RawRecord {
                mode: Some(self.record.mode.as_str().into()),
                dir: Some(self.record.dir.display().to_string()),
                segment_s: Some(self.record.segment.as_secs() as i64),
                fragment_ms: Some(self.record.fragment.as_millis() as i64),
                pre_s: Some(self.record.pre.as_secs() as i64),
                post_s: Some(self.record.post.as_secs() as i64),
                triggers: Some(self.record.triggers.clone()),
                max_age_days: Some(
                    self.record
                        .max_age
                        .map_or(0, |d| (d.as_secs() / 86_400) as i64),
                ),
                max_bytes: Some(self.record.max_bytes.map_or(0, |b| b as i64)),
                min_free_mb: Some((self.record.min_free_bytes >> 20) as i64),
            },
            rtsp: self.rtsp.to_raw(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawConfig) -> Result<Settings, ConfigError> {
        validate(&raw, &|_| Origin::Default)
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = Settings::default();
        assert_eq!(s.video.source, SourceSpec::Test);
        assert_eq!(
            (s.video.width, s.video.height, s.video.fps),
            (1280, 720, 30)
        );
        assert_eq!(s.video.bitrate_kbps, 2000);
        assert_eq!(s.video.keyframe_interval, Duration::from_secs(2));
        assert_eq!(s.video.encoder_threads, 0, "automatic");
        assert_eq!(
            s.webrtc.playout_delay, None,
            "no playout-delay extension unless asked for"
        );
        assert!(!s.video.passthrough && !s.video.always_on);
        assert_eq!(s.video.encoder, EncoderPref::Auto);
        assert_eq!(
            s.video.encoder_device, None,
            "the first M2M node offering H.264"
        );
    }

    #[test]
    fn encoder_takes_auto_openh264_or_v4l2m2m_and_names_the_key_otherwise() {
        for (text, want) in [
            ("auto", EncoderPref::Auto),
            ("openh264", EncoderPref::OpenH264),
            ("v4l2m2m", EncoderPref::V4l2M2m),
        ] {
            let mut raw = RawConfig::default();
            raw.video.encoder = Some(text.into());
            let s = check(raw).expect("accepted");
            assert_eq!(s.video.encoder, want);
            assert_eq!(s.video.encoder.as_config(), text);
            assert_eq!(check(s.to_raw()).expect("round trip"), s);
        }
        for bad in ["", "x264", "OpenH264", " auto", "v4l2"] {
            let mut raw = RawConfig::default();
            raw.video.encoder = Some(bad.into());
            let e = check(raw).expect_err("not an encoder");
            assert_eq!(e.key(), Some("video.encoder"));
            let text = e.to_string();
            for accepted in ["\"auto\"", "\"openh264\"", "\"v4l2m2m\""] {
                assert!(text.contains(accepted), "{text}");
            }
            assert!(text.contains(&format!("{bad:?}")), "{text}");
        }
    }

    #[test]
    fn congestion_takes_three_policies_and_names_the_key_otherwise() {
        assert_eq!(
            check(RawConfig::default())
                .expect("defaults")
                .video
                .congestion,
            CongestionPolicy::FollowWeakest
        );
        for (text, want) in [
            ("follow-weakest", CongestionPolicy::FollowWeakest),
            ("keep-quality", CongestionPolicy::KeepQuality),
            ("off", CongestionPolicy::Off),
        ] {
            let mut raw = RawConfig::default();
            raw.video.congestion = Some(text.into());
            let s = check(raw).expect("accepted");
            assert_eq!(s.video.congestion, want);
            assert_eq!(check(s.to_raw()).expect("round trip"), s);
        }
        for bad in ["", "weakest", "OFF", "gcc"] {
            let mut raw = RawConfig::default();
            raw.video.congestion = Some(bad.into());
            let e = check(raw).expect_err("not a policy");
            assert_eq!(e.key(), Some("video.congestion"));
            let text = e.to_string();
            for accepted in ["\"follow-weakest\"", "\"keep-quality\"", "\"off\""] {
                assert!(text.contains(accepted), "{text}");
            }
        }
    }

    #[test]
    fn encoder_device_is_an_absolute_path_for_the_v4l2m2m_and_auto_encoders() {
        for encoder in [None, Some("auto"), Some("v4l2m2m")] {
            let mut raw = RawConfig::default();
            raw.video.encoder = encoder.map(Into::into);
            raw.video.encoder_device = Some("/dev/video11".into());
            let s = check(raw).expect("accepted");
            assert_eq!(
                s.video.encoder_device.as_deref(),
                Some(std::path::Path::new("/dev/video11"))
            );
            assert_eq!(check(s.to_raw()).expect("round trip"), s);
        }
        // Empty means unset, as for the other path keys.
        let mut raw = RawConfig::default();
        raw.video.encoder_device = Some(String::new());
        assert_eq!(check(raw).expect("unset").video.encoder_device, None);

        for bad in ["video11", "dev/video11", "./video11", " /dev/video11"] {
            let mut raw = RawConfig::default();
            raw.video.encoder_device = Some(bad.into());
            let e = check(raw).expect_err("relative");
            assert_eq!(e.key(), Some("video.encoder_device"));
            let text = e.to_string();
            assert!(text.contains("absolute") && text.contains(bad), "{text}");
        }

        let mut raw = RawConfig::default();
        raw.video.encoder = Some("openh264".into());
        raw.video.encoder_device = Some("/dev/video11".into());
        let e = check(raw).expect_err("openh264 has no device");
        assert_eq!(e.key(), Some("video.encoder_device"));
        let text = e.to_string();
        assert!(
            text.contains("only used by the v4l2m2m and auto encoders")
                && text.contains("/dev/video11"),
            "{text}"
        );
        // Without a device, openh264 is fine.
        let mut raw = RawConfig::default();
        raw.video.encoder = Some("openh264".into());
        assert_eq!(check(raw).expect("no device").video.encoder_device, None);
    }

    #[test]
    fn encoder_threads_take_0_to_4_and_name_the_key_otherwise() {
        for ok in 0..=4 {
            let mut raw = RawConfig::default();
            raw.video.encoder_threads = Some(ok);
            assert_eq!(
                check(raw).expect("in range").video.encoder_threads,
                ok as u32
            );
        }
        for bad in [-1, 5, 65] {
            let mut raw = RawConfig::default();
            raw.video.encoder_threads = Some(bad);
            let e = check(raw).expect_err("out of range");
            assert_eq!(e.key(), Some("video.encoder_threads"));
            let text = e.to_string();
            assert!(
                text.contains(&bad.to_string()) && text.contains("0 to 4"),
                "{text}"
            );
        }
    }

    #[test]
    fn round_trips_through_raw() {
        let s = Settings::default();
        assert_eq!(check(s.to_raw()).expect("valid"), s);
    }

    #[test]
    fn errors_name_key_value_and_range() {
        let mut raw = RawConfig::default();
        raw.video.width = Some(641);
        let e = check(raw).expect_err("odd width");
        assert_eq!(e.key(), Some("video.width"));
        let text = e.to_string();
        assert!(
            text.contains("641") && text.contains("even") && text.contains("160 to 3840"),
            "{text}"
        );

        let mut raw = RawConfig::default();
        raw.video.source = Some("webcam".into());
        let text = check(raw).expect_err("bad source").to_string();
        assert!(
            text.contains("video.source") && text.contains("\"webcam\"") && text.contains("auto"),
            "{text}"
        );

        for (field, value) in [
            ("fps", 0),
            ("fps", 61),
            ("bitrate_kbps", -5),
            ("keyframe_interval_ms", 10),
        ] {
            let mut raw = RawConfig::default();
            match field {
                "fps" => raw.video.fps = Some(value),
                "bitrate_kbps" => raw.video.bitrate_kbps = Some(value),
                _ => raw.video.keyframe_interval_ms = Some(value),
            }
            let e = check(raw).expect_err("out of range");
            assert_eq!(e.key(), Some(format!("video.{field}").as_str()));
        }
    }

    #[test]
    fn mqtt_urls_parse_with_defaults() {
        let u = parse_mqtt_url("mqtt://broker.lan").expect("valid");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (MqttScheme::Mqtt, "broker.lan", 1883)
        );
        let u = parse_mqtt_url("mqtts://10.0.0.2:8884").expect("valid");
        assert_eq!((u.scheme, u.port), (MqttScheme::Mqtts, 8884));
        let u = parse_mqtt_url("ws://127.0.0.1:9001/mqtt").expect("valid");
        assert_eq!(
            (u.scheme, u.port, u.path.as_str()),
            (MqttScheme::Ws, 9001, "/mqtt")
        );
        let u = parse_mqtt_url("wss://[::1]/mqtt").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 443));
        assert_eq!(u.to_string(), "wss://[::1]:443/mqtt");
        for bad in [
            "broker:1883",
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "mqtt://h/path",
        ] {
            assert!(parse_mqtt_url(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn mqtt_url_hosts_must_print_back_as_themselves() {
        let u = parse_mqtt_url("mqtt://[::1]:1883").expect("bracketed IPv6");
        assert_eq!((u.host.as_str(), u.port), ("::1", 1883));
        assert_eq!(parse_mqtt_url(&u.to_string()), Ok(u));
        for (bad, why) in [
            // Found by fuzz/config: read as host ":]", printed as "ws://[:]]:1".
            ("ws://:]:1", "[ or ]"),
            ("mqtt://a]b:1883", "[ or ]"),
            ("mqtt://a[b", "[ or ]"),
            ("mqtt://::1:1883", "in brackets"),
            ("mqtt://host:name:1883", "in brackets"),
            ("mqtt://[host]:1883", "not an IPv6 address"),
            ("mqtt://[::1", "unclosed"),
            ("mqtt://[::1]1883", "expected :port"),
            ("mqtt://ho st", "spaces"),
            ("mqtt://ho\u{7}st:1883", "control characters"),
            ("ws://host/mq\r\ntt", "control characters"),
        ] {
            let e = parse_mqtt_url(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // Through the config: the error names the key and the reason.
        let e = from_toml("[mqtt]\nurl = \"mqtt://::1:1883\"\n").expect_err("unbracketed IPv6");
        assert_eq!(e.key(), Some("mqtt.url"));
        assert!(e.to_string().contains("brackets"), "{e}");
        let e = from_toml("[http]\nmqtt_ws_url = \"ws://a]:9001\"\n").expect_err("bracket");
        assert_eq!(e.key(), Some("http.mqtt_ws_url"));
    }

    #[test]
    fn topic_prefixes_are_checked() {
        assert!(check_topic_prefix("rtcam/garage").is_ok());
        for bad in ["", "a/+/b", "a/#", "/a", "a/", "a//b"] {
            assert!(check_topic_prefix(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn webrtc_and_mqtt_errors_name_the_key() {
        let mut raw = RawConfig::default();
        raw.webrtc.ice_servers = Some(vec![RawIceServer {
            urls: vec!["http://stun.example".into()],
            ..RawIceServer::default()
        }]);
        assert_eq!(
            check(raw).expect_err("bad url").key(),
            Some("webrtc.ice_servers")
        );
        let mut raw = RawConfig::default();
        raw.webrtc.ice_servers = Some(vec![RawIceServer {
            urls: vec!["turn:127.0.0.1:3478".into()],
            ..RawIceServer::default()
        }]);
        assert!(
            check(raw)
                .expect_err("turn without credentials")
                .to_string()
                .contains("username")
        );
        let mut raw = RawConfig::default();
        raw.mqtt.password = Some("a".into());
        raw.mqtt.password_file = Some("/b".into());
        assert_eq!(
            check(raw).expect_err("both").key(),
            Some("mqtt.password_file")
        );
        let mut raw = RawConfig::default();
        raw.http.listen = Some("8080".into());
        assert_eq!(check(raw).expect_err("no ip").key(), Some("http.listen"));
        let mut raw = RawConfig::default();
        raw.broker.v5_listen = Some("127.0.0.1:1883".into());
        assert!(check(raw).is_err(), "listeners must differ");
        let mut raw = RawConfig::default();
        raw.webrtc.mdns = Some("loud".into());
        assert_eq!(check(raw).expect_err("mdns").key(), Some("webrtc.mdns"));
    }

    #[test]
    fn secrets_do_not_leak_through_debug_or_print() {
        let mut raw = RawConfig::default();
        raw.mqtt.password = Some("hunter2".into());
        let s = check(raw).expect("valid");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.to_raw().mqtt.password, None);
    }

    fn pins(toml_text: &str) -> Result<GpioSettings, ConfigError> {
        let raw: RawConfig = toml::from_str(toml_text).expect("test TOML parses");
        check(raw).map(|s| s.gpio)
    }

    #[test]
    fn pins_validate_into_modes_with_defaults() {
        let g = pins(
            r#"
            [[gpio.pins]]
            name = "relay1"
            pin = 17
            mode = "output"
            failsafe = false
            [[gpio.pins]]
            name = "door"
            pin = "gpiochip0:27"
            mode = "input"
            pull = "up"
            [[gpio.pins]]
            name = "pan"
            pin = "pwmchip0:1"
            mode = "servo"
            [[gpio.pins]]
            name = "dim"
            pin = 18
            mode = "pwm"
            max_duty = 0.5
            failsafe = 0
            "#,
        )
        .expect("valid");
        assert_eq!(
            g.backend,
            BackendKind::Auto,
            "declared pins make the default backend auto"
        );
        assert!(!g.demo);
        assert_eq!(
            g.pins[0].mode,
            PinMode::Output {
                initial: false,
                failsafe: Some(false)
            }
        );
        assert_eq!(
            g.pins[1].mode,
            PinMode::Input {
                pull: Pull::Up,
                debounce: Duration::from_millis(20)
            }
        );
        assert!(
            matches!(g.pins[2].mode, PinMode::Servo { min_us: 1000, max_us: 2000, initial, .. } if initial == 90.0)
        );
        assert!(
            matches!(g.pins[3].mode, PinMode::Pwm { max_duty, failsafe: Some(f), .. } if max_duty == 0.5 && f == 0.0)
        );
        let none = pins("").expect("no pins");
        assert!(
            none.demo && none.backend == BackendKind::Sim,
            "no pins: the simulator demo"
        );
    }

    #[test]
    fn bad_pins_are_rejected_with_their_key() {
        let cases = [
            (
                "name = \"a b\"\npin = 1\nmode = \"output\"",
                "gpio.pins[0].name",
            ),
            (
                "name = \"a\"\npin = 1\nmode = \"blink\"",
                "gpio.pins[0].mode",
            ),
            (
                "name = \"a\"\npin = 5000\nmode = \"output\"",
                "gpio.pins[0].pin",
            ),
            (
                "name = \"a\"\npin = 1\nmode = \"output\"\npull = \"up\"",
                "gpio.pins[0].pull",
            ),
            (
                "name = \"a\"\npin = 1\nmode = \"input\"\npull = \"sideways\"",
                "gpio.pins[0].pull",
            ),
            (
                "name = \"a\"\npin = 1\nmode = \"pwm\"\nmax_duty = 1.5",
                "gpio.pins[0].max_duty",
            ),
            (
                "name = \"a\"\npin = 1\nmode = \"pwm\"\nmin_duty = 0.6\nmax_duty = 0.5",
                "gpio.pins[0].min_duty",
            ),
            (
                "name = \"a\"\npin = 1\nmode = \"servo\"\nmin_us = 2000\nmax_us = 1000",
                "gpio.pins[0].min_us",
            ),
            (
                "name = \"a\"\npin = 1\nmode = \"servo\"\ninitial = 200",
                "gpio.pins[0].initial",
            ),
            (
                "name = \"a\"\npin = 1\nmode = \"output\"\ninitial = 3",
                "gpio.pins[0].initial",
            ),
            (
                "name = \"a\"\npin = \"x:y\"\nmode = \"output\"",
                "gpio.pins[0].pin",
            ),
        ];
        for (body, key) in cases {
            let e = pins(&format!("[[gpio.pins]]\n{body}\n")).expect_err(body);
            assert_eq!(e.key(), Some(key), "{body}: {e}");
        }
        let dup = pins(
            "[[gpio.pins]]\nname = \"a\"\npin = 1\nmode = \"output\"\n[[gpio.pins]]\nname = \"a\"\npin = 2\nmode = \"output\"\n",
        );
        assert_eq!(
            dup.expect_err("duplicate name").key(),
            Some("gpio.pins[1].name")
        );
        let same_line = pins(
            "[[gpio.pins]]\nname = \"a\"\npin = 1\nmode = \"output\"\n[[gpio.pins]]\nname = \"b\"\npin = 1\nmode = \"input\"\n",
        );
        assert_eq!(
            same_line.expect_err("duplicate line").key(),
            Some("gpio.pins[1].pin")
        );
        let backend: RawConfig = toml::from_str("[gpio]\nbackend = \"gpiod\"").expect("parses");
        assert_eq!(
            check(backend).expect_err("bad backend").key(),
            Some("gpio.backend")
        );
    }

    #[test]
    fn device_paths_are_accepted() {
        let mut raw = RawConfig::default();
        raw.video.source = Some("/dev/video2".into());
        assert_eq!(
            check(raw).expect("valid").video.source,
            SourceSpec::Device("/dev/video2".into())
        );
    }

    fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        check(toml::from_str(text).expect("test TOML parses"))
    }

    #[test]
    fn auth_tokens_are_validated_without_echoing_them() {
        let ok = from_toml(
            "[auth]\nmode = \"token\"\n[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nrole = \"view\"\n",
        )
        .expect("valid");
        assert_eq!(ok.auth.mode, AuthMode::Token);
        assert_eq!(ok.auth.tokens[0].role, Role::View);
        let a = ok.auth.authorizer();
        assert_eq!(a.authorize(Some("0123456789abcdef"), 0), Ok(Role::View));

        let short = from_toml(
            "[auth]\nmode = \"token\"\n[[auth.tokens]]\ntoken = \"hunter2\"\nrole = \"view\"\n",
        )
        .expect_err("too short");
        assert_eq!(short.key(), Some("auth.tokens[0]"));
        assert!(!short.to_string().contains("hunter2"), "{short}");
        let role = from_toml(
            "[auth]\nmode = \"token\"\n[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nrole = \"admin\"\n",
        )
        .expect_err("bad role");
        assert_eq!(role.key(), Some("auth.tokens[0]"));
        let empty = from_toml("[auth]\nmode = \"token\"\n").expect_err("nothing to check against");
        assert_eq!(empty.key(), Some("auth.mode"));
        let mode = from_toml("[auth]\nmode = \"password\"\n").expect_err("bad mode");
        assert_eq!(mode.key(), Some("auth.mode"));
        // Printing the effective config hides the token.
        let printed = toml::to_string(&ok.to_raw()).expect("serialises");
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
    }

    #[test]
    fn token_mode_needs_rtsp_credentials_unless_rtsp_is_on_loopback() {
        const TOKENS: &str = "[auth]\nmode = \"token\"\n[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nrole = \"view\"\n";
        let open = from_toml(&format!("{TOKENS}[rtsp]\nlisten = \"0.0.0.0:8554\"\n"))
            .expect_err("tokens for WebRTC, an open RTSP stream for anyone");
        assert_eq!(open.key(), Some("rtsp.username"));
        let text = open.to_string();
        assert!(
            text.contains("token") && text.contains("rtsp.password") && text.contains("127.0.0.1"),
            "{text}"
        );
        let v6 = from_toml(&format!("{TOKENS}[rtsp]\nlisten = \"[::]:8554\"\n"));
        assert_eq!(v6.expect_err("open on IPv6").key(), Some("rtsp.username"));
        // With credentials, on loopback, or without tokens: accepted.
        for rtsp in [
            "listen = \"0.0.0.0:8554\"\nusername = \"viewer\"\npassword = \"s3cret-pw\"\n",
            "listen = \"127.0.0.1:8554\"\n",
            "listen = \"[::1]:8554\"\n",
            "listen = \"off\"\n",
        ] {
            from_toml(&format!("{TOKENS}[rtsp]\n{rtsp}")).expect(rtsp);
        }
        from_toml("[rtsp]\nlisten = \"0.0.0.0:8554\"\n")
            .expect("auth.mode = \"none\": open everywhere");
    }

    #[test]
    fn limits_have_safe_defaults_and_ranges() {
        let s = Settings::default();
        assert_eq!(s.mqtt.max_payload_bytes, 64 * 1024);
        assert_eq!(s.mqtt.offers_per_minute, 20);
        assert_eq!(s.webrtc.max_negotiating, 8);
        assert_eq!(s.control.max_message_bytes, 16 * 1024);
        for (text, key) in [
            (
                "[mqtt]\nmax_payload_bytes = 100\n",
                "mqtt.max_payload_bytes",
            ),
            (
                "[mqtt]\nmax_payload_bytes = 1000000\n",
                "mqtt.max_payload_bytes",
            ),
            ("[mqtt]\noffers_per_minute = 0\n", "mqtt.offers_per_minute"),
            ("[webrtc]\nmax_negotiating = 0\n", "webrtc.max_negotiating"),
            (
                "[webrtc]\nearly_ice_candidates = 1000\n",
                "webrtc.early_ice_candidates",
            ),
            (
                "[control]\nmax_message_bytes = 1\n",
                "control.max_message_bytes",
            ),
        ] {
            assert_eq!(from_toml(text).expect_err(text).key(), Some(key), "{text}");
        }
    }

    #[test]
    fn record_section_is_validated_with_the_pins_it_names() {
        let s = Settings::default();
        assert_eq!(s.record.mode, RecordMode::Off);
        assert_eq!(s.record.segment, Duration::from_secs(60));
        assert_eq!(s.record.fragment, Duration::from_millis(1000));
        assert_eq!(s.record.min_free_bytes, 256 << 20);
        let pins = "[[gpio.pins]]\nname = \"pir\"\npin = 4\nmode = \"input\"\n\
                    [[gpio.pins]]\nname = \"relay\"\npin = 17\nmode = \"output\"\n";
        let ok = from_toml(&format!(
            "{pins}[record]\nmode = \"events\"\ntriggers = [\"pir\"]\nmax_bytes = 1048576\nmax_age_days = 2\n"
        ))
        .expect("valid");
        assert_eq!(ok.record.mode, RecordMode::Events);
        assert_eq!(ok.record.triggers, ["pir"]);
        assert_eq!(ok.record.max_bytes, Some(1 << 20));
        assert_eq!(ok.record.max_age, Some(Duration::from_secs(2 * 86_400)));
        for (text, key, why) in [
            (
                "[record]\nmode = \"always\"\n".to_string(),
                "record.mode",
                "\"events\"",
            ),
            (
                "[record]\nsegment_s = 1\n".into(),
                "record.segment_s",
                "2 to 3600",
            ),
            (
                "[record]\nfragment_ms = 50\n".into(),
                "record.fragment_ms",
                "200",
            ),
            (
                "[record]\nmax_bytes = 10\n".into(),
                "record.max_bytes",
                "1 MiB",
            ),
            ("[record]\npre_s = 61\n".into(), "record.pre_s", "0 to 60"),
            (
                format!("{pins}[record]\ntriggers = [\"relay\"]\n"),
                "record.triggers[0]",
                "has mode = \"output\"",
            ),
            (
                format!("{pins}[record]\ntriggers = [\"door\"]\n"),
                "record.triggers[0]",
                "input pin in gpio.pins",
            ),
        ] {
            let e = from_toml(&text).expect_err(&text);
            assert_eq!(e.key(), Some(key), "{text}");
            assert!(e.to_string().contains(why), "{e} lacks {why:?}");
        }
    }

    #[test]
    fn tls_files_need_a_tls_url_and_come_in_pairs() {
        let ok = from_toml(
            "[mqtt]\nurl = \"mqtts://b:8883\"\nca_file = \"/ca.pem\"\nclient_cert = \"/c.pem\"\nclient_key = \"/k.pem\"\n",
        )
        .expect("valid");
        assert_eq!(
            ok.mqtt.ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        let plain = from_toml("[mqtt]\nurl = \"mqtt://b\"\nca_file = \"/ca.pem\"\n")
            .expect_err("CA without TLS");
        assert_eq!(plain.key(), Some("mqtt.ca_file"));
        let half = from_toml("[mqtt]\nurl = \"mqtts://b\"\nclient_cert = \"/c.pem\"\n")
            .expect_err("cert without key");
        assert_eq!(half.key(), Some("mqtt.client_key"));
    }

    #[test]
    fn http_limits_and_hosts_are_validated() {
        let s = Settings::default();
        assert_eq!(s.http.max_connections, 128);
        assert_eq!(s.http.header_timeout, Duration::from_secs(10));
        assert_eq!(s.http.idle_timeout, Duration::from_secs(30));
        assert!(s.http.hosts.is_empty() && !s.http.serve_static_turn_credentials);
        let h = from_toml("[http]\nhosts = [\"Cam.Example.org.\", \"10.0.0.2\", \"[::1]\", \"cam.example.org\"]\n")
            .expect("valid");
        assert_eq!(h.http.hosts, ["cam.example.org", "10.0.0.2", "[::1]"]);
        for bad in ["cam:8080", "user@cam", "a b", "1.2.3", "", "::1", "cam/x"] {
            let e = from_toml(&format!("[http]\nhosts = [{bad:?}]\n")).expect_err(bad);
            assert_eq!(e.key(), Some("http.hosts"), "{bad}: {e}");
        }
        for (text, key) in [
            ("[http]\nmax_connections = 3\n", "http.max_connections"),
            (
                "[http]\nheader_timeout_ms = 100\n",
                "http.header_timeout_ms",
            ),
            ("[http]\nidle_timeout_ms = 999\n", "http.idle_timeout_ms"),
        ] {
            assert_eq!(from_toml(text).expect_err(text).key(), Some(key), "{text}");
        }
    }

    #[test]
    fn https_takes_files_or_a_self_signed_certificate_not_both() {
        assert_eq!(Settings::default().http.tls, HttpTls::Off);
        let s = from_toml("[http]\ntls = \"self-signed\"\n").expect("valid");
        assert_eq!(s.http.tls, HttpTls::SelfSigned);
        let f = from_toml("[http]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n").expect("valid");
        assert_eq!(
            f.http.tls,
            HttpTls::Files {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            }
        );
        for (text, key) in [
            ("[http]\ntls_cert = \"/c.pem\"\n", "http.tls_key"),
            ("[http]\ntls_key = \"/k.pem\"\n", "http.tls_cert"),
            ("[http]\ntls = \"yes\"\n", "http.tls"),
            (
                "[http]\ntls = \"self-signed\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n",
                "http.tls",
            ),
            (
                "[http]\ntls = \"off\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n",
                "http.tls",
            ),
        ] {
            assert_eq!(from_toml(text).expect_err(text).key(), Some(key), "{text}");
        }
    }

    #[test]
    fn keys_that_go_together_name_the_one_missing() {
        for (text, key) in [
            ("[http]\ntls_cert = \"/c.pem\"\n", "http.tls_key"),
            ("[mqtt]\nclient_key = \"/k.pem\"\n", "mqtt.client_cert"),
            ("[rtsp]\nusername = \"nvr\"\n", "rtsp.password"),
        ] {
            let e = from_toml(text).expect_err(text);
            assert_eq!(e.key(), Some(key), "{text}");
            assert!(e.to_string().contains("set both or neither"), "{e}");
        }
    }

    #[test]
    fn turn_servers_take_static_or_minted_credentials() {
        let minted = "[webrtc]\nice_servers = [{ urls = [\"turn:t:3478\"] }]\n";
        let e = from_toml(minted).expect_err("nothing to mint from");
        assert_eq!(e.key(), Some("webrtc.ice_servers"));
        assert!(e.to_string().contains("turn_secret_file"), "{e}");
        let ok = from_toml(&format!(
            "{minted}turn_secret_file = \"/etc/rtcam/turn.key\"\n"
        ))
        .expect("minted from the secret");
        assert!(ok.webrtc.ice_servers[0].minted());
        assert_eq!(ok.webrtc.turn_credential_ttl, DEFAULT_TURN_CREDENTIAL_TTL);
        let half = "[webrtc]\nturn_secret_file = \"/k\"\nice_servers = [{ urls = [\"turn:t\"], username = \"u\" }]\n";
        assert_eq!(
            from_toml(half).expect_err("half").key(),
            Some("webrtc.ice_servers")
        );
        for (ttl, good) in [
            ("12h", true),
            ("1m", true),
            ("7d", true),
            ("59s", false),
            ("8d", false),
            ("soon", false),
        ] {
            let r = from_toml(&format!("[webrtc]\nturn_credential_ttl = {ttl:?}\n"));
            assert_eq!(r.is_ok(), good, "{ttl}");
            if let Err(e) = r {
                assert_eq!(e.key(), Some("webrtc.turn_credential_ttl"));
            }
        }
        // A static credential is neither printed nor shown by Debug.
        let st = from_toml(
            "[webrtc]\nice_servers = [{ urls = [\"turn:t\"], username = \"u\", credential = \"hunter2-turn\" }]\n",
        )
        .expect("static");
        assert!(!format!("{st:?}").contains("hunter2-turn"));
        let printed = toml::to_string(&st.to_raw()).expect("serialises");
        assert!(!printed.contains("hunter2-turn"), "{printed}");
        assert!(printed.contains("username = \"u\""), "{printed}");
    }

    #[test]
    fn exposed_outputs_without_auth_are_warned_about() {
        let demo = Settings::default();
        assert!(demo.gpio.demo);
        assert_eq!(demo.security_warning(), None, "loopback only");
        let lan = from_toml("[http]\nlisten = \"0.0.0.0:8080\"\n").expect("valid");
        let w = lan.security_warning().expect("exposed demo outputs");
        assert!(w.contains("http.listen = 0.0.0.0:8080"), "{w}");
        let broker_lan = from_toml("[broker]\nws_listen = \"0.0.0.0:9001\"\n").expect("valid");
        assert!(broker_lan.security_warning().is_some());
        // An external broker: the embedded listeners are not running.
        let external =
            from_toml("[mqtt]\nurl = \"mqtt://b\"\n[broker]\nws_listen = \"0.0.0.0:9001\"\n")
                .expect("valid");
        assert_eq!(external.security_warning(), None);
        let inputs_only = from_toml(
            "[http]\nlisten = \"0.0.0.0:8080\"\n[gpio]\nbackend = \"sim\"\n[[gpio.pins]]\nname = \"door\"\npin = 4\nmode = \"input\"\n",
        )
        .expect("valid");
        assert_eq!(inputs_only.security_warning(), None);
        let tokens = from_toml(
            "[http]\nlisten = \"0.0.0.0:8080\"\n[auth]\nmode = \"token\"\n[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nrole = \"control\"\n",
        )
        .expect("valid");
        assert_eq!(tokens.security_warning(), None);
    }
}
