//! `[rtsp]`: the RTSP server's section, raw and validated, kept in a file of
//! its own so the RTSP door's configuration sits in one place. Pure.

use super::error::ConfigError;
use super::settings::{OriginOf, Secret, invalid, pair};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// `[rtsp]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRtsp {
    /// `rtsp.listen`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `rtsp.path`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `rtsp.username`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `rtsp.password`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `rtsp.max_clients`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<i64>,
}

/// Credentials RTSP clients must present (Digest or Basic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspCredentials {
    /// User name.
    pub username: String,
    /// Password (never logged or printed).
    pub password: Secret,
}

/// `[rtsp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspSettings {
    /// Listen address; `None`: no RTSP server (the default).
    pub listen: Option<SocketAddr>,
    /// The stream's path without its leading slash (`cam` → `rtsp://host:port/cam`).
    pub path: String,
    /// Credentials clients must present; `None`: anyone may watch.
    pub credentials: Option<RtspCredentials>,
    /// Most RTSP connections at once (counted apart from `webrtc.max_viewers`).
    pub max_clients: usize,
}

impl Default for RtspSettings {
    fn default() -> Self {
        Self {
            listen: None,
            path: DEFAULT_PATH.into(),
            credentials: None,
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }
}

/// The stream's path unless `rtsp.path` says otherwise.
pub const DEFAULT_PATH: &str = "cam";
/// `rtsp.max_clients` unless set.
pub const DEFAULT_MAX_CLIENTS: usize = 4;

/// Validates `[rtsp]`; the error names the first bad key.
pub fn validate(raw: &RawRtsp, origin: OriginOf<'_>) -> Result<RtspSettings, ConfigError> {
    let listen = match raw.listen.as_deref() {
        None | Some("off") | Some("") => None,
        Some(text) => Some(text.parse().map_err(|_| {
            invalid(
                "rtsp.listen",
                format!("{text:?}"),
                "expected ip:port such as 0.0.0.0:8554 or 127.0.0.1:8554, or \"off\"",
                origin,
            )
        })?),
    };
    let path = raw.path.as_deref().unwrap_or(DEFAULT_PATH);
    let path = path.strip_prefix('/').unwrap_or(path);
    // One path segment of URL-safe characters: it is compared with the
    // request URL's path as is, so nothing in it may need escaping.
    let path_ok = !path.is_empty()
        && path.len() <= 64
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !path_ok || path == "." || path == ".." {
        return Err(invalid(
            "rtsp.path",
            format!("{path:?}"),
            "expected one path segment of letters, digits, '-', '_' or '.' (at most 64), e.g. \"cam\"",
            origin,
        ));
    }
    let credentials = match pair(
        ("rtsp.username", raw.username.as_ref()),
        ("rtsp.password", raw.password.as_ref()),
        origin,
    )? {
        None => None,
        Some((u, p)) => {
            // ':' would split the Basic credential at the wrong place; a
            // quote or control character cannot travel in a Digest header.
            if u.is_empty()
                || u.len() > 128
                || u.chars().any(|c| c == ':' || c == '"' || c.is_control())
            {
                return Err(invalid(
                    "rtsp.username",
                    format!("{u:?}"),
                    "expected 1-128 characters without ':', '\"' or control characters",
                    origin,
                ));
            }
            if p.is_empty() || p.len() > 256 || p.chars().any(char::is_control) {
                return Err(invalid(
                    "rtsp.password",
                    "(set)",
                    "expected 1-256 characters without control characters",
                    origin,
                ));
            }
            Some(RtspCredentials {
                username: u.clone(),
                password: Secret::new(p.clone()),
            })
        }
    };
    let max_clients = match raw.max_clients {
        None => DEFAULT_MAX_CLIENTS,
        Some(n @ 1..=64) => n as usize,
        Some(n) => {
            return Err(invalid(
                "rtsp.max_clients",
                n,
                "expected a whole number from 1 to 64",
                origin,
            ));
        }
    };
    Ok(RtspSettings {
        listen,
        path: path.to_string(),
        credentials,
        max_clients,
    })
}

impl RtspSettings {
    /// The raw form (`config --print`); the password is a secret and left out.
    pub fn to_raw(&self) -> RawRtsp {
        RawRtsp {
            listen: Some(self.listen.map_or_else(|| "off".into(), |a| a.to_string())),
            path: Some(self.path.clone()),
            username: self.credentials.as_ref().map(|c| c.username.clone()),
            password: None,
            max_clients: Some(self.max_clients as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn check(raw: RawRtsp) -> Result<RtspSettings, ConfigError> {
        validate(&raw, &|_| Origin::Default)
    }

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("not an invalid key: {other}"),
        }
    }

    #[test]
    fn off_by_default_with_cam_and_four_clients() {
        let s = check(RawRtsp::default()).expect("defaults are valid");
        assert_eq!(s, RtspSettings::default());
        assert_eq!((s.listen, s.path.as_str(), s.max_clients), (None, "cam", 4));
        assert_eq!(check(s.to_raw()).expect("round trip"), s);
    }

    #[test]
    fn listen_path_and_limits_are_checked_by_key() {
        let s = check(RawRtsp {
            listen: Some("0.0.0.0:8554".into()),
            path: Some("/front-door".into()),
            max_clients: Some(10),
            ..RawRtsp::default()
        })
        .expect("valid");
        assert_eq!(s.listen, Some("0.0.0.0:8554".parse().expect("addr")));
        assert_eq!(s.path, "front-door");
        assert_eq!(s.max_clients, 10);
        for (raw, key) in [
            (
                RawRtsp {
                    listen: Some("8554".into()),
                    ..RawRtsp::default()
                },
                "rtsp.listen",
            ),
            (
                RawRtsp {
                    path: Some("a/b".into()),
                    ..RawRtsp::default()
                },
                "rtsp.path",
            ),
            (
                RawRtsp {
                    path: Some("..".into()),
                    ..RawRtsp::default()
                },
                "rtsp.path",
            ),
            (
                RawRtsp {
                    max_clients: Some(0),
                    ..RawRtsp::default()
                },
                "rtsp.max_clients",
            ),
        ] {
            assert_eq!(key_of(check(raw).expect_err("invalid")), key);
        }
    }

    #[test]
    fn credentials_come_in_pairs_and_the_password_is_never_shown() {
        let only_user = RawRtsp {
            username: Some("u".into()),
            ..RawRtsp::default()
        };
        assert_eq!(key_of(check(only_user).expect_err("pair")), "rtsp.password");
        let only_pass = RawRtsp {
            password: Some("p".into()),
            ..RawRtsp::default()
        };
        assert_eq!(key_of(check(only_pass).expect_err("pair")), "rtsp.username");
        let colon = RawRtsp {
            username: Some("a:b".into()),
            password: Some("p".into()),
            ..RawRtsp::default()
        };
        assert_eq!(key_of(check(colon).expect_err("colon")), "rtsp.username");
        let s = check(RawRtsp {
            username: Some("viewer".into()),
            password: Some("hunter2".into()),
            ..RawRtsp::default()
        })
        .expect("valid pair");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.to_raw().password, None);
        let bad = check(RawRtsp {
            username: Some("viewer".into()),
            password: Some("bad\npass".into()),
            ..RawRtsp::default()
        })
        .expect_err("control character");
        assert!(!bad.to_string().contains("bad\npass"), "{bad}");
    }
}
