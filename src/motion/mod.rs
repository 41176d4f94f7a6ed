//! Motion detection: a small luma picture of every frame (media::tap) fed
//! to the pure [`detector`]; its events go to every control channel
//! (`motion.start` / `motion.end`), MQTT (`P/motion` retained `ON`/`OFF`,
//! a Home Assistant motion sensor), the recorder (a trigger) and a
//! snapshot on `P/snapshot`. The detector holds a hub subscription, so the
//! camera stays on while motion detection is enabled.

pub mod detector;

use crate::config::MotionSettings;
use crate::control::Controller;
use crate::gpio::mqtt::{Discovery, device_doc};
use crate::media::hub::Hub;
use crate::media::tap::Taps;
use crate::record::recorder::{Command as RecordCommand, Recorder};
use crate::record::store::MotionSpan;
use crate::signaling::mqtt::Publisher;
use crate::signaling::topics::Topics;
use crate::snapshot::MqttSnapshots;
use detector::{Detector, DetectorConfig, MotionEvent};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Width of the luma picture motion is detected on; its height keeps the
/// camera's aspect. 80 columns average blocks of 8-24 camera pixels, which
/// smooths sensor grain away and costs little.
pub const LUMA_WIDTH: usize = 80;
/// While motion goes on, the recorder is triggered again at most this often.
const RETRIGGER: Duration = Duration::from_secs(1);

/// What the motion task works with.
pub struct MotionParts {
    /// `[motion]`.
    pub settings: MotionSettings,
    /// The camera's picture size, for the luma picture's aspect.
    pub picture: (u32, u32),
    /// Keeps the camera on.
    pub hub: Arc<Hub>,
    /// Where the luma pictures come from.
    pub taps: Arc<Taps>,
    /// Events to every control channel.
    pub control: Arc<Controller>,
    /// MQTT output.
    pub publisher: Publisher,
    /// Topic scheme.
    pub topics: Topics,
    /// Home Assistant discovery, if on.
    pub discovery: Option<Discovery>,
    /// Triggered on motion (with `motion.record`).
    pub recorder: Option<Recorder>,
    /// Published on motion start (with `motion.snapshot`).
    pub snapshots: MqttSnapshots,
    /// Tracks the snapshot publishes, so shutdown waits for them.
    pub tracker: tokio_util::task::TaskTracker,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MotionParts {
    fn announce(&self, moving: bool) {
        if let Some(d) = &self.discovery {
            let unique_id = format!("{}_motion", d.node_id);
            let doc = json!({
                "name": "Motion",
                "unique_id": unique_id,
                "object_id": unique_id,
                "device_class": "motion",
                "state_topic": self.topics.motion(),
                "payload_on": "ON",
                "payload_off": "OFF",
                "availability_topic": self.topics.status(),
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device_doc(d),
            });
            self.publisher.publish_retained(
                &format!("{}/binary_sensor/{}/motion/config", d.prefix, d.node_id),
                doc.to_string(),
            );
        }
        self.state(moving);
    }

    /// Logs a motion event next to the recordings, when there are any.
    fn log(&self, span: MotionSpan) {
        if let Some(r) = self.recorder.clone() {
            self.tracker.spawn_blocking(move || r.log_motion(span));
        }
    }

    fn state(&self, moving: bool) {
        self.publisher
            .publish_retained(&self.topics.motion(), if moving { "ON" } else { "OFF" });
    }

    /// Detects motion until `stop`.
    pub async fn run(self, mut connected: watch::Receiver<bool>, stop: CancellationToken) {
        let (w, h) = self.picture;
        let luma_h = ((LUMA_WIDTH as u64 * u64::from(h)) / u64::from(w.max(1))).max(1) as usize;
        let s = &self.settings;
        let mut detector = Detector::new(
            DetectorConfig {
                threshold: s.threshold,
                min_area: s.min_area,
                end_after: s.end_after,
                include: s.include.clone(),
                exclude: s.exclude.clone(),
            },
            LUMA_WIDTH,
            luma_h,
        );
        tracing::info!(
            threshold = s.threshold,
            min_area_percent = s.min_area * 100.0,
            watched_pixels = detector.watched(),
            of = LUMA_WIDTH * luma_h,
            "motion detection on"
        );
        // Held: motion detection keeps the camera running.
        let mut sub = self.hub.subscribe();
        let (tx, mut pictures) = mpsc::channel(4);
        self.taps.feed_luma(LUMA_WIDTH, luma_h, tx);
        if *connected.borrow_and_update() {
            self.announce(false);
        }
        let mut last_trigger: Option<Instant> = None;
        let mut started_ms: Option<u64> = None;
        let mut warned_compressed = false;
        let mut check = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                up = crate::signaling::mqtt::connected_again(&mut connected) => match up {
                    Some(()) => self.announce(detector.moving()),
                    None => break,
                },
                p = sub.recv() => if p.is_none() { break },
                _ = check.tick() => {
                    if !warned_compressed && !self.taps.gives_raw() && self.hub.stats().subscribers > 0 {
                        warned_compressed = true;
                        tracing::warn!("motion detection needs raw pictures; the camera's own compressed stream is passed through (video.passthrough): no motion is detected");
                    }
                }
                l = pictures.recv() => {
                    let Some(l) = l else { break };
                    let event = detector.feed(&l.data, l.pts);
                    let ongoing = detector.moving() && detector.last_area >= s.min_area;
                    if ongoing && s.record && last_trigger.is_none_or(|t| t.elapsed() >= RETRIGGER) {
                        if let Some(r) = &self.recorder {
                            r.command(RecordCommand::Trigger("motion".into()));
                        }
                        last_trigger = Some(Instant::now());
                    }
                    match event {
                        Some(MotionEvent::Start { area }) => {
                            tracing::info!(area_percent = format!("{:.1}", area * 100.0), "motion started");
                            let now = unix_ms();
                            started_ms = Some(now);
                            self.log(MotionSpan { start_ms: now, end_ms: None });
                            let mut f = serde_json::Map::new();
                            f.insert("area".into(), json!(area));
                            f.insert("ts_ms".into(), json!(now));
                            self.control.notify("motion.start", f);
                            self.state(true);
                            if s.snapshot {
                                let shots = self.snapshots.clone();
                                self.tracker.spawn(async move { shots.publish("motion started").await });
                            }
                        }
                        Some(MotionEvent::End) => {
                            tracing::info!("motion ended");
                            let now = unix_ms();
                            if let Some(start_ms) = started_ms.take() {
                                self.log(MotionSpan { start_ms, end_ms: Some(now) });
                            }
                            let mut f = serde_json::Map::new();
                            f.insert("ts_ms".into(), json!(now));
                            self.control.notify("motion.end", f);
                            self.state(false);
                        }
                        None => {}
                    }
                }
            }
        }
        if detector.moving() {
            // Stopping mid-motion: say it ended, so P/motion is not left ON.
            if let Some(start_ms) = started_ms.take() {
                self.log(MotionSpan {
                    start_ms,
                    end_ms: Some(unix_ms()),
                });
            }
            self.state(false);
        }
    }
}
