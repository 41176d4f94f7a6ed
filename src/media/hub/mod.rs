//! Encode once, fan out to many: the hub hands each [`Packet`] of its
//! tracks to every subscriber through its own bounded queue. Packets share
//! one `Bytes` buffer (no copy per subscriber); a full queue drops the
//! packet for that subscriber only, never stalling capture. The decisions
//! live in [`policy`]; this file is the thread-safe shell around it that the
//! pipeline and sessions share. Steering the encoder is not the hub's job:
//! it asks the [`EncoderControl`] it was given for the keyframes its
//! subscribers need, and tells it when one passes (which answers them).

pub mod policy;

use crate::media::encode::EncoderControl;
use crate::media::frame::{Packet, TrackId, TrackInfo};
use policy::{HubPolicy, PolicyConfig, Route, SubscriberId, SubscriberStats};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Packets a subscriber may have queued before the hub starts dropping for it.
pub const QUEUE_FRAMES: usize = 8;
/// The same for a subscriber of audio only: 320 ms of 20 ms packets.
pub const QUEUE_AUDIO_PACKETS: usize = 16;

struct Queue {
    tx: mpsc::Sender<Packet>,
    /// The tracks this subscriber takes.
    tracks: Vec<TrackId>,
}

struct State {
    policy: HubPolicy,
    queues: BTreeMap<SubscriberId, Queue>,
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
    tracks: Vec<TrackInfo>,
    /// Where the keyframes that joining and dropping subscribers need are asked for.
    video_control: Arc<EncoderControl>,
    published: AtomicU64,
    dropped: AtomicU64,
}

impl Hub {
    /// A hub carrying the camera's H.264 video track, asking `video_control` for its keyframes.
    pub fn new(cfg: PolicyConfig, video_control: Arc<EncoderControl>) -> Arc<Self> {
        Self::with_tracks(cfg, vec![TrackInfo::VIDEO_H264], video_control)
    }

