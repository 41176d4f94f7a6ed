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
    /// `video.passthrough`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
    /// `video.always_on`, see the key registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always_on: Option<bool>,
}
