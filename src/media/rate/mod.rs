//! Congestion control for the one shared encoder: each viewer's session
//! feeds its receiver-report figures to its own [`estimate::LinkEstimator`];
//! [`policy`] turns the estimates into the encoder's bitrate and frame
//! rate, and says which viewers get keyframes only. [`RateControl`] is the
//! thread-safe shell the sessions, the control commands (`video.bitrate`
//! sets the ceiling) and `/metrics` share; it steers the encoder through
//! its [`EncoderControl`]. Std only: no tokio, no WebRTC types.

pub mod estimate;
pub mod policy;

use crate::media::encode::EncoderControl;
use estimate::{EstimatorConfig, LinkEstimator, LinkSample};
use policy::{Mode, Picture, Plan, ViewerEstimate};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How [`RateControl`] is set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    /// The policy.
    pub mode: Mode,
    /// The configured bitrate: the ceiling until a `video.bitrate` command moves it.
    pub ceiling_kbps: u32,
    /// `[video] min_bitrate_kbps`: the encoder never goes below it.
    pub min_kbps: u32,
    /// The camera's picture, for the frame-rate decision.
    pub picture: Option<Picture>,
}

struct ViewerState {
    client: String,
    estimator: LinkEstimator,
    keyframes_only: bool,
}

/// The share of the ceiling a camera's first viewer starts at, with a slow
/// start up to the ceiling: a first keyframe sized for the ceiling
/// overflows a link narrower than it, and every picture waits for one.
pub const START_SHARE: f64 = 0.5;

/// How long a viewer's last estimate is remembered after it leaves: a
/// viewer that reconnects (its page restarted a stalled session) starts
/// from what its link carried, not from the ceiling it could not carry.
pub const REMEMBER: Duration = Duration::from_secs(60);
/// At most this many left viewers are remembered.
const REMEMBER_MAX: usize = 256;

struct State {
    ceiling: u32,
    viewers: BTreeMap<u64, ViewerState>,
    /// Estimates of viewers that left, by client id, with when they left.
    left: BTreeMap<String, (u32, Instant)>,
    next_id: u64,
    plan: Plan,
}

/// The shared congestion controller.
pub struct RateControl {
    settings: RateSettings,
    encoder: Arc<EncoderControl>,
    state: Mutex<State>,
}

/// What one viewer's sample led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The viewer's estimate in kbit/s.
    pub estimate_kbps: u32,
    /// Whether the viewer should get keyframes only.
    pub keyframes_only: bool,
}

/// A viewer's place in the controller; it leaves when dropped.
pub struct ViewerRate {
    id: u64,
    rate: Arc<RateControl>,
}

impl RateControl {
    /// A controller steering `encoder`.
    pub fn new(settings: RateSettings, encoder: Arc<EncoderControl>) -> Arc<Self> {
        let plan = Plan {
            target_kbps: settings.ceiling_kbps,
            frame_divisor: 1,
        };
        Arc::new(Self {
            settings,
            encoder,
            state: Mutex::new(State {
                ceiling: settings.ceiling_kbps,
                viewers: BTreeMap::new(),
                left: BTreeMap::new(),
                next_id: 1,
                plan,
            }),
        })
    }

    // A panic elsewhere while holding the lock must not take control down with it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The policy in force.
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// Adds a viewer; its estimate starts where the same client's left off
    /// if it left within [`REMEMBER`]; otherwise at [`START_SHARE`] of the
    /// ceiling with a slow start when it is the only viewer (the stream
    /// starts for it) and the encoder follows the viewers, or at the
    /// ceiling.
    pub fn join(self: &Arc<Self>, client: &str) -> ViewerRate {
        self.join_at(client, Instant::now())
    }

    fn join_at(self: &Arc<Self>, client: &str, now: Instant) -> ViewerRate {
        let mut st = self.lock();
        let first = st.viewers.is_empty();
        let (start, slow_start) = match st.left.remove(client) {
            Some((kbps, at)) if now.saturating_duration_since(at) < REMEMBER => {
                (kbps.min(st.ceiling), false)
            }
            // Only when the encoder follows the viewers: keeping quality,
            // a viewer under the ceiling would get keyframes only.
            _ if first && self.settings.mode == Mode::FollowWeakest => {
                ((f64::from(st.ceiling) * START_SHARE) as u32, true)
            }
            _ => (st.ceiling, false),
        };
        let id = st.next_id;
        st.next_id += 1;
        let cfg = EstimatorConfig {
            min_kbps: self.settings.min_kbps,
            max_kbps: st.ceiling,
            ..EstimatorConfig::default()
        };
        let mut estimator = LinkEstimator::new(cfg, start);
        if slow_start {
            estimator = estimator.with_slow_start();
        }
        st.viewers.insert(
            id,
            ViewerState {
                client: client.to_string(),
                estimator,
                keyframes_only: false,
            },
        );
        self.replan(&mut st);
        ViewerRate {
            id,
            rate: Arc::clone(self),
        }
    }

