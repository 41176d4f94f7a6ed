//! The registry of every configuration key: its TOML path, value kind and
//! help. CLI flags (`--video-width`) and environment variables
//! (`RTCAM_VIDEO_WIDTH`) are derived from it, so all three stay in step. Pure.

/// The kind of value a key takes; decides how env/flag text is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, taken verbatim from env/flags.
    Str,
    /// Integer.
    Int,
    /// Number (an integer is taken too).
    Float,
    /// `true` / `false`.
    Bool,
    /// A TOML array of the given entries (inline syntax in env/flags, e.g.
    /// `[{ urls = ["stun:…"] }]`).
    Array(Entry),
}

/// What an array key holds. Every array key names its entry type, so each
/// entry is checked against the right shape (there is no fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Plain strings, e.g. interface names.
    Str,
    /// `{ urls, username, credential }` tables (`webrtc.ice_servers`).
    IceServer,
    /// `{ token, role }` tables (`auth.tokens`).
    Token,
    /// `{ name, pin, mode, … }` tables (`gpio.pins`).
    Pin,
    /// `{ x, y, w, h }` rectangles (`motion.include`, `motion.exclude`).
    Zone,
}

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Dotted TOML path, `section.key`.
    pub path: &'static str,
    /// Value kind.
    pub kind: Kind,
    /// One-line help, shown by `rtcam --help`.
    pub help: &'static str,
}

impl Key {
    /// The CLI flag name without dashes: `video.bitrate_kbps` → `video-bitrate-kbps`.
    pub fn flag(&self) -> String {
        self.path.replace(['.', '_'], "-")
    }

    /// The environment variable: `video.bitrate_kbps` → `RTCAM_VIDEO_BITRATE_KBPS`.
    pub fn env(&self) -> String {
        format!("RTCAM_{}", self.path.replace('.', "_").to_ascii_uppercase())
    }

    /// (section, name) of the path.
    pub fn split(&self) -> (&'static str, &'static str) {
        self.path.split_once('.').unwrap_or(("", self.path))
    }
}

/// Parses env/flag text into a TOML value of the key's kind.
pub fn parse_text(kind: Kind, text: &str) -> Result<toml::Value, String> {
    let text = text.trim();
    match kind {
        Kind::Str => Ok(toml::Value::String(text.to_string())),
        Kind::Int => text
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "expected an integer".to_string()),
        Kind::Float => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(toml::Value::Float)
            .ok_or_else(|| "expected a number".to_string()),
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err("expected true or false".to_string()),
        },
        Kind::Array(_) => {
            let doc: toml::Table = toml::from_str(&format!("v = {text}"))
                .map_err(|e| format!("expected a TOML array: {}", e.message()))?;
            match doc.get("v") {
                Some(v @ toml::Value::Array(_)) => Ok(v.clone()),
                _ => Err("expected a TOML array such as [ ... ]".to_string()),
            }
        }
    }
}

/// Environment variables that are not config keys but belong to rtcam.
pub const NON_KEY_ENV: &[&str] = &["RTCAM_LOG", "RTCAM_CONFIG"];

