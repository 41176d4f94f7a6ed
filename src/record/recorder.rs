//! The recorder at work: a task that feeds the hub's frames, triggers and
//! time to the [`policy`](super::policy), and a writer thread that turns
//! its actions into synced fMP4 fragments on disk, so a slow SD card never
//! stalls the async runtime (and, through the hub's bounded queue, never
//! the camera or the viewers).
//!
//! Disk trouble (full, read-only, gone) is reported in [`RecordStatus`]
//! and retried with backoff; the writer resumes at the next keyframe once
//! a file can be written again.

use super::mp4::{self, AudioConfig, StreamConfig};
use super::policy::{
    AUDIO_TIMESCALE, Action, Fragment, Mode, PolicyConfig, RecordPolicy, Sample, TIMESCALE,
};
use super::retention::{self, Limits};
use super::store::{MotionSpan, Repair, SegmentFileWriter, Store, Summary};
use crate::backoff::Backoff;
use crate::config::{RecordMode, RecordSettings};
use crate::media::frame::TrackId;
use crate::media::h264::{NAL_PPS, NAL_SPS, nal_type, nal_units};
use crate::media::hub::Hub;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Jobs queued to the writer; more means the disk is stalled, and the
/// recording is cut (resuming at a keyframe) rather than memory growing.
const JOB_QUEUE: usize = 64;
/// How often retention runs besides after each segment.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// What the recorder is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A trigger (events mode: record with pre- and post-roll); the source names it in logs.
    Trigger(String),
    /// Record until [`Command::Stop`].
    Start,
    /// End a started recording.
    Stop,
}

/// Whether the recorder is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// Waiting (events mode), or not yet at a keyframe.
    Idle,
    /// Writing a segment.
    Recording,
    /// The disk refused; retrying.
    Error,
}

/// The recorder's state and counters, for `P/record`, `/metrics` and `/stats.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordStatus {
    /// `continuous` or `events`.
    pub mode: &'static str,
    /// Writing, waiting, or failing.
    pub state: RecordState,
    /// The segment being written.
    pub segment: Option<String>,
    /// The last disk error, while in [`RecordState::Error`].
    pub error: Option<String>,
    /// Segments started.
    pub segments: u64,
    /// Frames written.
    pub frames: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Fragments lost (disk stalled or failing).
    pub dropped_fragments: u64,
    /// Disk errors.
    pub write_errors: u64,
    /// Segments deleted by retention.
    pub deleted: u64,
}

/// What happened to a segment, in the order it happened (state changes
/// alone could merge a close and the next open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordEvent {
    /// A segment's first fragment is on disk.
    Started {
        /// The segment.
        segment: String,
    },
    /// A segment was closed (finished, or cut by a disk error).
    Stopped {
        /// The segment.
        segment: String,
    },
    /// The disk refused a write.
    Error {
        /// What it said.
        error: String,
    },
}

impl RecordEvent {
    /// The event's name and fields, as sent to viewers and MQTT.
    pub fn fields(&self) -> (&'static str, serde_json::Map<String, serde_json::Value>) {
        let mut f = serde_json::Map::new();
        let name = match self {
            RecordEvent::Started { segment } => {
                f.insert("segment".into(), segment.clone().into());
                "record.started"
            }
            RecordEvent::Stopped { segment } => {
                f.insert("segment".into(), segment.clone().into());
                "record.stopped"
            }
            RecordEvent::Error { error } => {
                f.insert("error".into(), error.clone().into());
                "record.error"
            }
        };
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        f.insert("ts_ms".into(), ts_ms.into());
        (name, f)
    }
}

/// What the rest of the agent holds of the recorder.
#[derive(Clone)]
pub struct Recorder {
    store: Store,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<RecordStatus>,
    events: tokio::sync::broadcast::Sender<RecordEvent>,
    summaries: Arc<Mutex<HashMap<String, Summary>>>,
}

/// One recording as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// Its name in the store.
    pub name: String,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// Length written, ms.
    pub duration_ms: u64,
    /// Frames.
    pub frames: u64,
    /// Size.
    pub bytes: u64,
    /// Being written now.
    pub open: bool,
}

impl Recorder {
    /// Asks for a trigger, start or stop; `false` if the recorder has stopped.
    pub fn command(&self, c: Command) -> bool {
        // A full queue means triggers are arriving faster than frames: one is enough.
        !matches!(
            self.commands.try_send(c),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }

    /// The state now.
    pub fn status(&self) -> RecordStatus {
        self.status.borrow().clone()
    }

    /// Changes of the state.
    pub fn watch(&self) -> watch::Receiver<RecordStatus> {
        self.status.clone()
    }

    /// Segment events from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<RecordEvent> {
        self.events.subscribe()
    }

