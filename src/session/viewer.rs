//! One viewer session's task: answers the offer, trickles candidates,
//! streams the hub's frames into the video track once connected, serves the
//! control DataChannel, and on any end closes everything it opened. A panic
//! inside ends this session only; the peer is still closed.

use super::signal::{Door, Outgoing};
use super::table::{EndReason, KeyframeGate, LinkState, SessionId};
use super::{SessionCommand, SessionContext, SessionEvent};
use crate::control::{CHANNEL_LABEL, ControlSession, Role, protocol};
use crate::gpio::GpioEvent;
use crate::media::frame::TrackId;
use crate::media::hub::{Demand, Subscription};
use crate::media::rate::ViewerRate;
use crate::media::rate::estimate::LinkSample;
use crate::peer::{
    AudioSender, Channel, ChannelEvent, Peer, PeerError, PeerEvent, PeerState, RemoteAudio,
    VideoSender,
};
use crate::signaling::messages::{ErrorCode, IceCandidate, SignalError};
use crate::throttle::LogBudget;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the manager decided about a new session.
pub struct Spec {
    /// The session.
    pub id: SessionId,
    /// The viewer's offer.
    pub offer_sdp: String,
    /// Whether to send video.
    pub video: bool,
    /// Whether the viewer asks for the camera's sound.
    pub audio: bool,
    /// What the viewer may do over the control channel.
    pub role: Role,
    /// The secret the answer carries; a bye or replacing offer presents it.
    pub secret: String,
    /// Who admission says made the offer (the answer tells the door).
    pub principal: String,
    /// The offer's DTLS fingerprint: an ICE restart must keep it.
    pub fingerprint: String,
    /// Where the viewer's answers go.
    pub door: Arc<dyn Door>,
}

type PeerSlot = Arc<Mutex<Option<Arc<Peer>>>>;

/// DataChannels one session may open.
const MAX_CHANNELS: usize = 4;

/// How often a connected session reads its viewer's receiver reports for
/// congestion control (viewers report about once a second).
const LINK_SAMPLE: Duration = Duration::from_secs(1);
/// Every how many samples it also reads the peer's statistics for `/metrics`
/// (the full statistics cost more than the reports).
const STATS_EVERY: u32 = 2;

/// How long an ending session waits for its DataChannel `bye` to be
/// delivered before closing the connection.
const BYE_FLUSH: Duration = Duration::from_millis(500);

/// Runs one session to its end and reports it to the manager.
pub async fn run(
    ctx: Arc<SessionContext>,
    spec: Spec,
    commands: mpsc::UnboundedReceiver<SessionCommand>,
    events: mpsc::UnboundedSender<SessionEvent>,
) {
    let id = spec.id.clone();
    let door = spec.door.clone();
    let slot: PeerSlot = Arc::default();
    // Child tasks (video pump, channels) stop with the session, and the
    // session reports its end only after they are gone.
    let children = CancellationToken::new();
    let kids = TaskTracker::new();
    let outcome = AssertUnwindSafe(session(
        &ctx, spec, commands, &events, &kids, &slot, &children,
    ))
    .catch_unwind()
    .await;
    children.cancel();
    kids.close();
    kids.wait().await;
    // Its link figures leave /metrics on every end, a panic's included.
    ctx.links.remove(id.client.as_str());
    // Outputs this viewer was the last to control go to their failsafe values.
    if let Some(g) = ctx.control.gpio() {
        g.session_ended(id.generation);
    }
    // A talker that leaves gives the floor up.
    ctx.control.session_ended(id.generation);
    let reason = match outcome {
        Ok(reason) => reason,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(client = %id.client, panic = %text, "session task panicked; ending this session only");
            let reason = EndReason::Crashed(text);
            // `session` says bye on every other end; the panic skipped it, and
            // the protocol promises a bye whenever the camera ends a session.
            door.send(&id.client, Outgoing::Bye(reason.as_str().to_string()));
            reason
        }
    };
    let peer = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(peer) = peer {
        peer.close().await;
    }
    let _ = events.send(SessionEvent::Ended(id, reason));
}

fn signal_error(door: &dyn Door, id: &SessionId, code: ErrorCode, message: impl Into<String>) {
    door.send(&id.client, Outgoing::Error(SignalError::new(code, message)));
}