/// Every key, grouped by section in the order of `rtcam.example.toml`.
pub const KEYS: &[Key] = &[
    Key {
        path: "video.source",
        kind: Kind::Str,
        help: "Frame source: \"test\", \"auto\" (first camera) or a device path such as /dev/video0",
    },
    Key {
        path: "video.width",
        kind: Kind::Int,
        help: "Picture width in pixels (even, 160-3840)",
    },
    Key {
        path: "video.height",
        kind: Kind::Int,
        help: "Picture height in pixels (even, 120-2160)",
    },
    Key {
        path: "video.fps",
        kind: Kind::Int,
        help: "Frames per second (1-60)",
    },
    Key {
        path: "video.bitrate_kbps",
        kind: Kind::Int,
        help: "H.264 target bitrate in kbit/s",
    },
    Key {
        path: "video.keyframe_interval_ms",
        kind: Kind::Int,
        help: "Time between periodic keyframes in ms (100-60000)",
    },
    Key {
        path: "video.encoder_threads",
        kind: Kind::Int,
        help: "OpenH264 encoding threads (0-4; 0: one per core, at most 4)",
    },
    Key {
        path: "video.passthrough",
        kind: Kind::Bool,
        help: "Forward the camera's own H.264 when it offers it, without re-encoding",
    },
    Key {
        path: "video.encoder",
        kind: Kind::Str,
        help: "H.264 encoder: auto (camera passthrough, else the board's V4L2 M2M encoder, else OpenH264), openh264 or v4l2m2m",
    },
    Key {
        path: "video.congestion",
        kind: Kind::Str,
        help: "How viewers' receiver reports steer the bitrate: follow-weakest (the encoder follows the weakest viewer; frame rate drops first), keep-quality (weak viewers get keyframes only) or off",
    },
    Key {
        path: "video.test_scene",
        kind: Kind::Str,
        help: "The test source's picture: \"moving\" (scrolling bars, a bouncing box) or \"still\" (only the sensor grain and the clock change)",
    },
    Key {
        path: "video.test_object_after_s",
        kind: Kind::Int,
        help: "With test_scene = \"still\": a box starts moving this many seconds after the camera starts (for motion tests)",
    },
    Key {
        path: "video.encoder_device",
        kind: Kind::Str,
        help: "V4L2 memory-to-memory encoder node (default: the first whose capture queue offers H.264)",
    },
    Key {
        path: "video.always_on",
        kind: Kind::Bool,
        help: "Keep the camera running with no viewers (faster first frame, more power)",
    },
    Key {
        path: "video.min_bitrate_kbps",
        kind: Kind::Int,
        help: "Lowest bitrate video.bitrate commands may set (kbit/s)",
    },
    Key {
        path: "video.max_bitrate_kbps",
        kind: Kind::Int,
        help: "Highest bitrate video.bitrate commands may set (kbit/s)",
    },
    Key {
        path: "device.name",
        kind: Kind::Str,
        help: "Device name shown to viewers (default: the hostname)",
    },
    Key {
        path: "webrtc.ice_servers",
        kind: Kind::Array(Entry::IceServer),
        help: "STUN/TURN servers: [{ urls = [\"stun:host:3478\"], username = \"u\", credential = \"p\" }]",
    },
    Key {
        path: "webrtc.turn_secret_file",
        kind: Kind::Str,
        help: "File with the secret shared with a TURN server (coturn's static-auth-secret): TURN servers in ice_servers without username/credential get short-lived credentials minted from it",
    },
    Key {
        path: "webrtc.turn_credential_ttl",
        kind: Kind::Str,
        help: "How long a minted TURN credential stays valid, e.g. \"12h\" (1m-7d); a viewer relayed longer than this loses its relay",
    },
    Key {
        path: "webrtc.interfaces",
        kind: Kind::Array(Entry::Str),
        help: "Network interfaces to gather ICE candidates on, e.g. [\"eth0\", \"wlan0\"] (empty: all)",
    },
    Key {
        path: "webrtc.loopback",
        kind: Kind::Bool,
        help: "Also gather loopback (127.0.0.1) candidates, for single-host setups and tests",
    },
    Key {
        path: "webrtc.mdns",
        kind: Kind::Str,
        help: "mDNS: \"query\" (resolve browsers' .local candidates), \"gather\" (also hide ours), \"disabled\"",
    },
    Key {
        path: "webrtc.max_viewers",
        kind: Kind::Int,
        help: "Most simultaneous viewers (1-64); offers beyond it get a max_viewers error",
    },
    Key {
        path: "webrtc.negotiation_timeout_ms",
        kind: Kind::Int,
        help: "Drop a session not connected this long after its offer (ms)",
    },
    Key {
        path: "webrtc.disconnected_timeout_ms",
        kind: Kind::Int,
        help: "End a session whose ICE stays disconnected this long (ms)",
    },
    Key {
        path: "webrtc.playout_delay_ms",
        kind: Kind::Int,
        help: "Most time a viewer's browser may hold video before showing it (0-10000 ms), sent as the playout-delay RTP header extension; unset: none is sent",
    },
    Key {
        path: "webrtc.max_negotiating",
        kind: Kind::Int,
        help: "Most sessions still negotiating at once (1-64); more offers get busy",
    },
    Key {
        path: "webrtc.early_ice_candidates",
        kind: Kind::Int,
        help: "ICE candidates kept per viewer before its offer arrives (1-256)",
    },
    Key {
        path: "webrtc.early_ice_clients",
        kind: Kind::Int,
        help: "Viewers whose early ICE candidates are kept at once (1-1024)",
    },
    Key {
        path: "mqtt.url",
        kind: Kind::Str,
        help: "Broker URL: mqtt://host:1883, mqtts://host:8883, ws://host:9001/mqtt, wss://… (unset: embedded broker)",
    },
    Key {
        path: "mqtt.protocol",
        kind: Kind::Str,
        help: "MQTT version: \"5\" or \"3.1.1\"",
    },
    Key {
        path: "mqtt.username",
        kind: Kind::Str,
        help: "Broker user name",
    },
    Key {
        path: "mqtt.password",
        kind: Kind::Str,
        help: "Broker password (prefer password_file or RTCAM_MQTT_PASSWORD)",
    },
    Key {
        path: "mqtt.password_file",
        kind: Kind::Str,
        help: "File holding the broker password",
    },
    Key {
        path: "mqtt.client_id",
        kind: Kind::Str,
        help: "MQTT client id (default: rtcam-<hostname>)",
    },
    Key {
        path: "mqtt.topic_prefix",
        kind: Kind::Str,
        help: "Topic prefix P of every rtcam topic (default: rtcam/<hostname>)",
    },
    Key {
        path: "mqtt.ca_file",
        kind: Kind::Str,
        help: "PEM CA certificate(s) to trust for mqtts:// and wss:// (default: the system roots)",
    },
    Key {
        path: "mqtt.client_cert",
        kind: Kind::Str,
        help: "PEM client certificate for brokers that require one (with mqtt.client_key)",
    },
    Key {
        path: "mqtt.client_key",
        kind: Kind::Str,
        help: "PEM private key of mqtt.client_cert",
    },
    Key {
        path: "mqtt.max_payload_bytes",
        kind: Kind::Int,
        help: "Largest signaling message accepted (1024-65536 bytes); larger ones get too_large",
    },
    Key {
        path: "mqtt.offers_per_minute",
        kind: Kind::Int,
        help: "Offers accepted per token (or, without auth, client id) per minute (1-600); more get rate_limited",
    },
    Key {
        path: "http.listen",
        kind: Kind::Str,
        help: "Web viewer address, e.g. 127.0.0.1:8080 or 0.0.0.0:8080 for the LAN (\"off\" disables it)",
    },
    Key {
        path: "http.mqtt_ws_url",
        kind: Kind::Str,
        help: "MQTT WebSocket URL the browser uses (default: the embedded broker's, on the page's host)",
    },
    Key {
        path: "http.hosts",
        kind: Kind::Array(Entry::Str),
        help: "Host names the web viewer is reached by, besides IP addresses, localhost and the machine's name, e.g. [\"cam.example.org\"]: only these go into the page's broker URL",
    },
    Key {
        path: "http.max_connections",
        kind: Kind::Int,
        help: "Most open web viewer connections (4-4096, at most a quarter of the file descriptor limit); a new one closes the longest-idle one",
    },
    Key {
        path: "http.header_timeout_ms",
        kind: Kind::Int,
        help: "A request's headers must arrive within this long of the connection opening or the previous response (ms); idle keep-alive connections close after it",
    },
    Key {
        path: "http.idle_timeout_ms",
        kind: Kind::Int,
        help: "Close a web viewer connection that moves no byte for this long (ms), e.g. a client that stops reading a response",
    },
    Key {
        path: "http.tls",
        kind: Kind::Str,
        help: "HTTPS for the web viewer and WHEP: \"off\" (default), or \"self-signed\" (a certificate made on first start and kept in the state directory; its SHA-256 fingerprint is logged). tls_cert/tls_key set it on with your own",
    },
    Key {
        path: "http.tls_cert",
        kind: Kind::Str,
        help: "PEM certificate chain for HTTPS (with tls_key), e.g. from Let's Encrypt",
    },
    Key {
        path: "http.tls_key",
        kind: Kind::Str,
        help: "PEM private key of tls_cert",
    },
    Key {
        path: "http.serve_static_turn_credentials",
        kind: Kind::Bool,
        help: "Give the page the static TURN username/credential of webrtc.ice_servers (anyone who can load the page can then use the relay); minted ones are always given",
    },
    Key {
        path: "broker.listen",
        kind: Kind::Str,
        help: "Embedded broker MQTT 3.1.1 listener",
    },
    Key {
        path: "broker.v5_listen",
        kind: Kind::Str,
        help: "Embedded broker MQTT 5 listener",
    },
    Key {
        path: "broker.ws_listen",
        kind: Kind::Str,
        help: "Embedded broker WebSocket listener (MQTT 3.1.1 over WebSocket, for browsers)",
    },
    Key {
        path: "broker.ws_origins",
        kind: Kind::Array(Entry::Str),
        help: "Web pages (origins such as \"https://cam.example.org\", or \"*\") allowed to open the embedded broker's WebSocket besides the web viewer's own",
    },
    Key {
        path: "gpio.backend",
        kind: Kind::Str,
        help: "GPIO backend: \"auto\" (rppal on a Pi, else cdev), \"rppal\", \"cdev\" or \"sim\" (default: sim demo pins when no pins are declared, auto otherwise)",
    },
    Key {
        path: "gpio.pins",
        kind: Kind::Array(Entry::Pin),
        help: "Declared pins: [{ name = \"relay1\", pin = 17, mode = \"output\" }, …] (see rtcam.example.toml)",
    },
    Key {
        path: "gpio.max_pulse_ms",
        kind: Kind::Int,
        help: "Longest gpio.pulse allowed (ms)",
    },
    Key {
        path: "gpio.mqtt",
        kind: Kind::Bool,
        help: "Also expose pins over MQTT (P/gpio/{name}/state and …/set) for automations",
    },
    Key {
        path: "gpio.ha_discovery",
        kind: Kind::Bool,
        help: "Publish Home Assistant discovery configs: the pins (with gpio.mqtt), the snapshot camera and the motion sensor",
    },
    Key {
        path: "gpio.ha_prefix",
        kind: Kind::Str,
        help: "Home Assistant discovery prefix",
    },
    Key {
        path: "control.rate_limit",
        kind: Kind::Int,
        help: "DataChannel commands per second allowed per session (1-1000)",
    },
    Key {
        path: "control.max_message_bytes",
        kind: Kind::Int,
        help: "Largest DataChannel command accepted (256-16384 bytes); larger ones get bad_json",
    },
    Key {
        path: "auth.mode",
        kind: Kind::Str,
        help: "Viewer authorisation: \"none\" (anyone reaching the broker may control) or \"token\"",
    },
    Key {
        path: "auth.secret_file",
        kind: Kind::Str,
        help: "File with the secret (>= 16 bytes) that signs expiring tokens (rtcam token)",
    },
    Key {
        path: "auth.max_token_ttl",
        kind: Kind::Str,
        help: "Longest a signed token may live from now, e.g. \"30d\" (rtcam token refuses longer ones)",
    },
    Key {
        path: "auth.tokens",
        kind: Kind::Array(Entry::Token),
        help: "Static tokens: [{ token = \"…\", role = \"view\" | \"control\" }, …]",
    },
    Key {
        path: "motion.enabled",
        kind: Kind::Bool,
        help: "Motion detection on a small luma picture of every frame (keeps the camera on)",
    },
    Key {
        path: "motion.threshold",
        kind: Kind::Int,
        help: "Luma change (1-255) that counts a pixel as changed; above the sensor grain",
    },
    Key {
        path: "motion.min_area_percent",
        kind: Kind::Float,
        help: "Share of the watched picture (0.1-100 %) that must change for motion",
    },
    Key {
        path: "motion.end_after_s",
        kind: Kind::Int,
        help: "Seconds without change before motion ends (1-600)",
    },
    Key {
        path: "motion.include",
        kind: Kind::Array(Entry::Zone),
        help: "Rectangles watched, relative (0-1): [{ x = 0, y = 0.5, w = 1, h = 0.5 }]; default the whole picture",
    },
    Key {
        path: "motion.exclude",
        kind: Kind::Array(Entry::Zone),
        help: "Rectangles ignored, relative (0-1), e.g. a timestamp overlay or a tree",
    },
    Key {
        path: "motion.record",
        kind: Kind::Bool,
        help: "Motion triggers a recording (record.mode = \"events\")",
    },
    Key {
        path: "motion.snapshot",
        kind: Kind::Bool,
        help: "Publish a snapshot on P/snapshot when motion starts",
    },
    Key {
        path: "record.mode",
        kind: Kind::Str,
        help: "Recording: \"off\", \"continuous\" or \"events\" (triggers record with pre- and post-roll)",
    },
    Key {
        path: "record.dir",
        kind: Kind::Str,
        help: "Where segments go, in one folder per day (UTC)",
    },
    Key {
        path: "record.segment_s",
        kind: Kind::Int,
        help: "Length of one MP4 segment file (s, 2-3600); cut at the first keyframe after it",
    },
    Key {
        path: "record.fragment_ms",
        kind: Kind::Int,
        help: "Fragment length (ms, 200-10000): written and synced to disk at once, the most a power cut loses",
    },
    Key {
        path: "record.pre_s",
        kind: Kind::Int,
        help: "Events mode: seconds kept before a trigger (0-60), from a keyframe",
    },
    Key {
        path: "record.post_s",
        kind: Kind::Int,
        help: "Events mode: seconds recorded after the last trigger (0-3600)",
    },
    Key {
        path: "record.triggers",
        kind: Kind::Array(Entry::Str),
        help: "Input pins (gpio.pins names) whose edges trigger a recording",
    },
    Key {
        path: "record.max_age_days",
        kind: Kind::Int,
        help: "Delete segments older than this many days (0: no age limit)",
    },
    Key {
        path: "record.max_bytes",
        kind: Kind::Int,
        help: "Delete the oldest segments while all of them take more bytes than this (0: no limit)",
    },
    Key {
        path: "record.min_free_mb",
        kind: Kind::Int,
        help: "Delete the oldest segments while the disk has less free space than this (MB)",
    },
    Key {
        path: "audio.input",
        kind: Kind::Str,
        help: "Microphone sent to viewers: \"off\", \"test\" (a 1 kHz beep at each whole second) or an ALSA device (\"default\", \"hw:1,0\")",
    },
    Key {
        path: "audio.output",
        kind: Kind::Str,
        help: "Speaker for talkback from viewers with the control role: \"off\" or an ALSA device",
    },
    Key {
        path: "audio.bitrate_kbps",
        kind: Kind::Int,
        help: "Opus bitrate of the microphone (6-256 kbit/s)",
    },
    Key {
        path: "audio.channels",
        kind: Kind::Int,
        help: "Microphone channels: 1 (mono) or 2 (stereo)",
    },
    Key {
        path: "audio.volume_percent",
        kind: Kind::Int,
        help: "Talkback volume on the speaker (0-400 %)",
    },
    Key {
        path: "audio.jitter_ms",
        kind: Kind::Int,
        help: "Talkback jitter buffer: audio held before playing (20-500 ms)",
    },
    Key {
        path: "rtsp.listen",
        kind: Kind::Str,
        help: "RTSP server address, e.g. 0.0.0.0:8554 (default \"off\": no RTSP server); the stream is rtsp://HOST:PORT/PATH",
    },
    Key {
        path: "rtsp.path",
        kind: Kind::Str,
        help: "The RTSP stream's path (default \"cam\")",
    },
    Key {
        path: "rtsp.username",
        kind: Kind::Str,
        help: "User name RTSP clients must give (Digest or Basic), with rtsp.password",
    },
    Key {
        path: "rtsp.password",
        kind: Kind::Str,
        help: "Password RTSP clients must give, with rtsp.username (prefer RTCAM_RTSP_PASSWORD)",
    },
    Key {
        path: "rtsp.max_clients",
        kind: Kind::Int,
        help: "Most RTSP connections at once (1-64, default 4), counted apart from webrtc.max_viewers; more get 503",
    },
];

