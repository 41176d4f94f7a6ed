//! Viewer sessions, whatever door a viewer came by. The manager task owns
//! the [`table::SessionTable`] (the pure rules), takes [`signal::Request`]s
//! from the signaling adapters (MQTT, WHEP), decides on each offer with the
//! one pure [`admission::admit`], and starts and ends one task per session
//! ([`viewer`]), which answers through its adapter's [`signal::Door`].
//! Every end goes through one path that closes the peer connection and
//! frees its hub subscription and tasks.

pub mod admission;
pub mod signal;
pub mod table;
pub mod viewer;

use crate::control::Controller;
use crate::media::encode::EncoderControl;
use crate::media::hub::Hub;
use crate::peer::PeerOptions;
use crate::signaling::messages::{self, ErrorCode, SignalError};
use crate::signaling::topics::ClientId;
use crate::throttle::LogBudget;
use admission::{AdmitKind, Now};
use signal::{Door, InEvent, OfferIn, Outgoing, Request};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::{Counts, EndReason, LinkState, SessionId, SessionTable};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(250);
/// How long shutdown waits for sessions to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Shared by every session.
pub struct SessionContext {
    /// The encoded stream.
    pub hub: Arc<Hub>,
    /// Keyframe requests (a viewer's PLI) to the encoder.
    pub encoder: Arc<EncoderControl>,
    /// WebRTC options.
    pub peer: PeerOptions,
    /// DataChannel commands.
    pub control: Arc<Controller>,
    /// Nominal frame duration, for the first frame's RTP timestamp step.
    pub frame_duration: Duration,
    /// Who may watch and control.
    pub auth: crate::auth::Authorizer,
    /// Test-only fault injection.
    pub faults: Faults,
    /// Each connected viewer's link figures, for `/metrics`.
    pub links: Arc<crate::metrics::ViewerLinks>,
    /// Congestion control: each video session feeds its viewer's reports.
    pub rate: Arc<crate::media::rate::RateControl>,
}

/// Faults a test can inject to prove isolation (never set in production).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// A session of this client id panics once connected.
    pub panic_client: Option<String>,
}

/// Messages from session tasks to the manager.
#[derive(Debug)]
pub enum SessionEvent {
    /// The connection state changed.
    Link(SessionId, LinkState),
    /// The task finished (for whatever reason).
    Ended(SessionId, EndReason),
}

/// Commands from the manager to a session task.
#[derive(Debug)]
pub enum SessionCommand {
    /// A remote ICE candidate.
    Candidate(messages::IceCandidate),
    /// The viewer restarts ICE: its new offer, and the DTLS fingerprint it
    /// names (which must be the session's).
    Restart {
        /// The restart's offer.
        sdp: String,
        /// The offer's `a=fingerprint` value.
        fingerprint: String,
    },
    /// End the session.
    End(EndReason),
}

struct Handle {
    commands: mpsc::UnboundedSender<SessionCommand>,
    /// The door the session's viewer came by: its replies go back there.
    door: Arc<dyn Door>,
}

/// Runs the manager until `shutdown`; then ends every session and waits
/// (briefly) for their goodbyes.
pub async fn run(
    ctx: Arc<SessionContext>,
    limits: table::Limits,
    mut requests: mpsc::Receiver<Request>,
    counts: watch::Sender<Counts>,
    tracker: TaskTracker,
    heartbeat: Arc<crate::systemd::Heartbeat>,
    shutdown: CancellationToken,
) {
    let mut table = SessionTable::new(limits);
    let mut replay = crate::auth::ReplayCache::new(REPLAY_CACHE);
    let mut handles: BTreeMap<SessionId, Handle> = BTreeMap::new();
    let (events_tx, mut events) = mpsc::unbounded_channel::<SessionEvent>();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(req) = requests.recv() => {
                handle_request(&ctx, &mut table, &mut replay, &mut handles, &events_tx, &tracker, req);
            }
            Some(ev) = events.recv() => match ev {
                SessionEvent::Link(id, state) => {
                    if let Some(reason) = table.link(&id, state, Instant::now()) {
                        end(&mut handles, &id, reason);
                    }
                }
                SessionEvent::Ended(id, reason) => {
                    table.remove(&id);
                    handles.remove(&id);
                    tracing::info!(client = %id.client, reason = reason.as_str(), detail = ?reason, "session ended");
                    if handles.is_empty() {
                        give_back_memory();
                    }
                }
            },
            _ = tick.tick() => {
                heartbeat.beat();
                for (id, reason) in table.tick(Instant::now()) {
                    if reason == EndReason::NegotiationTimeout
                        && let Some(h) = handles.get(&id)
                    {
                        let e = SignalError::new(ErrorCode::Timeout, "not connected in time; send a new offer");
                        h.door.send(&id.client, Outgoing::Error(e));
                    }
                    end(&mut handles, &id, reason);
                }
            }
        }
        let _ = counts.send_if_modified(|c| {
            let new = Counts {
                tasks: handles.len(),
                ..table.counts()
            };
            let changed = *c != new;
            *c = new;
            changed
        });
    }
    for id in table.drain() {
        end(&mut handles, &id, EndReason::Shutdown);
    }
    // Sessions report back as they finish; give them a moment to say bye.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !handles.is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(SessionEvent::Ended(id, _))) => {
                handles.remove(&id);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let _ = counts.send(Counts::default());
}

/// Returns the memory freed by the sessions that just ended to the OS.
/// glibc keeps freed pages in its arenas (a connection's buffers are spread
/// over the runtime's threads), so a camera that served many viewers would
/// otherwise stay at its peak size while idle: measured +9-12 MB after 300
/// viewers, against +1.8 MB once trimmed.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only releases free memory; it is thread-safe.
        unsafe { libc::malloc_trim(0) };
    });
}