async fn session(
    ctx: &Arc<SessionContext>,
    spec: Spec,
    mut commands: mpsc::UnboundedReceiver<SessionCommand>,
    events: &mpsc::UnboundedSender<SessionEvent>,
    tracker: &TaskTracker,
    slot: &PeerSlot,
    children: &CancellationToken,
) -> EndReason {
    let id = spec.id.clone();
    let door = spec.door.as_ref();
    // Start the camera now: it warms up while ICE and DTLS complete.
    let mut demand: Option<Demand> = spec.video.then(|| ctx.hub.demand());
    let (peer, answer, mut peer_events) = match Peer::answer(
        &ctx.peer,
        &spec.offer_sdp,
        spec.video,
        spec.audio && ctx.hub.track(TrackId::AUDIO).is_some(),
    )
    .await
    {
        Ok(made) => made,
        Err(e) => {
            let code = match e {
                PeerError::BadSdp(_) => ErrorCode::BadSdp,
                PeerError::NoVideoCodec => ErrorCode::NoVideoCodec,
                _ => ErrorCode::Internal,
            };
            signal_error(door, &id, code, e.to_string());
            return EndReason::SetupFailed(e.to_string());
        }
    };
    let peer = Arc::new(peer);
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(peer.clone());
    // Subscribe to GPIO changes before answering: the viewer's channel counts
    // as open on its side before ours learns of it, and a change made in that
    // gap must still reach this viewer's panel.
    let mut first_gpio_events = ctx.control.gpio().map(|g| g.subscribe());
    let mut first_notices = Some(ctx.control.notices());
    door.send(
        &id.client,
        Outgoing::Answer {
            sdp: answer,
            secret: spec.secret.clone(),
            principal: spec.principal.clone(),
        },
    );
    let mut keyframes = KeyframeGate::new(Duration::from_secs(1));
    // One command budget for all of this session's channels.
    let control = ctx.control.session(id.generation, spec.role);
    let mut channels: Vec<Arc<Channel>> = Vec::new();
    let mut pump_started = false;
    let mut audio_started = false;
    // The link's figures, sampled while connected: congestion control's
    // input once video flows, and /metrics.
    let mut link_tick = tokio::time::interval(LINK_SAMPLE);
    let mut ticks: u32 = 0;
    let mut connected = false;
    let mut rate: Option<ViewerRate> = None;
    let (keyframes_only_tx, keyframes_only_rx) = watch::channel(false);
    // Bytes the pump handed to the video track, and the count and time at
    // the last sample: what is sent, against the send-side estimate.
    let sent = Arc::new(AtomicU64::new(0));
    let mut sent_at: (u64, Instant) = (0, Instant::now());
    let mut link = crate::metrics::ViewerLink::default();
    let reason = loop {
        tokio::select! {
            _ = link_tick.tick(), if connected => {
                let reports = peer.receiver_reports();
                let transport_kbps = reports.transport_estimate_bps.map(|b| (b / 1000.0) as u32);
                let now = Instant::now();
                let bytes = sent.load(Ordering::Relaxed);
                let secs = now.saturating_duration_since(sent_at.1).as_secs_f64();
                let sent_kbps = (secs > 0.0)
                    .then(|| ((bytes - sent_at.0) as f64 * 8.0 / 1000.0 / secs) as u32);
                sent_at = (bytes, now);
                if let Some(verdict) = rate.as_ref().and_then(|r| r.sample(LinkSample {
                    at: now,
                    reports: reports.count,
                    fraction_lost: reports.fraction_lost,
                    rtt: reports.rtt,
                    transport_kbps,
                    sent_kbps,
                })) {
                    link.estimated_kbps = Some(verdict.estimate_kbps);
                    link.transport_kbps = transport_kbps;
                    link.keyframes_only = verdict.keyframes_only;
                    let flipped = keyframes_only_tx.send_if_modified(|on| {
                        std::mem::replace(on, verdict.keyframes_only) != verdict.keyframes_only
                    });
                    if flipped {
                        tracing::info!(
                            client = %id.client,
                            keyframes_only = verdict.keyframes_only,
                            estimate_kbps = verdict.estimate_kbps,
                            "viewer's link: {}",
                            if verdict.keyframes_only { "keyframes only" } else { "every frame again" }
                        );
                    }
                }
                if ticks.is_multiple_of(STATS_EVERY) {
                    let s = peer.stats().await;
                    // The reports' round trip is the media path's; the ICE
                    // pair's (STUN checks) stands in until one comes.
                    link.rtt = reports.rtt.or(s.rtt);
                    link.fraction_lost = s.fraction_lost;
                    link.packets_lost = s.packets_lost;
                    link.bytes_sent = s.bytes_sent;
                }
                ticks = ticks.wrapping_add(1);
                ctx.links.set(id.client.as_str(), link);
            }
            cmd = commands.recv() => match cmd {
                Some(SessionCommand::Candidate(c)) => add_candidate(door, &id, &peer, &c).await,
                Some(SessionCommand::Restart { sdp, fingerprint }) => {
                    restart_ice(ctx, door, &spec, &peer, &sdp, &fingerprint).await;
                }
                Some(SessionCommand::End(reason)) => break reason,
                None => break EndReason::Shutdown,
            },
            ev = peer_events.recv() => match ev {
                Some(PeerEvent::LocalCandidate(c)) => door.send(&id.client, Outgoing::Candidate(c)),
                Some(PeerEvent::GatheringComplete) => {
                    door.send(&id.client, Outgoing::Candidate(IceCandidate::end()));
                }
                Some(PeerEvent::State(state)) => {
                    let link = match state {
                        PeerState::Connected => Some(LinkState::Connected),
                        PeerState::Disconnected => Some(LinkState::Disconnected),
                        PeerState::Failed => Some(LinkState::Failed),
                        PeerState::Closed => Some(LinkState::Closed),
                        PeerState::Connecting => None,
                    };
                    if let Some(link) = link {
                        let _ = events.send(SessionEvent::Link(id.clone(), link));
                    }
                    connected = state == PeerState::Connected;
                    if state == PeerState::Connected {
                        // How the viewer was reached: a remote `host` candidate
                        // behind a browser's .local name means mDNS resolved it.
                        let path = peer.stats().await;
                        tracing::info!(
                            client = %id.client,
                            local = ?path.selected_local,
                            remote = ?path.selected_remote,
                            "viewer connected"
                        );
                        if ctx.faults.panic_client.as_deref() == Some(id.client.as_str()) {
                            panic!("injected fault for client {}", id.client);
                        }
                        if let (false, Some(audio)) = (audio_started, peer.audio()) {
                            audio_started = true;
                            let sub = ctx.hub.subscribe_to(&[TrackId::AUDIO]);
                            tracker.spawn(audio_pump(sub, audio, children.child_token()));
                        }
                        if let (false, Some(video)) = (pump_started, peer.video()) {
                            pump_started = true;
                            // Subscribe only now: the first frame is a keyframe requested at once.
                            let sub = ctx.hub.subscribe();
                            demand = None;
                            // Its receiver reports steer the shared encoder from now on.
                            rate = Some(ctx.rate.join(id.client.as_str()));
                            sent_at = (sent.load(Ordering::Relaxed), Instant::now());
                            tracker.spawn(pump(
                                sub,
                                video,
                                ctx.frame_duration,
                                keyframes_only_rx.clone(),
                                sent.clone(),
                                children.child_token(),
                            ));
                        }
                    }
                }
                Some(PeerEvent::DataChannel(ch)) => {
                    if channels.len() >= MAX_CHANNELS {
                        // More channels would buy no more commands (the budget
                        // is the session's), only more work: refused.
                        // A viewer can open channels as fast as it likes:
                        // logged a few a minute, with a count.
                        static EXTRA: LogBudget = LogBudget::new(5, Duration::from_secs(60));
                        if let Some(suppressed) = EXTRA.check() {
                            tracing::info!(client = %id.client, label = ch.label(), more_since_last = suppressed, "extra DataChannel closed");
                        }
                        ch.close().await;
                        continue;
                    }
                    let ch = Arc::new(ch);
                    channels.push(ch.clone());
                    let session = control.clone();
                    let (gpio_events, notices) = if ch.label() == CHANNEL_LABEL {
                        (
                            first_gpio_events.take().or_else(|| ctx.control.gpio().map(|g| g.subscribe())),
                            Some(first_notices.take().unwrap_or_else(|| ctx.control.notices())),
                        )
                    } else {
                        (None, None)
                    };
                    tracker.spawn(serve_channel(ctx.clone(), ch, session, gpio_events, notices, children.child_token()));
                }
                Some(PeerEvent::KeyframeRequest) => {
                    if keyframes.allow(Instant::now()) {
                        ctx.encoder.request_keyframe();
                    }
                }
                Some(PeerEvent::RemoteVideo(_)) => {}
                Some(PeerEvent::RemoteAudio(remote)) => {
                    // Talkback: played only while this session holds the floor.
                    if let Some(talk) = ctx.control.talk() {
                        tracker.spawn(talk_reader(remote, talk.clone(), id.generation, children.child_token()));
                    }
                }
                None => break EndReason::Closed,
            },
        }
    };
    // Tell the viewer, since closing a peer connection sends nothing on the
    // wire: on this session's own channels whenever the camera ends it, and
    // on `P/bye/{id}` unless the client's own new offer replaced it (that
    // topic is the new session's too, and a bye there would end it).
    if reason != EndReason::Bye {
        let said = async {
            for ch in &channels {
                if ch.send_text(&bye_event(reason.as_str())).await.is_ok() {
                    ch.flush(BYE_FLUSH).await;
                }
            }
        };
        let _ = tokio::time::timeout(BYE_FLUSH, said).await;
    }
    if !matches!(reason, EndReason::Bye | EndReason::Replaced) {
        door.send(&id.client, Outgoing::Bye(reason.as_str().to_string()));
    }
    drop(demand);
    drop(rate);
    reason
}

