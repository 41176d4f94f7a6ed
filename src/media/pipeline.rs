//! The media thread: source → (I420 when the encoder needs it) → encoder →
//! hub. Runs on its own OS thread, opens the camera only while the hub wants
//! frames, and reopens a failing source with backoff (0.5 s doubling to
//! 10 s) until shutdown. Which encoder runs is the factory's choice
//! ([`encode::open`]); this file drives any [`encode::VideoEncoder`] the same way.

use crate::backoff::Backoff;
use crate::media::capture::{ControlInfo, Source, SourceError, SourceFactory, SourceInfo};
use crate::media::convert::Converter;
use crate::media::encode::{
    self, EncodeError, EncoderControl, EncoderInput, EncoderKind, EncoderSettings, InputPlan,
    KeyframeBy,
};
use crate::media::frame::{Packet, TrackId};
use crate::media::hub::Hub;
use crate::media::stage_times::{Stage, StageTimes};
use crate::media::tap::Taps;
use crate::systemd::Heartbeat;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often an idle pipeline wakes to check for commands and heartbeats.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// What the camera is doing, for status lines and `video.status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraState {
    /// Not running: nobody is watching.
    Idle,
    /// Running and delivering frames.
    Running(SourceInfo),
    /// Failed; will retry after the backoff.
    Failed(String),
    /// The pipeline has stopped for good.
    Stopped,
}

/// Counters and state shared with the rest of the agent.
#[derive(Debug)]
pub struct PipelineStatus {
    state: Mutex<CameraState>,
    changed: Condvar,
    frames: AtomicU64,
    bad_frames: AtomicU64,
    restarts: AtomicU64,
    copies: AtomicU64,
    encoder: Mutex<Option<EncoderKind>>,
    stages: StageTimes,
    heartbeat: Arc<Heartbeat>,
}

impl PipelineStatus {
    fn new() -> Self {
        Self {
            state: Mutex::new(CameraState::Idle),
            changed: Condvar::new(),
            frames: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            copies: AtomicU64::new(0),
            encoder: Mutex::new(None),
            stages: StageTimes::new(),
            heartbeat: Arc::new(Heartbeat::new()),
        }
    }

    fn set(&self, s: CameraState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = s;
        self.changed.notify_all();
    }

    /// Waits until the camera state satisfies `pred`, up to `timeout`; returns the last state seen and whether it matched.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&CameraState) -> bool,
    ) -> (CameraState, bool) {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| !pred(s))
            .unwrap_or_else(PoisonError::into_inner);
        let ok = pred(&guard);
        (guard.clone(), ok)
    }

    fn beat(&self) {
        self.heartbeat.beat();
    }

    /// Current camera state.
    pub fn state(&self) -> CameraState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Frames published since start.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Frames that could not be converted or encoded (skipped).
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }

    /// Times the source failed and was reopened.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// CPU copies of camera pictures made on their way to the encoder
    /// since start: conversions to I420 and copies into an encoder's own
    /// buffers. Zero when a hardware encoder reads the camera's buffers.
    pub fn copies(&self) -> u64 {
        self.copies.load(Ordering::Relaxed)
    }

    /// The encoder of the current (or last) camera run.
    pub fn encoder(&self) -> Option<EncoderKind> {
        *self.encoder.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long frames spend in each stage of the media thread.
    pub fn stage_times(&self) -> &StageTimes {
        &self.stages
    }

    /// The media thread's heartbeat (for the watchdog).
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        self.heartbeat.clone()
    }
}

/// Requests served by the media thread between frames.
enum Command {
    Controls(mpsc::Sender<Result<Vec<ControlInfo>, SourceError>>),
    SetControl(String, i64, mpsc::Sender<Result<i64, SourceError>>),
}

/// Why a camera run ended.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("source panicked: {0}")]
    Panic(String),
}

/// Pipeline tunables.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Encoder parameters (size and rate are replaced by what the source
    /// delivers, the bitrate by the control's current target).
    pub encoder: EncoderSettings,
    /// Reopen delays after a failure.
    pub backoff: Backoff,
}

/// Reads and sets the camera's controls through the media thread (which owns
/// the device). Each call blocks up to a second: use it from a blocking context.
#[derive(Clone)]
pub struct CameraControls {
    commands: Arc<Mutex<mpsc::Sender<Command>>>,
}

