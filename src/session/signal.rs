//! The session core's signaling vocabulary, the same for every door: what a
//! viewer asks (offer, candidate, bye) and what the agent says back
//! (answer, candidate, error, bye). An adapter (MQTT, WHEP) turns its wire
//! format into [`Request`]s and implements [`Door`] to carry the replies.

use crate::auth::Proof;
use crate::signaling::messages::{IceCandidate, SignalError};
use crate::signaling::topics::ClientId;
use std::sync::Arc;

/// How an offer shows it may watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A proof of holding a token, bound to the client id and the offer's
    /// DTLS fingerprint (MQTT: the broker's other clients read the offer).
    Proof(Option<Proof>),
    /// The token itself, on a private channel (WHEP over HTTP(S)).
    Bearer(Option<String>),
    /// A token sent where everyone may read it (a token in an MQTT offer):
    /// always refused.
    Exposed,
    /// Nothing but the live session's secret: good for an ICE restart of
    /// that session only (a WHEP player changing its resource, whose URL
    /// it alone was given), with the session's own principal.
    Session,
}

/// An offer, whatever door it came through.
#[derive(Debug, Clone)]
pub struct OfferIn {
    /// The SDP.
    pub sdp: String,
    /// What vouches for the viewer.
    pub credential: Credential,
    /// The secret of the client's live session, to replace or restart it.
    pub session: Option<String>,
    /// An ICE restart of the live session named by `session`.
    pub restart: bool,
}

/// What a viewer asks.
#[derive(Debug, Clone)]
pub enum InEvent {
    /// A new session, a replacement or an ICE restart.
    Offer(OfferIn),
    /// An offer the adapter could not read: refused, and counted against
    /// the client like any refused offer.
    BadOffer(SignalError),
    /// A remote ICE candidate.
    Candidate(IceCandidate),
    /// The viewer ends its session, presenting its secret (if it has one).
    Bye(Option<String>),
}

/// What the agent says to a viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// The SDP answer and the session's secret.
    Answer {
        /// The answer.
        sdp: String,
        /// The session's secret: a bye, replacement or restart presents it.
        secret: String,
        /// Who made the session, as admission decided (a door that keeps
        /// resources of its own checks later requests against it).
        principal: String,
    },
    /// One of the agent's ICE candidates (empty: gathering is complete).
    Candidate(IceCandidate),
    /// A refusal or failure.
    Error(SignalError),
    /// The agent ended the session, with the reason.
    Bye(String),
}

/// An adapter's way back to its viewers. `send` never blocks: an adapter
/// queues or drops (and counts) what it cannot deliver now.
pub trait Door: Send + Sync {
    /// Delivers `out` to `client`.
    fn send(&self, client: &ClientId, out: Outgoing);
    /// The door's name in logs.
    fn name(&self) -> &'static str;
}

/// One viewer message into the session core.
#[derive(Clone)]
pub struct Request {
    /// The viewer (adapters keep their client ids apart).
    pub client: ClientId,
    /// Where the replies go.
    pub door: Arc<dyn Door>,
    /// What it asks.
    pub event: InEvent,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("client", &self.client)
            .field("door", &self.door.name())
            .field("event", &self.event)
            .finish()
    }
}
