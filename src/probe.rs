//! `rtcam probe`: a headless viewer that connects through MQTT exactly like
//! the browser page (offer, trickle ICE, answer), decodes the H.264 it
//! receives with OpenH264 on its own thread, and reads the test pattern's
//! block code to measure end-to-end latency. Tests and benchmarks drive the
//! same [`Viewer`]; users run it to check a camera from a terminal.

use crate::blockcode;
use crate::media::capture::test_pattern::wall_clock_ms;
use crate::media::h264;
use crate::peer::{Channel, ChannelEvent, Peer, PeerEvent, PeerOptions, PeerState, RemoteVideo};
use crate::signaling::messages::{self, IceCandidate};
use crate::signaling::mqtt::{Link, LinkEvent, LinkPublisher, MqttOptions};
use crate::signaling::topics::{ClientId, Topics};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// How to reach the camera.
#[derive(Debug, Clone)]
pub struct ViewerOptions {
    /// Broker connection (the client id is the viewer's MQTT client id).
    pub mqtt: MqttOptions,
    /// The camera's topic prefix.
    pub topic_prefix: String,
    /// Signaling client id (`P/offer/{id}`).
    pub client_id: ClientId,
    /// Receive video.
    pub video: bool,
    /// Open the `control` DataChannel.
    pub control: bool,
    /// Token to prove in the offer (never sent itself); also the MQTT
    /// password when none is set (the embedded broker checks it).
    pub token: Option<String>,
    /// WebRTC options (tests use loopback only).
    pub peer: PeerOptions,
    /// How long to wait for the broker and for the answer.
    pub timeout: Duration,
    /// Decode the video (off: only count access units, for load tests).
    pub decode: bool,
    /// The secret of this client id's live session, to replace it.
    pub replaces: Option<String>,
    /// Receive the camera's microphone too, decode it and look for the
    /// test tone (see [`crate::audio::tone`]).
    pub audio: bool,
}

