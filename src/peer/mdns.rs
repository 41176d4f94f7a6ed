//! Whether mDNS can be used for the next peer connection. A host whose
//! interfaces cannot join the mDNS group (network not up yet, a container,
//! only `lo`) must still stream: mDNS is then left out, with one warning
//! naming `webrtc.mdns`, and tried again a while later (the network may
//! come up). The decisions are pure; the socket probe is handed in.

use crate::config::settings::MdnsMode;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long mDNS stays off after a failed probe before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What the gate knows from earlier probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GateState {
    /// When the last probe failed; `None` when it worked or never ran.
    pub failed_at: Option<Instant>,
    /// A failure was reported and mDNS has not worked since.
    pub warned: bool,
}

/// What to do for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Use the configured mode without probing: it is off, or disabled by config.
    Use(MdnsMode),
    /// Probe the mDNS socket first, then [`after_probe`].
    Probe,
    /// mDNS failed recently: go on without it.
    Without,
}

/// The step for a peer wanting `wanted` at `now`.
pub fn step(state: &GateState, wanted: MdnsMode, now: Instant) -> Step {
    match (wanted, state.failed_at) {
        (MdnsMode::Disabled, _) => Step::Use(MdnsMode::Disabled),
        (_, Some(at)) if now.saturating_duration_since(at) < RETRY_AFTER => Step::Without,
        _ => Step::Probe,
    }
}

/// Records a probe's outcome; returns the mode to use and whether to warn
/// (only on the first failure since mDNS last worked).
pub fn after_probe(
    state: &mut GateState,
    wanted: MdnsMode,
    worked: bool,
    now: Instant,
) -> (MdnsMode, bool) {
    if worked {
        *state = GateState::default();
        return (wanted, false);
    }
    state.failed_at = Some(now);
    let warn = !state.warned;
    state.warned = true;
    (MdnsMode::Disabled, warn)
}

/// The shared gate: every peer connection of the process asks it.
#[derive(Debug, Default)]
pub struct MdnsGate {
    state: Mutex<GateState>,
}

impl MdnsGate {
    /// The mode to build a peer with: `wanted`, or `Disabled` when the mDNS
    /// socket cannot be opened (`probe` fails). Logs the first failure.
    pub fn effective(
        &self,
        wanted: MdnsMode,
        now: Instant,
        probe: impl FnOnce() -> std::io::Result<()>,
    ) -> MdnsMode {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match step(&state, wanted, now) {
            Step::Use(mode) => mode,
            Step::Without => MdnsMode::Disabled,
            Step::Probe => {
                let result = probe();
                let (mode, warn) = after_probe(&mut state, wanted, result.is_ok(), now);
                if let (true, Err(e)) = (warn, &result) {
                    tracing::warn!(
                        error = %e,
                        retry_in_s = RETRY_AFTER.as_secs(),
                        "mDNS is unavailable (no interface can join its multicast group); \
                         viewers connect without it, but browsers that hide their address \
                         behind a .local name can then only reach rtcam by its own address. \
                         Set webrtc.mdns = \"disabled\" to silence this"
                    );
                }
                mode
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_never_probes() {
        let s = GateState::default();
        assert_eq!(
            step(&s, MdnsMode::Disabled, Instant::now()),
            Step::Use(MdnsMode::Disabled)
        );
    }

    #[test]
    fn a_failure_warns_once_and_holds_off_then_retries() {
        let t0 = Instant::now();
        let mut s = GateState::default();
        assert_eq!(step(&s, MdnsMode::Query, t0), Step::Probe);
        assert_eq!(
            after_probe(&mut s, MdnsMode::Query, false, t0),
            (MdnsMode::Disabled, true)
        );
        assert_eq!(
            step(&s, MdnsMode::Query, t0 + RETRY_AFTER / 2),
            Step::Without
        );
        // Retried later; a second failure in a row is not reported again.
        assert_eq!(step(&s, MdnsMode::Query, t0 + RETRY_AFTER), Step::Probe);
        assert_eq!(
            after_probe(&mut s, MdnsMode::Query, false, t0 + RETRY_AFTER),
            (MdnsMode::Disabled, false)
        );
        // Once it works the mode is used again, and a new failure is news.
        let t1 = t0 + RETRY_AFTER * 2;
        assert_eq!(
            after_probe(&mut s, MdnsMode::Gather, true, t1),
            (MdnsMode::Gather, false)
        );
        assert_eq!(s, GateState::default());
        assert_eq!(
            after_probe(&mut s, MdnsMode::Query, false, t1),
            (MdnsMode::Disabled, true)
        );
    }

    #[test]
    fn the_gate_uses_the_probe_result() {
        let gate = MdnsGate::default();
        let now = Instant::now();
        let mut probes = 0;
        let mode = gate.effective(MdnsMode::Query, now, || {
            probes += 1;
            Err(std::io::Error::from_raw_os_error(libc::ENODEV))
        });
        assert_eq!(mode, MdnsMode::Disabled);
        let mode = gate.effective(MdnsMode::Query, now, || {
            probes += 1;
            Ok(())
        });
        assert_eq!((mode, probes), (MdnsMode::Disabled, 1), "held off");
        let later = now + RETRY_AFTER;
        assert_eq!(
            gate.effective(MdnsMode::Query, later, || Ok(())),
            MdnsMode::Query
        );
    }
}
