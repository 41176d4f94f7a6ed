//! `rtcam bench`: CPU cost of the encoder alone and of the whole pipeline,
//! measured with the kernel's CPU clocks (not wall time), so the figures
//! hold on a busy machine; [`viewers`] measures the agent with real viewers.
//! `docs/BENCHMARKS.md` records the results.

pub mod viewers;

use crate::backoff::Backoff;
use crate::config::EncoderPref;
use crate::media::capture::test_pattern::{PatternGenerator, TestPatternFactory};
use crate::media::encode::openh264::OpenH264Encoder;
use crate::media::encode::v4l2m2m::V4l2M2mEncoder;
use crate::media::encode::{
    self, CodedFormat, EncodeError, EncoderControl, EncoderInput, EncoderKind, EncoderSettings,
    VideoEncoder, m2m_devices,
};
use crate::media::frame::I420Image;
use crate::media::hub::Hub;
use crate::media::hub::policy::PolicyConfig;
use crate::media::pipeline::{Pipeline, PipelineOptions};
use std::time::{Duration, Instant};

/// Distinct pattern frames encoded in a loop by the encoder benchmark.
const PREPARED_FRAMES: usize = 60;

/// CPU time consumed by a clock (`CLOCK_THREAD_CPUTIME_ID` or `CLOCK_PROCESS_CPUTIME_ID`).
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    cpu_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (every thread).
pub fn process_cpu() -> Duration {
    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Result of the encoder benchmark.
#[derive(Debug, Clone, Copy)]
pub struct EncoderResult {
    /// Frames encoded.
    pub frames: u32,
    /// CPU time spent encoding: the process's, so OpenH264's worker threads count.
    pub cpu: Duration,
    /// Wall-clock time spent encoding.
    pub wall: Duration,
    /// Output bytes.
    pub bytes: u64,
}

impl EncoderResult {
    /// Frames per CPU-second (= frames/s on one dedicated core).
    pub fn fps(&self) -> f64 {
        f64::from(self.frames) / self.cpu.as_secs_f64().max(1e-9)
    }

    /// Frames per wall-clock second: what the threads achieved together.
    pub fn wall_fps(&self) -> f64 {
        f64::from(self.frames) / self.wall.as_secs_f64().max(1e-9)
    }

    /// CPU milliseconds per frame.
    pub fn ms_per_frame(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / f64::from(self.frames.max(1))
    }
}

/// Test-pattern frames rendered ahead, so only encoding is measured.
fn prepared_frames(width: u32, height: u32) -> Vec<I420Image> {
    let mut pattern = PatternGenerator::new(width as usize, height as usize);
    (0..PREPARED_FRAMES)
        .map(|i| pattern.render(1_700_000_000_000 + i as u64 * 33).clone())
        .collect()
}

/// The benchmarks' encoder settings: an IDR every 2 s, the rest as given.
pub fn settings(
    width: u32,
    height: u32,
    fps: u32,
    bitrate_kbps: u32,
    threads: u32,
) -> EncoderSettings {
    EncoderSettings {
        width,
        height,
        fps,
        bitrate_kbps,
        keyframe_interval: Duration::from_secs(2),
        passthrough: false,
        threads,
        pref: EncoderPref::OpenH264,
        device: None,
        coded: CodedFormat::H264,
    }
}

/// The encoder a benchmark measures: OpenH264, or (`pref = V4l2M2m`) the
/// M2M encoder at `settings.device` or the first that gives `settings.coded`,
/// fed I420 pictures (so the MMAP path: one copy per picture).
pub fn bench_encoder(settings: &EncoderSettings) -> Result<Box<dyn VideoEncoder>, EncodeError> {
    if settings.pref != EncoderPref::V4l2M2m {
        return Ok(Box::new(OpenH264Encoder::new(settings)?));
    }
    let choice = encode::choose(
        crate::media::frame::PixelFormat::I420,
        settings,
        &m2m_devices::list(),
    )?;
    match (choice.kind, choice.device) {
        (EncoderKind::V4l2M2m, Some(device)) => Ok(Box::new(V4l2M2mEncoder::open(
            &device,
            settings.m2m_params(),
            crate::media::frame::PixelFormat::I420,
        )?)),
        _ => Err(EncodeError::Init(choice.why)),
    }
}

/// Encodes `frames` test-pattern frames as fast as the encoder's threads
/// go, counting the process's CPU time and the wall time of the encode
/// calls only.
pub fn encoder(settings: &EncoderSettings, frames: u32) -> Result<EncoderResult, EncodeError> {
    let prepared = prepared_frames(settings.width, settings.height);
    let mut enc = bench_encoder(settings)?;
    let mut bytes = 0u64;
    let (cpu0, wall0) = (process_cpu(), Instant::now());
    for i in 0..frames {
        let pic = prepared[i as usize % PREPARED_FRAMES].view();
        let pts = Duration::from_millis(u64::from(i) * 33);
        if let Some(au) = enc.encode(EncoderInput::I420(pic), pts)? {
            bytes += au.data.len() as u64;
        }
    }
    Ok(EncoderResult {
        frames,
        cpu: process_cpu() - cpu0,
        wall: wall0.elapsed(),
        bytes,
    })
}

/// Encodes pre-rendered frames at `fps` in real time for `seconds`, sleeping
/// between frames like the live pipeline does; the fair baseline for the
/// pipeline's cost ratio (CPU per frame depends on the duty cycle: caches and
/// clock frequency cool down between frames).
pub fn encoder_paced(
    settings: &EncoderSettings,
    seconds: u32,
) -> Result<EncoderResult, EncodeError> {
    let prepared = prepared_frames(settings.width, settings.height);
    let mut enc = bench_encoder(settings)?;
    let interval = Duration::from_secs(1) / settings.fps.max(1);
    let frames = settings.fps * seconds;
    let mut bytes = 0u64;
    let mut cpu = Duration::ZERO;
    let mut wall = Duration::ZERO;
    let mut due = Instant::now();
    for i in 0..frames {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        due += interval;
        let pic = prepared[i as usize % PREPARED_FRAMES].view();
        let (t0, w0) = (process_cpu(), Instant::now());
        if let Some(au) = enc.encode(EncoderInput::I420(pic), interval * i)? {
            bytes += au.data.len() as u64;
        }
        cpu += process_cpu() - t0;
        wall += w0.elapsed();
    }
    Ok(EncoderResult {
        frames,
        cpu,
        wall,
        bytes,
    })
}

/// Result of the pipeline benchmark.
#[derive(Debug, Clone, Copy)]
pub struct PipelineResult {
    /// Subscribers draining the hub.
    pub subscribers: u32,
    /// Frames published during the measured window.
    pub frames: u64,
    /// Process CPU time during the window.
    pub cpu: Duration,
    /// Frames each subscriber received during the window (minimum over subscribers).
    pub min_received: u64,
}

impl PipelineResult {
    /// CPU milliseconds per published frame (whole process).
    pub fn ms_per_frame(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / (self.frames.max(1) as f64)
    }
}

/// Errors of the pipeline benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The encoder failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The media thread could not start.
    #[error("cannot start the pipeline: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Starts test pattern → encoder → hub at the settings' size and rate.
fn spawn_pattern(
    settings: &EncoderSettings,
    policy: PolicyConfig,
) -> Result<(std::sync::Arc<Hub>, Pipeline), BenchError> {
    let control = EncoderControl::new(policy.drop_keyframe_gap, settings.bitrate_kbps);
    let hub = Hub::new(policy, control.clone());
    let pipeline = Pipeline::spawn(
        Box::new(TestPatternFactory::new(
            settings.width as usize,
            settings.height as usize,
            settings.fps,
        )),
        hub.clone(),
        control,
        PipelineOptions {
            encoder: settings.clone(),
            backoff: Backoff::standard(),
        },
    )?;
    Ok((hub, pipeline))
}

/// Runs test pattern → encoder → hub in real time at the settings' rate
/// with `subscribers` draining it on a current-thread runtime (as sessions
/// would), and measures process CPU per frame over `seconds` after one
/// second of warm-up.
pub fn pipeline(
    settings: &EncoderSettings,
    seconds: u32,
    subscribers: u32,
) -> Result<PipelineResult, BenchError> {
    let policy = PolicyConfig {
        always_on: subscribers == 0,
        ..PolicyConfig::default()
    };
    let (hub, pipeline) = spawn_pattern(settings, policy)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let result = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..subscribers {
            let mut sub = hub.subscribe();
            tasks.push(tokio::spawn(async move {
                let mut marks = Vec::new();
                let mut n = 0u64;
                let warm = Instant::now() + Duration::from_secs(1);
                let end = warm + Duration::from_secs(u64::from(seconds));
                while let Ok(Some(_)) = tokio::time::timeout_at(end.into(), sub.recv()).await {
                    n += 1;
                    if marks.is_empty() && Instant::now() >= warm {
                        marks.push(n);
                    }
                }
                n - marks.first().copied().unwrap_or(n)
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, f0) = (process_cpu(), hub.stats().published);
        tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
        let (cpu1, f1) = (process_cpu(), hub.stats().published);
        let mut min_received = u64::MAX;
        for t in tasks {
            min_received = min_received.min(t.await.unwrap_or(0));
        }
        PipelineResult {
            subscribers,
            frames: f1 - f0,
            cpu: cpu1 - cpu0,
            min_received: if subscribers == 0 { 0 } else { min_received },
        }
    });
    pipeline.shutdown();
    Ok(result)
}

/// Isolated fan-out cost: CPU per frame per subscriber for the hub's
/// publish plus an async subscriber receiving it, measured by publishing
/// `frames` frames to `subscribers` tasks and to none, on one thread.
pub fn hub_fanout(subscribers: u32, frames: u32) -> Duration {
    let run = |subs: u32| -> Duration {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime without I/O always builds");
        rt.block_on(async {
            let gap = PolicyConfig::default().drop_keyframe_gap;
            let hub = Hub::new(PolicyConfig::default(), EncoderControl::new(gap, 1000));
            let mut tasks = Vec::new();
            for _ in 0..subs {
                let mut sub = hub.subscribe();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while let Some(f) = sub.recv().await {
                        n += f.data.len() as u64;
                    }
                    n
                }));
            }
            let data = bytes::Bytes::from(vec![0u8; 8_000]);
            let start = thread_cpu();
            for i in 0..frames {
                hub.publish(crate::media::frame::Packet {
                    track: crate::media::frame::TrackId::VIDEO,
                    data: data.clone(),
                    pts: Duration::from_millis(u64::from(i)),
                    keyframe: i % 60 == 0,
                });
                // Let every subscriber drain its queue, as live sessions would between frames.
                tokio::task::yield_now().await;
            }
            hub.close();
            for t in tasks {
                let _ = t.await;
            }
            thread_cpu() - start
        })
    };
    let with = run(subscribers);
    let without = run(0);
    with.saturating_sub(without) / (subscribers.max(1) * frames.max(1))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs every benchmark `docs/BENCHMARKS.md` reports and renders the
