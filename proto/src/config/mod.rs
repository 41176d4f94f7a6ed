//! Configuration: one TOML file, overridden by `RTCAM_*` environment
//! variables, overridden by CLI flags (flag > env > file > default).
//! Layers are merged as TOML, checked against the key registry, deserialised
//! into [`raw::RawConfig`], then validated into [`Settings`].

pub mod error;
pub mod keys;
pub mod raw;
pub mod rtsp;
pub mod settings;

pub use error::{ConfigError, Origin};
pub use settings::{
    AudioInput, AudioSettings, CongestionPolicy, EncoderPref, MotionSettings, RecordMode,
    RecordSettings, Settings, SourceSpec, TestScene, VideoSettings, Zone,
};

use keys::{Entry, Key, Kind};
use std::collections::BTreeMap;
use std::path::Path;

/// Where the configuration comes from.
#[derive(Debug, Default)]
pub struct Layers<'a> {
    /// The TOML file, if any.
    pub file: Option<&'a Path>,
    /// Environment variables (all of them; only `RTCAM_*` are read).
    pub env: Vec<(String, String)>,
    /// CLI overrides: key and the flag's text.
    pub flags: Vec<(&'static Key, String)>,
}

/// Validated settings and where each explicitly set key came from.
#[derive(Debug)]
pub struct Loaded {
    /// The settings.
    pub settings: Settings,
    /// Keys that were set, with their origin (unset keys are defaults).
    pub origins: BTreeMap<String, Origin>,
}

fn kind_matches(kind: Kind, v: &toml::Value) -> bool {
    matches!(
        (kind, v),
        (Kind::Str, toml::Value::String(_))
            | (Kind::Int, toml::Value::Integer(_))
            | (Kind::Float, toml::Value::Float(_) | toml::Value::Integer(_))
            | (Kind::Bool, toml::Value::Boolean(_))
            | (Kind::Array(_), toml::Value::Array(_))
    )
}

fn kind_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "expected a string",
        Kind::Int => "expected an integer",
        Kind::Float => "expected a number",
        Kind::Bool => "expected true or false",
        Kind::Array(_) => "expected an array",
    }
}

fn known_in(section: &str) -> String {
    let names: Vec<&str> = keys::KEYS
        .iter()
        .filter(|k| k.split().0 == section)
        .map(|k| k.split().1)
        .collect();
    if names.is_empty() {
        let mut sections: Vec<&str> = keys::KEYS.iter().map(|k| k.split().0).collect();
        sections.dedup();
        format!("(no such section; sections are {})", sections.join(", "))
    } else {
        names.join(", ")
    }
}

fn set(table: &mut toml::Table, key: &Key, value: toml::Value) {
    let (section, name) = key.split();
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(t) = entry {
        t.insert(name.to_string(), value);
    }
}

/// Checks every file key against the registry and records its origin.
fn check_file(
    table: &toml::Table,
    origin: &Origin,
    origins: &mut BTreeMap<String, Origin>,
) -> Result<(), ConfigError> {
    for (section, value) in table {
        let toml::Value::Table(entries) = value else {
            return Err(ConfigError::UnknownKey {
                key: section.clone(),
                section: String::new(),
                known: "(top level holds only sections such as [video])".into(),
                origin: origin.clone(),
            });
        };
        for (name, v) in entries {
            let path = format!("{section}.{name}");
            let Some(key) = keys::find(&path) else {
                return Err(ConfigError::UnknownKey {
                    key: path,
                    section: section.clone(),
                    known: known_in(section),
                    origin: origin.clone(),
                });
            };
            if !kind_matches(key.kind, v) {
                return Err(ConfigError::Invalid {
                    key: path,
                    value: v.to_string(),
                    allowed: kind_text(key.kind).into(),
                    origin: origin.clone(),
                });
            }
            origins.insert(path, origin.clone());
        }
    }
    Ok(())
}

