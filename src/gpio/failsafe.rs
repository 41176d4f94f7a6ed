//! Which sessions are controlling which outputs, and when a pin's failsafe
//! value must be forced: when the last session that changed it ends. Pure.

use std::collections::{BTreeMap, BTreeSet};

/// Identifies a controlling session (its generation number).
pub type SessionKey = u64;

/// Tracks the sessions that changed each failsafe pin.
#[derive(Debug, Default)]
pub struct FailsafePolicy {
    controllers: BTreeMap<String, BTreeSet<SessionKey>>,
}

impl FailsafePolicy {
    /// An empty policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// `session` changed `pin` (only pins with a failsafe are worth recording).
    pub fn changed(&mut self, pin: &str, session: SessionKey) {
        self.controllers
            .entry(pin.to_string())
            .or_default()
            .insert(session);
    }

    /// `session` ended: the pins whose last controller it was, to force to their failsafe.
    pub fn session_ended(&mut self, session: SessionKey) -> Vec<String> {
        let mut due = Vec::new();
        self.controllers.retain(|pin, sessions| {
            if sessions.remove(&session) && sessions.is_empty() {
                due.push(pin.clone());
                false
            } else {
                !sessions.is_empty()
            }
        });
        due
    }

    /// Whether anyone is controlling `pin`.
    pub fn controlled(&self, pin: &str) -> bool {
        self.controllers.get(pin).is_some_and(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failsafe_applies_when_the_last_controller_leaves() {
        let mut p = FailsafePolicy::new();
        p.changed("relay", 1);
        p.changed("relay", 2);
        p.changed("lamp", 2);
        assert_eq!(
            p.session_ended(1),
            Vec::<String>::new(),
            "session 2 still controls relay"
        );
        assert!(p.controlled("relay"));
        let mut due = p.session_ended(2);
        due.sort();
        assert_eq!(due, ["lamp", "relay"]);
        assert!(!p.controlled("relay"));
    }

    #[test]
    fn sessions_that_never_touched_a_pin_do_not_trigger_it() {
        let mut p = FailsafePolicy::new();
        p.changed("relay", 1);
        assert!(p.session_ended(7).is_empty());
        assert_eq!(p.session_ended(1), ["relay"]);
        assert!(p.session_ended(1).is_empty(), "only once");
    }
}
