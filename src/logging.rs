//! Log setup: `RTCAM_LOG` filter (default `info`), to stderr. Under systemd
//! (`JOURNAL_STREAM` set) lines carry no ANSI colour and no timestamp, since
//! journald adds its own.

use tracing_subscriber::EnvFilter;

/// Default filter: rumqttd logs every ordinary disconnect as an error.
pub const DEFAULT_FILTER: &str = "info,rumqttd=warn,webrtc=warn,rtc=warn";

/// Installs the global subscriber; a second call is a no-op.
pub fn init() {
    let filter =
        EnvFilter::try_from_env("RTCAM_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.with_ansi(false).without_time().try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests call init more than once): keep the first.
    let _ = result;
}