    /// The store the segments are in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every segment, oldest first, with frames and length read from its
    /// boxes (cached while the file does not change). Blocking file I/O.
    pub fn list(&self) -> Vec<Listed> {
        let open = self.status.borrow().segment.clone();
        let mut cache = self
            .summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let files = self.store.list();
        cache.retain(|name, _| files.iter().any(|f| &f.name == name));
        files
            .into_iter()
            .map(|f| {
                let summary = match cache.get(&f.name) {
                    Some(s) if s.len == f.bytes => *s,
                    _ => {
                        let s = super::store::summarize(&self.store.dir().join(&f.name))
                            .unwrap_or_default();
                        cache.insert(f.name.clone(), s);
                        s
                    }
                };
                Listed {
                    open: open.as_deref() == Some(f.name.as_str()),
                    duration_ms: summary.duration().as_millis() as u64,
                    frames: summary.frames,
                    bytes: f.bytes,
                    start_ms: f.start_ms,
                    name: f.name,
                }
            })
            .collect()
    }

    /// Logs a motion event next to the recordings (its start, then again
    /// with its end). Blocking file I/O.
    pub fn log_motion(&self, span: MotionSpan) {
        if let Err(e) = self.store.log_motion(span) {
            tracing::warn!(error = %e, "could not log a motion event");
        }
    }

    /// Logged motion events, oldest first. Blocking file I/O.
    pub fn motion(&self) -> Vec<MotionSpan> {
        self.store.motion()
    }

    /// Deletes a segment that is not being written. Blocking file I/O.
    pub fn delete(&self, name: &str) -> Result<(), DeleteError> {
        if self.status.borrow().segment.as_deref() == Some(name) {
            return Err(DeleteError::Open(name.to_string()));
        }
        self.store.delete(name).map_err(DeleteError::Store)
    }
}

/// Why a recording could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// It is being written.
    #[error("{0:?} is being recorded now")]
    Open(String),
    /// The store refused.
    #[error(transparent)]
    Store(super::store::StoreError),
}