/// figures. Real-time runs are interleaved over `rounds` and reported as
/// medians, since CPU per frame on a shared machine drifts between runs.
pub fn report_all(seconds: u32, rounds: u32) -> Result<String, BenchError> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let e480 = encoder(&settings(640, 480, 30, 1000, 1), 900)?;
    let s720 = settings(1280, 720, 30, 2000, 1);
    let e720 = encoder(&s720, 450)?;
    for (label, r) in [("640x480 @ 1000", e480), ("1280x720 @ 2000", e720)] {
        let _ = writeln!(
            out,
            "encoder {label} kbit/s, one core: {:.0} frames/s ({:.2} ms CPU/frame)",
            r.fps(),
            r.ms_per_frame()
        );
    }
    let (mut paced, mut one, mut ten) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        paced.push(encoder_paced(&s720, seconds)?.ms_per_frame());
        one.push(pipeline(&s720, seconds, 1)?.ms_per_frame());
        ten.push(pipeline(&s720, seconds, 10)?.ms_per_frame());
    }
    let (paced, one, ten) = (median(paced), median(one), median(ten));
    let _ = writeln!(
        out,
        "encoder alone 1280x720@30 in real time: {paced:.3} ms CPU/frame (median of {rounds})"
    );
    let _ = writeln!(
        out,
        "pipeline 1280x720@30, 1 subscriber: {one:.3} ms CPU/frame = {:.3}x the encoder alone (goal <= 1.10)",
        one / paced
    );
    let _ = writeln!(
        out,
        "pipeline 1280x720@30, 10 subscribers: {ten:.3} ms CPU/frame = {:.3}x the encoder alone",
        ten / paced
    );
    let per_sub_pct = (ten - one) / 9.0 * 30.0 / 1000.0 * 100.0;
    let _ = writeln!(
        out,
        "each extra subscriber, from the pipeline runs: {per_sub_pct:.3} % of a core at 30 fps (goal < 0.5 %; within run-to-run noise)"
    );
    let fan = hub_fanout(10, 30_000);
    let _ = writeln!(
        out,
        "each extra subscriber, hub fan-out isolated: {:.2} us/frame = {:.4} % of a core at 30 fps",
        fan.as_secs_f64() * 1e6,
        fan.as_secs_f64() * 30.0 * 100.0
    );
    Ok(out)
}

