//! The `rtcam` binary: parses the command line, loads the configuration and
//! dispatches to the library. Errors end here, as `anyhow` reports.

use anyhow::{Context, Result};
use rtcam::bench;
use rtcam::cli::{self, BenchCommand, Command};
use rtcam::config::{self, Layers, Settings};
use rtcam::encode::EncoderSettings;
use rtcam::hub::Hub;
use rtcam::hub::policy::PolicyConfig;
use rtcam::pipeline::{Pipeline, PipelineOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
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
    match dispatch(cli.command.unwrap_or(Command::Run), &loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtcam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn pipeline_for(settings: &Settings) -> Result<(std::sync::Arc<Hub>, Pipeline)> {
    let v = &settings.video;
    let hub = Hub::new(
        PolicyConfig {
            always_on: v.always_on,
            ..PolicyConfig::default()
        },
        v.bitrate_kbps,
    );
    let pipeline = Pipeline::spawn(
        rtcam::capture::factory_for(v),
        hub.clone(),
        PipelineOptions {
            encoder: EncoderSettings {
                width: v.width,
                height: v.height,
                fps: v.fps,
                bitrate_kbps: v.bitrate_kbps,
                keyframe_interval: v.keyframe_interval,
            },
            backoff: rtcam::backoff::Backoff::standard(),
        },
    )
    .context("cannot start the media thread")?;
    Ok((hub, pipeline))
}

fn dispatch(command: Command, loaded: &config::Loaded) -> Result<()> {
    let settings = &loaded.settings;
    match command {
        Command::Run => {
            let (_hub, pipeline) = pipeline_for(settings)?;
            tracing::info!(source = %settings.video.source.as_config(), "rtcam running; Ctrl-C to stop");
            runtime()?
                .block_on(tokio::signal::ctrl_c())
                .context("waiting for Ctrl-C")?;
            pipeline.shutdown();
            Ok(())
        }
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
                rtcam::capture::devices::render(&rtcam::capture::devices::list((
                    v.width, v.height, v.fps
                )))
            );
            Ok(())
        }
        Command::Record { frames, output } => {
            let (hub, pipeline) = pipeline_for(settings)?;
            let summary = runtime()?.block_on(async {
                let mut sub = hub.subscribe();
                rtcam::record::record(&mut sub, frames, &output).await
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
    }
}

fn run_bench(what: BenchCommand) -> Result<()> {
    match what {
        BenchCommand::Encoder {
            width,
            height,
            bitrate_kbps,
            frames,
        } => {
            let r = bench::encoder(width, height, bitrate_kbps, frames)?;
            println!(
                "encoder {width}x{height} @ {bitrate_kbps} kbit/s: {:.1} frames per CPU-second ({:.2} ms/frame, {} frames, {:.0} kbit/s at 30 fps)",
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
        } => {
            let r = bench::pipeline(width, height, fps, bitrate_kbps, seconds, subscribers)?;
            println!(
                "pipeline {width}x{height}@{fps}, {subscribers} subscribers: {:.2} ms CPU per frame ({} frames, each subscriber got >= {})",
                r.ms_per_frame(),
                r.frames,
                r.min_received
            );
        }
        BenchCommand::All { seconds, rounds } => {
            print!("{}", bench::report_all(seconds, rounds)?);
        }
    }
    Ok(())
}
