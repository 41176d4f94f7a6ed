//! How often something may happen: a fixed window with a budget, counting
//! what it turns away so a flood is reported once, with its size, instead
//! of once per message. Pure: fed the time.

use std::time::{Duration, Instant};

/// A budget of `per_window` events per `window`.
#[derive(Debug, Clone)]
pub struct Throttle {
    window: Duration,
    per_window: u32,
    started: Option<Instant>,
    passed: u32,
    turned_away: u64,
}

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through; `suppressed` events were turned away since the last
    /// one let through (say so, once).
    Pass {
        /// Events turned away before this one.
        suppressed: u64,
    },
    /// Over budget: drop it (it is counted).
    Suppress,
}

impl Throttle {
    /// A throttle letting `per_window` events through per `window`.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            window,
            per_window: per_window.max(1),
            started: None,
            passed: 0,
            turned_away: 0,
        }
    }

    /// The verdict for an event at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let fresh = self
            .started
            .is_none_or(|t| now.saturating_duration_since(t) >= self.window);
        if fresh {
            self.started = Some(now);
            self.passed = 0;
        }
        if self.passed >= self.per_window {
            self.turned_away += 1;
            return Verdict::Suppress;
        }
        self.passed += 1;
        Verdict::Pass {
            suppressed: std::mem::take(&mut self.turned_away),
        }
    }
}

/// A [`Throttle`] that tasks share (it may live in a `static`), for log
/// lines an outsider can trigger once per message.
#[derive(Debug)]
pub struct LogBudget {
    per_window: u32,
    window: Duration,
    inner: std::sync::Mutex<Option<Throttle>>,
}

impl LogBudget {
    /// A budget of `per_window` lines per `window`.
    pub const fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            inner: std::sync::Mutex::new(None),
        }
    }

    /// `Some(suppressed)` when a line may be logged now (say how many were
    /// suppressed since the last one), `None` when it is to be dropped.
    pub fn check(&self) -> Option<u64> {
        let mut t = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = t.get_or_insert_with(|| Throttle::new(self.per_window, self.window));
        match t.check(Instant::now()) {
            Verdict::Pass { suppressed } => Some(suppressed),
            Verdict::Suppress => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_passes_its_budget_then_is_counted_and_reported_once() {
        let t0 = Instant::now();
        let mut t = Throttle::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            assert_eq!(t.check(t0), Verdict::Pass { suppressed: 0 });
        }
        for _ in 0..100 {
            assert_eq!(t.check(t0 + Duration::from_millis(500)), Verdict::Suppress);
        }
        // The next window: the first event carries the count.
        assert_eq!(
            t.check(t0 + Duration::from_secs(1)),
            Verdict::Pass { suppressed: 100 }
        );
        assert_eq!(
            t.check(t0 + Duration::from_secs(1)),
            Verdict::Pass { suppressed: 0 }
        );
    }

    #[test]
    fn a_shared_budget_counts_what_it_drops() {
        static B: LogBudget = LogBudget::new(2, Duration::from_secs(3600));
        assert_eq!(B.check(), Some(0));
        assert_eq!(B.check(), Some(0));
        assert_eq!(B.check(), None);
        assert_eq!(B.check(), None);
    }
}
