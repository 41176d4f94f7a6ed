//! The hub's decisions, as a pure state machine fed subscriber events and
//! time: which frames a subscriber gets (keyframe gating after a join or a
//! drop), when a drop should ask the encoder for a keyframe, and whether
//! the camera should run. Keyframe coalescing and rationing belong to the
//! encoder's control ([`crate::media::encode::KeyframeRation`]). No tokio, no threads: unit-tested with injected `Instant`s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Identifies one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberId(pub u64);

/// What to do with a frame for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Queue it.
    Deliver,
    /// Skip it: the subscriber waits for a keyframe.
    Skip,
}

/// Per-subscriber counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Frames queued to the subscriber.
    pub delivered: u64,
    /// Frames dropped because its queue was full.
    pub dropped: u64,
    /// Frames skipped while it waited for a keyframe.
    pub skipped: u64,
}

#[derive(Debug, Clone, Default)]
struct SubState {
    waiting_keyframe: bool,
    /// Congestion control's verdict for a viewer that cannot keep up.
    keyframes_only: bool,
    stats: SubscriberStats,
}

/// Tunables of the policy.
#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig {
    /// Keep the camera running with no subscribers.
    pub always_on: bool,
    /// How long the camera keeps running after the last subscriber leaves.
    pub idle_grace: Duration,
    /// Minimum time between keyframe requests caused by drops (the agent
    /// also rations forced IDRs camera-wide by it).
    pub drop_keyframe_gap: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            always_on: false,
            // Stop within 1 s of the last leave, but survive a quick reconnect.
            idle_grace: Duration::from_millis(500),
            drop_keyframe_gap: Duration::from_secs(1),
        }
    }
}

/// The hub's state machine.
#[derive(Debug)]
pub struct HubPolicy {
    cfg: PolicyConfig,
    subs: BTreeMap<SubscriberId, SubState>,
    holds: usize,
    next_id: u64,
    idle_since: Option<Instant>,
    last_drop_request: Option<Instant>,
}

impl HubPolicy {
    /// A policy with no subscribers.
    pub fn new(cfg: PolicyConfig) -> Self {
        Self {
            cfg,
            subs: BTreeMap::new(),
            holds: 0,
            next_id: 1,
            idle_since: None,
            last_drop_request: None,
        }
    }

    /// Adds a subscriber, which waits for a keyframe (the caller asks the
    /// encoder for one; requests made together share one IDR).
    pub fn subscribe(&mut self) -> SubscriberId {
        let id = SubscriberId(self.next_id);
        self.next_id += 1;
        self.subs.insert(
            id,
            SubState {
                waiting_keyframe: true,
                ..SubState::default()
            },
        );
        self.idle_since = None;
        id
    }

    /// Removes a subscriber; returns its final counters.
    pub fn unsubscribe(&mut self, id: SubscriberId, now: Instant) -> Option<SubscriberStats> {
        let st = self.subs.remove(&id)?;
        if self.subs.is_empty() && self.holds == 0 {
            self.idle_since = Some(now);
        }
        Some(st.stats)
    }

    /// Keeps the camera wanted without receiving frames (a viewer still
    /// negotiating: the camera warms up while ICE and DTLS complete).
    pub fn hold(&mut self) {
        self.holds += 1;
        self.idle_since = None;
    }

    /// Releases a [`HubPolicy::hold`].
    pub fn release(&mut self, now: Instant) {
        self.holds = self.holds.saturating_sub(1);
        if self.holds == 0 && self.subs.is_empty() {
            self.idle_since = Some(now);
        }
    }

    /// Number of holds.
    pub fn holds(&self) -> usize {
        self.holds
    }

    /// Number of subscribers.
    pub fn subscribers(&self) -> usize {
        self.subs.len()
    }

    /// Ids of every subscriber, in order.
    pub fn ids(&self) -> Vec<SubscriberId> {
        self.subs.keys().copied().collect()
    }

    /// Whether a frame goes to this subscriber. A keyframe ends the wait.
    pub fn route(&mut self, id: SubscriberId, keyframe: bool) -> Route {
        let Some(st) = self.subs.get_mut(&id) else {
            return Route::Skip;
        };
        if (st.waiting_keyframe || st.keyframes_only) && !keyframe {
            st.stats.skipped += 1;
            return Route::Skip;
        }
        st.waiting_keyframe = false;
        Route::Deliver
    }

    /// Gives the subscriber keyframes only, or every frame again. Returns
    /// true when a keyframe should be requested: leaving keyframes-only, it
    /// resumes at one (its decoder has none of the frames in between).
    pub fn set_keyframes_only(&mut self, id: SubscriberId, on: bool) -> bool {
        let Some(st) = self.subs.get_mut(&id) else {
            return false;
        };
        if st.keyframes_only == on {
            return false;
        }
        st.keyframes_only = on;
        if !on {
            st.waiting_keyframe = true;
        }
        !on
    }

    /// The frame was queued.
    pub fn delivered(&mut self, id: SubscriberId) {
        if let Some(st) = self.subs.get_mut(&id) {
            st.stats.delivered += 1;
        }
    }

