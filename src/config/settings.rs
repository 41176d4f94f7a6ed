//! Validated, typed settings, and the rules that turn [`RawConfig`] into them.
//! Defaults live here, once. Pure.

use super::error::{ConfigError, Origin};
use super::raw::{RawConfig, RawVideo};
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

/// Everything the agent needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `[video]`
    pub video: VideoSettings,
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

/// Validates raw config into settings; the error names the first bad key.
pub fn validate(raw: &RawConfig, origin: OriginOf<'_>) -> Result<Settings, ConfigError> {
    Ok(Settings {
        video: video(&raw.video, origin)?,
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
    fn device_paths_are_accepted() {
        let mut raw = RawConfig::default();
        raw.video.source = Some("/dev/video2".into());
        assert_eq!(
            check(raw).expect("valid").video.source,
            SourceSpec::Device("/dev/video2".into())
        );
    }
}
