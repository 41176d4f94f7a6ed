//! Configuration from outside: a TOML file's text, `RTCAM_*` environment
//! variables and CLI flag values, and the small parsers behind them. No
//! input may panic; an error names the key it is about; a configuration
//! that loads prints (`rtcam config --print`) as one that loads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcam_proto::config::keys::{self, KEYS, Kind};
use rtcam_proto::config::settings::{AuthMode, check_topic_prefix, parse_mqtt_url};
use rtcam_proto::config::{ConfigError, Layers, load, render_effective};
use rtcam_proto::gpio::pins::PinRef;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch file per fuzzing process (under $TMPDIR, which .ci/fuzz sets).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("rtcam-fuzz-config-{}.toml", std::process::id()))
    })
}

/// `…_file` keys (`mqtt.password_file`) make `load` read the named file:
/// the fuzzer must not pick one (`/dev/zero`, a FIFO), so such inputs are
/// skipped.
fn names_a_file(table: &toml::Table) -> bool {
    table.values().any(|section| {
        section
            .as_table()
            .is_some_and(|t| t.keys().any(|k| k.ends_with("_file")))
    })
}

fn check(result: Result<rtcam_proto::config::Loaded, ConfigError>) {
    match result {
        Ok(loaded) => {
            let printed = render_effective(&loaded);
            std::fs::write(scratch(), &printed).expect("scratch file");
            let again = load(&Layers {
                file: Some(scratch()),
                ..Layers::default()
            });
            let auth = &loaded.settings.auth;
            if auth.mode == AuthMode::Token && auth.secret_file.is_none() && !auth.tokens.is_empty()
            {
                // Token mode whose only credentials are the (unprinted)
                // static tokens fails closed, naming auth.mode.
                let e = again
                    .map(|_| ())
                    .expect_err("token mode without its tokens");
                assert_eq!(e.key(), Some("auth.mode"), "{e}\n{printed}");
                return;
            }
            let again =
                again.unwrap_or_else(|e| panic!("printed config does not load: {e}\n{printed}"));
            // Secrets are never printed.
            let mut want = loaded.settings.clone();
            want.mqtt.password = None;
            want.auth.tokens.clear();
            assert_eq!(again.settings, want, "{printed}");
        }
        // The scratch file itself when it is not UTF-8; no other file is read.
        Err(ConfigError::Io { path, .. }) => assert_eq!(&path, scratch()),
        Err(e @ (ConfigError::UnknownKey { .. } | ConfigError::Invalid { .. })) => {
            assert!(e.key().is_some_and(|k| !k.is_empty()), "{e}")
        }
        Err(ConfigError::Syntax { .. } | ConfigError::UnknownEnv(_)) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        // The whole input is the config file.
        0 => {
            if let Ok(table) = toml::from_str::<toml::Table>(&text) {
                if names_a_file(&table) {
                    return;
                }
            }
            std::fs::write(scratch(), rest).expect("scratch file");
            check(load(&Layers {
                file: Some(scratch()),
                ..Layers::default()
            }));
        }
        // Lines of env/flag overrides: the first byte of a line picks the key
        // (and whether it is a flag or a variable), the rest is its text.
        1 => {
            let mut layers = Layers::default();
            for line in text.split('\n') {
                let mut chars = line.chars();
                let Some(c) = chars.next() else { continue };
                let key = &KEYS[c as usize % KEYS.len()];
                if key.path.ends_with("_file") {
                    continue;
                }
                let value = chars.as_str().to_string();
                if (c as u32 / KEYS.len() as u32) % 2 == 0 {
                    layers.env.push((key.env(), value));
                } else {
                    layers.flags.push((key, value));
                }
            }
            check(load(&layers));
        }
        // The small parsers on their own.
        _ => {
            for kind in [
                Kind::Str,
                Kind::Int,
                Kind::Bool,
                Kind::Array(keys::Entry::Pin),
            ] {
                let _ = keys::parse_text(kind, &text);
            }
            let _ = keys::find(&text);
            let _ = check_topic_prefix(&text);
            if let Ok(pin) = PinRef::parse_text(&text) {
                assert!(!pin.to_string().is_empty());
            }
            if let Ok(url) = parse_mqtt_url(&text) {
                assert!(!url.host.is_empty() && url.port > 0);
                assert_eq!(parse_mqtt_url(&url.to_string()), Ok(url));
            }
        }
    }
});