/// Copies the hub's audio packets into the audio track.
async fn audio_pump(mut sub: Subscription, audio: AudioSender, stop: CancellationToken) {
    let epoch = sub.hub().epoch();
    loop {
        let packet = tokio::select! {
            _ = stop.cancelled() => break,
            p = sub.recv() => match p {
                Some(p) if p.track == TrackId::AUDIO => p,
                Some(_) => continue,
                None => break,
            },
        };
        let sent = tokio::select! {
            _ = stop.cancelled() => break,
            r = audio.send(packet.data, crate::audio::FRAME, epoch + packet.pts) => r,
        };
        if sent.is_err() {
            break;
        }
    }
}

/// Hands a viewer's talkback packets to the speaker (which keeps those of
/// the floor holder only).
async fn talk_reader(
    mut remote: RemoteAudio,
    talk: Arc<crate::audio::Talkback>,
    key: u64,
    stop: CancellationToken,
) {
    loop {
        let packet = tokio::select! {
            _ = stop.cancelled() => break,
            p = remote.next_packet() => match p {
                Some(p) => p,
                None => break,
            },
        };
        talk.push(key, packet.seq, packet.payload);
    }
}

fn bye_event(reason: &str) -> String {
    let mut m = serde_json::Map::new();
    m.insert("reason".into(), reason.into());
    crate::control::protocol::event("bye", m)
}

