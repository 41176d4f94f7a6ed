//! One viewer's bandwidth estimate from its RTCP receiver reports: the
//! loss-based half of Google Congestion Control (draft-ietf-rmcat-gcc-02,
//! §6) plus a queueing-delay signal from the reports' round-trip time,
//! since a shaped link (a Wi-Fi access point, `tc netem rate`) first
//! queues, and only loses once its queue is full. Pure: fed samples and
//! their time, returns the estimate.

use std::time::{Duration, Instant};

/// What the session read off its peer at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSample {
    /// When it was read.
    pub at: Instant,
    /// Receiver reports received so far (a counter: a new one means fresh feedback).
    pub reports: u64,
    /// Share of our packets the viewer lost, from its newest report (0..=1).
    pub fraction_lost: f64,
    /// Round trip from the newest report (RFC 3550 §6.4.1), if it carried one.
    pub rtt: Option<Duration>,
}

/// Tunables; [`EstimatorConfig::default`] follows GCC's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorConfig {
    /// Lowest estimate (the encoder's floor).
    pub min_kbps: u32,
    /// Highest estimate (the encoder's ceiling).
    pub max_kbps: u32,
    /// Loss above which the estimate falls (GCC: 10 %).
    pub loss_high: f64,
    /// Loss below which it may grow (GCC: 2 %).
    pub loss_low: f64,
    /// Growth per report without loss or queueing (GCC: 8 %).
    pub growth: f64,
    /// Round trip above the lowest seen that counts as a queue building up.
    pub queue_delay: Duration,
    /// Reports with a queue in a row before the estimate falls for it
    /// (one slow report on a busy machine is not congestion).
    pub queue_reports: u32,
    /// No report for this long while sending: the link is treated as lost.
    pub silence: Duration,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        Self {
            min_kbps: 100,
            max_kbps: 8000,
            loss_high: 0.10,
            loss_low: 0.02,
            growth: 1.08,
            queue_delay: Duration::from_millis(150),
            queue_reports: 2,
            silence: Duration::from_secs(3),
        }
    }
}

/// Why the estimate last moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    /// It grew: no loss, no queue.
    Up,
    /// It held: moderate loss, or no new report yet.
    Hold,
    /// It fell for loss above `loss_high`.
    Loss,
    /// It fell for a queue (round trip well above its floor).
    Queue,
    /// It fell because no report came for `silence`.
    Silent,
}

/// One viewer's estimator.
#[derive(Debug, Clone)]
pub struct LinkEstimator {
    cfg: EstimatorConfig,
    kbps: f64,
    reports: u64,
    last_report_at: Option<Instant>,
    min_rtt: Option<Duration>,
    queued_reports: u32,
    trend: Trend,
}

impl LinkEstimator {
    /// An estimator starting at `start_kbps` (clamped to the bounds).
    pub fn new(cfg: EstimatorConfig, start_kbps: u32) -> Self {
        let kbps = f64::from(start_kbps.clamp(cfg.min_kbps, cfg.max_kbps.max(cfg.min_kbps)));
        Self {
            cfg,
            kbps,
            reports: 0,
            last_report_at: None,
            min_rtt: None,
            queued_reports: 0,
            trend: Trend::Hold,
        }
    }

    /// The current estimate in kbit/s.
    pub fn kbps(&self) -> u32 {
        self.kbps.round() as u32
    }

    /// Why it last moved.
    pub fn trend(&self) -> Trend {
        self.trend
    }

    /// Moves the ceiling (the user's bitrate changed). An estimate at the
    /// old ceiling was held there by it, not by the link, so it follows the
    /// ceiling up; one below it stays where the link put it.
    pub fn set_max(&mut self, max_kbps: u32) {
        let at_ceiling = self.kbps >= f64::from(self.cfg.max_kbps) - 0.5;
        self.cfg.max_kbps = max_kbps;
        if at_ceiling {
            self.kbps = f64::from(max_kbps);
        }
        self.clamp();
    }

    /// Whether the viewer has gone quiet (no report for `silence`).
    pub fn silent(&self) -> bool {
        self.trend == Trend::Silent
    }

    /// Feeds one sample; returns the new estimate.
    pub fn sample(&mut self, s: LinkSample) -> u32 {
        let fresh = s.reports > self.reports;
        if !fresh {
            let since = self.last_report_at.get_or_insert(s.at);
            if s.at.saturating_duration_since(*since) >= self.cfg.silence {
                // Halve once per silent period, not once per tick: the
                // floor is reached quickly enough, and a link back after a
                // short cut should not start from nothing.
                self.kbps *= 0.5;
                self.last_report_at = Some(s.at);
                self.trend = Trend::Silent;
            } else if self.trend != Trend::Silent {
                self.trend = Trend::Hold;
            }
            return self.clamp();
        }
        self.reports = s.reports;
        self.last_report_at = Some(s.at);
        let queue = s.rtt.map_or(Duration::ZERO, |rtt| {
            let floor = *self.min_rtt.get_or_insert(rtt);
            self.min_rtt = Some(floor.min(rtt));
            rtt.saturating_sub(floor.min(rtt))
        });
        let queued = queue > self.cfg.queue_delay;
        self.queued_reports = if queued { self.queued_reports + 1 } else { 0 };
        let loss = s.fraction_lost.clamp(0.0, 1.0);
        self.trend = if loss > self.cfg.loss_high {
            self.kbps *= 1.0 - 0.5 * loss;
            Trend::Loss
        } else if queue > self.cfg.queue_delay * 2 {
            // A deep queue (a second of video in an access point's buffer)
            // stalls every picture: no waiting for a second report.
            self.kbps *= 0.7;
            self.queued_reports = 0;
            Trend::Queue
        } else if self.queued_reports >= self.cfg.queue_reports {
            // Below what the link carries, so its queue drains.
            self.kbps *= 0.85;
            self.queued_reports = 0;
            Trend::Queue
        } else if loss < self.cfg.loss_low && !queued {
            self.kbps *= self.cfg.growth;
            Trend::Up
        } else {
            Trend::Hold
        };
        self.clamp()
    }

