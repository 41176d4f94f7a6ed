//! Exponential retry delays (0.5 s doubling to 10 s by default), shared by
//! the camera reopen loop and the MQTT reconnect loop. Pure: no clocks, no I/O.

use std::time::Duration;

/// Doubles a delay after every failure up to a ceiling; `reset` after success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// The delays the brief asks for: 0.5 s doubling to 10 s.
    pub fn standard() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(10))
    }

    /// A backoff starting at `initial` and never exceeding `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait before the next attempt; doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the initial delay, after an attempt that worked.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_ceiling_and_resets() {
        let mut b = Backoff::standard();
        let got: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn initial_above_max_is_clamped() {
        let mut b = Backoff::new(Duration::from_secs(20), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
