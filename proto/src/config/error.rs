//! Configuration errors: each names the key, the bad value, where it came
//! from and what is allowed.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built-in default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "environment {v}"),
            Origin::Flag(n) => write!(f, "flag --{n}"),
        }
    }
}

/// Why the configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// File path.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// A key rtcam does not know.
    #[error("unknown config key {key} ({origin}); known keys in [{section}]: {known}")]
    UnknownKey {
        /// Dotted path of the key.
        key: String,
        /// Section it was in.
        section: String,
        /// Known keys of that section.
        known: String,
        /// Where it came from.
        origin: Origin,
    },
    /// An `RTCAM_*` variable that is not a key.
    #[error("unknown environment variable {0}: it matches no config key (see `rtcam --help`)")]
    UnknownEnv(String),
    /// A value of the wrong type or outside what is allowed.
    #[error("invalid {key} = {value} ({origin}): {allowed}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// The offending value as written.
        value: String,
        /// What is allowed.
        allowed: String,
        /// Where it came from.
        origin: Origin,
    },
}

impl ConfigError {
    /// The dotted key this error is about, if any (tests match on it).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}