impl CameraControls {
    fn ask<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Command) -> Option<mpsc::Receiver<T>> {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(make(tx));
        sent.ok().map(|()| rx)
    }

    /// The camera's controls and their values.
    pub fn list(&self) -> Result<Vec<ControlInfo>, SourceError> {
        self.ask(Command::Controls)
            .and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok())
            .unwrap_or_else(|| Err(SourceError::Stopped("media thread did not answer".into())))
    }

    /// Sets a control by name; returns the value applied.
    pub fn set(&self, name: &str, value: i64) -> Result<i64, SourceError> {
        self.ask(|tx| Command::SetControl(name.to_string(), value, tx))
            .and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok())
            .unwrap_or_else(|| Err(SourceError::Stopped("media thread did not answer".into())))
    }
}

/// Handle to the running media thread.
pub struct Pipeline {
    thread: Option<JoinHandle<()>>,
    hub: Arc<Hub>,
    status: Arc<PipelineStatus>,
    commands: Mutex<mpsc::Sender<Command>>,
    taps: Arc<Taps>,
}

impl Pipeline {
    /// Starts the media thread. It idles until the hub has subscribers, and
    /// takes keyframe and bitrate requests from `control`.
    pub fn spawn(
        factory: Box<dyn SourceFactory>,
        hub: Arc<Hub>,
        control: Arc<EncoderControl>,
        opts: PipelineOptions,
    ) -> std::io::Result<Self> {
        let status = Arc::new(PipelineStatus::new());
        let taps = Arc::new(Taps::new());
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            factory,
            hub: hub.clone(),
            control,
            status: status.clone(),
            opts,
            commands: rx,
            source: None,
            taps: taps.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("rtcam-media".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            thread: Some(thread),
            hub,
            status,
            commands: Mutex::new(tx),
            taps,
        })
    }

    /// Raw pictures for snapshots and the motion detector.
    pub fn taps(&self) -> Arc<Taps> {
        self.taps.clone()
    }

    /// Shared status and counters.
    pub fn status(&self) -> Arc<PipelineStatus> {
        self.status.clone()
    }

    /// A handle for reading and setting camera controls from other threads.
    pub fn camera_controls(&self) -> CameraControls {
        CameraControls {
            commands: Arc::new(Mutex::new(
                self.commands
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            )),
        }
    }

    /// Stops the media thread (closing the hub) and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.hub.close();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("media thread panicked while stopping");
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    factory: Box<dyn SourceFactory>,
    hub: Arc<Hub>,
    control: Arc<EncoderControl>,
    status: Arc<PipelineStatus>,
    opts: PipelineOptions,
    commands: mpsc::Receiver<Command>,
    /// The open source, kept between runs only for control commands.
    source: Option<Box<dyn Source>>,
    taps: Arc<Taps>,
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Worker {
    fn run(mut self) {
        let mut backoff = self.opts.backoff.clone();
        while !self.hub.is_closed() {
            self.status.beat();
            self.serve_commands();
            if !self.hub.wait_for_demand(IDLE_TICK) {
                continue;
            }
            let opened =
                catch_unwind(AssertUnwindSafe(|| self.factory.open())).unwrap_or_else(|p| {
                    Err(SourceError::Read(format!(
                        "panic while opening: {}",
                        panic_text(p)
                    )))
                });
            let result = match opened {
                Ok(src) => {
                    self.source = Some(src);
                    let frames_before = self.status.frames();
                    let r = catch_unwind(AssertUnwindSafe(|| self.run_source()))
                        .unwrap_or_else(|p| Err(RunError::Panic(panic_text(p))));
                    if self.status.frames() > frames_before {
                        backoff.reset();
                    }
                    self.source = None;
                    r
                }
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(()) => {
                    tracing::info!("camera stopped: no viewers");
                    self.status.set(CameraState::Idle);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "camera failed; reopening");
                    self.status.restarts.fetch_add(1, Ordering::Relaxed);
                    self.status.set(CameraState::Failed(e.to_string()));
                    self.sleep_serving(delay);
                }
            }
        }
        self.status.set(CameraState::Stopped);
    }

    /// Waits out a backoff delay while still answering commands and beating.
    fn sleep_serving(&mut self, delay: Duration) {
        let end = Instant::now() + delay;
        while !self.hub.is_closed() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.status.beat();
            self.serve_commands();
            self.hub.sleep_unless_closed((end - now).min(IDLE_TICK));
        }
    }

    fn serve_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            self.serve(cmd);
        }
    }

    fn serve(&mut self, cmd: Command) {
        // With the camera closed, open it briefly so controls can be read and set.
        let mut temp: Option<Box<dyn Source>>;
        let src: Option<&mut Box<dyn Source>> = match self.source.as_mut() {
            Some(s) => Some(s),
            None => {
                temp = self.factory.open().ok();
                temp.as_mut()
            }
        };
        match cmd {
            Command::Controls(reply) => {
                let r = src.map_or_else(
                    || Err(SourceError::Stopped("camera unavailable".into())),
                    |s| s.controls(),
                );
                let _ = reply.send(r);
            }
            Command::SetControl(name, value, reply) => {
                let r = src.map_or_else(
                    || Err(SourceError::Stopped("camera unavailable".into())),
                    |s| s.set_control(&name, value),
                );
                let _ = reply.send(r);
            }
        }
    }

    fn run_source(&mut self) -> Result<(), RunError> {
        let src = self
            .source
            .as_mut()
            .expect("run() stores the source before calling run_source");
        let info = src.info();
        tracing::info!(source = %info.name, format = %info.format, width = info.width, height = info.height, fps = info.fps, "camera running");
        self.status.set(CameraState::Running(info.clone()));
        let (mut encoder, plan) = encode::open(
            &info,
            &EncoderSettings {
                bitrate_kbps: self.control.target_kbps(),
                ..self.opts.encoder.clone()
            },
        )?;
        tracing::info!(encoder = %encoder.kind(), convert = ?plan, "encoder open");
        *self
            .status
            .encoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(encoder.kind());
        self.control.set_applied_kbps(encoder.bitrate_kbps());
        let mut encoder_copies = 0;
        let mut converter = Converter::new();
        let mut last_bad_log: Option<Instant> = None;
        let mut camera_frames: u64 = 0;
        self.hub.discontinuity();
        self.control.restarted();
        loop {
            self.status.beat();
            self.serve_commands();
            if !self.hub.wants_source() {
                return Ok(());
            }
            let src = self
                .source
                .as_mut()
                .expect("the source stays stored while running");
            if self.control.take_keyframe_request()
                && encoder.request_keyframe() == KeyframeBy::Source
            {
                src.request_keyframe();
            }
            if let Some(kbps) = self.control.take_bitrate_request() {
                match encoder.set_bitrate(kbps) {
                    Ok(applied) => self.control.set_applied_kbps(applied),
                    Err(e) => tracing::warn!(error = %e, "bitrate change refused"),
                }
            }
            let frame = src.next_frame()?;
            // Congestion control lowers the frame rate by leaving camera
            // frames out before they cost an encode; the camera's own H.264
            // (no bitrate to set) cannot lose frames without breaking.
            camera_frames += 1;
            let divisor = match encoder.bitrate_kbps() {
                Some(_) => u64::from(self.control.frame_divisor()),
                None => 1,
            };
            if !camera_frames.is_multiple_of(divisor) {
                continue;
            }
            let captured = frame.captured;
            let pts = captured.saturating_duration_since(self.hub.epoch());
            let stages = &self.status.stages;
            let input = match plan {
                InputPlan::AsIs => Ok(EncoderInput::Frame(frame)),
                InputPlan::ToI420 => {
                    let t = Instant::now();
                    let converted = converter.to_i420(&frame).map(EncoderInput::I420);
                    stages.observe(Stage::Convert, t.elapsed());
                    converted
                }
            };
            if let Ok(i) = &input {
                self.taps.offer(i, pts);
            }
            if plan == InputPlan::ToI420 && input.is_ok() {
                self.status.copies.fetch_add(1, Ordering::Relaxed);
            }
            let t = Instant::now();
            let produced = input
                .map_err(EncodeError::from)
                .and_then(|input| encoder.encode(input, pts));
            stages.observe(Stage::Encode, t.elapsed());
            let copies = encoder.input_copies();
            self.status
                .copies
                .fetch_add(copies.saturating_sub(encoder_copies), Ordering::Relaxed);
            encoder_copies = copies;
            match produced {
                Ok(Some(au)) => {
                    // Counted first: a subscriber never holds more frames than the count says.
                    self.status.frames.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    self.hub.publish(Packet {
                        track: TrackId::VIDEO,
                        data: au.data,
                        pts,
                        keyframe: au.keyframe,
                    });
                    let stages = &self.status.stages;
                    stages.observe(Stage::Publish, t.elapsed());
                    stages.observe(Stage::CaptureToPublish, captured.elapsed());
                }
                Ok(None) => {}
                Err(EncodeError::BadFrame(e)) => {
                    // One corrupt camera frame is skipped, not fatal; log at most every 5 s.
                    self.status.bad_frames.fetch_add(1, Ordering::Relaxed);
                    if last_bad_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(error = %e, "skipping a frame that could not be converted");
                        last_bad_log = Some(Instant::now());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
