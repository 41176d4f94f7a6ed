//! One viewer's bandwidth estimate from its RTCP receiver reports: the
//! loss-based half of Google Congestion Control (draft-ietf-rmcat-gcc-02,
//! §6) plus a queueing-delay signal from the reports' round-trip time,
//! since a shaped link (a Wi-Fi access point, `tc netem rate`) first
//! queues, and only loses once its queue is full. When the viewer sends
//! transport-wide feedback, the WebRTC stack's full GCC (its delay-based
//! half reacts within a few hundred milliseconds, long before a receiver
//! report shows a queue) caps the estimate whenever it falls under what
//! is being sent. Pure: fed samples and their time, returns the estimate.

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
    /// The send-side estimate (GCC on transport-wide feedback), kbit/s,
    /// when the viewer sends such feedback.
    pub transport_kbps: Option<u32>,
    /// What was sent to the viewer since the last sample, kbit/s.
    pub sent_kbps: Option<u32>,
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
    /// Growth per clean report during a slow start (see
    /// [`LinkEstimator::with_slow_start`]).
    pub start_growth: f64,
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
            start_growth: 1.25,
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
    /// It fell to the send-side estimate, which went under what we send.
    Delay,
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
    /// Samples in a row whose send-side estimate was under what was sent.
    under_sent: u32,
    /// Growing by `start_growth` until the link first shows congestion.
    slow_start: bool,
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
            under_sent: 0,
            slow_start: false,
            trend: Trend::Hold,
        }
    }

    /// Grows by `start_growth` per clean report until the first sign of
    /// congestion (loss, a queue, a send-side estimate under what is
    /// sent, silence), as a stream starting below the ceiling does: on a
    /// link that carries the ceiling it gets there within a few reports,
    /// and on one that does not, its first keyframe did not overflow it.
    pub fn with_slow_start(mut self) -> Self {
        self.slow_start = true;
        self
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
        self.follow_reports(&s);
        // The send-side estimate under what we send, in two samples in a
        // row, is the link saying "less": followed. One sample is not
        // enough: a keyframe's burst raises the delay for a moment, and
        // GCC, which then asks for 85 % of what arrives, would cut the rate
        // at every keyframe. Over what we send, it only says the stream is
        // application-limited (GCC caps itself at 1.5 × what arrives, and a
        // still scene sends little), which is no reason to hold the encoder
        // down when the scene moves again.
        match (s.transport_kbps, s.sent_kbps) {
            (Some(t), Some(sent)) if t < sent => {
                // While starting, an overshoot is likely and a queue costs
                // the first picture: the first sign is followed at once.
                let starting = std::mem::replace(&mut self.slow_start, false);
                self.under_sent += if starting { 2 } else { 1 };
                if self.under_sent >= 2 && f64::from(t) < self.kbps {
                    self.kbps = f64::from(t);
                    self.trend = Trend::Delay;
                    self.under_sent = 0;
                }
            }
            _ => self.under_sent = 0,
        }
        if !matches!(self.trend, Trend::Up | Trend::Hold) {
            self.slow_start = false;
        }
        self.clamp()
    }

    /// The receiver reports' part of [`Self::sample`].
    fn follow_reports(&mut self, s: &LinkSample) {
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
            return;
        }
        self.reports = s.reports;
        self.last_report_at = Some(s.at);
        // A slow start climbs only on a round trip compared with an
        // earlier one: the first says nothing about a queue.
        let compared = s.rtt.is_some() && self.min_rtt.is_some();
        let queue = s.rtt.map_or(Duration::ZERO, |rtt| {
            let floor = *self.min_rtt.get_or_insert(rtt);
            self.min_rtt = Some(floor.min(rtt));
            rtt.saturating_sub(floor.min(rtt))
        });
        let queued = queue > self.cfg.queue_delay;
        // Any queue at all ends a slow start: the link is nearly full.
        if queue > self.cfg.queue_delay / 3 {
            self.slow_start = false;
        }
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
        } else if self.slow_start && !compared {
            Trend::Hold
        } else if loss < self.cfg.loss_low && !queued {
            self.kbps *= if self.slow_start {
                self.cfg.start_growth
            } else {
                self.cfg.growth
            };
            Trend::Up
        } else {
            Trend::Hold
        };
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
                transport_kbps: None,
                sent_kbps: None,
            })
        }
        /// A tick with no new report.
        fn quiet(&mut self, at_s: u64) -> u32 {
            self.e.sample(LinkSample {
                at: self.t0 + Duration::from_secs(at_s),
                reports: self.n,
                fraction_lost: 0.0,
                rtt: None,
                transport_kbps: None,
                sent_kbps: None,
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
    fn the_send_side_estimate_caps_only_when_under_what_is_sent() {
        let mut f = Feed::new(1500);
        let mut tick = |transport: u32, sent: u32| {
            f.e.sample(LinkSample {
                at: f.t0 + Duration::from_millis(100),
                reports: f.n,
                fraction_lost: 0.0,
                rtt: None,
                transport_kbps: Some(transport),
                sent_kbps: Some(sent),
            })
        };
        assert_eq!(
            tick(600, 400),
            1500,
            "a still scene sends 400: GCC's 600 is no cap"
        );
        assert_eq!(
            tick(900, 1400),
            1500,
            "once under what is sent: a keyframe's burst"
        );
        assert_eq!(tick(1600, 1400), 1500, "over it again: nothing happened");
        assert_eq!(tick(900, 1400), 1500);
        assert_eq!(tick(900, 1400), 900, "twice in a row: followed");
        assert_eq!(f.e.trend(), Trend::Delay);
        assert_eq!(
            f.report(0.0, 10),
            972,
            "and grows from there with clean reports"
        );
    }

    #[test]
    fn a_slow_start_climbs_fast_until_the_first_congestion() {
        let mut f = Feed::new(500);
        f.e = f.e.clone().with_slow_start();
        assert_eq!(
            f.report(0.0, 10),
            500,
            "the first round trip sets the floor"
        );
        assert_eq!(f.report(0.0, 10), 625, "× 1.25 per clean report");
        assert_eq!(f.report(0.0, 10), 781);
        assert_eq!(
            f.report(0.2, 10),
            703,
            "loss: cut, and the slow start is over"
        );
        assert_eq!(f.report(0.0, 10), 759, "then 8 % per report");
        let mut q = Feed::new(500);
        q.e = q.e.clone().with_slow_start();
        q.report(0.0, 10);
        assert_eq!(
            q.report(0.0, 70),
            540,
            "60 ms of queue: the slow start is over"
        );
        assert_eq!(q.report(0.0, 10), 583, "8 % per report");
        let mut g = Feed::new(1500);
        g.e = g.e.clone().with_slow_start();
        g.report(0.0, 10);
        assert_eq!(g.report(0.0, 10), 1875);
        assert_eq!(g.report(0.0, 10), 2000, "clamped to the ceiling");
        let mut h = Feed::new(1000);
        h.e = h.e.clone().with_slow_start();
        h.n = 0;
        let at = h.t0;
        assert_eq!(
            h.e.sample(LinkSample {
                at,
                reports: 0,
                fraction_lost: 0.0,
                rtt: None,
                transport_kbps: Some(600),
                sent_kbps: Some(1000),
            }),
            600,
            "starting, the send-side estimate is followed at its first sign"
        );
    }

    #[test]
    fn out_of_range_inputs_are_clamped() {
        let mut f = Feed::new(50_000);
        assert_eq!(f.e.kbps(), 2000, "start clamped to the ceiling");
        assert_eq!(f.report(7.0, 10), 1000, "loss over 1 counts as 1");
        assert_eq!(f.report(-1.0, 10), 1080, "negative loss counts as none");
    }
}