/// Why the viewer could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// MQTT setup.
    #[error(transparent)]
    Mqtt(#[from] crate::signaling::mqtt::MqttError),
    /// WebRTC setup.
    #[error(transparent)]
    Peer(#[from] crate::peer::PeerError),
    /// The camera answered with an error.
    #[error("the camera refused: {code}: {message}")]
    Refused {
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// Nothing came in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The control channel is not available.
    #[error("the control channel is not open")]
    NoChannel,
    /// An ICE restart needs a live session (the answer's secret).
    #[error("no live session to restart")]
    NoSession,
}

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameInfo {
    /// Block-code sequence number (`None` if the picture carries no code).
    pub seq: Option<u32>,
    /// End-to-end latency from the block code's capture time, in ms.
    pub latency_ms: Option<f64>,
    /// The access unit was an IDR.
    pub keyframe: bool,
    /// Picture width.
    pub width: usize,
    /// Picture height.
    pub height: usize,
    /// When it finished decoding.
    pub decoded_at: Instant,
}

/// Signaling messages the camera sent this viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// `P/error/{id}`: code and message.
    Error(String, String),
    /// `P/bye/{id}`.
    Bye,
}

/// A connected (or connecting) headless viewer.
pub struct Viewer {
    topics: Topics,
    client_id: ClientId,
    publisher: LinkPublisher,
    peer: Arc<Peer>,
    channel: Option<Arc<Channel>>,
    frames: mpsc::Receiver<FrameInfo>,
    decode_errors: Arc<std::sync::atomic::AtomicU64>,
    state: watch::Receiver<Option<PeerState>>,
    signals: mpsc::UnboundedReceiver<Signal>,
    events: mpsc::UnboundedReceiver<Value>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    channel_open: watch::Receiver<bool>,
    next_id: std::sync::atomic::AtomicU64,
    video: Arc<tokio::sync::Mutex<Option<Arc<tokio::sync::Mutex<RemoteVideo>>>>>,
    offer_sent: Instant,
    /// Bound on waits that have no caller-given timeout (the bye's ack).
    timeout: Duration,
    /// The session's secret from the answer: a bye presents it.
    session: Option<String>,
    /// The token the offers prove (an ICE restart's offer proves it too).
    token: Option<String>,
    /// Answers applied after the first (each one an ICE restart's).
    restart_answers: watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    audio: Arc<Mutex<AudioHeard>>,
}

/// What the viewer heard of the camera's microphone.
#[derive(Debug, Default)]
pub struct AudioHeard {
    /// Opus packets received.
    pub packets: u64,
    /// Packets that did not decode.
    pub errors: u64,
    /// Packets coded in stereo (the Opus TOC byte's `s` bit, RFC 6716 3.1).
    pub stereo: u64,
    /// Samples decoded (48 kHz mono).
    pub samples: u64,
    /// The test tone's beeps found in them.
    pub tone: crate::audio::tone::ToneDetector,
}

/// Decodes the camera's Opus packets as they arrive and listens for the test tone.
async fn hear(mut remote: crate::peer::RemoteAudio, heard: Arc<Mutex<AudioHeard>>) {
    let Ok(mut dec) = crate::audio::codec::OpusDecoder::new(1) else {
        return;
    };
    let mut pcm = vec![0i16; crate::audio::FRAME_SAMPLES * 6];
    while let Some(p) = remote.next_packet().await {
        let arrived = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let decoded = dec.decode(Some(&p.payload), &mut pcm);
        let mut h = heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.packets += 1;
        if p.payload.first().is_some_and(|toc| toc & 0x04 != 0) {
            h.stereo += 1;
        }
        match decoded {
            Ok(n) => {
                h.samples += n as u64;
                h.tone.feed(&pcm[..n], arrived);
            }
            Err(_) => h.errors += 1,
        }
    }
}

/// Decodes access units on a thread of its own and reports each picture.
fn spawn_decoder(
    errors: Arc<std::sync::atomic::AtomicU64>,
    decode: bool,
) -> (
    std::sync::mpsc::Sender<bytes::Bytes>,
    mpsc::Receiver<FrameInfo>,
) {
    let (in_tx, in_rx) = std::sync::mpsc::channel::<bytes::Bytes>();
    let (out_tx, out_rx) = mpsc::channel(1024);
    let spawned = std::thread::Builder::new()
        .name("rtcam-probe-decode".into())
        .spawn(move || {
            use openh264::formats::YUVSource;
            let Ok(mut decoder) = openh264::decoder::Decoder::new() else {
                return;
            };
            while let Ok(au) = in_rx.recv() {
                let keyframe = h264::is_keyframe(&au);
                if !decode {
                    let counted = FrameInfo {
                        seq: None,
                        latency_ms: None,
                        keyframe,
                        width: 0,
                        height: 0,
                        decoded_at: Instant::now(),
                    };
                    if out_tx.blocking_send(counted).is_err() {
                        break;
                    }
                    continue;
                }
                let info = match decoder.decode(&au) {
                    Ok(Some(pic)) => {
                        let (w, h) = pic.dimensions();
                        let (ys, _, _) = pic.strides();
                        let code = blockcode::decode(pic.y(), ys, w, h).ok();
                        let now_ms = wall_clock_ms();
                        Some(FrameInfo {
                            seq: code.map(|c| c.seq),
                            latency_ms: code.map(|c| now_ms.saturating_sub(c.ts_ms) as f64),
                            keyframe,
                            width: w,
                            height: h,
                            decoded_at: Instant::now(),
                        })
                    }
                    Ok(None) => None,
                    Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        None
                    }
                };
                if let Some(info) = info
                    && out_tx.blocking_send(info).is_err()
                {
                    break;
                }
            }
        });
    if spawned.is_err() {
        tracing::error!("cannot start the probe's decoder thread");
    }
    (in_tx, out_rx)
}

