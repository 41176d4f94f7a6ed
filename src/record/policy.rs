//! When to open, fragment and close recording segments: a pure state
//! machine fed samples, triggers and time, returning what to write.
//!
//! Segments start at a keyframe and end at the first keyframe after
//! `segment` (or when the camera's configuration changes, or after a gap);
//! fragments hold every sample whose duration is known once `fragment` has
//! passed, so a crash loses at most one fragment. In events mode a bounded
//! pre-roll buffer that always starts at a keyframe is kept while idle.
//!
//! With the microphone on, the video still decides every cut; each audio
//! packet goes to the segment and fragment whose time range its
//! presentation time falls in (from the segment's keyframe on). Audio comes
//! in on its own clock, a little behind or ahead of the video, so a
//! fragment whose video is complete is held until the audio has reached its
//! end too (a packet at or past it came), or until [`AUDIO_WAIT`] has
//! passed since its end (a microphone that stalled): then it goes out with
//! the audio it has.

use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Media timescale of recorded video (ticks per second), as RTP's for video.
pub const TIMESCALE: u32 = 90_000;
/// Media timescale of recorded audio: Opus's 48 kHz.
pub const AUDIO_TIMESCALE: u32 = 48_000;
/// Ticks of one Opus packet (20 ms at 48 kHz).
pub const AUDIO_FRAME_TICKS: u32 = 960;
/// Longest a fragment whose video is complete waits for its audio.
pub const AUDIO_WAIT: Duration = Duration::from_millis(500);
/// A pause longer than this between frames (camera gone, encoder stalled)
/// ends the segment rather than becoming one very long frame.
pub const MAX_GAP: Duration = Duration::from_secs(5);
/// Most bytes of pre-roll kept, whatever `pre` says: a bound on memory.
pub const MAX_PREROLL_BYTES: usize = 32 << 20;
/// Frame duration assumed for a segment's last frame when no earlier one tells.
const DEFAULT_FRAME: Duration = Duration::from_millis(33);

/// One encoded video frame or audio packet to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Annex B access unit, or one Opus packet.
    pub data: Bytes,
    /// Presentation time on the hub's clock.
    pub pts: Duration,
    /// An IDR: a segment can start here (every audio packet is one).
    pub keyframe: bool,
}

/// A sample with its duration, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    /// The frame or packet.
    pub sample: Sample,
    /// Its decode time from the segment's start, in its track's ticks
    /// ([`TIMESCALE`] for video, [`AUDIO_TIMESCALE`] for audio).
    pub decode_ticks: u64,
    /// Its duration in the same ticks (at least 1).
    pub duration_ticks: u32,
}

/// One fragment's samples, track by track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragment {
    /// Video frames (never empty in a fragment from the policy).
    pub video: Vec<Timed>,
    /// Audio packets of the same time range (empty with no microphone).
    pub audio: Vec<Timed>,
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
    Fragment(Fragment),
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
    /// The microphone is on: audio is recorded, and fragments wait for it.
    pub audio: bool,
}

#[derive(Debug)]
struct Open {
    /// Numbers the policy's segments (for the audio clock).
    seg: u64,
    start: Duration,
    /// Samples of the open fragment; the last one's duration is not known yet.
    pending: Vec<Sample>,
    /// Audio packets from the segment's start on not yet in a fragment.
    audio: Vec<Sample>,
}

/// A fragment whose video is complete, waiting for its audio.
#[derive(Debug)]
struct Held {
    seg: u64,
    /// Its segment's start: audio before it is not the segment's.
    seg_start: Duration,
    video: Vec<Timed>,
    audio: Vec<Sample>,
    /// Audio before this is the fragment's.
    end: Duration,
}

/// Actions in order, fragments among them possibly waiting for audio.
#[derive(Debug)]
enum Out {
    Open(Duration),
    Fragment(Held),
    Close,
}

