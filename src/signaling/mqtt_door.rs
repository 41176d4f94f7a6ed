//! The MQTT door: turns the viewer topics' JSON (`P/offer|ice|bye/{id}`)
//! into the session core's [`Request`]s, and the core's replies into
//! `P/answer|ice|error|bye/{id}` publishes.

use super::messages::{self, ErrorCode, SignalError};
use super::mqtt::{Inbound, Publisher, ToClient};
use super::topics::{ClientId, Kind};
use crate::session::signal::{Credential, Door, InEvent, OfferIn, Outgoing, Request};
use crate::throttle::LogBudget;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Error replies are not sent while this many publishes await the broker's
/// acknowledgement: a flood of bad messages must not fill the link that
/// answers go out on (answers are always sent).
pub const ERROR_REPLY_BACKLOG: u64 = 64;

/// Replies to MQTT viewers, on their topics.
pub struct MqttDoor {
    publisher: Publisher,
}

impl MqttDoor {
    /// A door publishing through `publisher`.
    pub fn new(publisher: Publisher) -> Self {
        Self { publisher }
    }
}

impl Door for MqttDoor {
    fn send(&self, client: &ClientId, out: Outgoing) {
        let (kind, payload) = match out {
            Outgoing::Answer { sdp, secret, .. } => {
                (ToClient::Answer, messages::answer_json(&sdp, &secret))
            }
            Outgoing::Candidate(c) => (ToClient::Ice, messages::candidate_json(&c)),
            Outgoing::Bye(reason) => (ToClient::Bye, messages::bye_json(&reason)),
            Outgoing::Error(e) => {
                if self.publisher.backlog() >= ERROR_REPLY_BACKLOG {
                    // Counted, and said at most every 10 s.
                    static UNSENT: LogBudget = LogBudget::new(1, Duration::from_secs(10));
                    if let Some(suppressed) = UNSENT.check() {
                        tracing::warn!(
                            more_since_last = suppressed,
                            "a flood of bad signaling messages: error replies are not sent while the broker link is busy"
                        );
                    }
                    return;
                }
                (ToClient::Error, messages::error_json(&e))
            }
        };
        self.publisher.to_client(kind, client, payload);
    }

    fn name(&self) -> &'static str {
        "mqtt"
    }
}

/// Client ids of this prefix are WHEP sessions' ([`super::whep`]): an MQTT
/// viewer may not take one (and trickle into another's session).
pub const WHEP_PREFIX: &str = "whep-";

/// Reads one viewer message: its client id, its size, then its JSON.
pub fn read(msg: &Inbound, max_payload: usize) -> Result<InEvent, SignalError> {
    if msg.client.as_str().starts_with(WHEP_PREFIX) {
        return Err(SignalError::new(
            ErrorCode::BadMessage,
            format!("client ids starting with {WHEP_PREFIX} are WHEP sessions'; pick another"),
        ));
    }
    if msg.payload.len() > max_payload {
        let e = SignalError::new(
            ErrorCode::TooLarge,
            format!(
                "the message is {} bytes; the limit is {max_payload}",
                msg.payload.len()
            ),
        );
        return match msg.kind {
            // A refused offer, like any other.
            Kind::Offer => Ok(InEvent::BadOffer(e)),
            _ => Err(e),
        };
    }
    Ok(match msg.kind {
        Kind::Offer => match messages::parse_offer(&msg.payload) {
            Ok(o) => InEvent::Offer(OfferIn {
                sdp: o.sdp,
                credential: if o.bearer_token {
                    Credential::Exposed
                } else {
                    Credential::Proof(o.auth)
                },
                session: o.session,
                restart: o.restart,
            }),
            Err(e) => InEvent::BadOffer(e),
        },
        Kind::Ice => InEvent::Candidate(messages::parse_candidate(&msg.payload)?),
        Kind::Bye => InEvent::Bye(messages::parse_bye(&msg.payload)?),
    })
}

/// Forwards the viewer topics' messages to the session core until
/// `shutdown`; unreadable ones are answered on `P/error/{id}` here.
pub async fn run(
    mut inbound: mpsc::Receiver<Inbound>,
    door: Arc<MqttDoor>,
    max_payload: usize,
    requests: mpsc::Sender<Request>,
    shutdown: CancellationToken,
) {
    let door_dyn: Arc<dyn Door> = door.clone();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = inbound.recv() => match m { Some(m) => m, None => break },
        };
        match read(&msg, max_payload) {
            Ok(event) => {
                let req = Request {
                    client: msg.client,
                    door: door_dyn.clone(),
                    event,
                };
                // Back-pressure: the MQTT link's own queue drops (and
                // counts) what the session core cannot take.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    sent = requests.send(req) => if sent.is_err() { break },
                }
            }
            Err(e) => {
                tracing::debug!(client = %msg.client, code = e.code.as_str(), message = %e.message, "signaling message rejected");
                door.send(&msg.client, Outgoing::Error(e));
            }
        }
    }
}