/// Deserialises each array key on its own, so a bad entry is reported
/// against its key (serde's messages do not carry the path).
fn check_arrays(table: &toml::Table, origin: &dyn Fn(&str) -> Origin) -> Result<(), ConfigError> {
    fn try_as<T: serde::de::DeserializeOwned>(v: &toml::Value) -> Result<(), String> {
        v.clone()
            .try_into::<T>()
            .map(|_| ())
            .map_err(|e: toml::de::Error| e.message().to_string())
    }
    for key in keys::KEYS {
        let Kind::Array(entry) = key.kind else {
            continue;
        };
        let (section, name) = key.split();
        let Some(v) = table.get(section).and_then(|s| s.get(name)) else {
            continue;
        };
        let checked = match entry {
            Entry::Str => try_as::<Vec<String>>(v),
            Entry::IceServer => try_as::<Vec<raw::RawIceServer>>(v),
            Entry::Token => try_as::<Vec<raw::RawToken>>(v),
            Entry::Pin => try_as::<Vec<raw::RawPin>>(v),
            Entry::Zone => try_as::<Vec<raw::RawZone>>(v),
        };
        checked.map_err(|allowed| ConfigError::Invalid {
            key: key.path.into(),
            value: v.to_string(),
            allowed,
            origin: origin(key.path),
        })?;
    }
    Ok(())
}

/// Merges the layers and validates the result.
pub fn load(layers: &Layers<'_>) -> Result<Loaded, ConfigError> {
    let mut origins = BTreeMap::new();
    let mut table = match layers.file {
        None => toml::Table::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            check_file(&table, &Origin::File(path.to_path_buf()), &mut origins)?;
            table
        }
    };
    let mut env: Vec<&(String, String)> = layers
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("RTCAM_") && !keys::NON_KEY_ENV.contains(&k.as_str()))
        .collect();
    env.sort();
    for (var, text) in env {
        let key = keys::KEYS
            .iter()
            .find(|k| k.env() == *var)
            .ok_or_else(|| ConfigError::UnknownEnv(var.clone()))?;
        let origin = Origin::Env(var.clone());
        let value = keys::parse_text(key.kind, text).map_err(|allowed| ConfigError::Invalid {
            key: key.path.into(),
            value: format!("{text:?}"),
            allowed,
            origin: origin.clone(),
        })?;
        set(&mut table, key, value);
        origins.insert(key.path.to_string(), origin);
    }
    for (key, text) in &layers.flags {
        let origin = Origin::Flag(key.flag());
        let value = keys::parse_text(key.kind, text).map_err(|allowed| ConfigError::Invalid {
            key: key.path.into(),
            value: format!("{text:?}"),
            allowed,
            origin: origin.clone(),
        })?;
        set(&mut table, key, value);
        origins.insert(key.path.to_string(), origin);
    }
    let origin_of = |k: &str| origins.get(k).cloned().unwrap_or(Origin::Default);
    check_arrays(&table, &origin_of)?;
    let raw: raw::RawConfig =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                // Every key and array was checked above; this is a safety net.
                ConfigError::Invalid {
                    key: "(config)".into(),
                    value: String::new(),
                    allowed: e.message().to_string(),
                    origin: Origin::Default,
                }
            })?;
    let mut settings = settings::validate(&raw, &origin_of)?;
    if let Some(path) = &settings.mqtt.password_file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        settings.mqtt.password = Some(settings::Secret::new(text.trim_end_matches(['\r', '\n'])));
    }
    if let Some(path) = &settings.webrtc.turn_secret_file {
        let secret = read_secret_file(
            path,
            "webrtc.turn_secret_file",
            format!(
                "the file must hold the TURN server's static-auth-secret, at least {} characters",
                crate::auth::MIN_SECRET_LEN
            ),
            &origin_of,
        )?;
        settings.webrtc.turn_secret = Some(secret);
    }
    if let Some(path) = &settings.auth.secret_file {
        let secret = read_secret_file(
            path,
            "auth.secret_file",
            format!(
                "the file must hold a secret of at least {} characters (e.g. `head -c 32 /dev/urandom | base64`)",
                crate::auth::MIN_SECRET_LEN
            ),
            &origin_of,
        )?;
        settings.auth.secret = Some(secret);
    }
    Ok(Loaded { settings, origins })
}

