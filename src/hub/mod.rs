//! Encode once, fan out to many: the hub hands each [`EncodedFrame`] to every
//! subscriber through its own bounded queue. Frames share one `Bytes` buffer
//! (no copy per subscriber); a full queue drops the frame for that subscriber
//! only, never stalling capture. The decisions live in [`policy`]; this file
//! is the thread-safe shell around it that the pipeline and sessions share.

pub mod policy;

use crate::frame::EncodedFrame;
use policy::{HubPolicy, PolicyConfig, Route, SubscriberId, SubscriberStats};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Frames a subscriber may have queued before the hub starts dropping for it.
pub const QUEUE_FRAMES: usize = 8;

struct State {
    policy: HubPolicy,
    queues: BTreeMap<SubscriberId, mpsc::Sender<EncodedFrame>>,
}

/// Totals across the hub's lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Current subscribers.
    pub subscribers: usize,
    /// Current [`Demand`] guards.
    pub holds: usize,
    /// Frames published by the pipeline.
    pub published: u64,
    /// Frames dropped for slow subscribers.
    pub dropped: u64,
}

/// The fan-out point between the pipeline and the sessions.
pub struct Hub {
    state: Mutex<State>,
    demand: Condvar,
    epoch: Instant,
    closed: AtomicBool,
    keyframe_requested: AtomicBool,
    bitrate_request: AtomicU32,
    bitrate_kbps: AtomicU32,
    published: AtomicU64,
    dropped: AtomicU64,
}

