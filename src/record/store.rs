//! Segment files on disk: one folder per day (UTC), one file per segment
//! named by its start time (`2026-11-30/17-45-03.mp4`), listing, deleting,
//! and the crash repair done at start.
//!
//! A segment is written in place, fragment by fragment, each synced before
//! the next: after a power cut the file holds whole fragments plus at most
//! one torn one, which [`repair`] cuts off.

use super::mp4::VIDEO_TRACK;
use mp4_atom::{Decode, Moof};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name is not one of a segment.
    #[error("{0:?} is not a recording name (expected YYYY-MM-DD/HH-MM-SS.mp4)")]
    BadName(String),
    /// No such segment.
    #[error("no recording {0:?}")]
    NotFound(String),
    /// The disk refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The OS error, when it was one.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A segment file as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// `YYYY-MM-DD/HH-MM-SS.mp4` (or `…-N.mp4` when one second held several).
    pub name: String,
    /// Start time, Unix ms.
    pub start_ms: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// A motion event as logged next to the recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MotionSpan {
    /// When it started, Unix ms.
    pub start_ms: u64,
    /// When it ended, Unix ms (absent while it goes on, or if the agent stopped first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
}

/// The motion log of each day folder.
pub const MOTION_LOG: &str = "motion.jsonl";
/// Longest motion log line read (anything longer is not ours).
const MAX_MOTION_LINE: usize = 128;

/// The name of a segment starting at `t`, the `n`th of that second (0: no suffix).
pub fn segment_name(t: SystemTime, n: u32) -> String {
    // A board without a clock may think it is 1970; never before it.
    let stamp = humantime::format_rfc3339_seconds(t.max(UNIX_EPOCH)).to_string();
    // "2026-11-30T17:45:03Z"
    let (day, time) = stamp.split_at(10);
    let time = time[1..9].replace(':', "-");
    if n == 0 {
        format!("{day}/{time}.mp4")
    } else {
        format!("{day}/{time}-{n}.mp4")
    }
}

