//! A token bucket: at most `rate` commands per second on average, bursts up
//! to `rate`. Pure: time is passed in.

use std::time::Instant;

/// Per-session command budget.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// `rate` commands per second, starting full.
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            burst: rate,
            tokens: rate,
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50);
        let allowed = (0..80).filter(|_| b.allow(t0)).count();
        assert_eq!(allowed, 50, "a burst of the full rate");
        assert!(!b.allow(t0));
        assert!(
            !b.allow(t0 + Duration::from_millis(10)),
            "half a token after 10 ms"
        );
        assert!(b.allow(t0 + Duration::from_millis(21)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            (0..80).filter(|_| b.allow(later)).count(),
            50,
            "never more than the burst"
        );
    }

    #[test]
    fn sustained_rate_is_respected() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10);
        // One attempt per ms for 10 s: the first burst plus 10 per second.
        let allowed = (0..10_000u64)
            .filter(|ms| b.allow(t0 + Duration::from_millis(*ms)))
            .count();
        assert!((109..=111).contains(&allowed), "{allowed}");
    }
}