/// Starts the recorder for `settings` (mode other than off) on `hub`: repairs
/// what a crash left, then records until `shutdown`; the hub's audio track
/// too when it carries one (the microphone is on), its packets decoding to
/// `audio_channels`. Returns the handle and the task to track.
pub fn start(
    settings: &RecordSettings,
    audio_channels: u8,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> (
    Recorder,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let store = Store::new(&settings.dir);
    let audio = hub.track(TrackId::AUDIO).map(|_| AudioConfig {
        channels: audio_channels,
    });
    let mode = match settings.mode {
        RecordMode::Events => Mode::Events,
        RecordMode::Continuous | RecordMode::Off => Mode::Continuous,
    };
    let (status_tx, status_rx) = watch::channel(RecordStatus {
        mode: settings.mode.as_str(),
        state: RecordState::Idle,
        segment: None,
        error: None,
        segments: 0,
        frames: 0,
        bytes: 0,
        dropped_fragments: 0,
        write_errors: 0,
        deleted: 0,
    });
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (events, _) = tokio::sync::broadcast::channel(32);
    let recorder = Recorder {
        store: store.clone(),
        commands: cmd_tx,
        status: status_rx,
        events: events.clone(),
        summaries: Arc::default(),
    };
    let policy = RecordPolicy::new(PolicyConfig {
        mode,
        segment: settings.segment,
        fragment: settings.fragment,
        pre: settings.pre,
        post: settings.post,
        audio: audio.is_some(),
    });
    let limits = Limits {
        max_age: settings.max_age,
        max_bytes: settings.max_bytes,
        min_free_bytes: settings.min_free_bytes,
    };
    let task = run(
        policy,
        store,
        (limits, audio),
        hub,
        cmd_rx,
        (status_tx, events),
        shutdown,
    );
    (recorder, task)
}

/// A job for the writer thread; `segment` numbers the policy's segments.
enum Job {
    Open {
        segment: u64,
        wall: SystemTime,
    },
    Fragment {
        segment: u64,
        index: u64,
        fragment: Fragment,
    },
    Close {
        segment: u64,
    },
    Retention,
}

async fn run(
    mut policy: RecordPolicy,
    store: Store,
    (limits, audio): (Limits, Option<AudioConfig>),
    hub: Arc<Hub>,
    mut commands: mpsc::Receiver<Command>,
    (status, events): (
        watch::Sender<RecordStatus>,
        tokio::sync::broadcast::Sender<RecordEvent>,
    ),
    shutdown: CancellationToken,
) {
    let (jobs, jobs_rx) = sync_channel(JOB_QUEUE);
    let writer_store = store.clone();
    let writer = std::thread::Builder::new()
        .name("rtcam-record".into())
        .spawn(move || Writer::new(writer_store, (limits, audio), status, events).run(jobs_rx));
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "recording off: cannot start its writer thread");
            return;
        }
    };
    // The video, and the audio beside it when the microphone is on.
    let mut sub = if audio.is_some() {
        hub.subscribe_to(&[TrackId::VIDEO, TrackId::AUDIO])
    } else {
        hub.subscribe()
    };
    let epoch = hub.epoch();
    let mut feeder = Feeder {
        jobs,
        segment: 0,
        index: 0,
        dropped: false,
        last: false,
        writer_gone: false,
    };
    let mut params: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut retention_at = Instant::now() + RETENTION_EVERY;
    loop {
        let now = epoch.elapsed();
        let actions = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = sub.recv() => match p {
                None => break,
                Some(p) if p.track == TrackId::AUDIO => policy.audio(
                    Sample { data: p.data, pts: p.pts, keyframe: true },
                    now,
                ),
                Some(p) if p.track != TrackId::VIDEO => continue,
                Some(p) => {
                    let mut out = Vec::new();
                    if p.keyframe {
                        let sets = parameter_sets(&p.data);
                        if params.is_some() && sets.is_some() && params != sets {
                            tracing::info!("the camera's stream changed (SPS/PPS): new recording segment");
                            out.extend(policy.config_changed());
                        }
                        if sets.is_some() {
                            params = sets;
                        }
                    }
                    out.extend(policy.sample(
                        Sample { data: p.data, pts: p.pts, keyframe: p.keyframe },
                        now,
                    ));
                    out
                }
            },
            c = commands.recv() => match c {
                None => break,
                Some(Command::Trigger(source)) => {
                    tracing::info!(%source, "recording trigger");
                    policy.trigger(now)
                }
                Some(Command::Start) => {
                    tracing::info!("recording started on request");
                    policy.hold(true, now)
                }
                Some(Command::Stop) => {
                    tracing::info!("recording stopped on request");
                    policy.hold(false, now)
                }
            },
            _ = tick.tick() => {
                if Instant::now() >= retention_at {
                    retention_at = Instant::now() + RETENTION_EVERY;
                    feeder.send(Job::Retention);
                }
                policy.tick(now)
            }
        };
        feeder.apply(actions, epoch, &mut policy);
    }
    drop(sub);
    let last = policy.finish();
    // The last fragment is waited for (off the runtime), then the writer
    // ends once its queue is closed and drained.
    let _ = tokio::task::spawn_blocking(move || {
        feeder.last = true;
        feeder.apply(last, epoch, &mut policy);
        drop(feeder);
        writer.join()
    })
    .await;
}

/// The SPS and PPS of a keyframe, to notice the camera's stream changing.
fn parameter_sets(au: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let find = |t| nal_units(au).find(|n| nal_type(n) == t).map(<[u8]>::to_vec);
    Some((find(NAL_SPS)?, find(NAL_PPS)?))
}

/// Turns the policy's actions into numbered jobs, never blocking.
struct Feeder {
    jobs: SyncSender<Job>,
    segment: u64,
    index: u64,
    /// A job of the open segment was dropped: the rest of it is dropped too.
    dropped: bool,
    /// Sending the final jobs (shutdown): they may block.
    last: bool,
    writer_gone: bool,
}