/// The pipeline's CPU per frame over the encoder's alone, both fed in real
/// time at the settings' rate (any encoder: OpenH264, or an M2M encoder
/// with `pref = V4l2M2m`), medians of `rounds` interleaved rounds.
pub fn report_ratio(
    settings: &EncoderSettings,
    seconds: u32,
    rounds: u32,
) -> Result<String, BenchError> {
    let (mut paced, mut piped) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        paced.push(encoder_paced(settings, seconds)?.ms_per_frame());
        piped.push(pipeline(settings, seconds, 1)?.ms_per_frame());
    }
    let (paced, piped) = (median(paced), median(piped));
    let encoder = match settings.pref {
        EncoderPref::V4l2M2m => format!("v4l2m2m {}", settings.coded),
        _ => format!("openh264, {} threads", settings.threads),
    };
    Ok(format!(
        "{encoder} {}x{}@{}: encoder alone {paced:.3} ms CPU/frame, pipeline (1 subscriber) {piped:.3} ms CPU/frame = {:.3}x (medians of {rounds})\n",
        settings.width,
        settings.height,
        settings.fps,
        piped / paced.max(1e-9)
    ))
}

/// Where a frame's time goes: runs test pattern → encoder → hub in real
/// time with one subscriber for `seconds` (after one second of warm-up) and
/// reports p50/p95/max per stage of the media thread, and from capture to
/// the subscriber's receipt (all stages, the hub's queue and the wake-up of
/// a session's task).
pub fn latency(settings: &EncoderSettings, seconds: u32) -> Result<String, BenchError> {
    use crate::media::stage_times::{Stage, StageSummary};
    use std::fmt::Write as _;
    let policy = PolicyConfig::default();
    let (hub, pipeline) = spawn_pattern(settings, policy)?;
    let status = pipeline.status();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let delivery = rt.block_on(async {
        let mut sub = hub.subscribe();
        let warm = Instant::now() + Duration::from_secs(1);
        let end = warm + Duration::from_secs(u64::from(seconds));
        let mut cleared = false;
        let mut samples = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout_at(end.into(), sub.recv()).await {
            let now = Instant::now();
            if now < warm {
                continue;
            }
            if !cleared {
                status.stage_times().clear_window();
                cleared = true;
                continue;
            }
            // A packet's pts is its frame's capture time since the hub's epoch.
            samples.push(now.saturating_duration_since(hub.epoch() + p.pts));
        }
        samples
    });
    let stages = status.stage_times();
    let mut out = format!(
        "latency {}x{}@{} ({}), {} s: per frame, p50 / p95 / max\n",
        settings.width,
        settings.height,
        settings.fps,
        match settings.pref {
            EncoderPref::V4l2M2m => format!("v4l2m2m {}", settings.coded),
            _ => format!("openh264, {} threads", settings.threads),
        },
        seconds
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut line = |name: &str, s: Option<StageSummary>| {
        let _ = match s {
            Some(s) => writeln!(
                out,
                "  {name:<20} {:>7.2} / {:>7.2} / {:>7.2} ms  ({} frames)",
                ms(s.p50),
                ms(s.p95),
                ms(s.max),
                s.count
            ),
            None => writeln!(out, "  {name:<20} (not used)"),
        };
    };
    for stage in Stage::ALL {
        line(stage.name(), stages.summary(stage));
    }
    let mut delivery = delivery;
    delivery.sort_unstable();
    let at = |q: f64| delivery[((delivery.len() - 1) as f64 * q).round() as usize];
    line(
        "capture_to_subscriber",
        (!delivery.is_empty()).then(|| StageSummary {
            count: delivery.len(),
            p50: at(0.5),
            p95: at(0.95),
            max: at(1.0),
        }),
    );
    pipeline.shutdown();
    Ok(out)
}

/// Sizes (and bitrates) the thread-scaling report measures.
const SCALING_SIZES: [(u32, u32, u32); 2] = [(1280, 720, 2000), (1920, 1080, 4000)];
/// Thread counts the thread-scaling report measures.
const SCALING_THREADS: [u32; 3] = [1, 2, 4];

/// OpenH264 thread scaling, as `docs/BENCHMARKS.md` reports it: for each
/// size and thread count, frames/s and CPU per frame encoding flat out
/// (`frames` frames), then CPU per frame at 30 fps in real time for the
/// encoder alone and for the pipeline with one subscriber (`seconds`
/// each), and their ratio. Every figure is the median of `rounds`
/// interleaved rounds, since a shared machine drifts between runs.
pub fn report_threads(frames: u32, seconds: u32, rounds: u32) -> Result<String, BenchError> {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| size | threads | flat out: frames/s | flat out: ms CPU/frame | 30 fps: encoder ms CPU/frame | 30 fps: pipeline ms CPU/frame | pipeline / encoder |\n|---|---|---|---|---|---|---|\n",
    );
    for (w, h, kbps) in SCALING_SIZES {
        for threads in SCALING_THREADS {
            let s = settings(w, h, 30, kbps, threads);
            let (mut fps, mut flat_ms, mut paced, mut piped) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let flat = encoder(&s, frames)?;
                fps.push(flat.wall_fps());
                flat_ms.push(flat.ms_per_frame());
                paced.push(encoder_paced(&s, seconds)?.ms_per_frame());
                piped.push(pipeline(&s, seconds, 1)?.ms_per_frame());
            }
            let (paced, piped) = (median(paced), median(piped));
            let _ = writeln!(
                out,
                "| {w}×{h} @ {kbps} kbit/s | {threads} | {:.0} | {:.2} | {paced:.2} | {piped:.2} | {:.3}× |",
                median(fps),
                median(flat_ms),
                piped / paced
            );
        }
    }
    Ok(out)
}

