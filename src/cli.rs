//! The command line: `rtcam [--config FILE] [config overrides] [SUBCOMMAND]`.
//! Every config key also has a global flag derived from the key registry
//! (`video.width` → `--video-width`).

use crate::config::EncoderPref;
use crate::config::keys::{self, Key, Kind};
use crate::media::encode::{CodedFormat, EncoderSettings};
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "rtcam",
    version,
    about = "WebRTC camera daemon: V4L2 capture, H.264, MQTT signaling, GPIO control"
)]
pub struct Cli {
    /// Config file (TOML); also RTCAM_CONFIG.
    #[arg(long, global = true, env = "RTCAM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do; runs the agent when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (the default).
    Run,
    /// Show or check the effective configuration.
    Config {
        /// Print the effective configuration as TOML (the default action).
        #[arg(long)]
        print: bool,
        /// Only check that the configuration is valid.
        #[arg(long, conflicts_with = "print")]
        check: bool,
    },
    /// List V4L2 capture devices with their formats, sizes and rates, then the memory-to-memory encoders.
    Devices,
    /// Record the encoded stream to an Annex B H.264 file.
    Record {
        /// Number of frames to write.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        frames: u32,
        /// Output file (`-` for stdout).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
        /// Seconds to wait without a frame before giving up: a camera that is
        /// unplugged and comes back within them is reopened and recorded on.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86_400))]
        timeout: u32,
    },
    /// Watch the camera like a browser would (through MQTT and WebRTC) and report frames, rate, latency and freezes; restart ICE, then reconnect, by itself if the video stalls.
    Probe {
        /// Seconds to watch after the first frame.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Signaling client id (default: probe-<random>).
        #[arg(long)]
        client_id: Option<String>,
        /// Open only the DataChannel, no video.
        #[arg(long)]
        no_video: bool,
        /// Also receive the camera's microphone, decode it and report the
        /// test tone (`[audio] input = "test"`): frequency, latency and
        /// offset from the video.
        #[arg(long)]
        audio: bool,
        /// Access token to send with the offer.
        #[arg(long)]
        token: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the broker, the answer and the first frame.
        #[arg(long, default_value_t = 20)]
        timeout: u32,
    },
    /// Mint a signed, expiring viewer token (needs `auth.secret_file`).
    Token {
        /// What the token allows: `view` (watch, read state) or `control` (also drive GPIO and the camera).
        #[arg(long, value_parser = ["view", "control"])]
        role: String,
        /// How long it is valid, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Measure encoder and pipeline CPU cost.
    Bench {
        /// What to measure.
        #[command(subcommand)]
        what: BenchCommand,
    },
}

/// `rtcam bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Encoder alone: frames per CPU-second and per wall-clock second.
    Encoder {
        /// Picture width.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Picture height.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Target bitrate in kbit/s.
        #[arg(long, default_value_t = 2000)]
        bitrate_kbps: u32,
        /// Frames to encode.
        #[arg(long, default_value_t = 300)]
        frames: u32,
        /// OpenH264 threads (0: one per core, at most 4).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=4))]
        threads: u32,
        /// Which encoder to measure.
        #[command(flatten)]
        encoder: BenchEncoderArgs,
    },
    /// Whole pipeline in real time: CPU time per frame with N subscribers.
    Pipeline {
        /// Picture width.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Picture height.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Frame rate.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Target bitrate in kbit/s.
        #[arg(long, default_value_t = 2000)]
        bitrate_kbps: u32,
        /// Seconds to measure (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Subscribers draining the hub.
        #[arg(long, default_value_t = 1)]
        subscribers: u32,
        /// OpenH264 threads (0: one per core, at most 4).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=4))]
        threads: u32,
        /// Which encoder to measure.
        #[command(flatten)]
        encoder: BenchEncoderArgs,
    },
    /// The agent with real WebRTC viewers over loopback: first frame, latency, CPU and RSS per viewer, and the sound.
    /// Run inside a private network namespace.
    Viewers {
        /// Offer-to-first-frame runs.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Seconds of latency measurement.
        #[arg(long, default_value_t = 10)]
        latency_seconds: u32,
        /// Seconds per CPU/RSS window.
        #[arg(long, default_value_t = 10)]
        load_seconds: u32,
    },
    /// OpenH264 thread scaling (1, 2, 4 threads at 720p and 1080p) and the pipeline's ratio to the encoder.
    Threads {
        /// Frames per flat-out encoder run.
        #[arg(long, default_value_t = 300)]
        frames: u32,
        /// Seconds per real-time run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Interleaved rounds of the real-time runs; medians are reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
    },
    /// The pipeline's CPU per frame over the encoder's alone, both in real time, for one encoder.
    Ratio {
        /// Picture width.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Picture height.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Frame rate.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Target bitrate in kbit/s.
        #[arg(long, default_value_t = 2000)]
        bitrate_kbps: u32,
        /// Seconds per real-time run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Interleaved rounds; medians are reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
        /// OpenH264 threads (0: one per core, at most 4).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=4))]
        threads: u32,
        /// Which encoder to measure.
        #[command(flatten)]
        encoder: BenchEncoderArgs,
    },
    /// Where a frame's time goes: p50/p95/max per stage of the media thread, and on to a subscriber.
    Latency {
        /// Picture width.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Picture height.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Frame rate.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Target bitrate in kbit/s.
        #[arg(long, default_value_t = 2000)]
        bitrate_kbps: u32,
        /// Seconds to measure (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// OpenH264 threads (0: one per core, at most 4).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=4))]
        threads: u32,
        /// Which encoder to measure.
        #[command(flatten)]
        encoder: BenchEncoderArgs,
    },
    /// Motion detection's CPU per frame against the encoder's, on the same frames.
    Motion {
        /// Picture width.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Picture height.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Frames.
        #[arg(long, default_value_t = 300)]
        frames: u32,
    },
    /// Everything docs/BENCHMARKS.md reports for the media pipeline, with ratios.
    All {
        /// Seconds per real-time run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Interleaved rounds of the real-time runs; medians are reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
    },
}