impl Hub {
    /// A hub with the given policy; `bitrate_kbps` is the encoder's starting bitrate.
    pub fn new(cfg: PolicyConfig, bitrate_kbps: u32) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                policy: HubPolicy::new(cfg),
                queues: BTreeMap::new(),
            }),
            demand: Condvar::new(),
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
            keyframe_requested: AtomicBool::new(false),
            bitrate_request: AtomicU32::new(0),
            bitrate_kbps: AtomicU32::new(bitrate_kbps),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    // A panic elsewhere while holding the lock must not take the hub down with it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instant presentation times count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Adds a subscriber; its first frame will be a keyframe, requested now.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let id = {
            let mut st = self.lock();
            let (id, ask) = st.policy.subscribe(Instant::now());
            st.queues.insert(id, tx);
            if ask {
                self.keyframe_requested.store(true, Ordering::Release);
            }
            id
        };
        if self.closed.load(Ordering::Acquire) {
            // Closed between the check and now: hand back a finished subscription.
            self.lock().queues.remove(&id);
        }
        self.demand.notify_all();
        tracing::debug!(subscriber = id.0, "subscribed");
        Subscription {
            id,
            rx,
            hub: Arc::clone(self),
        }
    }

    /// Keeps the camera running without receiving frames, until the guard drops.
    pub fn demand(self: &Arc<Self>) -> Demand {
        self.lock().policy.hold();
        self.demand.notify_all();
        Demand {
            hub: Arc::clone(self),
        }
    }

    fn unsubscribe(&self, id: SubscriberId) {
        let stats = {
            let mut st = self.lock();
            st.queues.remove(&id);
            st.policy.unsubscribe(id, Instant::now())
        };
        self.demand.notify_all();
        if let Some(s) = stats {
            tracing::debug!(
                subscriber = id.0,
                delivered = s.delivered,
                dropped = s.dropped,
                "unsubscribed"
            );
        }
    }

    /// Hands a frame to every subscriber that can take it (called by the pipeline).
    pub fn publish(&self, frame: EncodedFrame) {
        let now = Instant::now();
        let mut ask_keyframe = false;
        // Counted before delivery, so a subscriber holding the frame sees it counted.
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        let State { policy, queues } = &mut *st;
        policy.frame(frame.keyframe);
        queues.retain(|&id, tx| {
            if policy.route(id, frame.keyframe) == Route::Skip {
                return true;
            }
            match tx.try_send(frame.clone()) {
                Ok(()) => {
                    policy.delivered(id);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    ask_keyframe |= policy.dropped(id, now);
                    true
                }
                // The receiver is gone; its Subscription drop will tidy the policy.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        drop(st);
        if ask_keyframe {
            // The policy noted the request already.
            self.keyframe_requested.store(true, Ordering::Release);
        }
    }

    /// Asks the encoder for a keyframe (coalesced: one IDR serves every
    /// request made before it).
    pub fn request_keyframe(&self) {
        if self.lock().policy.ask_keyframe(Instant::now()) {
            self.keyframe_requested.store(true, Ordering::Release);
        }
    }

    /// Takes a pending keyframe request (called by the pipeline before each
    /// frame), if one may be served now: at most one forced IDR per second
    /// camera-wide; a later one stays pending until then.
    pub fn take_keyframe_request(&self) -> bool {
        if !self.keyframe_requested.load(Ordering::Acquire) {
            return false;
        }
        if !self.lock().policy.force_keyframe_now(Instant::now()) {
            return false;
        }
        self.keyframe_requested.swap(false, Ordering::AcqRel)
    }

    /// Whether a keyframe request waits for the encoder.
    pub fn keyframe_pending(&self) -> bool {
        self.keyframe_requested.load(Ordering::Acquire)
    }

    /// Asks the encoder to change its bitrate (shared by every viewer).
    pub fn request_bitrate(&self, kbps: u32) {
        self.bitrate_request.store(kbps, Ordering::Release);
    }

    /// Takes a pending bitrate change (called by the pipeline).
    pub fn take_bitrate_request(&self) -> Option<u32> {
        match self.bitrate_request.swap(0, Ordering::AcqRel) {
            0 => None,
            kbps => Some(kbps),
        }
    }

    /// Records the bitrate the encoder now runs at.
    pub fn set_bitrate_kbps(&self, kbps: u32) {
        self.bitrate_kbps.store(kbps, Ordering::Release);
    }

    /// The bitrate the encoder runs at (or will start with).
    pub fn bitrate_kbps(&self) -> u32 {
        self.bitrate_kbps.load(Ordering::Acquire)
    }

    /// The stream restarted: every subscriber waits for the next keyframe.
    pub fn discontinuity(&self) {
        let mut st = self.lock();
        st.policy.discontinuity();
        // Forced: a request made before the restart went to the old stream.
        st.policy.frame(true);
        st.policy.ask_keyframe(Instant::now());
        drop(st);
        self.keyframe_requested.store(true, Ordering::Release);
    }

    /// Whether the camera should be running now.
    pub fn wants_source(&self) -> bool {
        !self.is_closed() && self.lock().policy.wants_source(Instant::now())
    }

    /// Blocks until the camera is wanted (true) or the hub closes (false).
    /// Wakes at least every `max_wait` so callers can check other things.
    pub fn wait_for_demand(&self, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        let mut st = self.lock();
        loop {
            if self.is_closed() {
                return false;
            }
            let now = Instant::now();
            if st.policy.wants_source(now) {
                return true;
            }
            if now >= deadline {
                return false;
            }
            st = self
                .demand
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sleeps up to `d`, returning early (false) if the hub closes.
    pub fn sleep_unless_closed(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut st = self.lock();
        loop {
            if self.is_closed() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            st = self
                .demand
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ends the hub: subscribers see the end of their stream, the pipeline stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().queues.clear();
        self.demand.notify_all();
    }

    /// True once [`Hub::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Totals and the current subscriber count.
    pub fn stats(&self) -> HubStats {
        let st = self.lock();
        HubStats {
            subscribers: st.policy.subscribers(),
            holds: st.policy.holds(),
            published: self.published.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Keeps the camera wanted while alive (see [`Hub::demand`]).
pub struct Demand {
    hub: Arc<Hub>,
}

impl Drop for Demand {
    fn drop(&mut self) {
        self.hub.lock().policy.release(Instant::now());
        self.hub.demand.notify_all();
    }
}

/// One subscriber's end of the hub. Dropping it unsubscribes.
pub struct Subscription {
    id: SubscriberId,
    rx: mpsc::Receiver<EncodedFrame>,
    hub: Arc<Hub>,
}

impl Subscription {
    /// The next frame; `None` when the hub closed.
    pub async fn recv(&mut self) -> Option<EncodedFrame> {
        self.rx.recv().await
    }

    /// The next frame, blocking the thread (not for use on the async runtime).
    pub fn blocking_recv(&mut self) -> Option<EncodedFrame> {
        self.rx.blocking_recv()
    }

    /// A frame if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<EncodedFrame> {
        self.rx.try_recv().ok()
    }

    /// This subscriber's id.
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// This subscriber's counters so far.
    pub fn stats(&self) -> SubscriberStats {
        self.hub.lock().policy.stats(self.id).unwrap_or_default()
    }

    /// The hub this subscription belongs to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(n: u8, keyframe: bool) -> EncodedFrame {
        EncodedFrame {
            data: Bytes::from(vec![0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }, n]),
            pts: Duration::from_millis(u64::from(n) * 33),
            keyframe,
        }
    }

    #[test]
    fn frames_share_one_buffer() {
        let hub = Hub::new(PolicyConfig::default(), 1000);
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        let f = frame(0, true);
        let ptr = f.data.as_ptr();
        hub.publish(f);
        let fa = a.try_recv().expect("queued for a");
        let fb = b.try_recv().expect("queued for b");
        assert_eq!(fa.data.as_ptr(), ptr);
        assert_eq!(fb.data.as_ptr(), ptr);
    }

    #[test]
    fn slow_subscriber_drops_and_resumes_at_keyframe() {
        let hub = Hub::new(PolicyConfig::default(), 1000);
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        assert!(hub.take_keyframe_request(), "joining asked for a keyframe");
        hub.publish(frame(0, true));
        fast.try_recv();
        for n in 1..=QUEUE_FRAMES as u8 + 3 {
            hub.publish(frame(n, false));
            assert_eq!(
                fast.try_recv().map(|f| f.data[5]),
                Some(n),
                "fast never misses"
            );
        }
        assert!(hub.keyframe_pending(), "the drop asked for a keyframe");
        assert!(
            !hub.take_keyframe_request(),
            "not served within a second of the last forced one"
        );
        assert_eq!(
            slow.stats().dropped,
            1,
            "the frame that found the queue full"
        );
        assert_eq!(slow.stats().skipped, 3, "then skipped until a keyframe");
        // Drain: the first QUEUE_FRAMES frames, then nothing until a keyframe.
        let got: Vec<u8> = std::iter::from_fn(|| slow.try_recv())
            .map(|f| f.data[5])
            .collect();
        assert_eq!(got, (0..QUEUE_FRAMES as u8).collect::<Vec<_>>());
        hub.publish(frame(20, false));
        assert!(slow.try_recv().is_none(), "no P-frame after a gap");
        hub.publish(frame(21, true));
        assert_eq!(slow.try_recv().map(|f| f.keyframe), Some(true));
        assert_eq!(hub.stats().dropped, 1);
    }

    #[test]
    fn dropping_a_subscription_unsubscribes_and_close_ends_streams() {
        let hub = Hub::new(PolicyConfig::default(), 1000);
        let a = hub.subscribe();
        let mut b = hub.subscribe();
        assert_eq!(hub.stats().subscribers, 2);
        drop(a);
        assert_eq!(hub.stats().subscribers, 1);
        hub.close();
        assert!(b.blocking_recv().is_none());
        assert!(
            !hub.wait_for_demand(Duration::from_secs(5)),
            "closed hub wants nothing"
        );
    }

    #[test]
    fn demand_follows_subscribers() {
        let hub = Hub::new(
            PolicyConfig {
                idle_grace: Duration::ZERO,
                ..PolicyConfig::default()
            },
            1000,
        );
        assert!(!hub.wants_source());
        let s = hub.subscribe();
        assert!(hub.wait_for_demand(Duration::from_secs(5)));
        drop(s);
        assert!(!hub.wants_source());
    }

    #[test]
    fn bitrate_requests_are_taken_once() {
        let hub = Hub::new(PolicyConfig::default(), 1000);
        assert_eq!(hub.take_bitrate_request(), None);
        hub.request_bitrate(500);
        assert_eq!(hub.take_bitrate_request(), Some(500));
        assert_eq!(hub.take_bitrate_request(), None);
        hub.set_bitrate_kbps(500);
        assert_eq!(hub.bitrate_kbps(), 500);
    }
}