/// Answers the viewer's ICE restart on the live connection: same DTLS,
/// video and channels, new ICE credentials and candidates. A refused
/// restart leaves the session as it was.
async fn restart_ice(
    ctx: &SessionContext,
    door: &dyn Door,
    spec: &Spec,
    peer: &Peer,
    sdp: &str,
    fingerprint: &str,
) {
    let id = &spec.id;
    if !fingerprint.eq_ignore_ascii_case(&spec.fingerprint) {
        return signal_error(
            door,
            id,
            ErrorCode::BadSdp,
            "an ICE restart keeps the session's DTLS certificate; this offer names another \
             a=fingerprint (send a new offer without \"restart\" instead)",
        );
    }
    match peer.answer_restart(sdp).await {
        Ok(answer) => {
            ctx.links.note_ice_restart();
            tracing::info!(client = %id.client, "ICE restarted by the viewer");
            door.send(
                &id.client,
                Outgoing::Answer {
                    sdp: answer,
                    secret: spec.secret.clone(),
                    principal: spec.principal.clone(),
                },
            );
        }
        Err(e) => {
            tracing::info!(client = %id.client, error = %e, "ICE restart refused");
            let code = match e {
                PeerError::BadSdp(_) => ErrorCode::BadSdp,
                _ => ErrorCode::Internal,
            };
            signal_error(door, id, code, format!("ICE restart: {e}"));
        }
    }
}