/// The start time (Unix ms) a segment name stands for; `None` if it is not
/// exactly a segment name (so no other path can be reached through one).
pub fn parse_name(name: &str) -> Option<u64> {
    let b = name.as_bytes();
    if b.len() < 23 || b.len() > 27 || !name.ends_with(".mp4") {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'/'
        && digits(11..13)
        && b[13] == b'-'
        && digits(14..16)
        && b[16] == b'-'
        && digits(17..19);
    if !shape {
        return None;
    }
    // Bytes 0-18 are ASCII and the name ends in ".mp4": both are char boundaries.
    let suffix = &name[19..name.len() - 4];
    let suffix_ok = suffix.is_empty()
        || (suffix.len() >= 2
            && suffix.len() <= 4
            && suffix.starts_with('-')
            && suffix[1..].bytes().all(|c| c.is_ascii_digit())
            && !suffix[1..].starts_with('0'));
    if !suffix_ok {
        return None;
    }
    let stamp = format!(
        "{}T{}:{}:{}Z",
        &name[..10],
        &name[11..13],
        &name[14..16],
        &name[17..19]
    );
    let t = humantime::parse_rfc3339(&stamp).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// The recordings folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A segment file open for writing.
#[derive(Debug)]
pub struct SegmentFileWriter {
    /// Its name in the store.
    pub name: String,
    path: PathBuf,
    file: File,
    /// Bytes written so far.
    pub bytes: u64,
}

impl SegmentFileWriter {
    /// Appends `data` and syncs it to the disk before returning. On failure the file is cut back to what it held (when the disk
    /// lets it), so a full disk leaves no torn fragment behind.
    pub fn append_synced(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if let Err(e) = self
            .file
            .write_all(data)
            .and_then(|()| self.file.sync_data())
        {
            let _ = self.file.set_len(self.bytes);
            return Err(StoreError::io(&self.path, e));
        }
        self.bytes += data.len() as u64;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

impl Store {
    /// The store in `dir` (created when the first segment is).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the segment `name`.
    pub fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        parse_name(name).ok_or_else(|| StoreError::BadName(name.to_string()))?;
        Ok(self.dir.join(name))
    }

    /// Creates the file of a segment starting at `start`; its folder and
    /// name are synced, so the file survives a power cut once data is.
    pub fn create(&self, start: SystemTime) -> Result<SegmentFileWriter, StoreError> {
        let day = self.dir.join(&segment_name(start, 0)[..10]);
        if !day.is_dir() {
            fs::create_dir_all(&day).map_err(|e| StoreError::io(&day, e))?;
            sync_dir(&self.dir)?;
        }
        for n in 0..1000 {
            let name = segment_name(start, n);
            let path = self.dir.join(&name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    sync_dir(&day)?;
                    return Ok(SegmentFileWriter {
                        name,
                        path,
                        file,
                        bytes: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Err(StoreError::io(
            &day,
            io::Error::new(io::ErrorKind::AlreadyExists, "1000 segments in one second"),
        ))
    }

    /// Every segment, oldest first. Files that are not segments are left alone.
    pub fn list(&self) -> Vec<SegmentFile> {
        let mut out = Vec::new();
        let Ok(days) = fs::read_dir(&self.dir) else {
            return out;
        };
        for day in days.flatten() {
            let Ok(files) = fs::read_dir(day.path()) else {
                continue;
            };
            let day_name = day.file_name().to_string_lossy().into_owned();
            for f in files.flatten() {
                let name = format!("{day_name}/{}", f.file_name().to_string_lossy());
                let (Some(start_ms), Ok(meta)) = (parse_name(&name), f.metadata()) else {
                    continue;
                };
                if meta.is_file() {
                    out.push(SegmentFile {
                        name,
                        start_ms,
                        bytes: meta.len(),
                    });
                }
            }
        }
        // Within one second, "-1" after none and "-10" after "-9": shorter first.
        out.sort_by(|a, b| {
            (a.start_ms, a.name.len(), &a.name).cmp(&(b.start_ms, b.name.len(), &b.name))
        });
        out
    }

    /// Deletes a segment, and its day folder (with its motion log) once it
    /// holds no segment.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name)?;
        fs::remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(name.to_string()),
            _ => StoreError::io(&path, e),
        })?;
        if let Some(day) = path.parent() {
            let segments_left = fs::read_dir(day)
                .map(|d| {
                    d.flatten()
                        .any(|f| f.path().extension().is_some_and(|x| x == "mp4"))
                })
                .unwrap_or(true);
            if !segments_left {
                let _ = fs::remove_file(day.join(MOTION_LOG));
                // Fails if anything else is in it, as intended.
                let _ = fs::remove_dir(day);
            }
        }
        Ok(())
    }

    /// Appends a motion event to its day's log (`end_ms` once it ended).
    pub fn log_motion(&self, span: MotionSpan) -> Result<(), StoreError> {
        let start = UNIX_EPOCH + Duration::from_millis(span.start_ms);
        let day = self.dir.join(&segment_name(start, 0)[..10]);
        fs::create_dir_all(&day).map_err(|e| StoreError::io(&day, e))?;
        let path = day.join(MOTION_LOG);
        let line = serde_json::to_string(&span).unwrap_or_default() + "\n";
        File::options()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| StoreError::io(&path, e))
    }

    /// Every logged motion event, oldest first; a start and its end are one.
    pub fn motion(&self) -> Vec<MotionSpan> {
        let mut spans: std::collections::BTreeMap<u64, MotionSpan> = Default::default();
        let Ok(days) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        for day in days.flatten() {
            let Ok(text) = fs::read_to_string(day.path().join(MOTION_LOG)) else {
                continue;
            };
            for line in text.lines().filter(|l| l.len() <= MAX_MOTION_LINE) {
                if let Ok(s) = serde_json::from_str::<MotionSpan>(line) {
                    let e = spans.entry(s.start_ms).or_insert(s);
                    e.end_ms = e.end_ms.or(s.end_ms);
                }
            }
        }
        spans.into_values().collect()
    }

    /// Repairs every segment a crash may have cut short: see [`repair`].
    pub fn repair_all(&self) -> Vec<(String, Repair)> {
        self.list()
            .into_iter()
            .filter_map(|s| {
                let path = self.dir.join(&s.name);
                let r = repair(&path).unwrap_or_else(|e| Repair::Failed(e.to_string()));
                (r != Repair::Intact).then_some((s.name, r))
            })
            .collect()
    }
}

/// What a segment holds, read from its boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Whether the init segment (`ftyp` + `moov`) is whole.
    pub init: bool,
    /// Whole fragments.
    pub fragments: u32,
    /// Video frames in them.
    pub frames: u64,
    /// Their length in video ticks.
    pub duration_ticks: u64,
    /// Where the last whole box ends: anything after it is torn.
    pub complete_len: u64,
    /// The file's length.
    pub len: u64,
}

impl Summary {
    /// Length in ms.
    pub fn duration(&self) -> Duration {
        let rate = u64::from(super::policy::TIMESCALE);
        Duration::from_secs(self.duration_ticks / rate)
            + Duration::from_nanos(self.duration_ticks % rate * 1_000_000_000 / rate)
    }
}

/// Largest `moof` read (a fragment of 10 s at 60 fps needs about 8 KB).
const MAX_MOOF: u64 = 1 << 20;

/// Reads the box structure of a segment.
pub fn summarize(path: &Path) -> io::Result<Summary> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut s = Summary {
        len,
        ..Summary::default()
    };
    let mut pos = 0u64;
    let (mut ftyp, mut moov) = (false, false);
    // A moof waiting for its mdat: (frames, ticks).
    let mut open: Option<(u64, u64)> = None;
    loop {
        let mut head = [0u8; 8];
        if pos + 8 > len {
            break;
        }
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut head)?;
        let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let kind = [head[4], head[5], head[6], head[7]];
        let mut header = 8;
        if size == 1 {
            let mut big = [0u8; 8];
            if pos + 16 > len {
                break;
            }
            f.read_exact(&mut big)?;
            size = u64::from_be_bytes(big);
            header = 16;
        }
        // Size 0 ("to the end") is what a torn write looks like too: not whole.
        let Some(end) = pos.checked_add(size) else {
            break;
        };
        if size < header || end > len {
            break;
        }
        match &kind {
            b"ftyp" => ftyp = true,
            b"moov" => moov = ftyp,
            b"moof" if size <= MAX_MOOF => {
                let mut body = vec![0u8; size as usize];
                f.seek(SeekFrom::Start(pos))?;
                f.read_exact(&mut body)?;
                let moof = Moof::decode(&mut body.as_slice())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let (mut frames, mut ticks) = (0u64, 0u64);
                // Frames and length are the video's; an audio traf is beside it.
                for traf in moof.traf.iter().filter(|t| t.tfhd.track_id == VIDEO_TRACK) {
                    for trun in &traf.trun {
                        for e in trun.samples.iter() {
                            frames += 1;
                            ticks += u64::from(e.duration.unwrap_or(0));
                        }
                    }
                }
                open = Some((frames, ticks));
            }
            b"mdat" => {
                if let Some((frames, ticks)) = open.take() {
                    s.fragments += 1;
                    s.frames += frames;
                    s.duration_ticks += ticks;
                }
            }
            _ => {}
        }
        pos = end;
        if open.is_none() {
            s.complete_len = pos;
        }
    }
    s.init = ftyp && moov;
    if !s.init {
        s.complete_len = 0;
    }
    Ok(s)
}