/// The recording state machine.
#[derive(Debug)]
pub struct RecordPolicy {
    cfg: PolicyConfig,
    open: Option<Open>,
    segments: u64,
    /// What is decided but not yet handed out (waiting for audio).
    outbox: VecDeque<Out>,
    preroll: VecDeque<Sample>,
    /// Audio of the pre-roll, from its first keyframe on.
    preroll_audio: VecDeque<Sample>,
    /// Bytes of both.
    preroll_bytes: usize,
    /// Events mode: recording goes on until this time (hub clock).
    until: Option<Duration>,
    /// A user's `record.start` holds the recording open until `record.stop`.
    held: bool,
    last_pts: Option<Duration>,
    frame: Duration,
    /// The latest audio packet's time: all audio before it has come.
    audio_seen: Option<Duration>,
    /// The segment whose audio was last timed, and its next packet's decode time.
    audio_clock: Option<(u64, u64)>,
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos() * u128::from(TIMESCALE) / 1_000_000_000) as u64
}

fn audio_ticks(d: Duration) -> u64 {
    (d.as_nanos() * u128::from(AUDIO_TIMESCALE) / 1_000_000_000) as u64
}

impl RecordPolicy {
    /// A policy that has recorded nothing yet.
    pub fn new(cfg: PolicyConfig) -> Self {
        Self {
            cfg,
            open: None,
            segments: 0,
            outbox: VecDeque::new(),
            preroll: VecDeque::new(),
            preroll_audio: VecDeque::new(),
            preroll_bytes: 0,
            until: None,
            held: false,
            last_pts: None,
            frame: DEFAULT_FRAME,
            audio_seen: None,
            audio_clock: None,
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
        self.start_from_preroll();
        self.drain(now)
    }

    /// `record.start` (`true`) or `record.stop` (`false`) at `now`.
    pub fn hold(&mut self, on: bool, now: Duration) -> Vec<Action> {
        self.held = on;
        if on {
            self.start_from_preroll();
            return self.drain(now);
        }
        self.until = None;
        self.tick(now)
    }

    fn start_from_preroll(&mut self) {
        if self.open.is_some() || self.cfg.mode != Mode::Events {
            return;
        }
        self.preroll_bytes = 0;
        for s in std::mem::take(&mut self.preroll) {
            self.push(s);
        }
        // The video's fragments are made first; the audio then goes where
        // its times fall (nothing is handed out before it is in).
        for a in std::mem::take(&mut self.preroll_audio) {
            self.place_audio(a);
        }
    }

    /// Time passing without frames: ends an events recording whose
    /// post-roll is over, and hands out fragments that waited long enough
    /// for their audio.
    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        if self.open.is_some() && !self.wanted(now) {
            self.close();
        }
        self.drain(now)
    }

    /// The camera's configuration (SPS/PPS) changed at this keyframe: the
    /// next sample starts a new segment.
    pub fn config_changed(&mut self) -> Vec<Action> {
        self.close();
        self.clear_preroll();
        // No time given: only what needs no more audio goes out now.
        self.drain(Duration::ZERO)
    }

    /// The writer lost the open segment (disk error): start again at the next keyframe.
    pub fn reset(&mut self) {
        self.open = None;
    }

    /// The agent is stopping: writes what is pending, with the audio that came, and closes.
    pub fn finish(&mut self) -> Vec<Action> {
        self.close();
        self.drain(Duration::MAX)
    }

    /// A video frame from the hub at `now` (hub clock).
    pub fn sample(&mut self, s: Sample, now: Duration) -> Vec<Action> {
        if let Some(last) = self.last_pts {
            let gap = s.pts.saturating_sub(last);
            if gap > MAX_GAP || s.pts < last {
                self.close();
                self.clear_preroll();
            } else if !gap.is_zero() {
                self.frame = gap;
            }
        }
        self.last_pts = Some(s.pts);
        if !self.wanted(now) {
            self.close();
            self.keep_preroll(s);
        } else {
            self.push(s);
        }
        self.drain(now)
    }