/// The encoder a benchmark measures (`--encoder`, `--device`, `--codec`).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchEncoderArgs {
    /// Encoder to measure: openh264, or v4l2m2m (the board's memory-to-memory encoder, fed I420 by MMAP).
    #[arg(long, value_enum, default_value_t = BenchEncoderKind::Openh264)]
    pub encoder: BenchEncoderKind,
    /// The v4l2m2m encoder's node (default: the first whose capture queue gives --codec).
    #[arg(long)]
    pub device: Option<std::path::PathBuf>,
    /// What the v4l2m2m encoder produces: h264, or fwht (the kernel lab's vicodec).
    #[arg(long, value_enum, default_value_t = BenchCodec::H264)]
    pub codec: BenchCodec,
}

impl BenchEncoderArgs {
    /// `base` with this choice of encoder applied.
    pub fn apply(&self, base: EncoderSettings) -> EncoderSettings {
        EncoderSettings {
            pref: match self.encoder {
                BenchEncoderKind::Openh264 => EncoderPref::OpenH264,
                BenchEncoderKind::V4l2m2m => EncoderPref::V4l2M2m,
            },
            device: self.device.clone(),
            coded: match self.codec {
                BenchCodec::H264 => CodedFormat::H264,
                BenchCodec::Fwht => CodedFormat::Fwht,
            },
            ..base
        }
    }
}

/// `rtcam bench --encoder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchEncoderKind {
    /// OpenH264 in software.
    Openh264,
    /// A V4L2 memory-to-memory encoder.
    V4l2m2m,
}

/// `rtcam bench --codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchCodec {
    /// H.264.
    H264,
    /// FWHT (vicodec, the kernel lab's stand-in for a hardware H.264 encoder).
    Fwht,
}

/// The command definition with one global flag per config key.
pub fn command() -> clap::Command {
    Cli::command().args(keys::KEYS.iter().map(|k| {
        let value_name = match k.kind {
            Kind::Str => "TEXT",
            Kind::Int => "N",
            Kind::Float => "NUM",
            Kind::Bool => "BOOL",
            Kind::Array(_) => "TOML-ARRAY",
        };
        Arg::new(k.path)
            .long(k.flag())
            .global(true)
            .value_name(value_name)
            .action(ArgAction::Set)
            .help(format!("{} [env {}]", k.help, k.env()))
            .help_heading("Config overrides (flag > env > file)")
    }))
}

/// Config overrides given as flags: the key and the flag's text.
pub type FlagOverrides = Vec<(&'static Key, String)>;

/// Parses arguments into the CLI and the config overrides given as flags.
pub fn parse_from<I, T>(args: I) -> Result<(Cli, FlagOverrides), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, overrides(&matches)))
}

fn overrides(matches: &ArgMatches) -> FlagOverrides {
    // Global args are visible from the subcommand's matches too; read the deepest.
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    keys::KEYS
        .iter()
        .filter_map(|k| {
            m.get_one::<String>(k.path)
                .or_else(|| matches.get_one::<String>(k.path))
                .map(|v| (k, v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_global_and_run_is_default() {
        let (cli, o) = parse_from(["rtcam", "--config", "/etc/rtcam.toml"]).expect("valid");
        assert_eq!(
            cli.config.as_deref(),
            Some(std::path::Path::new("/etc/rtcam.toml"))
        );
        assert!(cli.command.is_none());
        assert!(o.is_empty());
        let (cli, _) =
            parse_from(["rtcam", "--config", "x.toml", "config", "--print"]).expect("valid");
        assert!(matches!(
            cli.command,
            Some(Command::Config { print: true, .. })
        ));
    }

    #[test]
    fn key_flags_work_before_and_after_subcommands() {
        let (_, o) = parse_from([
            "rtcam",
            "--video-width",
            "640",
            "record",
            "--frames",
            "5",
            "-o",
            "x.h264",
            "--video-fps",
            "15",
        ])
        .expect("valid");
        let got: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.path, v.as_str())).collect();
        assert_eq!(got, [("video.width", "640"), ("video.fps", "15")]);
    }

    #[test]
    fn record_needs_a_frame_count() {
        assert!(parse_from(["rtcam", "record", "-o", "x.h264"]).is_err());
        assert!(parse_from(["rtcam", "record", "--frames", "0", "-o", "x.h264"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }
}
