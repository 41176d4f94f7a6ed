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

/// What the supervisor does on one watchdog tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogStep {
    /// Ping systemd's watchdog (every component is fresh).
    pub ping: bool,
    /// Components that just went stale, to log once.
    pub newly_stale: Vec<&'static str>,
    /// Every component is fresh again after a stale spell.
    pub recovered: bool,
}

/// The watchdog's decisions, fed the stale components of each tick: a
/// wedged component withholds the ping, so systemd restarts rtcam.
#[derive(Debug, Default)]
pub struct Watchdog {
    stale: Vec<&'static str>,
}

impl Watchdog {
    /// The step for a tick at which `stale` components missed their beat.
    pub fn tick(&mut self, stale: Vec<&'static str>) -> WatchdogStep {
        let newly_stale = stale
            .iter()
            .filter(|c| !self.stale.contains(c))
            .copied()
            .collect();
        let recovered = stale.is_empty() && !self.stale.is_empty();
        let ping = stale.is_empty();
        self.stale = stale;
        WatchdogStep {
            ping,
            newly_stale,
            recovered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wedged_component_withholds_the_ping_until_it_beats_again() {
        let mut wd = Watchdog::default();
        let fresh = WatchdogStep {
            ping: true,
            newly_stale: vec![],
            recovered: false,
        };
        assert_eq!(wd.tick(vec![]), fresh);
        // The media thread wedges: no ping, named once.
        let step = wd.tick(vec!["media"]);
        assert!(!step.ping, "withheld: systemd will restart rtcam");
        assert_eq!(step.newly_stale, ["media"]);
        let step = wd.tick(vec!["media"]);
        assert!(!step.ping && step.newly_stale.is_empty(), "reported once");
        // Then signaling too: only the new one is named.
        assert_eq!(
            wd.tick(vec!["media", "signaling"]).newly_stale,
            ["signaling"]
        );
        // Both beat again: pings resume, and the recovery is said once.
        let step = wd.tick(vec![]);
        assert!(step.ping && step.recovered);
        assert_eq!(wd.tick(vec![]), fresh);
    }

    #[test]
    fn heartbeats_feed_the_watchdog() {
        let hbs = Heartbeats::new();
        let _media = hbs.register("media");
        let mut wd = Watchdog::default();
        let now = Instant::now();
        assert!(wd.tick(hbs.stale(now, Duration::from_secs(5))).ping);
        let step = wd.tick(hbs.stale(now + Duration::from_secs(10), Duration::from_secs(5)));
        assert_eq!((step.ping, step.newly_stale), (false, vec!["media"]));
    }

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