/// The key at a dotted path.
pub fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_derived() {
        let k = find("video.bitrate_kbps").expect("registered");
        assert_eq!(k.flag(), "video-bitrate-kbps");
        assert_eq!(k.env(), "RTCAM_VIDEO_BITRATE_KBPS");
        assert_eq!(k.split(), ("video", "bitrate_kbps"));
    }

    #[test]
    fn paths_flags_and_envs_are_unique() {
        let flags: HashSet<String> = KEYS.iter().map(Key::flag).collect();
        let envs: HashSet<String> = KEYS.iter().map(Key::env).collect();
        assert_eq!(flags.len(), KEYS.len());
        assert_eq!(envs.len(), KEYS.len());
        assert!(KEYS.iter().all(|k| k.path.contains('.')));
    }

    #[test]
    fn text_parses_by_kind() {
        assert_eq!(
            parse_text(Kind::Int, " 640 "),
            Ok(toml::Value::Integer(640))
        );
        assert!(parse_text(Kind::Int, "wide").is_err());
        assert_eq!(
            parse_text(Kind::Bool, "yes"),
            Ok(toml::Value::Boolean(true))
        );
        assert!(parse_text(Kind::Bool, "maybe").is_err());
        assert_eq!(
            parse_text(Kind::Str, "123"),
            Ok(toml::Value::String("123".into()))
        );
        let arr = parse_text(
            Kind::Array(Entry::IceServer),
            r#"[{ urls = ["stun:127.0.0.1:3478"] }]"#,
        )
        .expect("valid array");
        assert!(arr.is_array());
        assert!(parse_text(Kind::Array(Entry::IceServer), "{ a = 1 }").is_err());
        assert!(parse_text(Kind::Array(Entry::IceServer), "[unclosed").is_err());
    }
}