    /// An audio packet from the hub at `now` (hub clock). Ignored when the
    /// policy records no audio.
    pub fn audio(&mut self, s: Sample, now: Duration) -> Vec<Action> {
        if self.cfg.audio {
            self.audio_seen = Some(self.audio_seen.map_or(s.pts, |a| a.max(s.pts)));
            self.place_audio(s);
        }
        self.drain(now)
    }

    /// Puts an audio packet in the fragment its time falls in: a held one,
    /// the open one, the pre-roll, or nowhere (before any recorded video).
    fn place_audio(&mut self, s: Sample) {
        for out in &mut self.outbox {
            if let Out::Fragment(h) = out
                && s.pts < h.end
            {
                if s.pts >= h.seg_start {
                    h.audio.push(s);
                }
                return;
            }
        }
        if let Some(open) = &mut self.open {
            if s.pts >= open.start {
                open.audio.push(s);
            }
            return;
        }
        let starts = self.preroll.front().map(|v| v.pts);
        if self.cfg.mode == Mode::Events && starts.is_some_and(|v| s.pts >= v) {
            self.preroll_bytes += s.data.len();
            self.preroll_audio.push_back(s);
        }
    }

    /// Hands out, in order, what needs no more audio: everything at
    /// `Duration::MAX`, nothing held before `end + AUDIO_WAIT` otherwise
    /// unless audio past its end came.
    fn drain(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(front) = self.outbox.front() {
            if let Out::Fragment(h) = front {
                let complete = !self.cfg.audio
                    || self.audio_seen.is_some_and(|a| a >= h.end)
                    || now.saturating_sub(h.end) >= AUDIO_WAIT;
                if !complete {
                    break;
                }
            }
            match self.outbox.pop_front() {
                Some(Out::Open(start)) => out.push(Action::Open { start }),
                Some(Out::Close) => out.push(Action::Close),
                Some(Out::Fragment(h)) => {
                    let mut next = self
                        .audio_clock
                        .and_then(|(seg, next)| (seg == h.seg).then_some(next));
                    let audio = timed_audio(h.seg_start, h.audio, &mut next);
                    if let Some(next) = next {
                        self.audio_clock = Some((h.seg, next));
                    }
                    out.push(Action::Fragment(Fragment {
                        video: h.video,
                        audio,
                    }));
                }
                None => break,
            }
        }
        out
    }