impl Feeder {
    fn send(&mut self, job: Job) -> bool {
        if self.last {
            // The last jobs wait for room: they are the end of the recording.
            return self.jobs.send(job).is_ok();
        }
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                if !self.writer_gone {
                    self.writer_gone = true;
                    tracing::error!(
                        "the recording writer stopped: nothing more is recorded (see the error before this)"
                    );
                }
                false
            }
        }
    }

    fn apply(&mut self, actions: Vec<Action>, epoch: Instant, policy: &mut RecordPolicy) {
        for a in actions {
            match a {
                Action::Open { start } => {
                    self.segment += 1;
                    self.index = 0;
                    // Wall time of the first frame: now, less how long ago it was captured.
                    let ago = epoch.elapsed().saturating_sub(start);
                    let wall = SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH);
                    self.dropped = !self.send(Job::Open {
                        segment: self.segment,
                        wall,
                    });
                }
                Action::Fragment(fragment) => {
                    let index = self.index;
                    self.index += 1;
                    if self.dropped
                        || !self.send(Job::Fragment {
                            segment: self.segment,
                            index,
                            fragment,
                        })
                    {
                        if !self.dropped {
                            tracing::warn!(
                                "the disk is not keeping up: recording segment cut, resuming at a keyframe"
                            );
                        }
                        self.dropped = true;
                        // The policy starts a new segment at the next keyframe.
                        policy.reset();
                    }
                }
                Action::Close => {
                    let _ = self.send(Job::Close {
                        segment: self.segment,
                    });
                }
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    store: Store,
    limits: Limits,
    /// The audio track written beside the video, when the microphone is on.
    audio: Option<AudioConfig>,
    status: watch::Sender<RecordStatus>,
    events: tokio::sync::broadcast::Sender<RecordEvent>,
    /// The segment the policy is in, its start, and the next fragment expected.
    segment: u64,
    wall: SystemTime,
    next_index: u64,
    /// The file, once its first keyframe came; `None` while waiting for one.
    file: Option<OpenFile>,
    /// After a disk error: no file is opened before this.
    retry_at: Option<Instant>,
    backoff: Backoff,
}

struct OpenFile {
    out: SegmentFileWriter,
    sequence: u32,
    /// Frames written to it.
    frames: u64,
    /// Audio packets written to it.
    audio_packets: u64,
    /// Decode time of the file's first sample in the policy's segment.
    base_ticks: u64,
    /// The same in audio ticks.
    audio_base_ticks: u64,
}

impl Writer {
    fn new(
        store: Store,
        (limits, audio): (Limits, Option<AudioConfig>),
        status: watch::Sender<RecordStatus>,
        events: tokio::sync::broadcast::Sender<RecordEvent>,
    ) -> Self {
        Self {
            store,
            limits,
            audio,
            status,
            events,
            segment: 0,
            wall: SystemTime::now(),
            next_index: 0,
            file: None,
            retry_at: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }

    fn run(mut self, jobs: Receiver<Job>) {
        for (name, r) in self.store.repair_all() {
            match r {
                Repair::Intact => {}
                Repair::Truncated(len) => {
                    tracing::warn!(segment = %name, kept_bytes = len, "recording cut short by a crash or power cut: torn last fragment removed")
                }
                Repair::Removed => {
                    tracing::warn!(segment = %name, "recording cut short before its first fragment: removed")
                }
                Repair::Failed(e) => {
                    tracing::warn!(segment = %name, error = %e, "could not check a recording for crash damage")
                }
            }
        }
        self.retention();
        while let Ok(job) = jobs.recv() {
            match job {
                Job::Open { segment, wall } => {
                    self.close();
                    self.segment = segment;
                    self.wall = wall;
                    self.next_index = 0;
                }
                Job::Fragment {
                    segment,
                    index,
                    fragment,
                } => {
                    if segment != self.segment {
                        continue;
                    }
                    if index != self.next_index {
                        // A fragment was lost on the way: what follows cannot decode.
                        self.close();
                        self.count_dropped(index - self.next_index);
                    }
                    self.next_index = index + 1;
                    self.write(fragment);
                }
                Job::Close { segment } => {
                    if segment == self.segment {
                        self.close();
                        self.retention();
                    }
                }
                Job::Retention => self.retention(),
            }
        }
        self.close();
    }

    fn count_dropped(&self, n: u64) {
        self.status.send_modify(|s| s.dropped_fragments += n);
    }

    fn write(&mut self, fragment: Fragment) {
        let Fragment {
            video: mut samples,
            mut audio,
        } = fragment;
        if self.file.is_none() {
            // A file starts at a keyframe: after an error or a lost fragment,
            // at the first one that comes (and its audio with it).
            let Some(k) = samples.iter().position(|t| t.sample.keyframe) else {
                self.count_dropped(1);
                return;
            };
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                self.count_dropped(1);
                return;
            }
            samples.drain(..k);
            let first = &samples[0];
            let offset =
                Duration::from_nanos(first.decode_ticks * 1_000_000_000 / u64::from(TIMESCALE));
            let from = first.sample.pts;
            audio.retain(|a| a.sample.pts >= from);
            if let Err(e) = self.open(
                first.sample.data.clone(),
                self.wall + offset,
                first.decode_ticks,
            ) {
                self.failed(e);
                return;
            }
        }
        let Some(f) = &mut self.file else { return };
        for t in &mut samples {
            t.decode_ticks -= f.base_ticks;
        }
        for t in &mut audio {
            t.decode_ticks = t.decode_ticks.saturating_sub(f.audio_base_ticks);
        }
        if self.audio.is_none() {
            audio.clear();
        }
        let frames = samples.len() as u64;
        let packets = audio.len() as u64;
        let result = mp4::fragment(f.sequence, &samples, &audio)
            .map_err(|e| e.to_string())
            .and_then(|data| {
                f.out
                    .append_synced(&data)
                    .map(|()| data.len() as u64)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(bytes) => {
                if f.sequence == 1 {
                    // A segment counts once a fragment of it is on disk.
                    tracing::info!(segment = %f.out.name, "recording segment started");
                    let name = f.out.name.clone();
                    let _ = self.events.send(RecordEvent::Started {
                        segment: name.clone(),
                    });
                    self.status.send_modify(|s| {
                        s.state = RecordState::Recording;
                        s.segment = Some(name);
                        s.segments += 1;
                    });
                    if self.retry_at.take().is_some() {
                        self.backoff.reset();
                        tracing::info!("recording resumed: the disk takes writes again");
                    }
                }
                f.sequence += 1;
                f.frames += frames;
                f.audio_packets += packets;
                self.status.send_modify(|s| {
                    s.frames += frames;
                    s.bytes += bytes;
                    s.error = None;
                });
            }
            Err(e) => self.failed(e),
        }
    }

    fn open(
        &mut self,
        keyframe: bytes::Bytes,
        wall: SystemTime,
        base_ticks: u64,
    ) -> Result<(), String> {
        let config = StreamConfig::from_keyframe(&keyframe).map_err(|e| e.to_string())?;
        let init = mp4::init_segment(&config, self.audio).map_err(|e| e.to_string())?;
        let mut out = self.store.create(wall).map_err(|e| e.to_string())?;
        if let Err(e) = out.append_synced(&init) {
            let name = out.name.clone();
            drop(out);
            let _ = self.store.delete(&name);
            return Err(e.to_string());
        }
        self.file = Some(OpenFile {
            out,
            sequence: 1,
            frames: 0,
            audio_packets: 0,
            base_ticks,
            // The same instant on the audio's clock.
            audio_base_ticks: base_ticks * u64::from(AUDIO_TIMESCALE) / u64::from(TIMESCALE),
        });
        Ok(())
    }

    fn failed(&mut self, error: String) {
        let delay = self.backoff.next_delay();
        tracing::warn!(%error, retry_in = ?delay, "recording failed: the camera stream goes on; retrying");
        if let Some(f) = self.file.take() {
            // What was synced before the error plays; a file with no fragment goes.
            if f.sequence == 1 {
                let _ = self.store.delete(&f.out.name);
            } else {
                let _ = self.events.send(RecordEvent::Stopped {
                    segment: f.out.name.clone(),
                });
            }
        }
        let _ = self.events.send(RecordEvent::Error {
            error: error.clone(),
        });
        self.retry_at = Some(Instant::now() + delay);
        self.status.send_modify(|s| {
            s.state = RecordState::Error;
            s.segment = None;
            s.error = Some(error);
            s.write_errors += 1;
            s.dropped_fragments += 1;
        });
        // A full disk may be one retention pass from having room again.
        self.retention();
    }

    fn close(&mut self) {
        let Some(f) = self.file.take() else { return };
        if f.sequence > 1 {
            let _ = self.events.send(RecordEvent::Stopped {
                segment: f.out.name.clone(),
            });
        }
        tracing::info!(segment = %f.out.name, frames = f.frames, audio_packets = f.audio_packets, bytes = f.out.bytes, fragments = f.sequence - 1, "recording segment closed");
        self.status.send_modify(|s| {
            if s.state == RecordState::Recording {
                s.state = RecordState::Idle;
            }
            s.segment = None;
        });
    }

    fn retention(&mut self) {
        let segments = self.store.list();
        let free = free_bytes(self.store.dir()).unwrap_or(u64::MAX);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let open = self.file.as_ref().map(|f| f.out.name.clone());
        let doomed = retention::choose(&segments, open.as_deref(), &self.limits, free, now_ms);
        let mut deleted = 0;
        for (s, reason) in doomed {
            match self.store.delete(&s.name) {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(segment = %s.name, bytes = s.bytes, reason = %reason.as_str(), "old recording deleted");
                }
                Err(e) => {
                    tracing::warn!(segment = %s.name, error = %e, "could not delete an old recording")
                }
            }
        }
        if deleted > 0 {
            self.status.send_modify(|s| s.deleted += deleted);
        }
    }
}

/// Free bytes for unprivileged writers on the file system holding `dir`
/// (or its nearest existing parent).
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // Both fields are 32-bit on 32-bit ARM, 64-bit elsewhere.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(st.f_bavail) * u64::from(st.f_frsize);
    Some(free)
}
