//! Viewer sessions. The manager task owns the [`table::SessionTable`] (the
//! pure rules), takes viewer messages from signaling, and starts and ends
//! one task per session ([`viewer`]). Every end goes through one path that
//! closes the peer connection and frees its hub subscription and tasks.

pub mod table;
pub mod viewer;

use crate::auth::AuthError;
use crate::control::Controller;
use crate::media::encode::EncoderControl;
use crate::media::hub::Hub;
use crate::peer::PeerOptions;
use crate::peer::sdp::{SdpError, summarize_offer};
use crate::signaling::messages::{self, ErrorCode, SignalError};
use crate::signaling::mqtt::{Inbound, Publisher, ToClient};
use crate::signaling::topics::{ClientId, Kind};
use crate::throttle::LogBudget;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::{Counts, EndReason, LinkState, OfferRequest, SessionId, SessionTable};
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
    /// Signaling output.
    pub publisher: Publisher,
    /// WebRTC options.
    pub peer: PeerOptions,
    /// DataChannel commands.
    pub control: Arc<Controller>,
    /// Nominal frame duration, for the first frame's RTP timestamp step.
    pub frame_duration: Duration,
    /// Who may watch and control.
    pub auth: crate::auth::Authorizer,
    /// Largest signaling payload accepted.
    pub max_payload: usize,
    /// Test-only fault injection.
    pub faults: Faults,
    /// Each connected viewer's link figures, for `/metrics`.
    pub links: Arc<crate::metrics::ViewerLinks>,
    /// Congestion control: each video session feeds its viewer's reports.
    pub rate: Arc<crate::media::rate::RateControl>,
}

/// Error replies are not sent while this many publishes await the broker's
/// acknowledgement: a flood of bad messages must not fill the link that
/// answers go out on (answers are always sent).
pub const ERROR_REPLY_BACKLOG: u64 = 64;

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
}