    /// Sets the ceiling (a `video.bitrate` command, already within the bounds).
    pub fn set_ceiling(&self, kbps: u32) {
        let mut st = self.lock();
        st.ceiling = kbps;
        for v in st.viewers.values_mut() {
            v.estimator.set_max(kbps);
        }
        self.replan(&mut st);
    }

    /// The ceiling in force.
    pub fn ceiling_kbps(&self) -> u32 {
        self.lock().ceiling
    }

    /// The encoder's current plan.
    pub fn plan(&self) -> Plan {
        self.lock().plan
    }

    fn replan(&self, st: &mut State) {
        let estimates: Vec<ViewerEstimate> = st
            .viewers
            .values()
            .map(|v| ViewerEstimate {
                kbps: v.estimator.kbps(),
                silent: v.estimator.silent(),
            })
            .collect();
        let plan = policy::plan(
            self.settings.mode,
            st.ceiling,
            self.settings.min_kbps,
            self.settings.picture,
            &estimates,
        );
        if plan.target_kbps != st.plan.target_kbps {
            tracing::info!(
                from = st.plan.target_kbps,
                to = plan.target_kbps,
                viewers = estimates.len(),
                "encoder bitrate follows the viewers"
            );
            self.encoder.request_bitrate(plan.target_kbps);
        }
        if plan.frame_divisor != st.plan.frame_divisor {
            tracing::info!(
                divisor = plan.frame_divisor,
                kbps = plan.target_kbps,
                "encoder frame rate divided"
            );
        }
        self.encoder.set_frame_divisor(plan.frame_divisor);
        st.plan = plan;
    }

    fn sample(&self, id: u64, s: LinkSample) -> Option<Verdict> {
        let mut st = self.lock();
        let v = st.viewers.get_mut(&id)?;
        let estimate_kbps = v.estimator.sample(s);
        let silent = v.estimator.silent();
        self.replan(&mut st);
        let target = st.plan.target_kbps;
        let v = st.viewers.get_mut(&id)?;
        v.keyframes_only = policy::keyframes_only(
            self.settings.mode,
            v.keyframes_only,
            ViewerEstimate {
                kbps: estimate_kbps,
                silent,
            },
            target,
        );
        Some(Verdict {
            estimate_kbps,
            keyframes_only: v.keyframes_only,
        })
    }

    fn leave(&self, id: u64) {
        let mut st = self.lock();
        if let Some(v) = st.viewers.remove(&id) {
            let now = Instant::now();
            st.left
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < REMEMBER);
            if st.left.len() >= REMEMBER_MAX
                && let Some(oldest) = st
                    .left
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(c, _)| c.clone())
            {
                st.left.remove(&oldest);
            }
            st.left.insert(v.client, (v.estimator.kbps(), now));
            self.replan(&mut st);
        }
    }
}

impl ViewerRate {
    /// Feeds one sample of this viewer's link.
    pub fn sample(&self, s: LinkSample) -> Option<Verdict> {
        self.rate.sample(self.id, s)
    }
}

