//! Everything systemd sees of rtcam, in one place: `READY=1`, `STATUS=`
//! lines, `STOPPING=1`, and the watchdog, which is pinged only while every
//! component that can wedge (media thread, signaling loop, session manager)
//! has shown a recent heartbeat. Without `NOTIFY_SOCKET` every call is a no-op.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Sends service notifications.
#[derive(Debug, Clone, Copy)]
pub struct Notifier;

impl Notifier {
    fn send(&self, state: &[sd_notify::NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(state) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// Start-up is complete.
    pub fn ready(&self) {
        self.send(&[sd_notify::NotifyState::Ready]);
    }

    /// A one-line status for `systemctl status`.
    pub fn status(&self, text: &str) {
        self.send(&[sd_notify::NotifyState::Status(text)]);
    }

    /// Shutting down.
    pub fn stopping(&self) {
        self.send(&[sd_notify::NotifyState::Stopping]);
    }

    /// Still alive.
    pub fn watchdog(&self) {
        self.send(&[sd_notify::NotifyState::Watchdog]);
    }

    /// The watchdog period systemd expects, if it runs one for us.
    pub fn watchdog_period(&self) -> Option<Duration> {
        sd_notify::watchdog_enabled()
    }
}

/// One component's liveness: the time of its last beat.
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A heartbeat that last beat now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// The component is alive now.
    pub fn beat(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When it last beat.
    pub fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The components the watchdog watches.
#[derive(Debug, Default)]
pub struct Heartbeats {
    beats: Mutex<BTreeMap<&'static str, Arc<Heartbeat>>>,
}

impl Heartbeats {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches an existing heartbeat under `name`.
    pub fn add(&self, name: &'static str, hb: Arc<Heartbeat>) {
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, hb);
    }

    /// A new heartbeat watched under `name`, beating now.
    pub fn register(&self, name: &'static str) -> Arc<Heartbeat> {
        let hb = Arc::new(Heartbeat::new());
        self.add(name, hb.clone());
        hb
    }

    /// Components whose last beat is older than `max_age` at `now`.
    pub fn stale(&self, now: Instant, max_age: Duration) -> Vec<&'static str> {
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, hb)| now.saturating_duration_since(hb.last()) > max_age)
            .map(|(name, _)| *name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_components_are_named() {
        let hbs = Heartbeats::new();
        let media = hbs.register("media");
        let _signaling = hbs.register("signaling");
        let now = Instant::now();
        assert!(hbs.stale(now, Duration::from_secs(5)).is_empty());
        let later = now + Duration::from_secs(10);
        assert_eq!(
            hbs.stale(later, Duration::from_secs(5)),
            ["media", "signaling"]
        );
        media.beat();
        let soon = media.last() + Duration::from_secs(1);
        assert!(!hbs.stale(soon, Duration::from_secs(5)).contains(&"media"));
    }

    #[test]
    fn notifications_reach_the_notify_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // SAFETY: no other test in this binary reads or writes NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        let n = Notifier;
        n.ready();
        n.status("2 viewers");
        n.stopping();
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        for _ in 0..3 {
            let len = sock.recv(&mut buf).expect("a notification");
            got.push(String::from_utf8_lossy(&buf[..len]).trim().to_string());
        }
        assert_eq!(got, ["READY=1", "STATUS=2 viewers", "STOPPING=1"]);
    }
}