/// Runs the manager until `shutdown`; then ends every session and waits
/// (briefly) for their goodbyes.
pub async fn run(
    ctx: Arc<SessionContext>,
    limits: table::Limits,
    mut inbound: mpsc::Receiver<Inbound>,
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
            Some(msg) = inbound.recv() => {
                handle_inbound(&ctx, &mut table, &mut replay, &mut handles, &events_tx, &tracker, msg);
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
                    if reason == EndReason::NegotiationTimeout {
                        let e = SignalError::new(ErrorCode::Timeout, "not connected in time; send a new offer");
                        ctx.publisher.to_client(ToClient::Error, &id.client, messages::error_json(&e));
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

/// Candidates an offer may list; more are refused before the WebRTC stack
/// sees them (each one costs connectivity checks).
pub const MAX_OFFER_CANDIDATES: usize = 64;

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

fn reply_error(ctx: &SessionContext, client: &ClientId, e: &SignalError) {
    tracing::debug!(client = %client, code = e.code.as_str(), message = %e.message, "signaling message rejected");
    if ctx.publisher.backlog() < ERROR_REPLY_BACKLOG {
        ctx.publisher
            .to_client(ToClient::Error, client, messages::error_json(e));
        return;
    }
    // Counted, and said at most every 10 s.
    static UNSENT: LogBudget = LogBudget::new(1, Duration::from_secs(10));
    if let Some(suppressed) = UNSENT.check() {
        tracing::warn!(
            more_since_last = suppressed,
            "a flood of bad signaling messages: error replies are not sent while the broker link is busy"
        );
    }
}

/// Logs a refused offer, a flood of them a few times with a count.
fn log_refusal(client: &ClientId, e: &AuthError) {
    static REFUSALS: LogBudget = LogBudget::new(10, Duration::from_secs(10));
    if let Some(suppressed) = REFUSALS.check() {
        tracing::info!(client = %client, reason = %e, suppressed, "offer refused: unauthorized");
    }
}

#[allow(clippy::too_many_arguments)] // the manager's state, lent for one message
fn handle_inbound(
    ctx: &Arc<SessionContext>,
    table: &mut SessionTable,
    replay: &mut crate::auth::ReplayCache,
    handles: &mut BTreeMap<SessionId, Handle>,
    events: &mpsc::UnboundedSender<SessionEvent>,
    tracker: &TaskTracker,
    msg: Inbound,
) {
    let client = msg.client;
    let now = Instant::now();
    if msg.payload.len() > ctx.max_payload {
        let e = SignalError::new(
            ErrorCode::TooLarge,
            format!(
                "the message is {} bytes; the limit is {}",
                msg.payload.len(),
                ctx.max_payload
            ),
        );
        return reply_error(ctx, &client, &e);
    }
    match msg.kind {
        Kind::Offer => {
            if let Err(e) = offer(
                ctx,
                table,
                replay,
                handles,
                events,
                tracker,
                &client,
                &msg.payload,
                now,
            ) {
                table.refused(&client, now);
                reply_error(ctx, &client, &e);
            }
        }
        Kind::Ice => {
            let c = match messages::parse_candidate(&msg.payload) {
                Ok(c) => c,
                Err(e) => return reply_error(ctx, &client, &e),
            };
            match table.candidate(&client, c.clone(), now) {
                Ok(Some(id)) => {
                    if let Some(h) = handles.get(&id) {
                        let _ = h.commands.send(SessionCommand::Candidate(c));
                    }
                }
                Ok(None) => {}
                Err(e) => reply_error(ctx, &client, &e),
            }
        }
        Kind::Bye => {
            let presented = match messages::parse_bye(&msg.payload) {
                Ok(p) => p,
                Err(e) => return reply_error(ctx, &client, &e),
            };
            match table.bye(&client, presented.as_deref()) {
                Ok(id) => end(handles, &id, EndReason::Bye),
                Err(e) => reply_error(ctx, &client, &e),
            }
        }
    }
}

/// Takes an offer: cheap checks first, then the token, then per-principal
/// budgets, so nothing unauthenticated can use up anyone else's budget.
#[allow(clippy::too_many_arguments)] // the manager's state, lent for one offer
fn offer(
    ctx: &Arc<SessionContext>,
    table: &mut SessionTable,
    replay: &mut crate::auth::ReplayCache,
    handles: &mut BTreeMap<SessionId, Handle>,
    events: &mpsc::UnboundedSender<SessionEvent>,
    tracker: &TaskTracker,
    client: &ClientId,
    payload: &[u8],
    now: Instant,
) -> Result<(), SignalError> {
    let offer = messages::parse_offer(payload)?;
    let summary = match summarize_offer(&offer.sdp) {
        Ok(s) => s,
        Err(e @ (SdpError::NotSdp | SdpError::NothingToNegotiate)) => {
            return Err(SignalError::new(ErrorCode::BadSdp, e.to_string()));
        }
    };
    if summary.wants_video && !summary.video_h264 {
        return Err(SignalError::new(
            ErrorCode::NoVideoCodec,
            "the offer's video lists no H.264 with packetization-mode=1 and profile 42e0xx",
        ));
    }
    if summary.candidates > MAX_OFFER_CANDIDATES {
        return Err(SignalError::new(
            ErrorCode::TooManyCandidates,
            format!(
                "the offer lists {} candidates; at most {MAX_OFFER_CANDIDATES} are taken",
                summary.candidates
            ),
        ));
    }
    let Some(fingerprint) = summary.fingerprint.as_deref() else {
        return Err(SignalError::new(
            ErrorCode::BadSdp,
            "the offer has no a=fingerprint (DTLS)",
        ));
    };
    let grant = if offer.bearer_token {
        Err(AuthError::BearerInOffer)
    } else {
        let now_ms = unix_now_ms();
        ctx.auth
            .verify_proof(offer.auth.as_ref(), client.as_str(), fingerprint, now_ms)
            .and_then(|g| match (&offer.auth, ctx.auth.required()) {
                (Some(p), true) => replay.check(p, now_ms).map(|()| g),
                _ => Ok(g),
            })
    };
    let grant = match grant {
        Ok(g) => g,
        Err(e) => {
            log_refusal(client, &e);
            return Err(SignalError::new(ErrorCode::Unauthorized, e.to_string()));
        }
    };
    // Without authentication every viewer is "anonymous": its client
    // id is what tells viewers apart.
    let principal = if ctx.auth.required() {
        grant.principal.clone()
    } else {
        format!("client:{client}")
    };
    table.note_offer(&principal, now)?;
    if offer.restart {
        // The same session goes on over new ICE candidates: no new slot,
        // subscription or secret.
        let presented = offer.session.as_deref().unwrap_or_default();
        let id = table.restart(client, presented, now)?;
        if let Some(h) = handles.get(&id) {
            let _ = h.commands.send(SessionCommand::Restart {
                sdp: offer.sdp,
                fingerprint: fingerprint.to_string(),
            });
        }
        return Ok(());
    }
    let secret = session_secret();
    let accepted = table.offer(
        OfferRequest {
            client,
            principal: &principal,
            presented: offer.session.as_deref(),
            secret: secret.clone(),
        },
        now,
    )?;
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
    handles.insert(accepted.id.clone(), Handle { commands: tx });
    tracing::info!(client = %client, video = summary.wants_video, audio = summary.audio_recv, talk = summary.audio_send, data = summary.has_data_channel, role = grant.role.as_str(), "offer accepted");
    let spec = viewer::Spec {
        id: accepted.id,
        offer_sdp: offer.sdp,
        video: summary.wants_video,
        audio: summary.audio_recv,
        role: grant.role,
        secret,
        fingerprint: fingerprint.to_string(),
    };
    tracker.spawn(viewer::run(ctx.clone(), spec, rx, events.clone()));
    Ok(())
}
