//! The `rtcam` binary: parses the command line, loads the configuration and
//! dispatches to the library. Errors end here, as `anyhow` reports.

use anyhow::{Context, Result};
use rtcam::bench;
use rtcam::cli::{self, BenchCommand, BenchEncoderKind, Command};
use rtcam::config::{self, Layers, Settings};
use rtcam::media::encode::{EncoderControl, EncoderSettings};
use rtcam::media::hub::Hub;
use rtcam::media::hub::policy::PolicyConfig;
use rtcam::media::pipeline::{Pipeline, PipelineOptions};
use std::process::ExitCode;

/// How long the process waits at exit for its queued log lines.
const LOG_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    let code = run_main();
    // The log is written by a thread of its own: let it finish (bounded,
    // since stderr may be blocked).
    rtcam::logging::flush(LOG_FLUSH);
    code
}

fn run_main() -> ExitCode {
    let (cli, overrides) = match cli::parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    rtcam::logging::init();
    let layers = Layers {
        file: cli.config.as_deref(),
        env: std::env::vars().collect(),
        flags: overrides,
    };
    let loaded = match config::load(&layers) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rtcam: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // The agent reads its TLS files when it starts: a check that passed
    // while they are missing or unreadable would let the restart fail.
    if matches!(cli.command, Some(Command::Config { check: true, .. }))
        && let Err(e) = check_tls_files(&loaded.settings)
    {
        eprintln!("rtcam: configuration error: {e}");
        return ExitCode::from(2);
    }
    match dispatch(cli.command.unwrap_or(Command::Run), &loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtcam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The CA, client certificate and key of an `mqtts://` or `wss://` broker
/// URL, read and parsed as the agent does when it connects.
fn check_tls_files(settings: &Settings) -> Result<(), rtcam::signaling::mqtt::MqttError> {
    use rtcam::config::settings::MqttScheme;
    match settings.mqtt.url.as_ref().map(|u| u.scheme) {
        Some(MqttScheme::Mqtts | MqttScheme::Wss) => {
            rtcam::signaling::mqtt::TlsFiles::from_settings(&settings.mqtt).check()
        }
        _ => Ok(()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn pipeline_for(
    settings: &Settings,
    backoff: rtcam::backoff::Backoff,
) -> Result<(std::sync::Arc<Hub>, Pipeline)> {
    let v = &settings.video;
    let policy = PolicyConfig {
        always_on: v.always_on,
        ..PolicyConfig::default()
    };
    let encoder = EncoderControl::new(policy.drop_keyframe_gap, v.bitrate_kbps);
    let hub = Hub::new(policy, encoder.clone());
    let pipeline = Pipeline::spawn(
        rtcam::media::capture::factory_for(v),
        hub.clone(),
        encoder,
        PipelineOptions {
            encoder: EncoderSettings::from_video(v),
            backoff,
        },
    )
    .context("cannot start the media thread")?;
    Ok((hub, pipeline))
}

fn dispatch(command: Command, loaded: &config::Loaded) -> Result<()> {
    let settings = &loaded.settings;
    match command {
        Command::Run => runtime()?.block_on(run_agent(settings.clone())),
        Command::Probe {
            seconds,
            client_id,
            no_video,
            audio,
            token,
            json,
            timeout,
        } => runtime()?.block_on(run_probe(
            settings,
            seconds,
            client_id,
            (!no_video, audio),
            token,
            json,
            timeout,
        )),
        Command::Config { check: true, .. } => {
            println!("configuration OK");
            Ok(())
        }
        Command::Config { .. } => {
            print!("{}", config::render_effective(loaded));
            Ok(())
        }
        Command::Devices => {
            let v = &settings.video;
            print!(
                "{}",
                rtcam::media::capture::devices::render(&rtcam::media::capture::devices::list((
                    v.width, v.height, v.fps
                )))
            );
            print!(
                "{}",
                rtcam::media::encode::m2m_devices::render(
                    &rtcam::media::encode::m2m_devices::list()
                )
            );
            Ok(())
        }
        Command::Record {
            frames,
            output,
            timeout,
        } => {
            // A camera that comes back is reopened within 2 s: `record`
            // waits for it (up to --timeout) rather than backing off to 10 s.
            let backoff = rtcam::backoff::Backoff::new(
                std::time::Duration::from_millis(500),
                std::time::Duration::from_secs(2),
            );
            let (hub, pipeline) = pipeline_for(settings, backoff)?;
            let timeout = std::time::Duration::from_secs(u64::from(timeout));
            let summary = runtime()?.block_on(async {
                let mut sub = hub.subscribe();
                rtcam::record::record(&mut sub, frames, &output, timeout).await
            });
            pipeline.shutdown();
            let s = summary?;
            eprintln!(
                "wrote {} frames ({} keyframes, {} bytes) to {}",
                s.frames,
                s.keyframes,
                s.bytes,
                output.display()
            );
            Ok(())
        }
        Command::Bench { what } => run_bench(what),
        Command::Token { role, ttl } => {
            let role = rtcam::auth::Role::parse(&role).context("--role must be view or control")?;
            let ttl = rtcam::auth::parse_ttl(&ttl).map_err(|e| anyhow::anyhow!("--ttl {e}"))?;
            let secret = settings.auth.secret.as_ref().context(
                "no signing secret: create one (e.g. `head -c 32 /dev/urandom | base64 > /etc/rtcam/token.key`) \
                 and set [auth] secret_file to its path",
            )?;
            let max = settings.auth.max_token_ttl;
            if ttl > max {
                anyhow::bail!(
                    "--ttl {} is longer than auth.max_token_ttl ({}): the camera would refuse the token",
                    humantime::format_duration(ttl),
                    humantime::format_duration(max)
                );
            }
            let expires = std::time::SystemTime::now() + ttl;
            let unix = expires
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?
                .as_secs();
            println!(
                "{}",
                rtcam::auth::mint(
                    secret.expose().as_bytes(),
                    role,
                    &settings.auth.audience,
                    unix
                )
            );
            eprintln!(
                "{} token for {} valid until {} (accepted when [auth] mode = \"token\")",
                role.as_str(),
                settings.auth.audience,
                humantime::format_rfc3339_seconds(expires)
            );
            Ok(())
        }
    }
}

async fn run_agent(settings: Settings) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let notifier = rtcam::systemd::Notifier;
    let agent = rtcam::agent::Agent::start(settings, rtcam::agent::AgentOptions::default()).await?;
    // Ready once configured and serving; the broker may still be unreachable.
    notifier.ready();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // A second signal during the graceful stop exits at once.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("rtcam: second signal, exiting now");
        rtcam::logging::flush(std::time::Duration::from_millis(200));
        std::process::exit(130);
    });
    notifier.stopping();
    agent.shutdown().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the probe subcommand's flags, passed through once
async fn run_probe(
    settings: &Settings,
    seconds: u32,
    client_id: Option<String>,
    (video, audio): (bool, bool),
    token: Option<String>,
    json: bool,
    timeout: u32,
) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cid = client_id.unwrap_or_else(|| format!("probe-{:08x}", std::process::id()));
    let client_id = rtcam::signaling::topics::ClientId::parse(&cid).context("--client-id")?;
    let opts = rtcam::probe::ViewerOptions {
        mqtt: rtcam::probe::mqtt_options_for(settings, &cid),
        topic_prefix: settings.mqtt.topic_prefix.clone(),
        client_id,
        video,
        control: true,
        token,
        peer: rtcam::peer::PeerOptions::for_viewer(&settings.webrtc),
        timeout: std::time::Duration::from_secs(u64::from(timeout)),
        decode: true,
        replaces: None,
        audio,
    };
    let report =
        rtcam::probe::probe(&opts, std::time::Duration::from_secs(u64::from(seconds))).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        println!("time to first frame: {}", ms(report.time_to_first_frame_ms));
        println!(
            "frames decoded: {} ({:.1} fps) at {}x{}, first frame keyframe: {}",
            report.frames_decoded,
            report.fps,
            report.width,
            report.height,
            report.first_frame_keyframe
        );
        println!(
            "latency (block code): median {}, p95 {} over {} frames",
            ms(report.latency_median_ms),
            ms(report.latency_p95_ms),
            report.latency_samples
        );
        println!(
            "keyframes {}, decode errors {}, sequence gaps {}",
            report.keyframes, report.decode_errors, report.sequence_gaps
        );
        println!(
            "freezes (gaps over 200 ms): {}, {:.0} ms in all, longest {:.0} ms; ICE restarts {}, reconnects {}",
            report.freezes,
            report.freeze_ms,
            report.longest_freeze_ms,
            report.ice_restarts,
            report.reconnects
        );
        if audio {
            println!(
                "audio: {} Opus packets ({} undecodable, {} stereo); test tone: {} beeps at {}, latency median {}, offset from video {}",
                report.audio_packets,
                report.audio_decode_errors,
                report.audio_stereo_packets,
                report.tone_beeps,
                report
                    .tone_hz
                    .map_or("-".to_string(), |hz| format!("{hz:.0} Hz")),
                ms(report.audio_latency_median_ms),
                ms(report.av_offset_ms)
            );
        }
    }
    Ok(())
}

fn run_bench(what: BenchCommand) -> Result<()> {
    match what {
        BenchCommand::Encoder {
            width,
            height,
            bitrate_kbps,
            frames,
            threads,
            encoder,
        } => {
            let s = encoder.apply(bench::settings(width, height, 30, bitrate_kbps, threads));
            let r = bench::encoder(&s, frames)?;
            let what = match encoder.encoder {
                BenchEncoderKind::Openh264 => format!("{threads} threads"),
                BenchEncoderKind::V4l2m2m => format!("v4l2m2m {}", s.coded),
            };
            println!(
                "encoder {width}x{height} @ {bitrate_kbps} kbit/s, {what}: {:.1} frames/s, {:.1} frames per CPU-second ({:.2} ms CPU/frame, {} frames, {:.0} kbit/s at 30 fps)",
                r.wall_fps(),
                r.fps(),
                r.ms_per_frame(),
                r.frames,
                r.bytes as f64 * 8.0 / 1000.0 / (f64::from(r.frames) / 30.0)
            );
        }
        BenchCommand::Pipeline {
            width,
            height,
            fps,
            bitrate_kbps,
            seconds,
            subscribers,
            threads,
            encoder,
        } => {
            let s = encoder.apply(bench::settings(width, height, fps, bitrate_kbps, threads));
            let r = bench::pipeline(&s, seconds, subscribers)?;
            println!(
                "pipeline {width}x{height}@{fps}, {subscribers} subscribers: {:.2} ms CPU per frame ({} frames, each subscriber got >= {})",
                r.ms_per_frame(),
                r.frames,
                r.min_received
            );
        }
        BenchCommand::Viewers {
            runs,
            latency_seconds,
            load_seconds,
        } => {
            let opts = rtcam::bench::viewers::ViewersBenchOptions {
                runs,
                latency_seconds,
                load_seconds,
            };
            print!(
                "{}",
                runtime()?.block_on(rtcam::bench::viewers::run(&opts))?
            );
        }
        BenchCommand::Threads {
            frames,
            seconds,
            rounds,
        } => {
            print!("{}", bench::report_threads(frames, seconds, rounds)?);
        }
        BenchCommand::Ratio {
            width,
            height,
            fps,
            bitrate_kbps,
            seconds,
            rounds,
            threads,
            encoder,
        } => {
            let s = encoder.apply(bench::settings(width, height, fps, bitrate_kbps, threads));
            print!("{}", bench::report_ratio(&s, seconds, rounds)?);
        }
        BenchCommand::Latency {
            width,
            height,
            fps,
            bitrate_kbps,
            seconds,
            threads,
            encoder,
        } => {
            let s = encoder.apply(bench::settings(width, height, fps, bitrate_kbps, threads));
            print!("{}", bench::latency(&s, seconds)?);
        }
        BenchCommand::Motion {
            width,
            height,
            frames,
        } => {
            let s = bench::settings(width, height, 30, 2000, 1);
            print!("{}", bench::motion(&s, frames)?);
        }
        BenchCommand::All { seconds, rounds } => {
            print!("{}", bench::report_all(seconds, rounds)?);
        }
    }
    Ok(())
}
