//! Snapshots: a JPEG of what the camera sees now, for `GET /snapshot.jpg`,
//! the DataChannel's `snapshot` and MQTT (`P/snapshot`, Home Assistant's
//! camera entity). Taken from the raw picture where the pipeline has one
//! (media::tap), else by decoding the next keyframe (a camera's H.264
//! passed through). Asking starts the camera when nobody watches (a hub
//! subscription held for the shot) and it stops again after.

use crate::media::frame::{I420Image, TrackId};
use crate::media::hub::Hub;
use crate::media::still::{self, StillError};
use crate::media::tap::Taps;
use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a shot may take, camera start included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// A shot this recent is served again instead of taking another: a burst
/// of requests costs one encode.
const FRESH: Duration = Duration::from_millis(500);

/// Why no snapshot could be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The camera gave no picture in time.
    #[error("the camera gave no picture within {0:?}")]
    Timeout(Duration),
    /// The agent is stopping.
    #[error("the camera is stopping")]
    Stopped,
    /// Even at low quality the JPEG is larger than the channel carries.
    #[error(
        "the snapshot takes {0} bytes, more than the {1} this channel carries; use GET /snapshot.jpg"
    )]
    TooLarge(usize, usize),
    /// The picture could not be made into a JPEG.
    #[error(transparent)]
    Still(#[from] StillError),
}

/// A JPEG and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// JPEG bytes.
    pub jpeg: Bytes,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Takes snapshots.
pub struct Snapshots {
    hub: Arc<Hub>,
    taps: Arc<Taps>,
    quality: u8,
    last: Mutex<Option<(Instant, Snapshot, Arc<I420Image>)>>,
    /// One shot at a time; the others wait and get it.
    busy: tokio::sync::Mutex<()>,
}

impl Snapshots {
    /// Snapshots of `hub`'s camera at JPEG `quality`.
    pub fn new(hub: Arc<Hub>, taps: Arc<Taps>, quality: u8) -> Arc<Self> {
        Arc::new(Self {
            hub,
            taps,
            quality,
            last: Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
        })
    }

    fn fresh(&self) -> Option<Snapshot> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(t, _, _)| t.elapsed() < FRESH)
            .map(|(_, s, _)| s.clone())
    }

    /// A snapshot now (or from the last half second).
    pub async fn take(&self) -> Result<Snapshot, SnapshotError> {
        if let Some(s) = self.fresh() {
            return Ok(s);
        }
        let _busy = self.busy.lock().await;
        if let Some(s) = self.fresh() {
            return Ok(s);
        }
        let picture = tokio::time::timeout(TIMEOUT, self.picture())
            .await
            .map_err(|_| SnapshotError::Timeout(TIMEOUT))??;
        let quality = self.quality;
        let (w, h) = (picture.width, picture.height);
        let picture = Arc::new(picture);
        let p = picture.clone();
        let jpeg = tokio::task::spawn_blocking(move || still::jpeg(&p, quality))
            .await
            .map_err(|_| SnapshotError::Stopped)??;
        let shot = Snapshot {
            jpeg: Bytes::from(jpeg),
            width: w,
            height: h,
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), shot.clone(), picture));
        Ok(shot)
    }

    /// A snapshot of at most `max_bytes` (a DataChannel message), at a
    /// lower JPEG quality when the usual one is larger.
    pub async fn take_within(&self, max_bytes: usize) -> Result<Snapshot, SnapshotError> {
        let shot = self.take().await?;
        if shot.jpeg.len() <= max_bytes {
            return Ok(shot);
        }
        let picture = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, _, p)| p.clone())
            .ok_or(SnapshotError::Stopped)?;
        let mut size = shot.jpeg.len();
        for quality in [50u8, 25] {
            let p = picture.clone();
            let jpeg = tokio::task::spawn_blocking(move || still::jpeg(&p, quality))
                .await
                .map_err(|_| SnapshotError::Stopped)??;
            if jpeg.len() <= max_bytes {
                return Ok(Snapshot {
                    jpeg: Bytes::from(jpeg),
                    ..shot
                });
            }
            size = jpeg.len();
        }
        Err(SnapshotError::TooLarge(size, max_bytes))
    }

    async fn picture(&self) -> Result<I420Image, SnapshotError> {
        // Held until the picture is in: it keeps the camera running.
        let mut sub = self.hub.subscribe();
        let mut raw = Some(self.taps.request_picture());
        // The latest keyframe seen while the raw picture was awaited: with a
        // camera's own H.264 the tap's refusal and the keyframe arrive
        // together, in either order, and the keyframe must not be lost (the
        // next one may be seconds away).
        let mut keyframe: Option<bytes::Bytes> = None;
        loop {
            tokio::select! {
                got = async {
                    match raw.as_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                } => match got {
                    Ok(img) => return Ok(img),
                    // Compressed frames only: a keyframe is decoded instead.
                    Err(_) => {
                        raw = None;
                        if let Some(data) = keyframe.take() {
                            return decode(data).await;
                        }
                    }
                },
                p = sub.recv() => match p {
                    None => return Err(SnapshotError::Stopped),
                    Some(p) if p.track == TrackId::VIDEO && p.keyframe => {
                        if raw.is_none() {
                            return decode(p.data).await;
                        }
                        keyframe = Some(p.data);
                    }
                    // Read so the subscription never counts as a slow viewer.
                    Some(_) => {}
                },
            }
        }
    }
}

