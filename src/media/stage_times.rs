//! Where each frame's time goes on the media thread: convert, encode,
//! publish (hub fan-out), and capture → published as a whole. Every frame
//! is recorded twice: in a Prometheus histogram per stage (for `/metrics`)
//! and in a window of the last samples (for exact p50/p95/max in
//! `rtcam bench latency` and the logs).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Samples kept per stage for exact percentiles (about two minutes at 30 fps).
const WINDOW: usize = 4096;

/// A stage of the media thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The camera's format to I420 (only when the encoder needs it).
    Convert,
    /// The encoder's call, picture in to bitstream out.
    Encode,
    /// Handing the packet to the hub (fan-out to every subscriber's queue).
    Publish,
    /// From the frame's arrival from the camera to its publication.
    CaptureToPublish,
}

impl Stage {
    /// Every stage, in data-flow order.
    pub const ALL: [Stage; 4] = [
        Stage::Convert,
        Stage::Encode,
        Stage::Publish,
        Stage::CaptureToPublish,
    ];

    /// The name used in reports and labels.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Convert => "convert",
            Stage::Encode => "encode",
            Stage::Publish => "publish",
            Stage::CaptureToPublish => "capture_to_publish",
        }
    }
}

impl EncodeLabelValue for Stage {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.name())
    }
}

/// The label set of the stage histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StageLabel {
    /// The stage.
    pub stage: Stage,
}

/// p50, p95 and max of a stage over the window, with its sample count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageSummary {
    /// Samples in the window.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Largest.
    pub max: Duration,
}

/// Per-stage timing of the media thread.
#[derive(Debug)]
pub struct StageTimes {
    histograms: Family<StageLabel, Histogram>,
    recent: Mutex<[VecDeque<u32>; 4]>,
}

impl Default for StageTimes {
    fn default() -> Self {
        Self::new()
    }
}

fn buckets() -> Histogram {
    // 50 µs to ~1.6 s, doubling: a frame's stages span both ends.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl StageTimes {
    /// No samples yet.
    pub fn new() -> Self {
        Self {
            histograms: Family::new_with_constructor(buckets as fn() -> Histogram),
            recent: Mutex::new(Default::default()),
        }
    }

    /// Records one frame's time in `stage`.
    pub fn observe(&self, stage: Stage, took: Duration) {
        self.histograms
            .get_or_create(&StageLabel { stage })
            .observe(took.as_secs_f64());
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let window = &mut recent[stage as usize];
        if window.len() == WINDOW {
            window.pop_front();
        }
        window.push_back(micros);
    }

    /// The stage's percentiles over the last samples; `None` before any.
    pub fn summary(&self, stage: Stage) -> Option<StageSummary> {
        let mut samples: Vec<u32> = self.recent.lock().unwrap_or_else(PoisonError::into_inner)
            [stage as usize]
            .iter()
            .copied()
            .collect();
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() - 1) as f64 * q).round() as usize;
            Duration::from_micros(u64::from(samples[i]))
        };
        Some(StageSummary {
            count: samples.len(),
            p50: at(0.5),
            p95: at(0.95),
            max: at(1.0),
        })
    }

    /// Forgets the window (the histograms keep counting): a benchmark's
    /// measurement starts after its warm-up.
    pub fn clear_window(&self) {
        for w in self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
        {
            w.clear();
        }
    }

    /// The histogram family, for registering in a `/metrics` registry.
    pub fn histograms(&self) -> Family<StageLabel, Histogram> {
        self.histograms.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_last_samples() {
        let t = StageTimes::new();
        assert_eq!(t.summary(Stage::Encode), None);
        for ms in 1..=100 {
            t.observe(Stage::Encode, Duration::from_millis(ms));
        }
        let s = t.summary(Stage::Encode).expect("samples");
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, Duration::from_millis(51));
        assert_eq!(s.p95, Duration::from_millis(95));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(t.summary(Stage::Convert), None, "stages are apart");
        // The window keeps the newest WINDOW samples.
        for _ in 0..WINDOW {
            t.observe(Stage::Encode, Duration::from_micros(10));
        }
        assert_eq!(
            t.summary(Stage::Encode).expect("samples").max,
            Duration::from_micros(10)
        );
        t.clear_window();
        assert_eq!(t.summary(Stage::Encode), None);
    }

    #[test]
    fn the_histograms_are_shared_with_a_registry() {
        let t = StageTimes::new();
        t.observe(Stage::Publish, Duration::from_micros(80));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(
            "rtcam_stage_seconds",
            "Media thread time per frame and stage",
            t.histograms(),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("rtcam_stage_seconds_count{stage=\"publish\"} 1"),
            "{text}"
        );
    }
}
