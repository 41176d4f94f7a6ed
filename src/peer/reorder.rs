//! The viewer side's reorder buffer: RTP packets in, whole pictures out.
//! A lost packet is resent on NACK, so it arrives late and out of order; a
//! browser's jitter buffer waits for it, and so does this one, up to
//! `max_wait`, then gives the picture up as incomplete (the caller asks
//! for a keyframe and skips pictures until one comes). Pure: packets and
//! their arrival time in, frames out.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One RTP packet, as far as reassembly cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpIn {
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp: one per picture.
    pub timestamp: u32,
    /// The picture's last packet.
    pub marker: bool,
    /// Its payload (H.264 RTP payload, not yet depacketized).
    pub payload: Bytes,
}

/// One picture's packets, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// The payloads, in sequence order.
    pub payloads: Vec<Bytes>,
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// False when packets were missing and the wait for them ran out: the
    /// payloads are not a decodable picture.
    pub complete: bool,
}

/// The buffer.
#[derive(Debug)]
pub struct Reorder {
    max_wait: Duration,
    /// Packets by extended sequence number, with their arrival.
    packets: BTreeMap<u64, (RtpIn, Instant)>,
    /// The first sequence number not yet handed out.
    next: Option<u64>,
    /// The highest extended sequence number seen (for unwrapping).
    highest: Option<u64>,
    /// Whether a picture has been handed out (or given up) yet.
    handed_out: bool,
}

/// At most this many packets are held: a marker that never comes must not
/// grow the buffer without bound.
const MAX_PACKETS: usize = 4096;

impl Reorder {
    /// A buffer that waits up to `max_wait` for a missing packet.
    pub fn new(max_wait: Duration) -> Self {
        Self {
            max_wait,
            packets: BTreeMap::new(),
            next: None,
            highest: None,
            handed_out: false,
        }
    }

