//! Encoder control, apart from the hub's fan-out: keyframe requests
//! (coalesced, and rationed camera-wide) and bitrate changes travel from
//! viewers, the hub and DataChannel commands to the media thread, and the
//! bitrate the encoder actually applied travels back for `video.status`.
//! Std only (no tokio): the media thread polls it between frames.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// When keyframe requests reach the encoder. Pure, tested with injected `Instant`s.
///
/// A request made while an earlier one is still unanswered rides on it (one
/// IDR serves everyone waiting); forced IDRs are at most one per `gap`
/// camera-wide, since each costs every viewer the bits of a whole picture.
#[derive(Debug, Clone)]
pub struct KeyframeRation {
    gap: Duration,
    /// When a keyframe was last asked for, until one comes out: one IDR
    /// serves every request made before it.
    asked: Option<Instant>,
    /// When the encoder was last made to produce an IDR.
    last_forced: Option<Instant>,
}

impl KeyframeRation {
    /// A ration of one forced IDR per `gap`; a request unanswered for `gap` expires.
    pub fn new(gap: Duration) -> Self {
        Self {
            gap,
            asked: None,
            last_forced: None,
        }
    }

    fn within_gap(&self, since: Option<Instant>, now: Instant) -> bool {
        since.is_some_and(|t| now.saturating_duration_since(t) < self.gap)
    }

    /// Notes a keyframe request made at `now`; false when one is already on
    /// its way (the caller need not ask the encoder again).
    pub fn ask(&mut self, now: Instant) -> bool {
        if self.within_gap(self.asked, now) {
            return false;
        }
        self.asked = Some(now);
        true
    }

    /// Whether a pending request may go to the encoder at `now` (and notes
    /// that it does). A request that must wait stays pending.
    pub fn force_now(&mut self, now: Instant) -> bool {
        if self.within_gap(self.last_forced, now) {
            return false;
        }
        self.last_forced = Some(now);
        true
    }

    /// An encoded unit came out; a keyframe answers every request so far.
    pub fn produced(&mut self, keyframe: bool) {
        if keyframe {
            self.asked = None;
        }
    }

    /// The last keyframe reached nobody (it was published before any viewer
    /// subscribed, e.g. the first one of a camera start while the viewer was
    /// still connecting): it does not use up the ration, so the viewer that
    /// subscribes next gets one at once instead of a gap later.
    pub fn unseen(&mut self) {
        self.last_forced = None;
    }

    /// The stream restarted: a request made before went to the old stream,
    /// so a new one is noted whatever was on its way.
    pub fn restart(&mut self, now: Instant) {
        self.asked = Some(now);
    }
}

/// The shared handle through which everyone steers the one video encoder.
#[derive(Debug)]
pub struct EncoderControl {
    ration: Mutex<KeyframeRation>,
    keyframe_requested: AtomicBool,
    /// A bitrate change waiting for the media thread; 0 when none.
    bitrate_request: AtomicU32,
    /// The bitrate the next encoder starts with (the last one asked for).
    target_kbps: AtomicU32,
    /// What the running (or last) encoder applied; `None` when it has no
    /// bitrate to set (passthrough).
    applied_kbps: Mutex<Option<u32>>,
    /// Encode one camera frame in this many (congestion control lowers the rate).
    frame_divisor: AtomicU32,
}

impl EncoderControl {
    /// A handle for an encoder starting at `bitrate_kbps`, forcing at most one IDR per `keyframe_gap`.
    pub fn new(keyframe_gap: Duration, bitrate_kbps: u32) -> Arc<Self> {
        Arc::new(Self {
            ration: Mutex::new(KeyframeRation::new(keyframe_gap)),
            keyframe_requested: AtomicBool::new(false),
            bitrate_request: AtomicU32::new(0),
            target_kbps: AtomicU32::new(bitrate_kbps),
            applied_kbps: Mutex::new(Some(bitrate_kbps)),
            frame_divisor: AtomicU32::new(1),
        })
    }