    /// A hub carrying `tracks`; keyframes of the gated ones are asked of `video_control`.
    pub fn with_tracks(
        cfg: PolicyConfig,
        tracks: Vec<TrackInfo>,
        video_control: Arc<EncoderControl>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                policy: HubPolicy::new(cfg),
                queues: BTreeMap::new(),
            }),
            demand: Condvar::new(),
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
            tracks,
            video_control,
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    // A panic elsewhere while holding the lock must not take the hub down with it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tracks this hub carries, each described once.
    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// The description of one track, if the hub carries it.
    pub fn track(&self, id: TrackId) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// The instant presentation times count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Adds a subscriber of the video track; its first packet will be a
    /// keyframe, requested now.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        self.subscribe_to(&[TrackId::VIDEO])
    }

    /// Adds a subscriber of `tracks` (those the hub carries); a keyframe is
    /// requested when they include a gated one.
    pub fn subscribe_to(self: &Arc<Self>, tracks: &[TrackId]) -> Subscription {
        let gated = tracks
            .iter()
            .any(|t| self.track(*t).is_some_and(|i| i.keyframe_gated));
        let depth = if gated {
            QUEUE_FRAMES * tracks.len().max(1)
        } else {
            QUEUE_AUDIO_PACKETS
        };
        let (tx, rx) = mpsc::channel(depth);
        let id = {
            let mut st = self.lock();
            let id = st.policy.subscribe();
            st.queues.insert(
                id,
                Queue {
                    tx,
                    tracks: tracks.to_vec(),
                },
            );
            id
        };
        if gated {
            self.video_control.request_keyframe();
        }
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

    fn set_keyframes_only(&self, id: SubscriberId, on: bool) {
        if self.lock().policy.set_keyframes_only(id, on) {
            self.video_control.request_keyframe();
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

    /// Hands a packet to every subscriber that can take it (called by the
    /// pipeline). Packets of a track the hub does not carry are dropped.
    pub fn publish(&self, packet: Packet) {
        let Some(track) = self.track(packet.track) else {
            tracing::debug!(track = packet.track.0, "packet of an unknown track dropped");
            return;
        };
        let gated = track.keyframe_gated;
        if gated && packet.keyframe {
            // This keyframe answers every request made so far.
            self.video_control.produced(true);
        }
        let now = Instant::now();
        let mut ask_keyframe = false;
        let mut delivered = 0usize;
        // Counted before delivery, so a subscriber holding the packet sees it counted.
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        let State { policy, queues } = &mut *st;
        queues.retain(|&id, q| {
            if !q.tracks.contains(&packet.track) {
                return true;
            }
            if gated && policy.route(id, packet.keyframe) == Route::Skip {
                return true;
            }
            match q.tx.try_send(packet.clone()) {
                Ok(()) => {
                    policy.delivered(id);
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    // Only a gated track resumes at a keyframe; others just lose the packet.
                    ask_keyframe |= gated && policy.dropped(id, now);
                    true
                }
                // The receiver is gone; its Subscription drop will tidy the policy.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        drop(st);
        if gated && packet.keyframe && delivered == 0 {
            // Nobody saw it (a camera starting while its first viewer still
            // connects): the next viewer's request is served at once.
            self.video_control.keyframe_unseen();
        }
        if ask_keyframe {
            self.video_control.request_keyframe();
        }
    }

    /// The stream restarted: every subscriber waits for the next keyframe
    /// (which the pipeline asks its encoder control for).
    pub fn discontinuity(&self) {
        self.lock().policy.discontinuity();
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
    rx: mpsc::Receiver<Packet>,
    hub: Arc<Hub>,
}

impl Subscription {
    /// The next packet; `None` when the hub closed.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.rx.recv().await
    }

    /// The next packet, blocking the thread (not for use on the async runtime).
    pub fn blocking_recv(&mut self) -> Option<Packet> {
        self.rx.blocking_recv()
    }

    /// A packet if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Packet> {
        self.rx.try_recv().ok()
    }

    /// This subscriber's id.
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// Keyframes only (congestion control's verdict), or every frame again
    /// from the next keyframe, which is asked for.
    pub fn set_keyframes_only(&self, on: bool) {
        self.hub.set_keyframes_only(self.id, on);
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

    fn control() -> Arc<EncoderControl> {
        EncoderControl::new(PolicyConfig::default().drop_keyframe_gap, 1000)
    }

    fn hub_with(cfg: PolicyConfig) -> (Arc<Hub>, Arc<EncoderControl>) {
        let c = control();
        (Hub::new(cfg, c.clone()), c)
    }

    fn frame(n: u8, keyframe: bool) -> Packet {
        Packet {
            track: TrackId::VIDEO,
            data: Bytes::from(vec![0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }, n]),
            pts: Duration::from_millis(u64::from(n) * 33),
            keyframe,
        }
    }

    #[test]
    fn the_first_viewer_after_an_unseen_keyframe_gets_one_at_once() {
        // The camera starts on an offer: its first IDR is out before the
        // viewer has connected and subscribed.
        let (hub, ctl) = hub_with(PolicyConfig::default());
        ctl.restarted();
        assert!(ctl.take_keyframe_request(), "the start forces an IDR");
        hub.publish(frame(0, true));
        let _viewer = hub.subscribe();
        assert!(
            ctl.take_keyframe_request(),
            "served at once: the keyframe nobody saw does not hold it back"
        );
        // A keyframe that a viewer did receive still rations the next one.
        hub.publish(frame(1, true));
        let _second = hub.subscribe();
        assert!(!ctl.take_keyframe_request(), "rationed");
    }

    #[test]
    fn frames_share_one_buffer() {
        let (hub, _) = hub_with(PolicyConfig::default());
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
        let (hub, ctl) = hub_with(PolicyConfig::default());
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        assert!(ctl.take_keyframe_request(), "joining asked for a keyframe");
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
        assert!(ctl.keyframe_pending(), "the drop asked for a keyframe");
        assert!(
            !ctl.take_keyframe_request(),
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
        let (hub, _) = hub_with(PolicyConfig::default());
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
        let (hub, _) = hub_with(PolicyConfig {
            idle_grace: Duration::ZERO,
            ..PolicyConfig::default()
        });
        assert!(!hub.wants_source());
        let s = hub.subscribe();
        assert!(hub.wait_for_demand(Duration::from_secs(5)));
        drop(s);
        assert!(!hub.wants_source());
    }

    #[test]
    fn packets_carry_their_track_and_only_gated_tracks_wait_for_keyframes() {
        const OTHER: TrackId = TrackId::AUDIO;
        let other = TrackInfo::AUDIO_OPUS;
        let hub = Hub::with_tracks(
            PolicyConfig::default(),
            vec![TrackInfo::VIDEO_H264, other],
            control(),
        );
        assert_eq!(hub.track(OTHER), Some(&other));
        assert_eq!(hub.tracks().len(), 2);
        let mut sub = hub.subscribe_to(&[TrackId::VIDEO, OTHER]);
        let mut video_only = hub.subscribe();
        let mut audio_only = hub.subscribe_to(&[OTHER]);
        hub.publish(frame(1, false));
        hub.publish(Packet {
            track: OTHER,
            ..frame(2, false)
        });
        hub.publish(Packet {
            track: TrackId(9),
            ..frame(3, true)
        });
        let got = sub.try_recv().expect("the ungated track's packet");
        assert_eq!((got.track, got.data[5]), (OTHER, 2));
        assert!(
            sub.try_recv().is_none(),
            "the video P-frame waited for a keyframe; the unknown track is dropped"
        );
        hub.publish(frame(4, true));
        assert_eq!(sub.try_recv().map(|p| p.track), Some(TrackId::VIDEO));
        // Each subscriber gets only the tracks it asked for.
        assert_eq!(
            video_only.try_recv().map(|p| (p.track, p.data[5])),
            Some((TrackId::VIDEO, 4))
        );
        assert!(video_only.try_recv().is_none());
        assert_eq!(
            audio_only.try_recv().map(|p| (p.track, p.data[5])),
            Some((OTHER, 2))
        );
        assert!(audio_only.try_recv().is_none());
    }
}
