//! `rtcam bench`: CPU cost of the encoder alone and of the whole pipeline,
//! measured with the kernel's CPU clocks (not wall time), so the figures
//! hold on a busy machine. `docs/BENCHMARKS.md` records the results.

use crate::backoff::Backoff;
use crate::capture::test_pattern::{PatternGenerator, TestPatternFactory};
use crate::encode::{EncodeError, EncoderSettings, H264Encoder};
use crate::frame::I420Image;
use crate::hub::Hub;
use crate::hub::policy::PolicyConfig;
use crate::pipeline::{Pipeline, PipelineOptions};
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
    /// CPU time spent encoding (one thread).
    pub cpu: Duration,
    /// Output bytes.
    pub bytes: u64,
}

impl EncoderResult {
    /// Frames per CPU-second (= frames/s on one dedicated core).
    pub fn fps(&self) -> f64 {
        f64::from(self.frames) / self.cpu.as_secs_f64().max(1e-9)
    }

    /// CPU milliseconds per frame.
    pub fn ms_per_frame(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / f64::from(self.frames.max(1))
    }
}

/// Encodes `frames` test-pattern frames on this thread, counting only encoder CPU time.
pub fn encoder(
    width: u32,
    height: u32,
    bitrate_kbps: u32,
    frames: u32,
) -> Result<EncoderResult, EncodeError> {
    let mut pattern = PatternGenerator::new(width as usize, height as usize);
    let prepared: Vec<I420Image> = (0..PREPARED_FRAMES)
        .map(|i| pattern.render(1_700_000_000_000 + i as u64 * 33).clone())
        .collect();
    let mut enc = H264Encoder::new(&EncoderSettings {
        width,
        height,
        fps: 30,
        bitrate_kbps,
        keyframe_interval: Duration::from_secs(2),
    })?;
    let mut bytes = 0u64;
    let start = thread_cpu();
    for i in 0..frames {
        let pic = prepared[i as usize % PREPARED_FRAMES].view();
        let pts = Duration::from_millis(u64::from(i) * 33);
        if let Some(au) = enc.encode(&pic, pts)? {
            bytes += au.data.len() as u64;
        }
    }
    Ok(EncoderResult {
        frames,
        cpu: thread_cpu() - start,
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

/// Runs test pattern → encoder → hub in real time at `fps` with `subscribers`
/// draining it on a current-thread runtime (as sessions would), and measures
/// process CPU per frame over `seconds` after one second of warm-up.
pub fn pipeline(
    width: u32,
    height: u32,
    fps: u32,
    bitrate_kbps: u32,
    seconds: u32,
    subscribers: u32,
) -> Result<PipelineResult, BenchError> {
    let hub = Hub::new(PolicyConfig::default(), bitrate_kbps);
    let pipeline = Pipeline::spawn(
        Box::new(TestPatternFactory::new(
            width as usize,
            height as usize,
            fps,
        )),
        hub.clone(),
        PipelineOptions {
            encoder: EncoderSettings {
                width,
                height,
                fps,
                bitrate_kbps,
                keyframe_interval: Duration::from_secs(2),
            },
            backoff: Backoff::standard(),
        },
    )?;
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
        let r = encoder(320, 240, 500, 10).expect("encoder works");
        assert_eq!(r.frames, 10);
        assert!(r.bytes > 0 && r.fps() > 0.0);
    }
}