/// What [`repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Nothing to do.
    Intact,
    /// A torn last fragment was cut off; this many bytes were kept.
    Truncated(u64),
    /// Not even one whole fragment: the file was removed.
    Removed,
    /// The file could not be read or changed.
    Failed(String),
}

/// Cuts a segment back to its last whole fragment, or removes it when it
/// has none.
pub fn repair(path: &Path) -> io::Result<Repair> {
    let s = summarize(path)?;
    if !s.init || s.fragments == 0 {
        fs::remove_file(path)?;
        return Ok(Repair::Removed);
    }
    if s.complete_len == s.len {
        return Ok(Repair::Intact);
    }
    let f = File::options().write(true).open(path)?;
    f.set_len(s.complete_len)?;
    f.sync_all()?;
    Ok(Repair::Truncated(s.complete_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_060_703);
        let name = segment_name(t, 0);
        assert_eq!(name, "2026-11-30/17-45-03.mp4");
        assert_eq!(parse_name(&name), Some(1_796_060_703_000));
        assert_eq!(segment_name(t, 2), "2026-11-30/17-45-03-2.mp4");
        assert_eq!(
            parse_name("2026-11-30/17-45-03-2.mp4"),
            Some(1_796_060_703_000)
        );
        for bad in [
            "",
            "../etc/passwd",
            "2026-11-30/../17-45-03.mp4",
            "2026-11-30/17-45-03.mp4/..",
            "/2026-11-30/17-45-03.mp4",
            "2026-11-30\\17-45-03.mp4",
            "2026-11-30/17-45-03-0.mp4",
            "2026-11-30/17-45-03-1000.mp4",
            "2026-13-30/17-45-03.mp4",
            "2026-11-30/17-45-03.MP4",
            "2026-11-30/17-45-0\u{0}.mp4",
            "२०२६-11-30/17-45-03.mp4",
            "2026-11-30/17-45-0é.mp4",
            "2026-11-30/Kamera-Ü.mp4",
        ] {
            assert_eq!(parse_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hostile_box_sizes_end_the_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.mp4");
        let mut data = Vec::new();
        data.extend_from_slice(&1u32.to_be_bytes());
        data.extend_from_slice(b"moof");
        data.extend_from_slice(&(u64::MAX - 4).to_be_bytes());
        data.extend_from_slice(&[0u8; 64]);
        std::fs::write(&path, &data).expect("write");
        let s = summarize(&path).expect("reads");
        assert_eq!((s.init, s.complete_len, s.fragments), (false, 0, 0));
        let long = Summary {
            duration_ticks: u64::MAX,
            ..Summary::default()
        };
        assert!(long.duration() > Duration::from_secs(1 << 40));
        assert_eq!(
            segment_name(UNIX_EPOCH - Duration::from_secs(5), 0),
            "1970-01-01/00-00-00.mp4"
        );
    }

    #[test]
    fn segments_are_created_listed_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("rec"));
        let t = UNIX_EPOCH + Duration::from_secs(1_796_060_703);
        let mut a = store.create(t).expect("create");
        a.append_synced(b"x").expect("write");
        let b = store.create(t).expect("create");
        assert_eq!(b.name, "2026-11-30/17-45-03-1.mp4");
        std::fs::write(dir.path().join("rec/2026-11-30/notes.txt"), "hi").expect("write");
        let names: Vec<String> = store.list().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["2026-11-30/17-45-03.mp4", "2026-11-30/17-45-03-1.mp4"]
        );
        store.delete(&a.name).expect("delete");
        assert!(matches!(
            store.delete(&a.name),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(store.delete("../x"), Err(StoreError::BadName(_))));
        assert_eq!(store.list().len(), 1);
        // Motion events: a start, then its end, read as one; junk lines skipped.
        let start_ms = 1_796_060_710_000;
        store
            .log_motion(MotionSpan {
                start_ms,
                end_ms: None,
            })
            .expect("log");
        store
            .log_motion(MotionSpan {
                start_ms,
                end_ms: Some(start_ms + 4000),
            })
            .expect("log");
        let log = dir.path().join("rec/2026-11-30").join(MOTION_LOG);
        let mut text = std::fs::read_to_string(&log).expect("log");
        text.push_str("not json\n");
        std::fs::write(&log, text).expect("write");
        assert_eq!(
            store.motion(),
            [MotionSpan {
                start_ms,
                end_ms: Some(start_ms + 4000)
            }]
        );
        // The day's last segment goes: its folder and log go too.
        std::fs::remove_file(dir.path().join("rec/2026-11-30/notes.txt")).expect("rm");
        store.delete(&b.name).expect("delete");
        assert!(!dir.path().join("rec/2026-11-30").exists());
    }

    #[test]
    fn a_torn_segment_with_audio_is_cut_back_and_counts_its_video_only() {
        use crate::record::mp4::tests::{config, timed};
        use crate::record::mp4::{AudioConfig, fragment, init_segment};
        use bytes::Bytes;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.mp4");
        let mut data = init_segment(&config(), Some(AudioConfig { channels: 1 })).expect("init");
        let mut whole = 0;
        for seq in 0..3u32 {
            let t = u64::from(seq) * 6000;
            let video = [
                timed(Bytes::from_static(&[0, 0, 0, 1, 0x65, 0x88]), true, t, 3000),
                timed(
                    Bytes::from_static(&[0, 0, 0, 1, 0x41, 0x9a]),
                    false,
                    t + 3000,
                    3000,
                ),
            ];
            let audio: Vec<_> = (0..5u64)
                .map(|i| {
                    timed(
                        Bytes::from_static(&[0x78, 1, 2]),
                        true,
                        t * 8 / 15 + i * 960,
                        960,
                    )
                })
                .collect();
            let frag = fragment(seq + 1, &video, &audio).expect("fragment");
            if seq < 2 {
                data.extend_from_slice(&frag);
                whole = data.len() as u64;
            } else {
                // A power cut halfway through the third.
                data.extend_from_slice(&frag[..frag.len() / 2]);
            }
        }
        std::fs::write(&path, &data).expect("write");
        let s = summarize(&path).expect("reads");
        assert!(s.init);
        assert_eq!((s.fragments, s.frames, s.duration_ticks), (2, 4, 12_000));
        assert_eq!(s.complete_len, whole);
        assert_eq!(repair(&path).expect("repair"), Repair::Truncated(whole));
        assert_eq!(repair(&path).expect("repair"), Repair::Intact);
        assert_eq!(std::fs::metadata(&path).expect("file").len(), whole);
    }
}
