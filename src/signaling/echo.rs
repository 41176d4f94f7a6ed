//! Recognises the agent's own messages when the broker echoes them back
//! (`P/ice/{id}` carries both directions; MQTT 3.1.1 has no No-Local and
//! some MQTT 5 brokers ignore it). Remembers a hash of each recent publish.
//! Pure: time is passed in.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// Recently published (topic, payload) hashes, bounded in count and age.
#[derive(Debug)]
pub struct EchoFilter {
    recent: VecDeque<(u64, Instant)>,
    capacity: usize,
    ttl: Duration,
}

fn key(topic: &str, payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

impl EchoFilter {
    /// Remembers up to `capacity` publishes for `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            recent: VecDeque::with_capacity(capacity),
            capacity,
            ttl,
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) > self.ttl)
        {
            self.recent.pop_front();
        }
    }

    /// Records a message the agent is publishing.
    pub fn sent(&mut self, topic: &str, payload: &[u8], now: Instant) {
        self.expire(now);
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back((key(topic, payload), now));
    }

    /// True (and forgets it) when an incoming message is one of ours.
    pub fn is_echo(&mut self, topic: &str, payload: &[u8], now: Instant) -> bool {
        self.expire(now);
        let k = key(topic, payload);
        match self.recent.iter().position(|(h, _)| *h == k) {
            Some(i) => {
                self.recent.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_messages_are_recognised_once() {
        let t0 = Instant::now();
        let mut f = EchoFilter::new(4, Duration::from_secs(30));
        f.sent("p/ice/a", b"{\"candidate\":\"x\"}", t0);
        assert!(
            !f.is_echo("p/ice/a", b"{\"candidate\":\"y\"}", t0),
            "the viewer's own candidate"
        );
        assert!(
            !f.is_echo("p/ice/b", b"{\"candidate\":\"x\"}", t0),
            "same payload, other topic"
        );
        assert!(f.is_echo("p/ice/a", b"{\"candidate\":\"x\"}", t0));
        assert!(
            !f.is_echo("p/ice/a", b"{\"candidate\":\"x\"}", t0),
            "consumed"
        );
    }

    #[test]
    fn memory_is_bounded_by_count_and_age() {
        let t0 = Instant::now();
        let mut f = EchoFilter::new(2, Duration::from_secs(1));
        for i in 0..3u8 {
            f.sent("t", &[i], t0);
        }
        assert!(!f.is_echo("t", &[0], t0), "evicted by capacity");
        assert!(f.is_echo("t", &[1], t0));
        f.sent("t", &[9], t0);
        assert!(
            !f.is_echo("t", &[9], t0 + Duration::from_secs(2)),
            "expired"
        );
    }
}