/// The picture of a keyframe, decoded off the runtime.
async fn decode(data: bytes::Bytes) -> Result<I420Image, SnapshotError> {
    tokio::task::spawn_blocking(move || still::decode_keyframe(&data))
        .await
        .map_err(|_| SnapshotError::Stopped)?
        .map_err(SnapshotError::from)
}

/// Largest snapshot published over MQTT: the embedded broker takes packets
/// up to 256 KiB.
pub const MAX_MQTT_JPEG: usize = 200 * 1024;

/// Publishes snapshots on `P/snapshot` (retained), announced to Home
/// Assistant as a camera entity.
#[derive(Clone)]
pub struct MqttSnapshots {
    /// Where shots come from.
    pub snapshots: Arc<Snapshots>,
    /// MQTT output.
    pub publisher: crate::signaling::mqtt::Publisher,
    /// Topic scheme.
    pub topics: crate::signaling::topics::Topics,
    /// Home Assistant discovery, if on.
    pub discovery: Option<crate::gpio::mqtt::Discovery>,
}

impl MqttSnapshots {
    /// Takes a snapshot and publishes it; `why` is logged on failure.
    pub async fn publish(&self, why: &str) {
        match self.snapshots.take_within(MAX_MQTT_JPEG).await {
            Ok(shot) => self
                .publisher
                .publish_retained(&self.topics.snapshot(), shot.jpeg),
            Err(e) => tracing::warn!(error = %e, reason = why, "no snapshot for MQTT"),
        }
    }

    fn announce(&self) {
        let Some(d) = &self.discovery else { return };
        let unique_id = format!("{}_snapshot", d.node_id);
        let doc = serde_json::json!({
            "name": "Snapshot",
            "unique_id": unique_id,
            "object_id": unique_id,
            "topic": self.topics.snapshot(),
            "availability_topic": self.topics.status(),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": crate::gpio::mqtt::device_doc(d),
        });
        self.publisher.publish_retained(
            &format!("{}/camera/{}/snapshot/config", d.prefix, d.node_id),
            doc.to_string(),
        );
    }

    /// Announces the camera entity on every (re)connect and publishes a
    /// snapshot for each request on `P/snapshot/set` (any payload).
    pub async fn run(
        self,
        mut requests: tokio::sync::mpsc::Receiver<Bytes>,
        mut connected: tokio::sync::watch::Receiver<bool>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if *connected.borrow_and_update() {
            self.announce();
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                up = crate::signaling::mqtt::connected_again(&mut connected) => match up {
                    Some(()) => self.announce(),
                    None => break,
                },
                r = requests.recv() => match r {
                    None => break,
                    Some(_) => {
                        // Requests that came in while this one was taken are one request.
                        while requests.try_recv().is_ok() {}
                        self.publish("requested on P/snapshot/set").await;
                    }
                },
            }
        }
    }
}