/// Reads the secret in the file `path` named by config key `key` (trimmed),
/// refusing one shorter than [`crate::auth::MIN_SECRET_LEN`] with `allowed`.
fn read_secret_file(
    path: &std::path::Path,
    key: &str,
    allowed: String,
    origin_of: &dyn Fn(&str) -> Origin,
) -> Result<settings::Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.trim();
    if secret.len() < crate::auth::MIN_SECRET_LEN {
        return Err(ConfigError::Invalid {
            key: key.into(),
            value: path.display().to_string(),
            allowed,
            origin: origin_of(key),
        });
    }
    Ok(settings::Secret::new(secret))
}

/// The effective configuration as TOML, for `rtcam config --print`.
pub fn render_effective(loaded: &Loaded) -> String {
    let raw = loaded.settings.to_raw();
    let table = toml::Table::try_from(&raw)
        .expect("RawConfig is plain data and always serialises to a TOML table");
    let mut out = String::from("# Effective rtcam configuration (flag > env > file > default)\n");
    for (section, value) in &table {
        let toml::Value::Table(entries) = value else {
            continue;
        };
        out.push_str(&format!("\n[{section}]\n"));
        for key in keys::KEYS.iter().filter(|k| k.split().0 == section) {
            let name = key.split().1;
            let origin = loaded
                .origins
                .get(key.path)
                .cloned()
                .unwrap_or(Origin::Default);
            match (entries.get(name), hidden_secret(&loaded.settings, key.path)) {
                (Some(v), hidden) => {
                    out.push_str(&format!("{name} = {v}  # {origin}\n"));
                    if let Some(what) = hidden {
                        out.push_str(&format!("# {name}: {what}, not shown\n"));
                    }
                }
                (None, Some(what)) => {
                    out.push_str(&format!("# {name} {what} ({origin}), not shown\n"));
                }
                (None, None) => out.push_str(&format!("# {name} is not set\n")),
            }
        }
        if section == "auth" && tokens_alone_allow_token_mode(&loaded.settings) {
            out.push_str(
                "# Token mode with static tokens only: put the tokens back (or set\n\
                 # secret_file) before using this output as a configuration.\n",
            );
        }
    }
    out
}

/// What `render_effective` writes in place of a secret key that is set
/// ([`Settings::to_raw`] leaves secrets out); `None` for other keys.
fn hidden_secret(settings: &Settings, path: &str) -> Option<String> {
    match path {
        "mqtt.password" => settings.mqtt.password.as_ref().map(|_| "is set".into()),
        "rtsp.password" => settings.rtsp.credentials.as_ref().map(|_| "is set".into()),
        "webrtc.ice_servers" => {
            let set: Vec<String> = settings
                .webrtc
                .ice_servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.credential.is_some())
                .map(|(i, _)| i.to_string())
                .collect();
            (!set.is_empty()).then(|| {
                format!(
                    "the static credential of entry {} is set (put it back, or use \
                     turn_secret_file, before using this output as a configuration)",
                    set.join(", ")
                )
            })
        }
        "auth.tokens" if !settings.auth.tokens.is_empty() => {
            let roles: Vec<&str> = settings
                .auth
                .tokens
                .iter()
                .map(|t| t.role.as_str())
                .collect();
            Some(format!(
                "holds {} static token(s), roles {}",
                roles.len(),
                roles.join(", ")
            ))
        }
        _ => None,
    }
}

