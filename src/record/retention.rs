//! Which segments to delete: past the age limit, over the byte budget, or
//! while the disk is short of free space, oldest first, never the one being
//! written. Pure.

use super::store::SegmentFile;
use std::time::Duration;

/// The limits of `[record]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Segments older than this go.
    pub max_age: Option<Duration>,
    /// All segments together take at most this.
    pub max_bytes: Option<u64>,
    /// Free space kept on the disk.
    pub min_free_bytes: u64,
}

/// Why a segment is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than `max_age_days`.
    Age,
    /// The segments take more than `max_bytes`.
    Bytes,
    /// The disk has less than `min_free_mb` free.
    FreeSpace,
}

impl Reason {
    /// The reason as logged and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Age => "age",
            Reason::Bytes => "bytes",
            Reason::FreeSpace => "free_space",
        }
    }
}

/// The segments (oldest first, as listed) to delete at `now_ms` (Unix ms)
/// when the disk has `free_bytes` free, sparing `open` (being written).
pub fn choose<'a>(
    segments: &'a [SegmentFile],
    open: Option<&str>,
    limits: &Limits,
    free_bytes: u64,
    now_ms: u64,
) -> Vec<(&'a SegmentFile, Reason)> {
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut free = free_bytes;
    let mut out = Vec::new();
    for s in segments.iter().filter(|s| Some(s.name.as_str()) != open) {
        let reason = if limits
            .max_age
            .is_some_and(|a| now_ms.saturating_sub(s.start_ms) > a.as_millis() as u64)
        {
            Reason::Age
        } else if limits.max_bytes.is_some_and(|m| total > m) {
            Reason::Bytes
        } else if free < limits.min_free_bytes {
            Reason::FreeSpace
        } else {
            // Oldest first: once the oldest left is within every limit, so are the rest.
            break;
        };
        total -= s.bytes;
        free = free.saturating_add(s.bytes);
        out.push((s, reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(i: u64, bytes: u64) -> SegmentFile {
        SegmentFile {
            name: format!("2026-11-30/00-00-{i:02}.mp4"),
            start_ms: i * 60_000,
            bytes,
        }
    }

    fn names(v: Vec<(&SegmentFile, Reason)>) -> Vec<(u64, Reason)> {
        v.into_iter()
            .map(|(s, r)| (s.start_ms / 60_000, r))
            .collect()
    }

    #[test]
    fn each_limit_deletes_oldest_first_and_spares_the_open_segment() {
        let segs: Vec<SegmentFile> = (0..10).map(|i| seg(i, 100)).collect();
        let none = Limits::default();
        assert!(choose(&segs, None, &none, 0, 10 * 60_000).is_empty());
        let age = Limits {
            max_age: Some(Duration::from_secs(5 * 60)),
            ..none
        };
        // At 10 min, segments started before 5 min are too old.
        assert_eq!(
            names(choose(&segs, None, &age, u64::MAX, 10 * 60_000)),
            (0..5).map(|i| (i, Reason::Age)).collect::<Vec<_>>()
        );
        let bytes = Limits {
            max_bytes: Some(750),
            ..none
        };
        assert_eq!(
            names(choose(&segs, None, &bytes, u64::MAX, 0)),
            [(0, Reason::Bytes), (1, Reason::Bytes), (2, Reason::Bytes)]
        );
        let free = Limits {
            min_free_bytes: 1000,
            ..none
        };
        assert_eq!(
            names(choose(&segs, Some(&segs[0].name), &free, 750, 0)),
            [
                (1, Reason::FreeSpace),
                (2, Reason::FreeSpace),
                (3, Reason::FreeSpace)
            ]
        );
        // Never the open segment, even if nothing else is left.
        let one = [seg(0, 100)];
        assert!(choose(&one, Some(&one[0].name), &free, 0, 0).is_empty());
    }
}
