//! Raw configuration as written (file, env, flags merged): every field is
//! optional and untyped beyond TOML's types. `settings` validates it. Pure.

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[video]`
    #[serde(default)]
    pub video: RawVideo,
    /// `[device]`
    #[serde(default)]
    pub device: RawDevice,
    /// `[webrtc]`
    #[serde(default)]
    pub webrtc: RawWebrtc,
    /// `[mqtt]`
    #[serde(default)]
    pub mqtt: RawMqtt,
    /// `[http]`
    #[serde(default)]
    pub http: RawHttp,
    /// `[broker]`
    #[serde(default)]
    pub broker: RawBroker,
    /// `[gpio]`
    #[serde(default)]
    pub gpio: RawGpio,
    /// `[control]`
    #[serde(default)]
    pub control: RawControl,
    /// `[auth]`
    #[serde(default)]
    pub auth: RawAuth,
    /// `[record]`
    #[serde(default)]
    pub record: RawRecord,
    /// `[motion]`
    #[serde(default)]
    pub motion: RawMotion,
    /// `[audio]`
    #[serde(default)]
    pub audio: RawAudio,
    /// `[rtsp]`
    #[serde(default)]
    pub rtsp: super::rtsp::RawRtsp,
}

/// `[audio]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudio {
    /// `audio.input`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// `audio.output`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `audio.bitrate_kbps`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<i64>,
    /// `audio.channels`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<i64>,
    /// `audio.volume_percent`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_percent: Option<i64>,
    /// `audio.jitter_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<i64>,
}

/// One `[[gpio.pins]]` entry; which fields apply depends on `mode`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPin {
    /// Name used by commands.
    pub name: String,
    /// BCM number / line offset, or `"gpiochipN:offset"`, `"pwmchipN:channel"`, or a line name.
    pub pin: toml::Value,
    /// `output`, `input`, `pwm` or `servo`.
    pub mode: String,
    /// Starting value: bool (output), duty (pwm) or angle (servo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<toml::Value>,
    /// Logical value inverted from the electrical level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_low: Option<bool>,
    /// Value forced when the last controlling session ends and at shutdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe: Option<toml::Value>,
    /// Input bias: `up`, `down` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<String>,
    /// Input debounce (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_ms: Option<i64>,
    /// PWM frequency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_hz: Option<f64>,
    /// PWM lowest duty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duty: Option<f64>,
    /// PWM highest duty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duty: Option<f64>,
    /// Servo pulse at 0° (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_us: Option<i64>,
    /// Servo pulse at `max_angle` (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_us: Option<i64>,
    /// Servo's largest angle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_angle: Option<f64>,
}

/// One `[[webrtc.ice_servers]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `[video]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVideo {
    /// `video.source`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `video.width`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    /// `video.height`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    /// `video.fps`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps: Option<i64>,
    /// `video.bitrate_kbps`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<i64>,
    /// `video.keyframe_interval_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyframe_interval_ms: Option<i64>,
    /// `video.encoder_threads`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_threads: Option<i64>,
    /// `video.passthrough`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
    /// `video.encoder`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
    /// `video.encoder_device`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_device: Option<String>,
    /// `video.congestion`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub congestion: Option<String>,
    /// `video.test_scene`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_scene: Option<String>,
    /// `video.test_object_after_s`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_object_after_s: Option<i64>,
    /// `video.always_on`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always_on: Option<bool>,
    /// `video.min_bitrate_kbps`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_bitrate_kbps: Option<i64>,
    /// `video.max_bitrate_kbps`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bitrate_kbps: Option<i64>,
}

/// `[device]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// `device.name`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `[webrtc]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebrtc {
    /// `webrtc.ice_servers`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ice_servers: Option<Vec<RawIceServer>>,
    /// `webrtc.turn_secret_file`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_secret_file: Option<String>,
    /// `webrtc.turn_credential_ttl`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_credential_ttl: Option<String>,
    /// `webrtc.interfaces`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// `webrtc.loopback`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loopback: Option<bool>,
    /// `webrtc.mdns`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdns: Option<String>,
    /// `webrtc.max_viewers`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<i64>,
    /// `webrtc.negotiation_timeout_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negotiation_timeout_ms: Option<i64>,
    /// `webrtc.disconnected_timeout_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnected_timeout_ms: Option<i64>,
    /// `webrtc.playout_delay_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playout_delay_ms: Option<i64>,
    /// `webrtc.max_negotiating`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_negotiating: Option<i64>,
    /// `webrtc.early_ice_candidates`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_ice_candidates: Option<i64>,
    /// `webrtc.early_ice_clients`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_ice_clients: Option<i64>,
}

/// `[mqtt]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `mqtt.url`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `mqtt.protocol`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `mqtt.username`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `mqtt.password`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `mqtt.password_file`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// `mqtt.client_id`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `mqtt.topic_prefix`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// `mqtt.ca_file`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `mqtt.client_cert`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// `mqtt.client_key`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// `mqtt.max_payload_bytes`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<i64>,
    /// `mqtt.offers_per_minute`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offers_per_minute: Option<i64>,
}

/// `[http]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `http.listen`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `http.mqtt_ws_url`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_ws_url: Option<String>,
    /// `http.hosts`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// `http.max_connections`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    /// `http.header_timeout_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout_ms: Option<i64>,
    /// `http.idle_timeout_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<i64>,
    /// `http.serve_static_turn_credentials`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve_static_turn_credentials: Option<bool>,
    /// `http.tls`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// `http.tls_cert`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// `http.tls_key`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
}

/// `[broker]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    /// `broker.listen`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `broker.v5_listen`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v5_listen: Option<String>,
    /// `broker.ws_listen`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_listen: Option<String>,
    /// `broker.ws_origins`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_origins: Option<Vec<String>>,
}

/// `[gpio]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpio {
    /// `gpio.backend`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `gpio.pins`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pins: Option<Vec<RawPin>>,
    /// `gpio.max_pulse_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pulse_ms: Option<i64>,
    /// `gpio.mqtt`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<bool>,
    /// `gpio.ha_discovery`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha_discovery: Option<bool>,
    /// `gpio.ha_prefix`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha_prefix: Option<String>,
}

/// `[control]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    /// `control.rate_limit`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<i64>,
    /// `control.max_message_bytes`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<i64>,
}

/// `[auth]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `auth.mode`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `auth.secret_file`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// `auth.tokens`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<RawToken>>,
    /// `auth.max_token_ttl`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_token_ttl: Option<String>,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// The token a viewer puts in its offer.
    pub token: String,
    /// `view` or `control`.
    pub role: String,
}

/// `[record]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    /// `record.mode`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `record.dir`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// `record.segment_s`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_s: Option<i64>,
    /// `record.fragment_ms`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragment_ms: Option<i64>,
    /// `record.pre_s`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_s: Option<i64>,
    /// `record.post_s`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_s: Option<i64>,
    /// `record.triggers`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<String>>,
    /// `record.max_age_days`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<i64>,
    /// `record.max_bytes`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
    /// `record.min_free_mb`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_mb: Option<i64>,
}

/// One rectangle of `motion.include` / `motion.exclude`, relative to the picture (0-1).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMotion {
    /// `motion.enabled`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `motion.threshold`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    /// `motion.min_area_percent`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_area_percent: Option<f64>,
    /// `motion.end_after_s`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_after_s: Option<i64>,
    /// `motion.include`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<RawZone>>,
    /// `motion.exclude`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<RawZone>>,
    /// `motion.record`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
    /// `motion.snapshot`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<bool>,
}