/// Wall-clock milliseconds, for token expiry and proof times (Unix time).
fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Proofs remembered against replay (each could be replayed only within
/// the proof window).
const REPLAY_CACHE: usize = 4096;

/// A new session's secret: 128 random bits, base64url.
fn session_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    // The OS generator does not fail on Linux once booted; an error would
    // leave zeros, so it is logged.
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no randomness for a session secret");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn end(handles: &mut BTreeMap<SessionId, Handle>, id: &SessionId, reason: EndReason) {
    if let Some(h) = handles.get(id) {
        let _ = h.commands.send(SessionCommand::End(reason));
    }
}

fn reply_error(door: &dyn Door, client: &ClientId, e: SignalError) {
    tracing::debug!(client = %client, door = door.name(), code = e.code.as_str(), message = %e.message, "signaling message rejected");
    door.send(client, Outgoing::Error(e));
}

/// Logs a refused offer, a flood of them a few times with a count.
fn log_refusal(client: &ClientId, door: &dyn Door, e: &SignalError) {
    static REFUSALS: LogBudget = LogBudget::new(10, Duration::from_secs(10));
    if let Some(suppressed) = REFUSALS.check() {
        tracing::info!(client = %client, door = door.name(), reason = %e.message, suppressed, "offer refused: unauthorized");
    }
}

#[allow(clippy::too_many_arguments)] // the manager's state, lent for one message
fn handle_request(
    ctx: &Arc<SessionContext>,
    table: &mut SessionTable,
    replay: &mut crate::auth::ReplayCache,
    handles: &mut BTreeMap<SessionId, Handle>,
    events: &mpsc::UnboundedSender<SessionEvent>,
    tracker: &TaskTracker,
    req: Request,
) {
    let Request {
        client,
        door,
        event,
    } = req;
    let now = Instant::now();
    match event {
        InEvent::Offer(o) => {
            if let Err(e) = offer(
                ctx, table, replay, handles, events, tracker, &client, &door, o, now,
            ) {
                if e.code == ErrorCode::Unauthorized {
                    log_refusal(&client, door.as_ref(), &e);
                }
                reply_error(door.as_ref(), &client, e);
            }
        }
        InEvent::BadOffer(e) => {
            table.refused(&client, now);
            reply_error(door.as_ref(), &client, e);
        }
        InEvent::Candidate(c) => match table.candidate(&client, c.clone(), now) {
            Ok(Some(id)) => {
                if let Some(h) = handles.get(&id) {
                    let _ = h.commands.send(SessionCommand::Candidate(c));
                }
            }
            Ok(None) => {}
            Err(e) => reply_error(door.as_ref(), &client, e),
        },
        InEvent::Bye(presented) => match table.bye(&client, presented.as_deref()) {
            Ok(id) => end(handles, &id, EndReason::Bye),
            Err(e) => reply_error(door.as_ref(), &client, e),
        },
    }
}

/// Takes an offer: [`admission::admit`] decides, then the session is
/// started (or restarted) and those it replaces or evicts are ended.
#[allow(clippy::too_many_arguments)] // the manager's state, lent for one offer
fn offer(
    ctx: &Arc<SessionContext>,
    table: &mut SessionTable,
    replay: &mut crate::auth::ReplayCache,
    handles: &mut BTreeMap<SessionId, Handle>,
    events: &mpsc::UnboundedSender<SessionEvent>,
    tracker: &TaskTracker,
    client: &ClientId,
    door: &Arc<dyn Door>,
    offer: OfferIn,
    now: Instant,
) -> Result<(), SignalError> {
    let clocks = Now {
        instant: now,
        unix_ms: unix_now_ms(),
    };
    let admitted = admission::admit(
        &ctx.auth,
        replay,
        table,
        client,
        &offer,
        session_secret(),
        clocks,
    )?;
    let (accepted, secret) = match admitted.kind {
        AdmitKind::Restart(id) => {
            if let Some(h) = handles.get(&id) {
                let _ = h.commands.send(SessionCommand::Restart {
                    sdp: offer.sdp,
                    fingerprint: admitted.fingerprint,
                });
            }
            return Ok(());
        }
        AdmitKind::New { accepted, secret } => (accepted, secret),
    };
    if let Some(old) = &accepted.replaces {
        end(handles, old, EndReason::Replaced);
    }
    if let Some(evicted) = &accepted.evicts {
        static EVICTIONS: LogBudget = LogBudget::new(5, Duration::from_secs(60));
        if let Some(suppressed) = EVICTIONS.check() {
            tracing::info!(client = %evicted.client, suppressed, "negotiation slot taken back for another viewer");
        }
        end(handles, evicted, EndReason::NegotiationTimeout);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    for c in accepted.early_candidates {
        let _ = tx.send(SessionCommand::Candidate(c));
    }
    handles.insert(
        accepted.id.clone(),
        Handle {
            commands: tx,
            door: door.clone(),
        },
    );
    let summary = &admitted.summary;
    tracing::info!(client = %client, door = door.name(), video = summary.wants_video, audio = summary.audio_recv, talk = summary.audio_send, data = summary.has_data_channel, role = admitted.grant.role.as_str(), "offer accepted");
    let spec = viewer::Spec {
        id: accepted.id,
        offer_sdp: offer.sdp,
        video: summary.wants_video,
        audio: summary.audio_recv,
        role: admitted.grant.role,
        principal: admitted.grant.principal,
        secret,
        fingerprint: admitted.fingerprint,
        door: door.clone(),
    };
    tracker.spawn(viewer::run(ctx.clone(), spec, rx, events.clone()));
    Ok(())
}
