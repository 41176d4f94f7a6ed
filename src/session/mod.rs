//! Viewer sessions. The manager task owns the [`table::SessionTable`] (the
//! pure rules), takes viewer messages from signaling, and starts and ends
//! one task per session ([`viewer`]). Every end goes through one path that
//! closes the peer connection and frees its hub subscription and tasks.

pub mod table;
pub mod viewer;

use crate::control::Controller;
use crate::hub::Hub;
use crate::peer::PeerOptions;
use crate::peer::sdp::{SdpError, summarize_offer};
use crate::signaling::messages::{self, ErrorCode, SignalError};
use crate::signaling::mqtt::{Inbound, Publisher, ToClient};
use crate::signaling::topics::{ClientId, Kind};
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
    let mut handles: BTreeMap<SessionId, Handle> = BTreeMap::new();
    let (events_tx, mut events) = mpsc::unbounded_channel::<SessionEvent>();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(msg) = inbound.recv() => {
                handle_inbound(&ctx, &mut table, &mut handles, &events_tx, &tracker, msg);
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

/// Wall-clock seconds, for token expiry (tokens carry Unix times).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn end(handles: &mut BTreeMap<SessionId, Handle>, id: &SessionId, reason: EndReason) {
    if let Some(h) = handles.get(id) {
        let _ = h.commands.send(SessionCommand::End(reason));
    }
}

fn reply_error(ctx: &SessionContext, client: &ClientId, e: &SignalError) {
    tracing::debug!(client = %client, code = e.code.as_str(), message = %e.message, "signaling message rejected");
    ctx.publisher
        .to_client(ToClient::Error, client, messages::error_json(e));
}

fn handle_inbound(
    ctx: &Arc<SessionContext>,
    table: &mut SessionTable,
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
            if let Err(e) = table.note_offer(&client, now) {
                return reply_error(ctx, &client, &e);
            }
            let offer = match messages::parse_offer(&msg.payload) {
                Ok(o) => o,
                Err(e) => return reply_error(ctx, &client, &e),
            };
            let role = match ctx.auth.authorize(offer.token.as_deref(), unix_now()) {
                Ok(role) => role,
                Err(e) => {
                    tracing::info!(client = %client, reason = %e, "offer refused: unauthorized");
                    return reply_error(
                        ctx,
                        &client,
                        &SignalError::new(ErrorCode::Unauthorized, e.to_string()),
                    );
                }
            };
            let summary = match summarize_offer(&offer.sdp) {
                Ok(s) => s,
                Err(e @ (SdpError::NotSdp | SdpError::NothingToNegotiate)) => {
                    return reply_error(
                        ctx,
                        &client,
                        &SignalError::new(ErrorCode::BadSdp, e.to_string()),
                    );
                }
            };
            if summary.wants_video && !summary.video_h264 {
                return reply_error(
                    ctx,
                    &client,
                    &SignalError::new(
                        ErrorCode::NoVideoCodec,
                        "the offer's video lists no H.264 with packetization-mode=1 and profile 42e0xx",
                    ),
                );
            }
            let accepted = match table.offer(&client, now) {
                Ok(a) => a,
                Err(e) => return reply_error(ctx, &client, &e),
            };
            if let Some(old) = &accepted.replaces {
                end(handles, old, EndReason::Replaced);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            for c in accepted.early_candidates {
                let _ = tx.send(SessionCommand::Candidate(c));
            }
            handles.insert(accepted.id.clone(), Handle { commands: tx });
            tracing::info!(client = %client, video = summary.wants_video, data = summary.has_data_channel, role = role.as_str(), "offer accepted");
            let spec = viewer::Spec {
                id: accepted.id,
                offer_sdp: offer.sdp,
                video: summary.wants_video,
                role,
            };
            tracker.spawn(viewer::run(ctx.clone(), spec, rx, events.clone()));
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
            if let Err(e) = messages::parse_bye(&msg.payload) {
                return reply_error(ctx, &client, &e);
            }
            match table.bye(&client) {
                Ok(id) => end(handles, &id, EndReason::Bye),
                Err(e) => reply_error(ctx, &client, &e),
            }
        }
    }
}
