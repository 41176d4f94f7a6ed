//! When to open, fragment and close recording segments: a pure state
//! machine fed samples, triggers and time, returning what to write.
//!
//! Segments start at a keyframe and end at the first keyframe after
//! `segment` (or when the camera's configuration changes, or after a gap);
//! fragments hold every sample whose duration is known once `fragment` has
//! passed, so a crash loses at most one fragment. In events mode a bounded
//! pre-roll buffer that always starts at a keyframe is kept while idle.

use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Media timescale of recorded video (ticks per second), as RTP's for video.
pub const TIMESCALE: u32 = 90_000;
/// A pause longer than this between frames (camera gone, encoder stalled)
/// ends the segment rather than becoming one very long frame.
pub const MAX_GAP: Duration = Duration::from_secs(5);
/// Most bytes of pre-roll kept, whatever `pre` says: a bound on memory.
pub const MAX_PREROLL_BYTES: usize = 32 << 20;
/// Frame duration assumed for a segment's last frame when no earlier one tells.
const DEFAULT_FRAME: Duration = Duration::from_millis(33);

/// One encoded video frame to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Annex B access unit.
    pub data: Bytes,
    /// Presentation time on the hub's clock.
    pub pts: Duration,
    /// An IDR: a segment can start here.
    pub keyframe: bool,
}

/// A sample with its duration, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    /// The frame.
    pub sample: Sample,
    /// Its decode time from the segment's start, in [`TIMESCALE`] ticks.
    pub decode_ticks: u64,
    /// Its duration in [`TIMESCALE`] ticks (at least 1).
    pub duration_ticks: u32,
}

/// What to do with the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a segment whose first sample has presentation time `start`.
    Open {
        /// Presentation time of its first sample.
        start: Duration,
    },
    /// Append one fragment to the open segment.
    Fragment(Vec<Timed>),
    /// The open segment is complete.
    Close,
}

/// How recording runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Always.
    Continuous,
    /// Around triggers.
    Events,
}

/// The policy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    /// How recording runs.
    pub mode: Mode,
    /// Segment length (cut at the first keyframe after it).
    pub segment: Duration,
    /// Fragment length.
    pub fragment: Duration,
    /// Events mode: kept before a trigger.
    pub pre: Duration,
    /// Events mode: recorded after the last trigger.
    pub post: Duration,
}

#[derive(Debug)]
struct Open {
    start: Duration,
    /// Samples of the open fragment; the last one's duration is not known yet.
    pending: Vec<Sample>,
}

/// The recording state machine.
#[derive(Debug)]
pub struct RecordPolicy {
    cfg: PolicyConfig,
    open: Option<Open>,
    preroll: VecDeque<Sample>,
    preroll_bytes: usize,
    /// Events mode: recording goes on until this time (hub clock).
    until: Option<Duration>,
    /// A user's `record.start` holds the recording open until `record.stop`.
    held: bool,
    last_pts: Option<Duration>,
    frame: Duration,
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos() * u128::from(TIMESCALE) / 1_000_000_000) as u64
}

impl RecordPolicy {
    /// A policy that has recorded nothing yet.
    pub fn new(cfg: PolicyConfig) -> Self {
        Self {
            cfg,
            open: None,
            preroll: VecDeque::new(),
            preroll_bytes: 0,
            until: None,
            held: false,
            last_pts: None,
            frame: DEFAULT_FRAME,
        }
    }

    /// Whether a segment is open.
    pub fn recording(&self) -> bool {
        self.open.is_some()
    }

    /// Whether frames arriving now should be recorded.
    fn wanted(&self, now: Duration) -> bool {
        match self.cfg.mode {
            Mode::Continuous => true,
            Mode::Events => self.held || self.until.is_some_and(|u| now <= u),
        }
    }

    /// A trigger (input edge, motion, command) at `now`: in events mode the
    /// recording starts from the pre-roll, or goes on `post` longer.
    pub fn trigger(&mut self, now: Duration) -> Vec<Action> {
        let until = now + self.cfg.post;
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
        self.start_from_preroll()
    }

    /// `record.start` (`true`) or `record.stop` (`false`) at `now`.
    pub fn hold(&mut self, on: bool, now: Duration) -> Vec<Action> {
        self.held = on;
        if on {
            return self.start_from_preroll();
        }
        self.until = None;
        self.tick(now)
    }