    /// The 16-bit sequence number extended to 64 bits, nearest the highest seen.
    fn extend(&mut self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            // Room below the first packet for ones that arrive before it.
            let e = (1u64 << 16) + u64::from(seq);
            self.highest = Some(e);
            return e;
        };
        let base = h & !0xffff;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        let e = candidates
            .into_iter()
            .map(|b| b | u64::from(seq))
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(base | u64::from(seq));
        self.highest = Some(h.max(e));
        e
    }

    /// Takes a packet that arrived at `now`; one already handed out (or
    /// given up) is dropped, as is a duplicate.
    pub fn push(&mut self, p: RtpIn, now: Instant) {
        let s = self.extend(p.seq);
        match self.next {
            Some(n) if s < n && self.handed_out => return,
            // Before the first picture, an earlier packet moves the start back.
            Some(n) if s < n => self.next = Some(s),
            None => self.next = Some(s),
            Some(_) => {}
        }
        self.packets.entry(s).or_insert((p, now));
        if self.packets.len() > MAX_PACKETS
            && let Some((&first, _)) = self.packets.first_key_value()
        {
            self.packets.remove(&first);
            self.next = self.packets.first_key_value().map(|(k, _)| *k);
        }
    }

    /// When [`Reorder::pop`] should be called again if no packet comes
    /// before: the moment the oldest waiting packet's wait runs out.
    pub fn deadline(&self) -> Option<Instant> {
        self.packets
            .values()
            .map(|(_, t)| *t)
            .min()
            .map(|t| t + self.max_wait)
    }

    /// The next picture: complete once every packet up to its marker is
    /// here; incomplete once a missing one has been waited for `max_wait`.
    pub fn pop(&mut self, now: Instant) -> Option<Picture> {
        let next = self.next?;
        let mut s = next;
        while let Some((p, _)) = self.packets.get(&s) {
            if p.marker {
                return Some(self.take(next, s, true));
            }
            s += 1;
        }
        // A gap at `s`.
        let oldest = self.packets.values().map(|(_, t)| *t).min()?;
        if now.saturating_duration_since(oldest) < self.max_wait {
            return None;
        }
        // Given up: everything up to the first marker after the gap is lost.
        let end = self
            .packets
            .range(s..)
            .find(|(_, (p, _))| p.marker)
            .map(|(k, _)| *k)?;
        Some(self.take(next, end, false))
    }

    fn take(&mut self, from: u64, to: u64, complete: bool) -> Picture {
        let mut payloads = Vec::new();
        let mut timestamp = 0;
        for s in from..=to {
            if let Some((p, _)) = self.packets.remove(&s) {
                timestamp = p.timestamp;
                payloads.push(p.payload);
            }
        }
        self.next = Some(to + 1);
        self.handed_out = true;
        Picture {
            payloads,
            timestamp,
            complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32, marker: bool) -> RtpIn {
        RtpIn {
            seq,
            timestamp: ts,
            marker,
            payload: Bytes::from(vec![seq as u8]),
        }
    }

    const WAIT: Duration = Duration::from_millis(200);

    #[test]
    fn in_order_packets_make_pictures_at_their_marker() {
        let t = Instant::now();
        let mut r = Reorder::new(WAIT);
        r.push(pkt(10, 1, false), t);
        assert_eq!(r.pop(t), None, "not ended yet");
        r.push(pkt(11, 1, true), t);
        let p = r.pop(t).expect("a picture");
        assert!(p.complete);
        assert_eq!(p.timestamp, 1);
        assert_eq!(p.payloads.len(), 2);
        assert_eq!(r.pop(t), None);
    }

    #[test]
    fn a_resent_packet_completes_its_picture_out_of_order() {
        let t = Instant::now();
        let mut r = Reorder::new(WAIT);
        r.push(pkt(1, 1, true), t);
        assert!(r.pop(t).is_some());
        r.push(pkt(3, 2, true), t);
        r.push(pkt(4, 3, true), t);
        assert_eq!(r.pop(t), None, "2 is missing: wait");
        r.push(pkt(2, 2, false), t + Duration::from_millis(120));
        let p = r.pop(t + Duration::from_millis(120)).expect("complete now");
        assert!(p.complete);
        assert_eq!(p.payloads, vec![Bytes::from(vec![2]), Bytes::from(vec![3])]);
        assert_eq!(r.pop(t).map(|p| p.timestamp), Some(3));
        r.push(pkt(2, 2, false), t);
        assert_eq!(r.pop(t), None, "a late duplicate is dropped");
    }

    #[test]
    fn a_packet_that_never_comes_gives_its_picture_up_after_the_wait() {
        let t = Instant::now();
        let mut r = Reorder::new(WAIT);
        r.push(pkt(1, 1, true), t);
        assert!(r.pop(t).is_some());
        r.push(pkt(3, 2, true), t);
        r.push(pkt(4, 3, true), t);
        assert_eq!(r.deadline(), Some(t + WAIT));
        assert_eq!(r.pop(t + Duration::from_millis(199)), None);
        let lost = r.pop(t + WAIT).expect("given up");
        assert!(!lost.complete);
        assert_eq!(lost.timestamp, 2);
        let next = r.pop(t + WAIT).expect("the next one is whole");
        assert!(next.complete);
        assert_eq!(next.timestamp, 3);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t = Instant::now();
        let mut r = Reorder::new(WAIT);
        r.push(pkt(65535, 1, false), t);
        r.push(pkt(0, 1, true), t);
        let p = r.pop(t).expect("across the wrap");
        assert_eq!(p.payloads.len(), 2);
        r.push(pkt(2, 2, true), t);
        r.push(pkt(1, 2, false), t);
        assert_eq!(r.pop(t).map(|p| p.payloads.len()), Some(2));
    }

    #[test]
    fn the_first_packets_may_come_out_of_order() {
        let t = Instant::now();
        let mut r = Reorder::new(WAIT);
        r.push(pkt(5, 1, true), t);
        r.push(pkt(4, 1, false), t);
        let p = r.pop(t).expect("one picture");
        assert_eq!(p.payloads.len(), 2, "{p:?}");
    }
}