    /// The subscriber's queue was full: the frame is dropped and the
    /// subscriber resumes only at a keyframe. Returns true when a keyframe
    /// should be requested (at most once per `drop_keyframe_gap`).
    pub fn dropped(&mut self, id: SubscriberId, now: Instant) -> bool {
        let Some(st) = self.subs.get_mut(&id) else {
            return false;
        };
        st.stats.dropped += 1;
        st.waiting_keyframe = true;
        let due = self
            .last_drop_request
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.drop_keyframe_gap);
        if !due {
            return false;
        }
        self.last_drop_request = Some(now);
        true
    }

    /// The stream restarted (camera reopened): everyone waits for a keyframe.
    pub fn discontinuity(&mut self) {
        for st in self.subs.values_mut() {
            st.waiting_keyframe = true;
        }
    }

    /// Counters of one subscriber.
    pub fn stats(&self, id: SubscriberId) -> Option<SubscriberStats> {
        self.subs.get(&id).map(|s| s.stats)
    }

    /// Whether the camera and encoder should be running at `now`.
    pub fn wants_source(&self, now: Instant) -> bool {
        self.cfg.always_on
            || !self.subs.is_empty()
            || self.holds > 0
            || self
                .idle_since
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.idle_grace)
    }

    /// When an idle camera must stop, if it is in its grace period.
    pub fn stop_deadline(&self) -> Option<Instant> {
        if self.cfg.always_on || !self.subs.is_empty() || self.holds > 0 {
            return None;
        }
        self.idle_since.map(|t| t + self.cfg.idle_grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> (HubPolicy, Instant) {
        (HubPolicy::new(PolicyConfig::default()), Instant::now())
    }

    #[test]
    fn new_subscriber_waits_for_keyframe() {
        let (mut p, _) = policy();
        let id = p.subscribe();
        assert_eq!(p.route(id, false), Route::Skip);
        assert_eq!(p.route(id, true), Route::Deliver);
        assert_eq!(p.route(id, false), Route::Deliver);
        assert_eq!(p.stats(id).map(|s| s.skipped), Some(1));
    }

    #[test]
    fn drop_gates_until_next_keyframe_and_rate_limits_requests() {
        let (mut p, t0) = policy();
        let id = p.subscribe();
        p.route(id, true);
        assert!(p.dropped(id, t0), "first drop asks for a keyframe");
        assert_eq!(
            p.route(id, false),
            Route::Skip,
            "never a P-frame after a gap"
        );
        assert!(
            !p.dropped(id, t0 + Duration::from_millis(500)),
            "second within 1 s does not"
        );
        assert!(p.dropped(id, t0 + Duration::from_millis(1000)));
        assert_eq!(p.route(id, true), Route::Deliver);
        assert_eq!(p.stats(id).map(|s| s.dropped), Some(3));
    }

    #[test]
    fn one_subscribers_drop_does_not_gate_another() {
        let (mut p, t0) = policy();
        let slow = p.subscribe();
        let fast = p.subscribe();
        p.route(slow, true);
        p.route(fast, true);
        p.dropped(slow, t0);
        assert_eq!(p.route(slow, false), Route::Skip);
        assert_eq!(p.route(fast, false), Route::Deliver);
    }

    #[test]
    fn source_runs_only_with_subscribers_plus_grace() {
        let (mut p, t0) = policy();
        assert!(!p.wants_source(t0), "idle at start");
        let a = p.subscribe();
        let b = p.subscribe();
        assert!(p.wants_source(t0));
        p.unsubscribe(a, t0);
        assert!(
            p.wants_source(t0 + Duration::from_secs(60)),
            "b still watches"
        );
        p.unsubscribe(b, t0);
        assert!(p.wants_source(t0 + Duration::from_millis(499)));
        assert!(!p.wants_source(t0 + Duration::from_millis(500)));
        assert_eq!(p.stop_deadline(), Some(t0 + Duration::from_millis(500)));
        let _c = p.subscribe();
        assert!(
            p.wants_source(t0 + Duration::from_secs(5)),
            "restart on demand"
        );
        assert_eq!(p.stop_deadline(), None);
    }

    #[test]
    fn holds_keep_the_source_without_a_queue() {
        let (mut p, t0) = policy();
        p.hold();
        assert!(p.wants_source(t0 + Duration::from_secs(60)));
        let a = p.subscribe();
        p.release(t0);
        assert!(
            p.wants_source(t0 + Duration::from_secs(60)),
            "the subscriber keeps it"
        );
        p.unsubscribe(a, t0);
        assert!(!p.wants_source(t0 + Duration::from_secs(1)));
        p.release(t0);
        assert_eq!(p.holds(), 0, "extra releases are harmless");
    }

    #[test]
    fn always_on_keeps_running() {
        let p = HubPolicy::new(PolicyConfig {
            always_on: true,
            ..PolicyConfig::default()
        });
        assert!(p.wants_source(Instant::now()));
    }

    #[test]
    fn discontinuity_gates_everyone_and_unknown_ids_are_ignored() {
        let (mut p, t0) = policy();
        let a = p.subscribe();
        p.route(a, true);
        p.discontinuity();
        assert_eq!(p.route(a, false), Route::Skip);
        let ghost = SubscriberId(999);
        assert_eq!(p.route(ghost, true), Route::Skip);
        assert!(!p.dropped(ghost, t0));
        assert_eq!(p.unsubscribe(ghost, t0), None);
    }

    #[test]
    fn keyframes_only_skips_p_frames_and_resumes_at_a_keyframe() {
        let mut p = HubPolicy::new(PolicyConfig::default());
        let a = p.subscribe();
        assert_eq!(p.route(a, true), Route::Deliver);
        assert!(!p.set_keyframes_only(a, true), "entering needs no keyframe");
        assert!(!p.set_keyframes_only(a, true), "no change, nothing to do");
        assert_eq!(p.route(a, false), Route::Skip);
        assert_eq!(p.route(a, true), Route::Deliver);
        assert_eq!(p.route(a, false), Route::Skip);
        assert!(
            p.set_keyframes_only(a, false),
            "leaving asks for a keyframe"
        );
        assert_eq!(p.route(a, false), Route::Skip, "until it comes");
        assert_eq!(p.route(a, true), Route::Deliver);
        assert_eq!(p.route(a, false), Route::Deliver);
        assert_eq!(p.stats(a).map(|s| s.skipped), Some(3));
    }
}