    fn start_from_preroll(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.open.is_some() || self.cfg.mode != Mode::Events {
            return out;
        }
        self.preroll_bytes = 0;
        for s in std::mem::take(&mut self.preroll) {
            self.push(s, &mut out);
        }
        out
    }

    /// Time passing without frames: ends an events recording whose post-roll is over.
    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if self.open.is_some() && !self.wanted(now) {
            self.close(&mut out);
        }
        out
    }

    /// The camera's configuration (SPS/PPS) changed at this keyframe: the
    /// next sample starts a new segment.
    pub fn config_changed(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.close(&mut out);
        self.preroll.clear();
        self.preroll_bytes = 0;
        out
    }

    /// The writer lost the open segment (disk error): start again at the next keyframe.
    pub fn reset(&mut self) {
        self.open = None;
    }

    /// The agent is stopping: writes what is pending and closes.
    pub fn finish(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.close(&mut out);
        out
    }

    /// A frame from the hub at `now` (hub clock).
    pub fn sample(&mut self, s: Sample, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(last) = self.last_pts {
            let gap = s.pts.saturating_sub(last);
            if gap > MAX_GAP || s.pts < last {
                self.close(&mut out);
                self.preroll.clear();
                self.preroll_bytes = 0;
            } else if !gap.is_zero() {
                self.frame = gap;
            }
        }
        self.last_pts = Some(s.pts);
        if !self.wanted(now) {
            self.close(&mut out);
            self.keep_preroll(s);
            return out;
        }
        self.push(s, &mut out);
        out
    }

    fn keep_preroll(&mut self, s: Sample) {
        if self.cfg.mode != Mode::Events || (self.preroll.is_empty() && !s.keyframe) {
            return;
        }
        let pts = s.pts;
        self.preroll_bytes += s.data.len();
        self.preroll.push_back(s);
        // Drop whole GOPs from the front while the next GOP still covers
        // `pre` (or memory is over its bound), so the buffer starts at a keyframe.
        while let Some(next) = self.preroll.iter().skip(1).position(|x| x.keyframe) {
            let next_pts = self.preroll[next + 1].pts;
            let covers = pts.saturating_sub(next_pts) >= self.cfg.pre;
            if !covers && self.preroll_bytes <= MAX_PREROLL_BYTES {
                break;
            }
            for x in self.preroll.drain(..=next) {
                self.preroll_bytes -= x.data.len();
            }
        }
        if self.preroll_bytes > MAX_PREROLL_BYTES {
            // One GOP over the bound (a camera with rare keyframes): start
            // again at the next keyframe rather than grow.
            self.preroll.clear();
            self.preroll_bytes = 0;
        }
    }

    fn push(&mut self, s: Sample, out: &mut Vec<Action>) {
        let Some(open) = &mut self.open else {
            if s.keyframe {
                out.push(Action::Open { start: s.pts });
                self.open = Some(Open {
                    start: s.pts,
                    pending: vec![s],
                });
            }
            return;
        };
        let first = open.pending.first().map_or(s.pts, |f| f.pts);
        if s.keyframe && s.pts.saturating_sub(open.start) >= self.cfg.segment {
            let start = open.start;
            let pending = std::mem::take(&mut open.pending);
            out.push(Action::Fragment(timed(start, pending, s.pts)));
            out.push(Action::Close);
            out.push(Action::Open { start: s.pts });
            self.open = Some(Open {
                start: s.pts,
                pending: vec![s],
            });
        } else if !open.pending.is_empty() && s.pts.saturating_sub(first) >= self.cfg.fragment {
            let pending = std::mem::replace(&mut open.pending, vec![s.clone()]);
            out.push(Action::Fragment(timed(open.start, pending, s.pts)));
        } else {
            open.pending.push(s);
        }
    }

    fn close(&mut self, out: &mut Vec<Action>) {
        if let Some(open) = self.open.take() {
            if let Some(last) = open.pending.last() {
                let end = last.pts + self.frame;
                out.push(Action::Fragment(timed(open.start, open.pending, end)));
            }
            out.push(Action::Close);
        }
    }
}