    fn clamp(&mut self) -> u32 {
        let (lo, hi) = (
            f64::from(self.cfg.min_kbps),
            f64::from(self.cfg.max_kbps.max(self.cfg.min_kbps)),
        );
        self.kbps = self.kbps.clamp(lo, hi);
        self.kbps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EstimatorConfig {
        EstimatorConfig {
            min_kbps: 100,
            max_kbps: 2000,
            ..EstimatorConfig::default()
        }
    }

    struct Feed {
        e: LinkEstimator,
        t0: Instant,
        n: u64,
    }

    impl Feed {
        fn new(start: u32) -> Feed {
            Feed {
                e: LinkEstimator::new(cfg(), start),
                t0: Instant::now(),
                n: 0,
            }
        }
        /// One report per second with this loss and round trip.
        fn report(&mut self, loss: f64, rtt_ms: u64) -> u32 {
            self.n += 1;
            self.e.sample(LinkSample {
                at: self.t0 + Duration::from_secs(self.n),
                reports: self.n,
                fraction_lost: loss,
                rtt: Some(Duration::from_millis(rtt_ms)),
            })
        }
        /// A tick with no new report.
        fn quiet(&mut self, at_s: u64) -> u32 {
            self.e.sample(LinkSample {
                at: self.t0 + Duration::from_secs(at_s),
                reports: self.n,
                fraction_lost: 0.0,
                rtt: None,
            })
        }
    }

    #[test]
    fn heavy_loss_cuts_by_half_the_loss_and_light_loss_holds() {
        let mut f = Feed::new(1000);
        assert_eq!(f.report(0.2, 10), 900, "1000 × (1 - 0.5 × 0.2)");
        assert_eq!(f.e.trend(), Trend::Loss);
        assert_eq!(f.report(0.05, 10), 900, "between 2 and 10 %: hold");
        assert_eq!(f.e.trend(), Trend::Hold);
        assert_eq!(f.report(0.0, 10), 972, "clean: grows 8 %");
        assert_eq!(f.e.trend(), Trend::Up);
    }

    #[test]
    fn growth_stops_at_the_ceiling_and_falls_stop_at_the_floor() {
        let mut f = Feed::new(1900);
        assert_eq!(f.report(0.0, 10), 2000);
        assert_eq!(f.report(0.0, 10), 2000);
        for _ in 0..40 {
            f.report(0.5, 10);
        }
        assert_eq!(f.e.kbps(), 100);
    }

    #[test]
    fn a_queue_needs_two_reports_in_a_row_then_cuts_15_percent() {
        let mut f = Feed::new(1000);
        f.report(0.0, 40); // floor 40 ms; grows to 1080
        assert_eq!(f.report(0.0, 300), 1080, "one slow report holds");
        assert_eq!(f.report(0.0, 40), 1166, "the queue drained: grows again");
        assert_eq!(f.report(0.0, 300), 1166);
        assert_eq!(f.report(0.0, 300), 991, "two in a row: × 0.85");
        assert_eq!(f.e.trend(), Trend::Queue);
        assert_eq!(
            f.report(0.0, 150),
            1071,
            "150 ms over a 40 ms floor is no queue"
        );
        assert_eq!(
            f.report(0.0, 400),
            750,
            "360 ms over the floor: × 0.7 at once"
        );
    }

    #[test]
    fn silence_halves_once_per_period_and_a_report_ends_it() {
        let mut f = Feed::new(1600);
        f.report(0.0, 10); // t = 1 s, 1728
        assert_eq!(f.quiet(2), 1728, "1 s without a report: hold");
        assert_eq!(f.quiet(3), 1728);
        assert_eq!(f.quiet(4), 864, "3 s silent: halved");
        assert!(f.e.silent());
        assert_eq!(f.quiet(5), 864, "not again within the next 3 s");
        assert_eq!(f.quiet(7), 432);
        f.n = 10;
        assert_eq!(f.report(0.0, 10), 467, "feedback is back: grows from there");
        assert!(!f.e.silent());
    }

    #[test]
    fn out_of_range_inputs_are_clamped() {
        let mut f = Feed::new(50_000);
        assert_eq!(f.e.kbps(), 2000, "start clamped to the ceiling");
        assert_eq!(f.report(7.0, 10), 1000, "loss over 1 counts as 1");
        assert_eq!(f.report(-1.0, 10), 1080, "negative loss counts as none");
    }
}
