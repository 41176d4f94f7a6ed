//! Validated, typed settings, and the rules that turn [`RawConfig`] into them.
//! Defaults live here, once. Pure.

use super::error::{ConfigError, Origin};
use super::raw::{
    RawBroker, RawConfig, RawDevice, RawHttp, RawIceServer, RawMqtt, RawVideo, RawWebrtc,
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
    /// Forward camera H.264 without re-encoding.
    pub passthrough: bool,
    /// Keep the camera running with no viewers.
    pub always_on: bool,
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

/// A STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
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
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Listen address; `None` = no web viewer.
    pub listen: Option<SocketAddr>,
    /// WebSocket URL browsers use for MQTT; `None` = derive from the embedded broker.
    pub mqtt_ws_url: Option<String>,
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
}

/// Everything the agent needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl Settings {
    /// Whether the agent runs its own broker (no `mqtt.url`).
    pub fn embedded_broker(&self) -> bool {
        self.mqtt.url.is_none()
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

fn invalid(
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
        passthrough: raw.passthrough.unwrap_or(false),
        always_on: raw.always_on.unwrap_or(false),
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
        if url.starts_with("turn") && (raw.username.is_none() || raw.credential.is_none()) {
            return Err(invalid(
                key,
                format!("{url:?}"),
                "TURN servers need username and credential",
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
    let ice_servers = raw
        .ice_servers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| ice_server(i, s, origin))
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
    })
}

/// Parses `mqtt://`, `mqtts://`, `ws://` and `wss://` broker URLs.
pub fn parse_mqtt_url(text: &str) -> Result<MqttUrl, String> {
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
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace()) {
        return Err("a host is required".into());
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
        host,
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
    Ok(MqttSettings {
        url,
        protocol,
        username: raw.username.clone().filter(|u| !u.is_empty()),
        password: raw.password.clone().map(Secret::new),
        password_file: raw.password_file.clone().map(PathBuf::from),
        client_id,
        topic_prefix,
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
    Ok(HttpSettings {
        listen,
        mqtt_ws_url,
    })
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
    };
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
    Ok(Settings {
        video: video(&raw.video, origin)?,
        device: device(&raw.device, origin)?,
        webrtc: webrtc(&raw.webrtc, origin)?,
        mqtt: mqtt(&raw.mqtt, origin)?,
        http: http(&raw.http, origin)?,
        broker: broker(&raw.broker, origin)?,
    })
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
                passthrough: Some(v.passthrough),
                always_on: Some(v.always_on),
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
                            credential: s.credential.clone(),
                        })
                        .collect(),
                ),
                interfaces: Some(self.webrtc.interfaces.clone()),
                loopback: Some(self.webrtc.loopback),
                mdns: Some(self.webrtc.mdns.as_config().into()),
                max_viewers: Some(self.webrtc.max_viewers as i64),
                negotiation_timeout_ms: Some(self.webrtc.negotiation_timeout.as_millis() as i64),
                disconnected_timeout_ms: Some(self.webrtc.disconnected_timeout.as_millis() as i64),
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
            },
            http: RawHttp {
                listen: Some(
                    self.http
                        .listen
                        .map_or_else(|| "off".into(), |a| a.to_string()),
                ),
                mqtt_ws_url: self.http.mqtt_ws_url.clone(),
            },
            broker: RawBroker {
                listen: Some(self.broker.listen.to_string()),
                v5_listen: Some(self.broker.v5_listen.to_string()),
                ws_listen: Some(self.broker.ws_listen.to_string()),
            },
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
        assert!(!s.video.passthrough && !s.video.always_on);
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

    #[test]
    fn device_paths_are_accepted() {
        let mut raw = RawConfig::default();
        raw.video.source = Some("/dev/video2".into());
        assert_eq!(
            check(raw).expect("valid").video.source,
            SourceSpec::Device("/dev/video2".into())
        );
    }
}