impl Drop for ViewerRate {
    fn drop(&mut self) {
        self.rate.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(mode: Mode) -> (Arc<RateControl>, Arc<EncoderControl>) {
        let enc = EncoderControl::new(Duration::from_secs(1), 2000);
        let rc = RateControl::new(
            RateSettings {
                mode,
                ceiling_kbps: 2000,
                min_kbps: 100,
                picture: Some(Picture {
                    width: 1280,
                    height: 720,
                    fps: 30,
                }),
            },
            enc.clone(),
        );
        (rc, enc)
    }

    fn lossy(n: u64, loss: f64) -> LinkSample {
        LinkSample {
            at: Instant::now() + Duration::from_secs(n),
            reports: n,
            fraction_lost: loss,
            rtt: Some(Duration::from_millis(5)),
            transport_kbps: None,
            sent_kbps: None,
        }
    }

    #[test]
    fn the_encoder_follows_a_lossy_viewer_and_returns_when_it_leaves() {
        let (rc, enc) = control(Mode::FollowWeakest);
        let good = rc.join("good");
        assert_eq!(
            enc.take_bitrate_request(),
            Some(1000),
            "the first viewer starts at half the ceiling"
        );
        let bad = rc.join("bad");
        let mut n = 0;
        while rc.plan().target_kbps < 2000 {
            n += 1;
            assert!(n < 8, "the slow start reaches the ceiling in a few reports");
            good.sample(lossy(n, 0.0));
        }
        enc.take_bitrate_request();
        while rc.plan().target_kbps > 700 {
            n += 1;
            assert!(n < 20, "the target falls under heavy loss");
            bad.sample(lossy(n, 0.3));
        }
        let asked = enc.take_bitrate_request().expect("the encoder was asked");
        assert_eq!(asked, rc.plan().target_kbps);
        assert!(
            enc.frame_divisor() > 1,
            "720p under 700 kbit/s drops frames"
        );
        drop(bad);
        assert_eq!(rc.plan().target_kbps, 2000, "the good viewer alone");
        assert_eq!(enc.take_bitrate_request(), Some(2000));
        assert_eq!(enc.frame_divisor(), 1);
    }

    #[test]
    fn the_ceiling_caps_every_estimate() {
        let (rc, enc) = control(Mode::FollowWeakest);
        let v = rc.join("v");
        rc.set_ceiling(500);
        assert_eq!(enc.take_bitrate_request(), Some(500));
        let verdict = v.sample(lossy(1, 0.0)).expect("joined");
        assert_eq!(
            verdict.estimate_kbps, 500,
            "growth stops at the new ceiling"
        );
        rc.set_ceiling(1000);
        assert_eq!(
            rc.plan().target_kbps,
            1000,
            "the link did not hold it down: it follows the ceiling up"
        );
        assert_eq!(enc.take_bitrate_request(), Some(1000));
        v.sample(lossy(2, 0.3));
        assert_eq!(rc.plan().target_kbps, 850);
        rc.set_ceiling(2000);
        assert_eq!(
            rc.plan().target_kbps,
            850,
            "the link holds it down: it stays"
        );
    }

    #[test]
    fn keep_quality_puts_the_weak_viewer_on_keyframes() {
        let (rc, enc) = control(Mode::KeepQuality);
        let v = rc.join("v");
        let mut verdict = v.sample(lossy(1, 0.0)).expect("joined");
        assert!(!verdict.keyframes_only);
        for n in 2..6 {
            verdict = v.sample(lossy(n, 0.4)).expect("joined");
        }
        assert!(verdict.keyframes_only, "{verdict:?}");
        assert_eq!(rc.plan().target_kbps, 2000, "the encoder keeps its quality");
        assert_eq!(enc.take_bitrate_request(), None);
    }

    #[test]
    fn a_viewer_back_within_a_minute_starts_where_its_link_left_off() {
        let (rc, _enc) = control(Mode::FollowWeakest);
        let t0 = Instant::now();
        let v = rc.join_at("web-1", t0);
        for n in 1..4 {
            v.sample(lossy(n, 0.4));
        }
        let left_at = rc.plan().target_kbps;
        assert!(left_at < 1100, "{left_at}");
        drop(v);
        assert_eq!(rc.plan().target_kbps, 2000, "nobody watches: the ceiling");
        let again = rc.join_at("web-1", Instant::now());
        assert_eq!(rc.plan().target_kbps, left_at, "back where it was");
        drop(again);
        let other = rc.join_at("web-2", Instant::now());
        assert_eq!(
            rc.plan().target_kbps,
            1000,
            "another client, alone, starts at half the ceiling"
        );
        let second = rc.join_at("web-3", Instant::now());
        assert_eq!(
            rc.plan().target_kbps,
            1000,
            "one joining a watched camera starts at the ceiling (web-2 holds it at 1000)"
        );
        drop((other, second));
        let late = rc.join_at("web-1", Instant::now() + REMEMBER);
        assert_eq!(rc.plan().target_kbps, 1000, "forgotten after a minute");
        drop(late);
    }
}