async fn add_candidate(door: &dyn Door, id: &SessionId, peer: &Peer, c: &IceCandidate) {
    if let Err(e) = peer.add_remote_candidate(c).await {
        signal_error(door, id, ErrorCode::BadCandidate, e.to_string());
    }
}

/// Copies the hub's video packets into the video track until cancelled or
/// the track fails; keyframes only while congestion control says so.
async fn pump(
    mut sub: Subscription,
    video: VideoSender,
    first_duration: Duration,
    mut keyframes_only: watch::Receiver<bool>,
    sent: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let epoch = sub.hub().epoch();
    let mut last_pts: Option<Duration> = None;
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break,
            Ok(()) = keyframes_only.changed() => {
                sub.set_keyframes_only(*keyframes_only.borrow_and_update());
                continue;
            }
            f = sub.recv() => match f {
                Some(f) if f.track == TrackId::VIDEO => f,
                // Another track's packet (none exist yet) is not for the video track.
                Some(_) => continue,
                None => break,
            },
        };
        // The RTP timestamp advances by each frame's real duration.
        let duration = last_pts.map_or(first_duration, |p| frame.pts.saturating_sub(p));
        last_pts = Some(frame.pts);
        sent.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            r = video.send(frame.data, duration, epoch + frame.pts) => r,
        };
        if result.is_err() {
            break;
        }
    }
}

/// Serves one DataChannel: control commands and GPIO events on `control`;
/// other channels are ignored.
async fn serve_channel(
    ctx: Arc<SessionContext>,
    ch: Arc<Channel>,
    mut session: ControlSession,
    mut gpio_events: Option<broadcast::Receiver<GpioEvent>>,
    mut notices: Option<broadcast::Receiver<crate::control::Notice>>,
    stop: CancellationToken,
) {
    if ch.label() != CHANNEL_LABEL {
        // Drain it so the stack does not hold its messages for us.
        while tokio::select! { _ = stop.cancelled() => None, ev = ch.recv() => ev }.is_some() {}
        return;
    }
    let closed = loop {
        let gpio_event = async {
            match gpio_events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let notice = async {
            match notices.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break false,
            n = notice => match n {
                Ok(n) => {
                    if ch.send_text(&protocol::event(n.name, n.fields)).await.is_err() {
                        break true;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "control channel fell behind on notices");
                }
                Err(broadcast::error::RecvError::Closed) => notices = None,
            },
            ev = gpio_event => match ev {
                Ok(e) => {
                    if ch.send_text(&protocol::event("gpio.changed", e.fields())).await.is_err() {
                        break true;
                    }
                }
                // A slow channel misses some changes; the next ones still arrive.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "control channel fell behind on GPIO events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => gpio_events = None,
            },
            ev = ch.recv() => match ev {
                Some(ChannelEvent::Text(text)) => {
                    let reply = ctx.control.handle(&mut session, &text).await;
                    if ch.send_text(&reply).await.is_err() {
                        break true;
                    }
                }
                Some(ChannelEvent::Binary(len)) => {
                    let e = protocol::ControlError::new(
                        protocol::ControlCode::BadJson,
                        format!("binary message of {len} bytes; commands are JSON text"),
                    );
                    if ch.send_text(&protocol::error_reply(&serde_json::Value::Null, &e)).await.is_err() {
                        break true;
                    }
                }
                Some(ChannelEvent::Closed) | None => break true,
                Some(ChannelEvent::Open) => {}
            },
        }
    };
    // The channel closed (or a reply could not be sent on it): the viewer
    // can no longer control through it, so pins it was the last to drive go
    // to their failsafes now, not when its connection (perhaps still
    // watching) ends.
    if closed && let Some(g) = ctx.control.gpio() {
        g.session_ended(session.key());
    }
}