    fn clear_preroll(&mut self) {
        self.preroll.clear();
        self.preroll_audio.clear();
        self.preroll_bytes = 0;
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
            // Audio from the new first keyframe on.
            while self.preroll_audio.front().is_some_and(|a| a.pts < next_pts) {
                if let Some(a) = self.preroll_audio.pop_front() {
                    self.preroll_bytes -= a.data.len();
                }
            }
        }
        if self.preroll_bytes > MAX_PREROLL_BYTES {
            // One GOP over the bound (a camera with rare keyframes): start
            // again at the next keyframe rather than grow.
            self.clear_preroll();
        }
    }

    /// Seals the open segment's pending fragment, ending at `end`: its
    /// video timed, its audio before `end` with it (the rest stays open).
    fn seal(&mut self, end: Duration) {
        let Some(open) = &mut self.open else { return };
        if open.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut open.pending);
        let split = open.audio.partition_point(|a| a.pts < end);
        let audio: Vec<Sample> = open.audio.drain(..split).collect();
        self.outbox.push_back(Out::Fragment(Held {
            seg: open.seg,
            seg_start: open.start,
            video: timed(open.start, pending, end),
            audio,
            end,
        }));
    }

    fn begin(&mut self, s: Sample, audio: Vec<Sample>) {
        self.segments += 1;
        self.outbox.push_back(Out::Open(s.pts));
        self.open = Some(Open {
            seg: self.segments,
            start: s.pts,
            audio: audio.into_iter().filter(|a| a.pts >= s.pts).collect(),
            pending: vec![s],
        });
    }

    fn push(&mut self, s: Sample) {
        let Some(open) = &mut self.open else {
            if s.keyframe {
                self.begin(s, Vec::new());
            }
            return;
        };
        let first = open.pending.first().map_or(s.pts, |f| f.pts);
        if s.keyframe && s.pts.saturating_sub(open.start) >= self.cfg.segment {
            self.seal(s.pts);
            // Audio that came ahead of this keyframe belongs to the next segment.
            let ahead = self.open.take().map(|o| o.audio).unwrap_or_default();
            self.outbox.push_back(Out::Close);
            self.begin(s, ahead);
        } else if !open.pending.is_empty() && s.pts.saturating_sub(first) >= self.cfg.fragment {
            self.seal(s.pts);
            if let Some(open) = &mut self.open {
                open.pending.push(s);
            }
        } else {
            open.pending.push(s);
        }
    }

    fn close(&mut self) {
        let Some(last) = self.open.as_ref().and_then(|o| o.pending.last()) else {
            if self.open.take().is_some() {
                self.outbox.push_back(Out::Close);
            }
            return;
        };
        let end = last.pts + self.frame;
        self.seal(end);
        self.open = None;
        self.outbox.push_back(Out::Close);
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

/// Audio packets timed at 48 kHz from the segment's `start`: each one lasts
/// its 960 ticks and follows the one before (`next`, updated), so the
/// jitter of capture times does not leave holes or overlaps; a packet more
/// than half a packet later than that (packets lost, a microphone that
/// stalled) starts at its own time, the one before it in the fragment
/// lasting up to it.
fn timed_audio(start: Duration, samples: Vec<Sample>, next: &mut Option<u64>) -> Vec<Timed> {
    let mut out: Vec<Timed> = Vec::with_capacity(samples.len());
    for s in samples {
        let at = audio_ticks(s.pts.saturating_sub(start));
        let decode = match *next {
            Some(n) if at < n + u64::from(AUDIO_FRAME_TICKS / 2) => n,
            _ => at,
        };
        if let Some(prev) = out.last_mut() {
            let gap = decode.saturating_sub(prev.decode_ticks).max(1);
            prev.duration_ticks = u32::try_from(gap).unwrap_or(u32::MAX);
        }
        out.push(Timed {
            sample: s,
            decode_ticks: decode,
            duration_ticks: AUDIO_FRAME_TICKS,
        });
        *next = Some(decode + u64::from(AUDIO_FRAME_TICKS));
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
            audio: false,
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
                    assert!(!f.video.is_empty(), "a fragment has video");
                    for t in &f.video {
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

    /// A packet of 20 ms audio captured at `ms`.
    fn packet(ms: u64) -> Sample {
        Sample {
            data: Bytes::from(vec![1u8; 40]),
            pts: Duration::from_millis(ms),
            keyframe: true,
        }
    }

    /// Feeds video (30 fps, a keyframe every `gop` frames, each arriving
    /// `video_late` ms after its capture) and audio (a packet every 20 ms,
    /// arriving `audio_late` ms after its first sample) from `from` to `to`
    /// ms in the order they arrive.
    fn feed_av(
        p: &mut RecordPolicy,
        (from, to): (u64, u64),
        gop: u64,
        (video_late, audio_late): (u64, u64),
    ) -> Vec<Action> {
        let mut arrivals: Vec<(u64, bool, Sample)> = Vec::new();
        for i in (from * FPS / 1000)..(to * FPS / 1000) {
            let f = frame(i, gop);
            arrivals.push((f.pts.as_millis() as u64 + video_late, true, f));
        }
        for ms in (from..to).step_by(20) {
            arrivals.push((ms + audio_late, false, packet(ms)));
        }
        arrivals.sort_by_key(|a| a.0);
        let mut actions = Vec::new();
        for (at, video, s) in arrivals {
            let now = Duration::from_millis(at);
            actions.extend(if video {
                p.sample(s, now)
            } else {
                p.audio(s, now)
            });
        }
        actions
    }

    /// A segment's start (ms), its audio packets as (pts ms, decode ticks), and its end (ms).
    type SegmentAudio = (u64, Vec<(u64, u64)>, u64);

    /// Each segment's audio, checking that each fragment's audio lies in
    /// the fragment's time range.
    fn audio_of(actions: &[Action]) -> Vec<SegmentAudio> {
        let ms = |d: Duration| d.as_millis() as u64;
        let mut out = Vec::new();
        for a in actions {
            match a {
                Action::Open { start } => out.push((ms(*start), Vec::new(), ms(*start))),
                Action::Fragment(f) => {
                    let seg = out.last_mut().expect("a fragment in a segment");
                    let from = seg.0 + f.video[0].decode_ticks * 1000 / u64::from(TIMESCALE);
                    let last = f.video.last().expect("video");
                    let end = seg.0
                        + (last.decode_ticks + u64::from(last.duration_ticks)) * 1000
                            / u64::from(TIMESCALE);
                    for t in &f.audio {
                        let pts = ms(t.sample.pts);
                        // The fragment's range, to the ms its ticks round to.
                        assert!(pts + 1 >= from && pts < end + 1, "{pts} in {from}..{end}");
                        seg.1.push((pts, t.decode_ticks));
                    }
                    // Within a fragment the packets follow each other.
                    for w in f.audio.windows(2) {
                        assert_eq!(
                            w[1].decode_ticks,
                            w[0].decode_ticks + u64::from(w[0].duration_ticks)
                        );
                    }
                    seg.2 = end;
                }
                Action::Close => {}
            }
        }
        out
    }

    #[test]
    fn audio_goes_to_the_segment_and_fragment_its_time_falls_in() {
        let mut p = RecordPolicy::new(PolicyConfig {
            audio: true,
            ..cfg(Mode::Continuous)
        });
        // Audio arrives 35 ms after its capture, video 10 ms after: each
        // cut is decided before the audio before it is in.
        let mut actions = feed_av(&mut p, (0, 10_000), 45, (10, 35));
        actions.extend(p.finish());
        segments(&actions);
        let segs = audio_of(&actions);
        assert_eq!(
            segs.iter().map(|s| s.0).collect::<Vec<_>>(),
            [0, 3000, 6000, 9000]
        );
        let mut all = Vec::new();
        for (start, audio, end) in &segs {
            // From the keyframe on, to the segment's end, none missing.
            let want: Vec<u64> = (*start..*end).step_by(20).collect();
            let got: Vec<u64> = audio.iter().map(|a| a.0).collect();
            assert_eq!(got, want, "segment at {start}");
            // Timed from the segment's start, 960 ticks each.
            for (i, (_, decode)) in audio.iter().enumerate() {
                assert_eq!(*decode, i as u64 * u64::from(AUDIO_FRAME_TICKS));
            }
            all.extend(got);
        }
        // Every packet in exactly one segment.
        assert!(all.windows(2).all(|w| w[1] == w[0] + 20));
    }

    #[test]
    fn fragments_wait_for_their_audio_but_not_for_a_stalled_microphone() {
        let mut p = RecordPolicy::new(PolicyConfig {
            audio: true,
            ..cfg(Mode::Continuous)
        });
        // 1.5 s of video only: the first fragment (cut at 1 s) waits.
        let mut actions = Vec::new();
        for i in 0..45 {
            let s = frame(i, 45);
            actions.extend(p.sample(s.clone(), s.pts));
        }
        assert_eq!(
            actions,
            [Action::Open {
                start: Duration::ZERO
            }],
            "held for its audio"
        );
        // Audio up to 1 s comes late: the fragment goes out with it.
        for ms in (0..1000).step_by(20) {
            actions.extend(p.audio(packet(ms), Duration::from_millis(1200)));
        }
        assert_eq!(actions.len(), 1, "not before a packet at or past its end");
        actions.extend(p.audio(packet(1000), Duration::from_millis(1200)));
        let Some(Action::Fragment(f)) = actions.get(1) else {
            panic!("{actions:?}")
        };
        assert_eq!((f.video.len(), f.audio.len()), (30, 50));
        // Then the microphone stalls: the next fragment (cut at 2 s) goes
        // AUDIO_WAIT after its end, with the audio it has.
        let n = actions.len();
        for i in 45..61 {
            let s = frame(i, 45);
            actions.extend(p.sample(s.clone(), s.pts));
        }
        assert_eq!(actions.len(), n, "still waiting");
        actions.extend(p.tick(Duration::from_millis(2000) + AUDIO_WAIT));
        let Some(Action::Fragment(f)) = actions.last() else {
            panic!("{actions:?}")
        };
        assert_eq!((f.video.len(), f.audio.len()), (30, 1));
        // Without a microphone nothing waits.
        let mut p = RecordPolicy::new(cfg(Mode::Continuous));
        let mut actions = Vec::new();
        for i in 0..31 {
            let s = frame(i, 45);
            actions.extend(p.sample(s.clone(), s.pts));
            actions.extend(p.audio(packet(i * 33), s.pts));
        }
        let Some(Action::Fragment(f)) = actions.last() else {
            panic!("{actions:?}")
        };
        assert_eq!((f.video.len(), f.audio.len()), (30, 0));
    }

    #[test]
    fn the_pre_roll_keeps_audio_from_its_keyframe_on() {
        let mut p = RecordPolicy::new(PolicyConfig {
            audio: true,
            segment: Duration::from_secs(60),
            ..cfg(Mode::Events)
        });
        let mut actions = feed_av(&mut p, (0, 5_000), 30, (10, 35));
        assert!(actions.is_empty(), "{actions:?}");
        // The pre-roll starts at the keyframe at 2 s (at least 2 s before 5 s).
        actions.extend(p.trigger(Duration::from_millis(5_040)));
        actions.extend(feed_av(&mut p, (5_000, 9_000), 30, (10, 35)));
        actions.extend(p.finish());
        segments(&actions);
        let segs = audio_of(&actions);
        assert_eq!(segs.len(), 1);
        let (start, audio, end) = &segs[0];
        assert_eq!(*start, 2000);
        // Post-roll: until 3 s after the trigger, to the last frame's end.
        assert!((8_000..=8_100).contains(end), "{end}");
        let got: Vec<u64> = audio.iter().map(|a| a.0).collect();
        let want: Vec<u64> = (2000..*end).step_by(20).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn audio_times_follow_each_other_through_jitter_and_skip_lost_packets() {
        let at = |us: u64| Sample {
            data: Bytes::new(),
            pts: Duration::from_micros(us),
            keyframe: true,
        };
        let mut next = None;
        // 1 ms of jitter either way, then two packets lost.
        let t = timed_audio(
            Duration::from_millis(1000),
            vec![
                at(1_005_000),
                at(1_026_000),
                at(1_044_000),
                at(1_065_000),
                at(1_125_000),
            ],
            &mut next,
        );
        let d: Vec<(u64, u32)> = t
            .iter()
            .map(|t| (t.decode_ticks, t.duration_ticks))
            .collect();
        assert_eq!(
            d,
            [
                (240, 960),
                (1200, 960),
                (2160, 960),
                (3120, 2880),
                (6000, 960)
            ]
        );
        assert_eq!(next, Some(6960));
        // The next fragment goes on from there.
        let t = timed_audio(Duration::from_millis(1000), vec![at(1_146_000)], &mut next);
        assert_eq!(t[0].decode_ticks, 6960);
    }
}