/// Whether the static tokens are all that token mode checks offers against.
/// Printed without them, such a configuration does not load: it fails
/// closed (an `auth.mode` error) rather than opening the camera.
fn tokens_alone_allow_token_mode(settings: &Settings) -> bool {
    let auth = &settings.auth;
    auth.mode == settings::AuthMode::Token && auth.secret_file.is_none() && !auth.tokens.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let f = file("[video]\nwidth = 640\nheight = 480\nfps = 15\n");
        let width = keys::find("video.width").expect("registered");
        let loaded = load(&Layers {
            file: Some(f.path()),
            env: env(&[
                ("RTCAM_VIDEO_WIDTH", "800"),
                ("RTCAM_VIDEO_HEIGHT", "600"),
                ("PATH", "/bin"),
            ]),
            flags: vec![(width, "1024".into())],
        })
        .expect("valid");
        let v = &loaded.settings.video;
        assert_eq!(
            (v.width, v.height, v.fps, v.bitrate_kbps),
            (1024, 600, 15, 2000)
        );
        assert_eq!(
            loaded.origins["video.width"],
            Origin::Flag("video-width".into())
        );
        assert_eq!(
            loaded.origins["video.height"],
            Origin::Env("RTCAM_VIDEO_HEIGHT".into())
        );
        assert!(matches!(loaded.origins["video.fps"], Origin::File(_)));
    }

    #[test]
    fn unknown_keys_sections_and_env_are_named() {
        let f = file("[video]\nwidht = 640\n");
        let e = load(&Layers {
            file: Some(f.path()),
            ..Layers::default()
        })
        .expect_err("typo");
        assert_eq!(e.key(), Some("video.widht"));
        assert!(e.to_string().contains("width"), "lists the known keys: {e}");

        let f = file("[vidoe]\nwidth = 640\n");
        let e = load(&Layers {
            file: Some(f.path()),
            ..Layers::default()
        })
        .expect_err("bad section");
        assert!(e.to_string().contains("no such section"), "{e}");

        let e = load(&Layers {
            env: env(&[("RTCAM_VIDEO_WIDHT", "1")]),
            ..Layers::default()
        })
        .expect_err("bad env");
        assert!(matches!(e, ConfigError::UnknownEnv(ref v) if v == "RTCAM_VIDEO_WIDHT"));
        assert!(
            load(&Layers {
                env: env(&[("RTCAM_LOG", "debug")]),
                ..Layers::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn wrong_types_and_values_name_origin() {
        let f = file("[video]\nwidth = \"wide\"\n");
        let e = load(&Layers {
            file: Some(f.path()),
            ..Layers::default()
        })
        .expect_err("string width");
        assert!(
            e.to_string().contains("video.width") && e.to_string().contains("integer"),
            "{e}"
        );

        let e = load(&Layers {
            env: env(&[("RTCAM_VIDEO_FPS", "fast")]),
            ..Layers::default()
        })
        .expect_err("bad env value");
        let text = e.to_string();
        assert!(
            text.contains("RTCAM_VIDEO_FPS") && text.contains("\"fast\""),
            "{text}"
        );

        let e = load(&Layers {
            env: env(&[("RTCAM_VIDEO_FPS", "120")]),
            ..Layers::default()
        })
        .expect_err("out of range");
        assert!(e.to_string().contains("environment RTCAM_VIDEO_FPS"), "{e}");
    }

    #[test]
    fn array_entries_are_checked_against_their_key() {
        let f = file("[webrtc]\nice_servers = [{ urlz = [\"stun:x\"] }]\n");
        let e = load(&Layers {
            file: Some(f.path()),
            ..Layers::default()
        })
        .expect_err("bad field");
        assert_eq!(e.key(), Some("webrtc.ice_servers"));
        assert!(e.to_string().contains("urlz"), "{e}");
        let loaded = load(&Layers {
            env: env(&[("RTCAM_WEBRTC_INTERFACES", "[\"eth0\", \"wlan0\"]")]),
            ..Layers::default()
        })
        .expect("valid");
        assert_eq!(loaded.settings.webrtc.interfaces, ["eth0", "wlan0"]);
    }

    #[test]
    fn declared_pins_load_from_tables_inline_env_and_flags() {
        use crate::gpio::pins::{PinMode, PinRef};
        let tables = file(
            "[gpio]\nbackend = \"sim\"\n\
             [[gpio.pins]]\nname = \"relay1\"\npin = 17\nmode = \"output\"\n\
             [[gpio.pins]]\nname = \"door\"\npin = \"GPIO27\"\nmode = \"input\"\npull = \"up\"\n",
        );
        let inline = file(
            "[gpio]\nbackend = \"sim\"\n\
             pins = [{ name = \"relay1\", pin = 17, mode = \"output\" }, \
             { name = \"door\", pin = \"GPIO27\", mode = \"input\", pull = \"up\" }]\n",
        );
        let pins_key = keys::find("gpio.pins").expect("registered");
        let text = "[{ name = \"relay1\", pin = 17, mode = \"output\" }, \
                    { name = \"door\", pin = \"GPIO27\", mode = \"input\", pull = \"up\" }]";
        let from = [
            load(&Layers {
                file: Some(tables.path()),
                ..Layers::default()
            }),
            load(&Layers {
                file: Some(inline.path()),
                ..Layers::default()
            }),
            load(&Layers {
                env: env(&[("RTCAM_GPIO_BACKEND", "sim"), ("RTCAM_GPIO_PINS", text)]),
                ..Layers::default()
            }),
            load(&Layers {
                env: env(&[("RTCAM_GPIO_BACKEND", "sim")]),
                flags: vec![(pins_key, text.into())],
                ..Layers::default()
            }),
        ];
        for loaded in from {
            let g = loaded.expect("pins load").settings.gpio;
            assert!(!g.demo, "declared pins replace the demo set");
            assert_eq!(g.pins.len(), 2);
            assert_eq!(
                (g.pins[0].name.as_str(), &g.pins[0].pin),
                ("relay1", &PinRef::Number(17))
            );
            assert!(matches!(g.pins[0].mode, PinMode::Output { .. }));
            assert_eq!(g.pins[1].pin, PinRef::LineName("GPIO27".into()));
            assert!(matches!(g.pins[1].mode, PinMode::Input { .. }));
        }
        // A bad entry is still named by its key.
        let bad = file("[[gpio.pins]]\nname = \"x\"\npin = 17\nmode = \"output\"\nspeed = 3\n");
        let e = load(&Layers {
            file: Some(bad.path()),
            ..Layers::default()
        })
        .expect_err("unknown field");
        assert_eq!(e.key(), Some("gpio.pins"), "{e}");
        assert!(e.to_string().contains("speed"), "{e}");
    }

    #[test]
    fn password_file_is_read_and_never_printed() {
        let secret = file("s3cret-pw\n");
        let cfg = file(&format!(
            "[mqtt]\npassword_file = {:?}\n",
            secret.path().display().to_string()
        ));
        let loaded = load(&Layers {
            file: Some(cfg.path()),
            ..Layers::default()
        })
        .expect("valid");
        assert_eq!(
            loaded.settings.mqtt.password.as_ref().map(|p| p.expose()),
            Some("s3cret-pw")
        );
        let printed = render_effective(&loaded);
        assert!(!printed.contains("s3cret-pw"), "{printed}");
        assert!(printed.contains("# password is set"), "{printed}");
    }

    #[test]
    fn static_tokens_are_never_printed_and_the_printed_config_loads() {
        let secret = file("0123456789abcdef0123456789abcdef\n");
        let cfg = file(&format!(
            "[auth]\nmode = \"token\"\nsecret_file = {:?}\n\
             [[auth.tokens]]\ntoken = \"viewer-token-0001\"\nrole = \"view\"\n\
             [[auth.tokens]]\ntoken = \"control-token-001\"\nrole = \"control\"\n",
            secret.path().display().to_string()
        ));
        let loaded = load(&Layers {
            file: Some(cfg.path()),
            ..Layers::default()
        })
        .expect("valid");
        let printed = render_effective(&loaded);
        for token in ["viewer-token-0001", "control-token-001"] {
            assert!(!printed.contains(token), "{printed}");
        }
        assert!(
            printed.contains("# tokens holds 2 static token(s), roles view, control (file "),
            "{printed}"
        );
        let again = load(&Layers {
            file: Some(file(&printed).path()),
            ..Layers::default()
        })
        .expect("the printed config loads");
        let mut want = loaded.settings.clone();
        want.auth.tokens.clear();
        assert_eq!(again.settings, want);

        // With tokens as the only credentials, the printed token mode has
        // nothing to check offers against: loading it fails closed, naming
        // auth.mode, instead of quietly opening the camera.
        let cfg = file(
            "[auth]\nmode = \"token\"\n[[auth.tokens]]\ntoken = \"viewer-token-0001\"\nrole = \"view\"\n",
        );
        let loaded = load(&Layers {
            file: Some(cfg.path()),
            ..Layers::default()
        })
        .expect("valid");
        let printed = render_effective(&loaded);
        assert!(printed.contains("put the tokens back"), "{printed}");
        let e = load(&Layers {
            file: Some(file(&printed).path()),
            ..Layers::default()
        })
        .expect_err("token mode without its tokens");
        assert_eq!(e.key(), Some("auth.mode"), "{e}");
    }

    #[test]
    fn syntax_errors_and_missing_files_are_reported() {
        let f = file("[video\nwidth = 1");
        assert!(matches!(
            load(&Layers {
                file: Some(f.path()),
                ..Layers::default()
            }),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            load(&Layers {
                file: Some(Path::new("/nonexistent/rtcam.toml")),
                ..Layers::default()
            }),
            Err(ConfigError::Io { .. })
        ));
    }

    #[test]
    fn effective_config_lists_every_key_and_reparses() {
        let loaded = load(&Layers::default()).expect("defaults");
        let text = render_effective(&loaded);
        for key in keys::KEYS {
            let name = key.split().1;
            assert!(
                text.contains(&format!("{name} = "))
                    || text.contains(&format!("# {name} is not set")),
                "{} missing from:\n{text}",
                key.path
            );
        }
        let f = file(&text);
        let again = load(&Layers {
            file: Some(f.path()),
            ..Layers::default()
        })
        .expect("printed config is valid input");
        assert_eq!(again.settings, loaded.settings);
    }

    #[test]
    fn the_turn_secret_is_read_checked_and_never_printed() {
        let secret = file("a-turn-secret-of-some-length\n");
        let cfg = file(&format!(
            "[webrtc]\nturn_secret_file = {:?}\nice_servers = [{{ urls = [\"turn:t:3478\"] }}, {{ urls = [\"turn:u\"], username = \"cam\", credential = \"static-turn-pw\" }}]\n",
            secret.path().display().to_string()
        ));
        let loaded = load(&Layers {
            file: Some(cfg.path()),
            ..Layers::default()
        })
        .expect("valid");
        assert_eq!(
            loaded
                .settings
                .webrtc
                .turn_secret
                .as_ref()
                .map(|s| s.expose()),
            Some("a-turn-secret-of-some-length")
        );
        let printed = render_effective(&loaded);
        assert!(
            !printed.contains("a-turn-secret-of-some-length"),
            "{printed}"
        );
        assert!(!printed.contains("static-turn-pw"), "{printed}");
        assert!(
            printed.contains("# ice_servers: the static credential of entry 1 is set"),
            "{printed}"
        );
        let short = file("short\n");
        let cfg = file(&format!(
            "[webrtc]\nturn_secret_file = {:?}\n",
            short.path().display().to_string()
        ));
        let e = load(&Layers {
            file: Some(cfg.path()),
            ..Layers::default()
        })
        .expect_err("too short");
        assert_eq!(e.key(), Some("webrtc.turn_secret_file"));
        assert!(!e.to_string().contains("short\n"), "{e}");
    }

    #[test]
    fn example_file_documents_every_key_and_loads() {
        // The example ships with the rtcam package, one directory up.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rtcam.example.toml");
        let text = std::fs::read_to_string(&path).expect("rtcam.example.toml exists");
        // (section, key) pairs written in the example, commented out or not.
        let mut documented = std::collections::HashSet::new();
        let mut section = String::new();
        for line in text.lines() {
            let l = line.trim_start_matches(['#', ' ']).trim_end();
            if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
                section = name
                    .trim_matches(['[', ']'])
                    .split('.')
                    .next()
                    .unwrap_or("")
                    .to_string();
            } else if let Some((name, _)) = l.split_once('=') {
                documented.insert((section.clone(), name.trim().to_string()));
            }
        }
        for key in keys::KEYS {
            let (sec, name) = key.split();
            assert!(
                documented.contains(&(sec.to_string(), name.to_string())),
                "{} is not documented in rtcam.example.toml",
                key.path
            );
        }
        let loaded = load(&Layers {
            file: Some(&path),
            ..Layers::default()
        })
        .expect("the example is valid");
        assert_eq!(
            loaded.settings,
            Settings::default(),
            "the example shows the defaults"
        );
    }
}
