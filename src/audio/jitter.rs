//! Talkback's jitter buffer: packets in by RTP sequence number as they
//! arrive, one 20 ms frame out per tick, in order; a gap is played as a
//! lost frame (the decoder conceals it) and an empty buffer fills up to
//! its target again before playing. Pure: no clock, no I/O.

use bytes::Bytes;
use std::collections::BTreeMap;

/// What to play for one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The next packet.
    Frame(Bytes),
    /// The next packet never came: conceal it.
    Lost,
    /// Nothing to play (filling up, or nobody talks): silence.
    Idle,
}

/// Counters since the buffer was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames played.
    pub played: u64,
    /// Frames concealed.
    pub lost: u64,
    /// Packets that came after their turn, or twice.
    pub late: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
    /// Times the buffer ran dry while playing.
    pub underruns: u64,
}

/// The buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    target: usize,
    max: usize,
    packets: BTreeMap<u64, Bytes>,
    /// The extended sequence number to play next, once started.
    next: Option<u64>,
    /// The highest extended sequence number seen.
    highest: Option<u64>,
    playing: bool,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer that starts playing once `target` frames are queued and
    /// holds at most `max` (at least `target + 1`).
    pub fn new(target: usize, max: usize) -> Self {
        let target = target.max(1);
        Self {
            target,
            max: max.max(target + 1),
            packets: BTreeMap::new(),
            next: None,
            highest: None,
            playing: false,
            stats: JitterStats::default(),
        }
    }

    /// Extends a 16-bit sequence number to the one nearest the highest seen.
    fn extend(&self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            // Far from zero, so a few packets before the first stay positive.
            return (1 << 32) + u64::from(seq);
        };
        let base = h & !0xffff;
        let candidates = [
            base.wrapping_sub(0x1_0000) + u64::from(seq),
            base + u64::from(seq),
            base + 0x1_0000 + u64::from(seq),
        ];
        candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(base + u64::from(seq))
    }

    /// Queues a packet.
    pub fn push(&mut self, seq: u16, payload: Bytes) {
        let ext = self.extend(seq);
        if self.next.is_some_and(|n| ext < n) || self.packets.contains_key(&ext) {
            self.stats.late += 1;
            return;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.packets.insert(ext, payload);
        while self.packets.len() > self.max {
            // Too far behind: the oldest goes, and play moves on past it.
            if let Some((k, _)) = self.packets.pop_first() {
                self.stats.overflow += 1;
                self.next = Some(k + 1);
            }
        }
    }

    /// What to play for the next 20 ms.
    pub fn pop(&mut self) -> Playout {
        if !self.playing {
            if self.packets.len() < self.target {
                return Playout::Idle;
            }
            self.playing = true;
            if let Some((&first, _)) = self.packets.first_key_value() {
                self.next = Some(self.next.map_or(first, |n| n.max(first)));
            }
        }
        let Some(next) = self.next else {
            return Playout::Idle;
        };
        if self.packets.is_empty() {
            self.playing = false;
            self.stats.underruns += 1;
            return Playout::Idle;
        }
        self.next = Some(next + 1);
        match self.packets.remove(&next) {
            Some(p) => {
                self.stats.played += 1;
                Playout::Frame(p)
            }
            None => {
                self.stats.lost += 1;
                Playout::Lost
            }
        }
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn fills_to_its_target_then_plays_in_order() {
        let mut j = JitterBuffer::new(3, 10);
        j.push(11, b(11));
        j.push(10, b(10));
        assert_eq!(j.pop(), Playout::Idle, "filling");
        j.push(12, b(12));
        assert_eq!(j.pop(), Playout::Frame(b(10)));
        assert_eq!(j.pop(), Playout::Frame(b(11)));
        assert_eq!(j.pop(), Playout::Frame(b(12)));
        assert_eq!(j.pop(), Playout::Idle, "ran dry");
        assert_eq!(j.stats().underruns, 1);
        j.push(12, b(12));
        assert_eq!(j.stats().late, 1, "already played");
    }

    #[test]
    fn a_gap_is_played_as_a_lost_frame_and_late_packets_are_dropped() {
        let mut j = JitterBuffer::new(2, 10);
        for s in [1u16, 2, 4, 5] {
            j.push(s, b(s as u8));
        }
        assert_eq!(j.pop(), Playout::Frame(b(1)));
        assert_eq!(j.pop(), Playout::Frame(b(2)));
        assert_eq!(j.pop(), Playout::Lost);
        j.push(3, b(3));
        assert_eq!(j.pop(), Playout::Frame(b(4)));
        let s = j.stats();
        assert_eq!((s.played, s.lost, s.late), (3, 1, 1));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut j = JitterBuffer::new(2, 10);
        j.push(65534, b(1));
        j.push(65535, b(2));
        j.push(0, b(3));
        j.push(1, b(4));
        let played: Vec<_> = (0..4).map(|_| j.pop()).collect();
        assert_eq!(
            played,
            vec![
                Playout::Frame(b(1)),
                Playout::Frame(b(2)),
                Playout::Frame(b(3)),
                Playout::Frame(b(4))
            ]
        );
    }

    #[test]
    fn a_full_buffer_drops_the_oldest() {
        let mut j = JitterBuffer::new(2, 3);
        for s in 0u16..6 {
            j.push(s, b(s as u8));
        }
        assert_eq!(j.len(), 3);
        assert_eq!(j.stats().overflow, 3);
        assert_eq!(j.pop(), Playout::Frame(b(3)));
    }
}