/// Durations of `samples` from their times, the last one ending at `end`.
fn timed(start: Duration, samples: Vec<Sample>, end: Duration) -> Vec<Timed> {
    let base = ticks(start);
    let ends: Vec<u64> = samples
        .iter()
        .skip(1)
        .map(|s| ticks(s.pts))
        .chain(std::iter::once(ticks(end)))
        .collect();
    let mut out = Vec::with_capacity(samples.len());
    let mut next_decode = None::<u64>;
    for (s, end) in samples.into_iter().zip(ends) {
        // Decode times never go backwards or repeat, even if pts did.
        let decode = next_decode.map_or(ticks(s.pts).saturating_sub(base), |n| {
            n.max(ticks(s.pts).saturating_sub(base))
        });
        let duration = end.saturating_sub(base).saturating_sub(decode).max(1);
        let duration = u32::try_from(duration).unwrap_or(u32::MAX);
        next_decode = Some(decode + u64::from(duration));
        out.push(Timed {
            sample: s,
            decode_ticks: decode,
            duration_ticks: duration,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: u64 = 30;

    /// Frame `i` of a 30 fps stream with a keyframe every `gop` frames.
    fn frame(i: u64, gop: u64) -> Sample {
        Sample {
            data: Bytes::from(vec![0u8; 100]),
            pts: Duration::from_millis(i * 1000 / FPS),
            keyframe: i.is_multiple_of(gop),
        }
    }

    fn cfg(mode: Mode) -> PolicyConfig {
        PolicyConfig {
            mode,
            segment: Duration::from_secs(2),
            fragment: Duration::from_secs(1),
            pre: Duration::from_secs(2),
            post: Duration::from_secs(3),
        }
    }

    /// Segments as (start, samples, decode ticks covered), checking that
    /// fragments are contiguous and start with the segment's keyframe.
    fn segments(actions: &[Action]) -> Vec<(Duration, usize, u64)> {
        let mut out = Vec::new();
        let mut cur: Option<(Duration, usize, u64)> = None;
        for a in actions {
            match a {
                Action::Open { start } => {
                    assert!(cur.is_none(), "open while open");
                    cur = Some((*start, 0, 0));
                }
                Action::Fragment(f) => {
                    let c = cur.as_mut().expect("fragment outside a segment");
                    for t in f {
                        if c.1 == 0 {
                            assert!(t.sample.keyframe, "a segment starts at a keyframe");
                            assert_eq!(t.sample.pts, c.0);
                        }
                        assert_eq!(t.decode_ticks, c.2, "decode times are contiguous");
                        c.1 += 1;
                        c.2 += u64::from(t.duration_ticks);
                    }
                }
                Action::Close => out.push(cur.take().expect("close without open")),
            }
        }
        assert!(cur.is_none(), "left open");
        out
    }

    #[test]
    fn continuous_cuts_segments_at_keyframes_and_fragments_by_time() {
        let mut p = RecordPolicy::new(cfg(Mode::Continuous));
        let mut actions = Vec::new();
        // Starts mid-GOP: the frames before the first keyframe are skipped.
        for i in 5..(10 * FPS) {
            let s = frame(i, 45);
            actions.extend(p.sample(s.clone(), s.pts));
        }
        let fragments = actions
            .iter()
            .filter(|a| matches!(a, Action::Fragment(_)))
            .count();
        actions.extend(p.finish());
        let segs = segments(&actions);
        // Keyframes at 1.5 s steps from 1.5 s: cuts at 4.5 s and 7.5 s.
        let starts: Vec<u64> = segs.iter().map(|s| s.0.as_millis() as u64).collect();
        assert_eq!(starts, [1500, 4500, 7500]);
        assert_eq!(segs.iter().map(|s| s.1).sum::<usize>(), (300 - 45) as usize);
        assert_eq!(segs[0].1, 90);
        // 3 s segments in fragments of about 1 s.
        assert!((6..=9).contains(&fragments), "{fragments} fragments");
        assert_eq!(segs[0].2, 3 * u64::from(TIMESCALE));
    }

    #[test]
    fn events_record_from_a_keyframe_before_the_trigger_until_post_roll_ends() {
        let mut p = RecordPolicy::new(cfg(Mode::Events));
        let mut actions = Vec::new();
        let mut trigger_at = None;
        for i in 0..(20 * FPS) {
            let s = frame(i, FPS);
            let now = s.pts;
            if i == 10 * FPS + 15 {
                trigger_at = Some(now);
                actions.extend(p.trigger(now));
                assert!(p.recording());
            }
            if i == 11 * FPS {
                // A second trigger extends the post-roll.
                actions.extend(p.trigger(now));
            }
            actions.extend(p.sample(s, now));
        }
        actions.extend(p.finish());
        let segs = segments(&actions);
        let t = trigger_at.expect("triggered");
        let start = segs[0].0;
        // Pre-roll: at least 2 s, from a keyframe, less than 2 s + one GOP.
        assert!(
            t - start >= Duration::from_secs(2) && t - start < Duration::from_secs(3),
            "{start:?}"
        );
        let end = segs
            .last()
            .map(|s| s.0 + Duration::from_nanos(s.2 * 1_000_000_000 / u64::from(TIMESCALE)))
            .expect("a segment");
        // Until 3 s after the second trigger (11 s), within a frame.
        assert!(
            end >= Duration::from_secs(14) && end <= Duration::from_millis(14_100),
            "{end:?}"
        );
        assert!(!p.recording());
    }

    #[test]
    fn hold_records_until_stopped_and_gaps_end_segments() {
        let mut p = RecordPolicy::new(cfg(Mode::Events));
        let mut actions = Vec::new();
        for i in 0..(4 * FPS) {
            let s = frame(i, FPS);
            actions.extend(p.sample(s.clone(), s.pts));
        }
        actions.extend(p.hold(true, Duration::from_secs(4)));
        for i in (4 * FPS)..(30 * FPS) {
            let s = frame(i, FPS);
            actions.extend(p.sample(s.clone(), s.pts));
        }
        assert!(p.recording(), "held past the post-roll");
        // The camera goes away for 6 s and comes back: a new segment.
        for i in (36 * FPS)..(37 * FPS) {
            let s = frame(i, FPS);
            actions.extend(p.sample(s.clone(), s.pts));
        }
        actions.extend(p.hold(false, Duration::from_secs(37)));
        assert!(!p.recording());
        let segs = segments(&actions);
        assert_eq!(segs.last().map(|s| s.0), Some(Duration::from_secs(36)));
        // The pre-roll starts at a keyframe at least 2 s before the start.
        let first = segs[0].0.as_secs();
        assert!((1..=2).contains(&first), "{first}");
        let frames: usize = segs.iter().map(|s| s.1).sum();
        assert_eq!(frames as u64, (30 - first) * FPS + FPS);
    }

    #[test]
    fn pre_roll_memory_is_bounded() {
        let mut p = RecordPolicy::new(PolicyConfig {
            pre: Duration::from_secs(60),
            ..cfg(Mode::Events)
        });
        for i in 0..600u64 {
            let s = Sample {
                data: Bytes::from(vec![0u8; 1 << 20]),
                pts: Duration::from_millis(i * 33),
                keyframe: i % 10 == 0,
            };
            assert!(p.sample(s, Duration::from_millis(i * 33)).is_empty());
        }
        assert!(p.preroll_bytes <= MAX_PREROLL_BYTES + (10 << 20));
        assert!(p.preroll.front().is_some_and(|s| s.keyframe));
        // One keyframe, then never another: the buffer is dropped, not grown.
        let mut p = RecordPolicy::new(cfg(Mode::Events));
        for i in 0..100u64 {
            let s = Sample {
                data: Bytes::from(vec![0u8; 1 << 20]),
                pts: Duration::from_millis(i * 33),
                keyframe: i == 0,
            };
            p.sample(s, Duration::from_millis(i * 33));
            assert!(p.preroll_bytes <= MAX_PREROLL_BYTES, "frame {i}");
        }
    }

    #[test]
    fn repeated_or_backward_times_keep_decode_times_increasing() {
        let mk = |ms: u64, key: bool| Sample {
            data: Bytes::new(),
            pts: Duration::from_millis(ms),
            keyframe: key,
        };
        let t = timed(
            Duration::ZERO,
            vec![mk(0, true), mk(0, false), mk(40, false)],
            Duration::from_millis(80),
        );
        let d: Vec<(u64, u32)> = t
            .iter()
            .map(|t| (t.decode_ticks, t.duration_ticks))
            .collect();
        assert_eq!(d, [(0, 1), (1, 3599), (3600, 3600)]);
    }
}