/// Motion detection's cost against the encoder's, on the same test-pattern
/// frames (flat out, thread CPU): the tap's downscale to the detector's
/// luma picture plus the detector, per frame, and its share of an encode.
pub fn motion(settings: &EncoderSettings, frames: u32) -> Result<String, BenchError> {
    use crate::media::tap::Taps;
    use crate::motion::LUMA_WIDTH;
    use crate::motion::detector::{Detector, DetectorConfig};
    let prepared = prepared_frames(settings.width, settings.height);
    let enc = encoder(settings, frames).map_err(BenchError::from)?;
    let luma_h = (LUMA_WIDTH as u64 * u64::from(settings.height) / u64::from(settings.width.max(1)))
        as usize;
    let taps = Taps::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    taps.feed_luma(LUMA_WIDTH, luma_h, tx);
    let mut det = Detector::new(
        DetectorConfig {
            threshold: 25,
            min_area: 0.01,
            end_after: Duration::from_secs(5),
            include: Vec::new(),
            exclude: Vec::new(),
        },
        LUMA_WIDTH,
        luma_h,
    );
    let mut events = 0u32;
    let cpu0 = thread_cpu();
    for i in 0..frames {
        let pic = prepared[i as usize % PREPARED_FRAMES].view();
        let pts = Duration::from_millis(u64::from(i) * 33);
        taps.offer(&EncoderInput::I420(pic), pts);
        if let Ok(l) = rx.try_recv() {
            events += u32::from(det.feed(&l.data, l.pts).is_some());
        }
    }
    let cpu = thread_cpu() - cpu0;
    let motion_ms = cpu.as_secs_f64() * 1000.0 / f64::from(frames.max(1));
    let encode_ms = enc.ms_per_frame();
    Ok(format!(
        "motion detection at {}x{} ({}x{} luma): {:.3} ms/frame; encoder alone {:.2} ms/frame; motion = {:.2} % of the encoder ({} events over {} moving test-pattern frames)\n",
        settings.width,
        settings.height,
        LUMA_WIDTH,
        luma_h,
        motion_ms,
        encode_ms,
        100.0 * motion_ms / encode_ms.max(f64::MIN_POSITIVE),
        events,
        frames
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_clocks_advance() {
        let t0 = thread_cpu();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > t0);
        assert!(process_cpu() >= thread_cpu());
    }

    #[test]
    fn encoder_bench_reports_frames_and_bytes() {
        for threads in [1, 2] {
            let r = encoder(&settings(320, 240, 30, 500, threads), 10).expect("encoder works");
            assert_eq!(r.frames, 10);
            assert!(r.bytes > 0 && r.fps() > 0.0 && r.wall_fps() > 0.0);
        }
    }
}