    // A panic elsewhere while holding the lock must not take control down with it.
    fn ration(&self) -> MutexGuard<'_, KeyframeRation> {
        self.ration.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the encoder for a keyframe (coalesced: one IDR serves every
    /// request made before it).
    pub fn request_keyframe(&self) {
        if self.ration().ask(Instant::now()) {
            self.keyframe_requested.store(true, Ordering::Release);
        }
    }

    /// Takes a pending keyframe request (called by the media thread before
    /// each frame), if one may be served now: at most one forced IDR per
    /// gap camera-wide; a later one stays pending until then.
    pub fn take_keyframe_request(&self) -> bool {
        if !self.keyframe_requested.load(Ordering::Acquire) {
            return false;
        }
        if !self.ration().force_now(Instant::now()) {
            return false;
        }
        self.keyframe_requested.swap(false, Ordering::AcqRel)
    }

    /// Whether a keyframe request waits for the encoder.
    pub fn keyframe_pending(&self) -> bool {
        self.keyframe_requested.load(Ordering::Acquire)
    }

    /// Reports an encoded unit on its way to viewers (the hub calls it); a
    /// keyframe answers every request so far.
    pub fn produced(&self, keyframe: bool) {
        if keyframe {
            self.ration().produced(true);
        }
    }

    /// A keyframe was published that no subscriber received: it does not
    /// count against the ration ([`KeyframeRation::unseen`]).
    pub fn keyframe_unseen(&self) {
        self.ration().unseen();
    }

    /// The stream restarted (encoder reopened): asks for a keyframe whatever was on its way.
    pub fn restarted(&self) {
        self.ration().restart(Instant::now());
        self.keyframe_requested.store(true, Ordering::Release);
    }

    /// Asks the encoder to change its bitrate (shared by every viewer).
    pub fn request_bitrate(&self, kbps: u32) {
        self.target_kbps.store(kbps, Ordering::Release);
        self.bitrate_request.store(kbps, Ordering::Release);
    }

    /// Takes a pending bitrate change (called by the media thread).
    pub fn take_bitrate_request(&self) -> Option<u32> {
        match self.bitrate_request.swap(0, Ordering::AcqRel) {
            0 => None,
            kbps => Some(kbps),
        }
    }

    /// The bitrate a newly opened encoder starts with.
    pub fn target_kbps(&self) -> u32 {
        self.target_kbps.load(Ordering::Acquire)
    }

    /// Sets how many camera frames go by per encoded one (1: all are encoded).
    pub fn set_frame_divisor(&self, divisor: u32) {
        self.frame_divisor.store(divisor.max(1), Ordering::Release);
    }

    /// How many camera frames go by per encoded one.
    pub fn frame_divisor(&self) -> u32 {
        self.frame_divisor.load(Ordering::Acquire).max(1)
    }

    /// Records what the encoder applied (`None`: it has no bitrate to set).
    pub fn set_applied_kbps(&self, kbps: Option<u32>) {
        *self
            .applied_kbps
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = kbps;
    }

    /// The bitrate the running (or last) encoder applied; before the first
    /// one opens, the one it will start with. `None` when the encoder has no
    /// bitrate to set (camera H.264 passthrough).
    pub fn applied_kbps(&self) -> Option<u32> {
        *self
            .applied_kbps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ration() -> (KeyframeRation, Instant) {
        (KeyframeRation::new(Duration::from_secs(1)), Instant::now())
    }

    #[test]
    fn requests_made_together_share_one_keyframe() {
        let (mut r, t0) = ration();
        assert!(r.ask(t0), "the first asks");
        assert!(
            !r.ask(t0 + Duration::from_millis(100)),
            "the second rides on the keyframe already asked for"
        );
        r.produced(true);
        assert!(
            r.ask(t0 + Duration::from_millis(200)),
            "once a keyframe went out, a new request asks again"
        );
        // A request that got no keyframe within the gap is asked again.
        assert!(
            r.ask(t0 + Duration::from_millis(1200)),
            "an unanswered request expires"
        );
        assert!(!r.ask(t0 + Duration::from_millis(1300)));
        r.produced(false);
        assert!(
            !r.ask(t0 + Duration::from_millis(1400)),
            "a P-frame answers nothing"
        );
    }

    #[test]
    fn forced_keyframes_are_one_per_gap_camera_wide() {
        let (mut r, t0) = ration();
        assert!(r.force_now(t0));
        assert!(!r.force_now(t0 + Duration::from_millis(300)));
        assert!(!r.force_now(t0 + Duration::from_millis(999)));
        assert!(r.force_now(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_keyframe_nobody_saw_does_not_use_up_the_ration() {
        let (mut r, t0) = ration();
        assert!(r.force_now(t0));
        assert!(!r.force_now(t0 + Duration::from_millis(300)));
        r.unseen();
        assert!(r.force_now(t0 + Duration::from_millis(300)));
        assert!(
            !r.force_now(t0 + Duration::from_millis(400)),
            "the ration holds again after it"
        );
    }

    #[test]
    fn restart_asks_again_even_with_a_request_on_its_way() {
        let (mut r, t0) = ration();
        assert!(r.ask(t0));
        r.restart(t0 + Duration::from_millis(10));
        assert!(
            !r.ask(t0 + Duration::from_millis(20)),
            "the restart's request is now the one on its way"
        );
    }

    #[test]
    fn handle_coalesces_rations_and_reports_bitrates() {
        let c = EncoderControl::new(Duration::from_secs(1), 1000);
        assert!(!c.take_keyframe_request(), "nothing asked yet");
        c.request_keyframe();
        c.request_keyframe();
        assert!(c.keyframe_pending());
        assert!(c.take_keyframe_request());
        assert!(!c.keyframe_pending(), "two requests, one IDR");
        c.restarted();
        assert!(c.keyframe_pending());
        assert!(
            !c.take_keyframe_request(),
            "not served within a gap of the last forced one"
        );
        assert!(c.keyframe_pending(), "it stays pending");

        assert_eq!(
            c.applied_kbps(),
            Some(1000),
            "the start value until an encoder runs"
        );
        assert_eq!(c.take_bitrate_request(), None);
        c.request_bitrate(500);
        assert_eq!(
            c.target_kbps(),
            500,
            "a new encoder starts at the new target"
        );
        assert_eq!(c.applied_kbps(), Some(1000), "not applied yet");
        assert_eq!(c.take_bitrate_request(), Some(500));
        assert_eq!(c.take_bitrate_request(), None, "taken once");
        c.set_applied_kbps(None);
        assert_eq!(c.applied_kbps(), None, "passthrough has none");
    }
}