impl Viewer {
    /// Connects to the broker, sends the offer and returns once the answer
    /// is applied (ICE and DTLS continue in the background).
    pub async fn connect(opts: &ViewerOptions) -> Result<Viewer, ProbeError> {
        let topics = Topics::new(&opts.topic_prefix);
        let cid = opts.client_id.clone();
        let mut mqtt = opts.mqtt.clone();
        if let (Some(token), None) = (&opts.token, &mqtt.password) {
            mqtt.username
                .get_or_insert_with(|| cid.as_str().to_string());
            mqtt.password = Some(crate::config::settings::Secret::new(token));
        }
        let mut link = Link::new(
            &mqtt,
            vec![
                topics.answer(&cid),
                topics.ice(&cid),
                topics.error(&cid),
                topics.bye(&cid),
            ],
        )?;
        let publisher = link.publisher();
        let (msg_tx, mut msgs) = mpsc::unbounded_channel::<(String, bytes::Bytes)>();
        let (up_tx, mut up) = watch::channel(false);
        let link_task = tokio::spawn(async move {
            loop {
                match link.next().await {
                    Ok(LinkEvent::Connected) => {
                        let _ = up_tx.send(true);
                    }
                    Ok(LinkEvent::Message(t, p)) => {
                        if msg_tx.send((t, p)).is_err() {
                            break;
                        }
                    }
                    Err(_) => {
                        let _ = up_tx.send(false);
                    }
                }
            }
        });
        let mut tasks = vec![link_task];
        let deadline = tokio::time::Instant::now() + opts.timeout;
        if tokio::time::timeout_at(deadline, up.wait_for(|c| *c))
            .await
            .is_err()
        {
            tasks.iter().for_each(|t| t.abort());
            return Err(ProbeError::Timeout("connecting to the MQTT broker"));
        }
        let channel_label = opts.control.then_some(crate::control::CHANNEL_LABEL);
        let peer_opts = PeerOptions {
            audio: opts.audio,
            ..opts.peer.clone()
        };
        let labels: Vec<&str> = channel_label.into_iter().collect();
        let (peer, offer, mut channels, mut peer_events) =
            Peer::offer_media(&peer_opts, opts.video, opts.audio, &labels).await?;
        let channel = channels.pop();
        let peer = Arc::new(peer);
        let mut offer_msg = serde_json::json!({ "type": "offer", "sdp": offer });
        if let Some(t) = &opts.token {
            let fingerprint = crate::auth::sdp_fingerprint(&offer).unwrap_or_default();
            let proof = crate::auth::prove(t, cid.as_str(), fingerprint, wall_clock_ms());
            offer_msg["auth"] = serde_json::to_value(&proof).expect("a proof is plain data");
        }
        if let Some(secret) = &opts.replaces {
            offer_msg["session"] = Value::String(secret.clone());
        }
        publisher.publish(&topics.offer(&cid), offer_msg.to_string());
        let offer_sent = Instant::now();

        // Pump peer events until the answer; candidates before it wait.
        let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut pending: Vec<IceCandidate> = Vec::new();
        let (signal_tx, signals) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(None);
        let video: Arc<tokio::sync::Mutex<Option<Arc<tokio::sync::Mutex<RemoteVideo>>>>> =
            Arc::default();
        let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (decode_tx, frames) = spawn_decoder(errors.clone(), opts.decode);
        let answer_topic = topics.answer(&cid);
        let ice_topic = topics.ice(&cid);
        let error_topic = topics.error(&cid);
        let bye_topic = topics.bye(&cid);
        let mut answered = false;
        let mut session: Option<String> = None;
        while !answered {
            let (t, p) = tokio::select! {
                m = msgs.recv() => m.ok_or(ProbeError::Timeout("MQTT link ended"))?,
                _ = tokio::time::sleep_until(deadline) => {
                    tasks.iter().for_each(|t| t.abort());
                    peer.close().await;
                    return Err(ProbeError::Timeout("waiting for the answer"));
                }
                Some(ev) = peer_events.recv() => {
                    handle_local(&ev, &publisher, &ice_topic, &sent);
                    continue;
                }
            };
            if t == answer_topic {
                let v: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
                session = v["session"].as_str().map(str::to_string);
                if let Some(sdp) = v["sdp"].as_str() {
                    peer.accept_answer(sdp).await?;
                    for c in pending.drain(..) {
                        let _ = peer.add_remote_candidate(&c).await;
                    }
                    answered = true;
                }
            } else if t == ice_topic {
                if let Ok(c) = messages::parse_candidate(&p)
                    && !c.is_end()
                    && !sent
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains(&c.candidate)
                {
                    pending.push(c);
                }
            } else if t == error_topic {
                let v: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
                tasks.iter().for_each(|t| t.abort());
                peer.close().await;
                return Err(ProbeError::Refused {
                    code: v["code"].as_str().unwrap_or("?").to_string(),
                    message: v["message"].as_str().unwrap_or("").to_string(),
                });
            }
        }

        // After the answer: one task keeps signaling and peer events flowing;
        // a later answer is an ICE restart's.
        let (restart_tx, restart_answers) = watch::channel(0u64);
        let bg_peer = peer.clone();
        let bg_video = video.clone();
        let audio: Arc<Mutex<AudioHeard>> = Arc::default();
        let bg_audio = audio.clone();
        let bg_publisher = publisher.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = msgs.recv() => {
                        let Some((t, p)) = m else { break };
                        if t == answer_topic {
                            let v: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
                            if let Some(sdp) = v["sdp"].as_str() {
                                match bg_peer.accept_answer(sdp).await {
                                    Ok(()) => restart_tx.send_modify(|n| *n += 1),
                                    Err(e) => tracing::warn!(error = %e, "the restart's answer was not applied"),
                                }
                            }
                        } else if t == ice_topic {
                            if let Ok(c) = messages::parse_candidate(&p)
                                && !c.is_end()
                                && !sent.lock().unwrap_or_else(PoisonError::into_inner).contains(&c.candidate)
                            {
                                let _ = bg_peer.add_remote_candidate(&c).await;
                            }
                        } else if t == error_topic {
                            let v: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
                            let _ = signal_tx.send(Signal::Error(
                                v["code"].as_str().unwrap_or("?").to_string(),
                                v["message"].as_str().unwrap_or("").to_string(),
                            ));
                        } else if t == bye_topic {
                            let _ = signal_tx.send(Signal::Bye);
                        }
                    }
                    ev = peer_events.recv() => {
                        let Some(ev) = ev else { break };
                        handle_local(&ev, &bg_publisher, &ice_topic, &sent);
                        match ev {
                            PeerEvent::State(s) => { let _ = state_tx.send(Some(s)); }
                            PeerEvent::RemoteVideo(rv) => {
                                let rv = Arc::new(tokio::sync::Mutex::new(rv));
                                *bg_video.lock().await = Some(rv.clone());
                                let tx = decode_tx.clone();
                                tokio::spawn(forward_frames(rv, tx));
                            }
                            PeerEvent::RemoteAudio(ra) => {
                                tokio::spawn(hear(ra, bg_audio.clone()));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }));

        let (event_tx, events) = mpsc::unbounded_channel();
        let pending_calls: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let channel = channel.map(Arc::new);
        let (open_tx, channel_open) = watch::channel(false);
        if let Some(ch) = &channel {
            let ch = ch.clone();
            let calls = pending_calls.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = ch.recv().await {
                    let text = match ev {
                        ChannelEvent::Text(text) => text,
                        ChannelEvent::Open => {
                            let _ = open_tx.send(true);
                            continue;
                        }
                        ChannelEvent::Closed => break,
                        ChannelEvent::Binary(_) => continue,
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    let waiting = v
                        .get("id")
                        .and_then(Value::as_u64)
                        .filter(|_| v.get("event").is_none())
                        .and_then(|id| {
                            calls
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&id)
                        });
                    match waiting {
                        Some(tx) => {
                            let _ = tx.send(v);
                        }
                        // Events, and replies nobody waits for (raw sends), go to the events stream.
                        None => {
                            let _ = event_tx.send(v);
                        }
                    }
                }
            }));
        }
        Ok(Viewer {
            topics,
            client_id: cid,
            publisher,
            peer,
            channel,
            frames,
            decode_errors: errors,
            state,
            signals,
            events,
            pending: pending_calls,
            channel_open,
            next_id: std::sync::atomic::AtomicU64::new(1),
            video,
            offer_sent,
            timeout: opts.timeout,
            session,
            token: opts.token.clone(),
            restart_answers,
            tasks,
            audio,
        })
    }

    /// What was heard of the camera's microphone so far (with `audio`).
    pub fn heard(&self) -> std::sync::MutexGuard<'_, AudioHeard> {
        self.audio
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the connection is up; false on timeout or failure.
    pub async fn wait_connected(&mut self, timeout: Duration) -> bool {
        let r = tokio::time::timeout(
            timeout,
            self.state.wait_for(|s| {
                matches!(
                    s,
                    Some(PeerState::Connected | PeerState::Failed | PeerState::Closed)
                )
            }),
        )
        .await;
        matches!(r, Ok(Ok(s)) if *s == Some(PeerState::Connected))
    }

    /// When the offer was published.
    pub fn offer_sent(&self) -> Instant {
        self.offer_sent
    }

    /// The latest connection state.
    pub fn state(&self) -> Option<PeerState> {
        *self.state.borrow()
    }

    /// The next decoded frame, or `None` after `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<FrameInfo> {
        tokio::time::timeout(timeout, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// Discards frames decoded but not yet taken (to measure from now on).
    pub fn drain_frames(&mut self) -> usize {
        let mut n = 0;
        while self.frames.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    /// Discards control events not yet taken.
    pub fn drain_events(&mut self) -> usize {
        let mut n = 0;
        while self.events.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    /// Decode errors so far.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next signaling message from the camera, or `None` after `timeout`.
    pub async fn next_signal(&mut self, timeout: Duration) -> Option<Signal> {
        tokio::time::timeout(timeout, self.signals.recv())
            .await
            .ok()
            .flatten()
    }

    /// Sends an RTCP PLI (asks the camera for a keyframe).
    pub async fn request_keyframe(&self) -> bool {
        let v = self.video.lock().await.clone();
        match v {
            Some(rv) => rv.lock().await.request_keyframe().await.is_ok(),
            None => false,
        }
    }

    /// Sends a control command (an `id` is added) and waits for its reply.
    pub async fn command(
        &self,
        mut request: Value,
        timeout: Duration,
    ) -> Result<Value, ProbeError> {
        let ch = self.channel.as_ref().ok_or(ProbeError::NoChannel)?;
        self.wait_channel(timeout).await?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        request["id"] = Value::from(id);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        ch.send_text(&request.to_string()).await?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| ProbeError::Timeout("waiting for a control reply"))?
            .map_err(|_| ProbeError::NoChannel)
    }

    /// Waits until the control channel is open.
    pub async fn wait_channel(&self, timeout: Duration) -> Result<(), ProbeError> {
        let mut open = self.channel_open.clone();
        match tokio::time::timeout(timeout, open.wait_for(|o| *o)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ProbeError::NoChannel),
            Err(_) => Err(ProbeError::Timeout(
                "waiting for the control channel to open",
            )),
        }
    }

    /// Sends raw text on the control channel (tests of malformed input).
    pub async fn send_raw(&self, text: &str) -> Result<(), ProbeError> {
        let ch = self.channel.as_ref().ok_or(ProbeError::NoChannel)?;
        self.wait_channel(Duration::from_secs(20)).await?;
        ch.send_text(text).await?;
        Ok(())
    }

    /// Sends a binary message on the control channel (the protocol is text:
    /// tests of malformed input).
    pub async fn send_binary(&self, data: &[u8]) -> Result<(), ProbeError> {
        let ch = self.channel.as_ref().ok_or(ProbeError::NoChannel)?;
        self.wait_channel(self.timeout).await?;
        ch.send_binary(data).await?;
        Ok(())
    }

    /// Closes the control channel only; the peer connection stays up.
    pub async fn close_channel(&self) {
        if let Some(ch) = &self.channel {
            ch.close().await;
        }
    }

    /// The next control event (or id-less reply), or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Restarts ICE on the live session (a new offer with `"restart": true`
    /// and the session's secret) and returns once the camera's answer is
    /// applied; ICE then checks the new candidates in the background.
    pub async fn restart_ice(&mut self, timeout: Duration) -> Result<(), ProbeError> {
        let Some(secret) = self.session.clone() else {
            return Err(ProbeError::NoSession);
        };
        let sdp = self.peer.restart_offer().await?;
        let mut msg = serde_json::json!({
            "type": "offer", "sdp": sdp, "session": secret, "restart": true,
        });
        if let Some(t) = &self.token {
            let fingerprint = crate::auth::sdp_fingerprint(&sdp).unwrap_or_default();
            let proof =
                crate::auth::prove(t, self.client_id.as_str(), fingerprint, wall_clock_ms());
            msg["auth"] = serde_json::to_value(&proof).expect("a proof is plain data");
        }
        let before = *self.restart_answers.borrow_and_update();
        self.publisher
            .publish(&self.topics.offer(&self.client_id), msg.to_string());
        let answered = self.restart_answers.wait_for(|n| *n > before);
        tokio::select! {
            r = answered => r.map(|_| ()).map_err(|_| ProbeError::Timeout("the viewer's link task ended")),
            s = self.signals.recv() => Err(match s {
                Some(Signal::Error(code, message)) => ProbeError::Refused { code, message },
                Some(Signal::Bye) => ProbeError::Refused { code: "bye".into(), message: "the camera ended the session".into() },
                None => ProbeError::Timeout("the viewer's link task ended"),
            }),
            _ = tokio::time::sleep(timeout) => Err(ProbeError::Timeout("waiting for the ICE restart's answer")),
        }
    }

    /// The session's secret, as the answer gave it.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Transport statistics of the viewer's side.
    pub async fn stats(&self) -> crate::peer::PeerStats {
        self.peer.stats().await
    }

    /// Publishes `payload` on this viewer's own `P/{kind}/{id}` topic
    /// (`offer`, `ice` or `bye`) through its MQTT connection, as a
    /// misbehaving page could (the embedded broker lets only this client
    /// publish there); false if the queue is full.
    pub fn signal(&self, kind: &str, payload: impl Into<bytes::Bytes>) -> bool {
        let topic = format!("{}/{kind}/{}", self.topics.prefix(), self.client_id);
        self.publisher.publish(&topic, payload)
    }

    /// Says bye over MQTT and closes once the broker has the bye (or
    /// after the viewer's timeout, if the broker never acknowledges it).
    pub async fn bye(self) {
        let bye = serde_json::json!({ "session": self.session }).to_string();
        if let Some(n) = self
            .publisher
            .publish_counted(&self.topics.bye(&self.client_id), bye)
            && !self.publisher.wait_acked(n, self.timeout).await
        {
            tracing::warn!("the broker did not acknowledge the bye");
        }
        self.close().await;
    }

    /// Closes without a bye (a viewer that vanishes).
    pub async fn close(self) {
        self.peer.close().await;
        self.publisher.disconnect();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Hands whole access units to the decoder. A picture given up for lost
/// packets is skipped, a keyframe is asked for (at most twice a second, as
/// a browser does), and pictures are skipped until one comes: a decoder fed
/// pictures that refer to a lost one shows garbage.
async fn forward_frames(
    rv: Arc<tokio::sync::Mutex<RemoteVideo>>,
    tx: std::sync::mpsc::Sender<bytes::Bytes>,
) {
    const PLI_GAP: Duration = Duration::from_millis(500);
    let mut waiting_keyframe = false;
    let mut last_pli: Option<Instant> = None;
    loop {
        let frame = rv.lock().await.next_frame().await;
        let Some(f) = frame else { break };
        if f.after_loss {
            waiting_keyframe = true;
        } else if waiting_keyframe && h264::is_keyframe(&f.data) {
            waiting_keyframe = false;
        }
        if waiting_keyframe {
            if last_pli.is_none_or(|t| t.elapsed() >= PLI_GAP) {
                last_pli = Some(Instant::now());
                let _ = rv.lock().await.request_keyframe().await;
            }
            continue;
        }
        if tx.send(f.data).is_err() {
            break;
        }
    }
}

fn handle_local(
    ev: &PeerEvent,
    publisher: &LinkPublisher,
    ice_topic: &str,
    sent: &Mutex<HashSet<String>>,
) {
    match ev {
        PeerEvent::LocalCandidate(c) => {
            sent.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(c.candidate.clone());
            publisher.publish(ice_topic, messages::candidate_json(c));
        }
        PeerEvent::GatheringComplete => {
            publisher.publish(ice_topic, messages::candidate_json(&IceCandidate::end()));
        }
        _ => {}
    }
}

/// MQTT options for a viewer of the camera these settings describe (the
/// embedded broker when no `mqtt.url` is set).
pub fn mqtt_options_for(settings: &crate::config::Settings, client_id: &str) -> MqttOptions {
    use crate::config::settings::{MqttProtocol, MqttScheme, MqttUrl};
    let url = settings.mqtt.url.clone().unwrap_or_else(|| {
        let addr = match settings.mqtt.protocol {
            MqttProtocol::V5 => settings.broker.v5_listen,
            MqttProtocol::V311 => settings.broker.listen,
        };
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        MqttUrl {
            scheme: MqttScheme::Mqtt,
            host,
            port: addr.port(),
            path: String::new(),
        }
    });
    MqttOptions {
        url,
        protocol: settings.mqtt.protocol,
        client_id: client_id.to_string(),
        username: settings.mqtt.username.clone(),
        password: settings.mqtt.password.clone(),
        tls: crate::signaling::mqtt::TlsFiles::from_settings(&settings.mqtt),
        keep_alive: Duration::from_secs(30),
    }
}

/// What `rtcam probe` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeReport {
    /// Offer to first decoded frame, ms.
    pub time_to_first_frame_ms: Option<f64>,
    /// Frames decoded during the measurement.
    pub frames_decoded: u64,
    /// Decoded frames per second.
    pub fps: f64,
    /// Picture size.
    pub width: usize,
    /// Picture height.
    pub height: usize,
    /// The first frame was a keyframe.
    pub first_frame_keyframe: bool,
    /// Keyframes seen.
    pub keyframes: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Frames missing by block-code sequence number.
    pub sequence_gaps: u64,
    /// Latency samples (ms) from the block code: median.
    pub latency_median_ms: Option<f64>,
    /// 95th percentile.
    pub latency_p95_ms: Option<f64>,
    /// Samples.
    pub latency_samples: usize,
    /// Gaps between decoded frames longer than [`FREEZE`].
    pub freezes: u64,
    /// Their total, ms.
    pub freeze_ms: f64,
    /// The longest, ms.
    pub longest_freeze_ms: f64,
    /// ICE restarts of its session the probe made after its video stalled
    /// for [`STALL`] and the camera answered (the session went on).
    pub ice_restarts: u64,
    /// New sessions the probe made when an ICE restart did not bring the
    /// video back (the link or the camera went away and came back).
    pub reconnects: u64,
    /// With `--audio`: Opus packets received from the camera's microphone.
    pub audio_packets: u64,
    /// Of which did not decode.
    pub audio_decode_errors: u64,
    /// Of `audio_packets`, those coded in stereo (`[audio] channels = 2`).
    pub audio_stereo_packets: u64,
    /// The test tone's beeps heard (one per second with `[audio] input = "test"`).
    pub tone_beeps: usize,
    /// Their median frequency, Hz.
    pub tone_hz: Option<f64>,
    /// Capture (the whole second a beep marks) to arrival, median, ms.
    pub audio_latency_median_ms: Option<f64>,
    /// Audio latency minus video latency (medians): how far the sound
    /// lags (positive) or leads the picture, ms.
    pub av_offset_ms: Option<f64>,
}

/// A gap between decoded frames longer than this is a freeze (what a
/// viewer notices; WebRTC's own `freezeCount` uses a similar bound).
pub const FREEZE: Duration = Duration::from_millis(200);
/// With no frame for this long, the probe restarts ICE; if that brings no
/// frame within as long again, it gives its session up and makes a new one
/// (the new offer replaces the old session with its secret).
pub const STALL: Duration = Duration::from_secs(6);
/// The longest wait between reconnection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

/// Connects, watches for `duration` after the first frame, and reports.
/// If the video stalls (the link or the camera goes away), it restarts ICE
/// first, then makes new sessions with backoff until the camera is back or
/// the time is up.
pub async fn probe(opts: &ViewerOptions, duration: Duration) -> Result<ProbeReport, ProbeError> {
    let mut viewer = Viewer::connect(opts).await?;
    let start = viewer.offer_sent();
    let mut report = ProbeReport::default();
    let Some(first) = viewer.next_frame(opts.timeout).await else {
        viewer.bye().await;
        return Err(ProbeError::Timeout("waiting for the first frame"));
    };
    report.time_to_first_frame_ms =
        Some(first.decoded_at.duration_since(start).as_secs_f64() * 1000.0);
    report.first_frame_keyframe = first.keyframe;
    report.width = first.width;
    report.height = first.height;
    tracing::info!(
        ms = report.time_to_first_frame_ms,
        width = first.width,
        height = first.height,
        "first frame decoded"
    );
    let mut latencies = Vec::new();
    let mut last_seq = first.seq;
    let mut last_at = first.decoded_at;
    // Since when the stall is counted: the last frame, or the last new session.
    let mut stall_from = first.decoded_at;
    report.frames_decoded = 1;
    report.keyframes = u64::from(first.keyframe);
    latencies.extend(first.latency_ms);
    let end = first.decoded_at + duration;
    let mut backoff = crate::backoff::Backoff::new(Duration::from_secs(1), RECONNECT_MAX);
    // An ICE restart was tried since the last frame: the next stall makes a new session.
    let mut restarted = false;
    let note_gap = |report: &mut ProbeReport, gap: Duration| {
        if gap > FREEZE {
            let ms = gap.as_secs_f64() * 1000.0;
            report.freezes += 1;
            report.freeze_ms += ms;
            report.longest_freeze_ms = report.longest_freeze_ms.max(ms);
        }
    };
    // `None` once the time ran out before the camera came back.
    let mut current = Some(viewer);
    while let Some(viewer) = current.as_mut() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let stall_left = STALL.saturating_sub(now.saturating_duration_since(stall_from));
        let wait = end.saturating_duration_since(now).min(stall_left);
        if let Some(f) = viewer.next_frame(wait).await {
            report.frames_decoded += 1;
            report.keyframes += u64::from(f.keyframe);
            latencies.extend(f.latency_ms);
            note_gap(&mut report, f.decoded_at.saturating_duration_since(last_at));
            last_at = f.decoded_at;
            stall_from = f.decoded_at;
            // A new session's camera counts on; a restarted camera starts over.
            if let (Some(prev), Some(seq)) = (last_seq, f.seq)
                && seq > prev + 1
            {
                report.sequence_gaps += u64::from(seq - prev - 1);
            }
            last_seq = f.seq.or(last_seq);
            backoff.reset();
            restarted = false;
            continue;
        }
        if Instant::now() >= end {
            break;
        }
        if !restarted {
            // The path may have changed or dropped for a while: the same
            // session over new candidates keeps the camera's state.
            restarted = true;
            tracing::warn!(stalled_for = ?last_at.elapsed(), "no video: restarting ICE");
            let wait = opts
                .timeout
                .min(end.saturating_duration_since(Instant::now()));
            match viewer.restart_ice(wait).await {
                Ok(()) => {
                    report.ice_restarts += 1;
                    stall_from = Instant::now();
                    continue;
                }
                Err(e) => tracing::warn!(error = %e, "ICE restart failed: making a new session"),
            }
            if Instant::now() >= end {
                break;
            }
        }
        // Stalled: a new session, replacing the old one if the camera still holds it.
        tracing::warn!(stalled_for = ?last_at.elapsed(), "no video: reconnecting");
        report.decode_errors += viewer.decode_errors();
        let replaces = viewer.session().map(str::to_string);
        if let Some(old) = current.take() {
            old.close().await;
        }
        let reopts = ViewerOptions {
            replaces,
            ..opts.clone()
        };
        current = loop {
            let delay = backoff.next_delay();
            if Instant::now() + delay >= end {
                break None;
            }
            tokio::time::sleep(delay).await;
            let remaining = end.saturating_duration_since(Instant::now());
            let attempt = ViewerOptions {
                timeout: reopts.timeout.min(remaining),
                ..reopts.clone()
            };
            match Viewer::connect(&attempt).await {
                Ok(v) => break Some(v),
                Err(e) => tracing::warn!(error = %e, "reconnecting"),
            }
        };
        if current.is_some() {
            stall_from = Instant::now();
            report.reconnects += 1;
        }
    }
    // A freeze still going on at the end counts too.
    note_gap(
        &mut report,
        Instant::now().min(end).saturating_duration_since(last_at),
    );
    if let Some(viewer) = current {
        report.decode_errors += viewer.decode_errors();
        {
            let h = viewer.heard();
            report.audio_packets = h.packets;
            report.audio_decode_errors = h.errors;
            report.audio_stereo_packets = h.stereo;
            let beeps = h.tone.beeps();
            report.tone_beeps = beeps.len();
            let mut hz: Vec<f64> = beeps.iter().map(|b| b.hz).collect();
            hz.sort_by(f64::total_cmp);
            report.tone_hz = percentile(&hz, 0.5);
            let mut lat: Vec<f64> = beeps.iter().map(|b| b.latency_ms()).collect();
            lat.sort_by(f64::total_cmp);
            report.audio_latency_median_ms = percentile(&lat, 0.5);
        }
        viewer.bye().await;
    }
    report.fps = report.frames_decoded as f64 / duration.as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    report.latency_median_ms = percentile(&latencies, 0.5);
    report.latency_p95_ms = percentile(&latencies, 0.95);
    if let (Some(a), Some(v)) = (report.audio_latency_median_ms, report.latency_median_ms) {
        report.av_offset_ms = Some(a - v);
    }
    report.latency_samples = latencies.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(51.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
