//! Which viewer sessions exist and when they must end, as a pure state
//! machine: fed offers, candidates, byes, connection states and time; it
//! answers with verdicts and the sessions to end. Limits (viewers, sessions
//! negotiating, early ICE) and timeouts (negotiation, disconnection) live
//! here, so they are unit-tested without sockets.

use crate::signaling::messages::{ErrorCode, IceCandidate, SignalError};
use crate::signaling::topics::ClientId;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The window `offers_per_minute` counts in.
const OFFER_WINDOW: Duration = Duration::from_secs(60);
/// Principals whose recent offers are remembered; past it the one quiet
/// longest is forgotten (never a reason to refuse someone new).
const OFFER_LOG_PRINCIPALS: usize = 4096;
/// Candidates a viewer may trickle into one session; more are refused.
pub const MAX_SESSION_CANDIDATES: usize = 64;
/// How long the candidates of a refused offer are dropped.
const REFUSED_FOR: Duration = Duration::from_secs(10);
/// A negotiating session at least this old may be ended to make room for
/// another principal's offer when every negotiation slot is taken.
pub const EVICT_AFTER: Duration = Duration::from_secs(3);

/// Limits and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most sessions at once (negotiating or connected).
    pub max_viewers: usize,
    /// Most sessions negotiating at once.
    pub max_negotiating: usize,
    /// A session not connected this long after its offer ends.
    pub negotiation_timeout: Duration,
    /// A session disconnected this long ends.
    pub disconnected_timeout: Duration,
    /// Candidates remembered per client before its offer.
    pub early_ice_per_client: usize,
    /// Clients with candidates remembered before their offers.
    pub early_ice_clients: usize,
    /// How long early candidates are kept waiting for an offer.
    pub early_ice_ttl: Duration,
    /// Offers accepted from one principal per minute.
    pub offers_per_minute: usize,
    /// Sessions one principal may have negotiating at once.
    pub max_negotiating_per_principal: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_viewers: 8,
            max_negotiating: 8,
            negotiation_timeout: Duration::from_secs(30),
            disconnected_timeout: Duration::from_secs(10),
            early_ice_per_client: 32,
            early_ice_clients: 64,
            early_ice_ttl: Duration::from_secs(30),
            offers_per_minute: 20,
            max_negotiating_per_principal: 2,
        }
    }
}

/// One session of one client: a new offer from the same client starts a new generation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId {
    /// The viewer.
    pub client: ClientId,
    /// Generation, unique within the agent's lifetime.
    pub generation: u64,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The viewer said bye.
    Bye,
    /// ICE or DTLS failed.
    Failed,
    /// The connection closed (DTLS close).
    Closed,
    /// Disconnected for longer than the limit.
    Disconnected,
    /// Not connected in time after the offer.
    NegotiationTimeout,
    /// The same client sent a new offer.
    Replaced,
    /// The agent is stopping.
    Shutdown,
    /// Setting the session up failed (bad SDP, no codec, …).
    SetupFailed(String),
    /// The session's task crashed.
    Crashed(String),
}

impl EndReason {
    /// Short text for logs and the viewer's bye.
    pub fn as_str(&self) -> &str {
        match self {
            EndReason::Bye => "bye",
            EndReason::Failed => "failed",
            EndReason::Closed => "closed",
            EndReason::Disconnected => "disconnected",
            EndReason::NegotiationTimeout => "timeout",
            EndReason::Replaced => "replaced",
            EndReason::Shutdown => "shutdown",
            EndReason::SetupFailed(_) => "setup_failed",
            EndReason::Crashed(_) => "crashed",
        }
    }
}

/// Connection states the table cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Media flows.
    Connected,
    /// Connectivity lost for now.
    Disconnected,
    /// Failed for good.
    Failed,
    /// Closed.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Negotiating { since: Instant },
    Connected,
    Disconnected { since: Instant },
}

#[derive(Debug, Clone)]
struct Entry {
    generation: u64,
    phase: Phase,
    /// Given in the answer; a bye or a replacing offer must present it.
    secret: String,
    /// Who opened it (token id, or the client id without authentication).
    principal: String,
    /// Candidates trickled into it.
    candidates: usize,
    /// The viewer was told it sent too many candidates.
    told_too_many: bool,
}

/// An offer, as far as the table needs to know it.
#[derive(Debug, Clone)]
pub struct OfferRequest<'a> {
    /// The viewer.
    pub client: &'a ClientId,
    /// Who it is (budgets and negotiation slots are per principal).
    pub principal: &'a str,
    /// The live session's secret, when the offer presents one.
    pub presented: Option<&'a str>,
    /// The new session's secret.
    pub secret: String,
}

/// Compares secrets without an early exit.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A new session, as decided by [`SessionTable::offer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The new session.
    pub id: SessionId,
    /// The client's previous session, to end.
    pub replaces: Option<SessionId>,
    /// A negotiating session of another principal ended to make room.
    pub evicts: Option<SessionId>,
    /// Candidates that arrived before the offer, to apply after it.
    pub early_candidates: Vec<IceCandidate>,
}

/// Counts for status lines and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// All sessions.
    pub sessions: usize,
    /// Of which still negotiating.
    pub negotiating: usize,
    /// Of which connected.
    pub connected: usize,
    /// Clients with early candidates waiting for their offer.
    pub early_clients: usize,
    /// Session tasks still running (set by the manager; a session's
    /// task finishes after it leaves the table).
    pub tasks: usize,
}

/// The sessions and the early-candidate store.
#[derive(Debug)]
pub struct SessionTable {
    limits: Limits,
    sessions: BTreeMap<ClientId, Entry>,
    early: BTreeMap<ClientId, (Instant, Vec<IceCandidate>)>,
    /// Clients whose last offer was refused, and when: the candidates that
    /// offer still trickles are dropped, not kept for the next one.
    refused: BTreeMap<ClientId, Instant>,
    offer_log: BTreeMap<String, VecDeque<Instant>>,
    next_generation: u64,
}

impl SessionTable {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: BTreeMap::new(),
            early: BTreeMap::new(),
            refused: BTreeMap::new(),
            offer_log: BTreeMap::new(),
            next_generation: 1,
        }
    }

    fn id(client: &ClientId, e: &Entry) -> SessionId {
        SessionId {
            client: client.clone(),
            generation: e.generation,
        }
    }

    /// Session counts.
    pub fn counts(&self) -> Counts {
        let negotiating = self
            .sessions
            .values()
            .filter(|e| matches!(e.phase, Phase::Negotiating { .. }))
            .count();
        let connected = self
            .sessions
            .values()
            .filter(|e| matches!(e.phase, Phase::Connected))
            .count();
        Counts {
            sessions: self.sessions.len(),
            negotiating,
            connected,
            early_clients: self.early.len(),
            tasks: 0,
        }
    }

    /// The current session of a client.
    pub fn current(&self, client: &ClientId) -> Option<SessionId> {
        self.sessions.get(client).map(|e| Self::id(client, e))
    }

    /// The principal of `client`'s live session, if `presented` is its
    /// secret (a restart vouched for by the session itself).
    pub fn principal_of(&self, client: &ClientId, presented: &str) -> Option<String> {
        self.sessions
            .get(client)
            .filter(|e| same_secret(presented, &e.secret))
            .map(|e| e.principal.clone())
    }

    /// Every current session.
    pub fn all(&self) -> Vec<SessionId> {
        self.sessions.iter().map(|(c, e)| Self::id(c, e)).collect()
    }

    /// Counts an offer against its principal's per-minute budget (after the
    /// offer was read and its token checked: an unauthenticated flood costs
    /// its senders, not everyone).
    pub fn note_offer(&mut self, principal: &str, now: Instant) -> Result<(), SignalError> {
        self.expire_offer_log(now);
        if !self.offer_log.contains_key(principal) && self.offer_log.len() >= OFFER_LOG_PRINCIPALS {
            // Forget the principal whose last offer is oldest.
            if let Some(quietest) = self
                .offer_log
                .iter()
                .min_by_key(|(_, log)| log.back().copied())
                .map(|(k, _)| k.clone())
            {
                self.offer_log.remove(&quietest);
            }
        }
        let log = self.offer_log.entry(principal.to_string()).or_default();
        if log.len() >= self.limits.offers_per_minute {
            return Err(SignalError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} offers from this viewer in a minute",
                    self.limits.offers_per_minute
                ),
            ));
        }
        log.push_back(now);
        Ok(())
    }

    fn expire_offer_log(&mut self, now: Instant) {
        self.offer_log.retain(|_, log| {
            while log
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= OFFER_WINDOW)
            {
                log.pop_front();
            }
            !log.is_empty()
        });
    }

    /// The client's offer was refused: its early candidates belonged to it,
    /// and those it still trickles are dropped for a while.
    pub fn refused(&mut self, client: &ClientId, now: Instant) {
        self.early.remove(client);
        if self.refused.len() >= self.limits.early_ice_clients {
            // Bounded: the oldest refusal is forgotten first.
            if let Some(oldest) = self
                .refused
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(c, _)| c.clone())
            {
                self.refused.remove(&oldest);
            }
        }
        self.refused.insert(client.clone(), now);
    }

    /// Negotiating sessions per principal.
    fn negotiating_by_principal(&self, except: Option<&ClientId>) -> BTreeMap<&str, usize> {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for (c, e) in &self.sessions {
            if Some(c) != except && matches!(e.phase, Phase::Negotiating { .. }) {
                *by.entry(e.principal.as_str()).or_default() += 1;
            }
        }
        by
    }

    /// An offer arrived. A client's new offer replaces its live session only
    /// when it presents that session's secret (so nobody else can take a
    /// client id over), and does not count against the limits; otherwise
    /// the limits apply. When every negotiation slot is taken, the oldest
    /// negotiating session (at least [`EVICT_AFTER`] old) of the principal
    /// holding the most slots is ended to make room for a principal holding
    /// fewer, so nobody can hold the slots with offers that never connect.
    pub fn offer(&mut self, req: OfferRequest<'_>, now: Instant) -> Result<Accepted, SignalError> {
        let client = req.client;
        let existing = self.sessions.get(client);
        if let Some(e) = existing
            && !req.presented.is_some_and(|p| same_secret(p, &e.secret))
        {
            return Err(SignalError::new(
                ErrorCode::ClientIdInUse,
                "this client id has a live session: send its \"session\" (from the answer) to \
                 replace it, or use another client id",
            ));
        }
        let existing = existing.map(|e| (Self::id(client, e), e.phase));
        let others = self.sessions.len() - usize::from(existing.is_some());
        if others >= self.limits.max_viewers {
            return Err(SignalError::new(
                ErrorCode::MaxViewers,
                format!(
                    "{} viewers already watch; the limit is {}",
                    others, self.limits.max_viewers
                ),
            ));
        }
        let by = self.negotiating_by_principal(Some(client));
        let mine = by.get(req.principal).copied().unwrap_or(0);
        if mine >= self.limits.max_negotiating_per_principal {
            return Err(SignalError::new(
                ErrorCode::Busy,
                format!("{mine} of your sessions are still connecting; wait for them"),
            ));
        }
        let negotiating: usize = by.values().sum();
        let mut evicts = None;
        if negotiating >= self.limits.max_negotiating {
            let victim = self
                .sessions
                .iter()
                .filter(|(c, e)| {
                    *c != client
                        && by.get(e.principal.as_str()).copied().unwrap_or(0) > mine
                        && matches!(e.phase, Phase::Negotiating { since }
                            if now.saturating_duration_since(since) >= EVICT_AFTER)
                })
                .max_by_key(|(_, e)| {
                    let since = match e.phase {
                        Phase::Negotiating { since } => since,
                        _ => now,
                    };
                    // Ties: the earliest offer goes first.
                    (
                        by.get(e.principal.as_str()).copied().unwrap_or(0),
                        now - since,
                        std::cmp::Reverse(e.generation),
                    )
                })
                .map(|(c, _)| c.clone());
            let Some(victim) = victim else {
                return Err(SignalError::new(
                    ErrorCode::Busy,
                    format!("{negotiating} viewers are connecting; try again shortly"),
                ));
            };
            evicts = self.sessions.remove(&victim).map(|e| Self::id(&victim, &e));
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.sessions.insert(
            client.clone(),
            Entry {
                generation,
                phase: Phase::Negotiating { since: now },
                secret: req.secret,
                principal: req.principal.to_string(),
                candidates: 0,
                told_too_many: false,
            },
        );
        self.refused.remove(client);
        let early_candidates = self
            .early
            .remove(client)
            .map(|(_, c)| c)
            .unwrap_or_default();
        Ok(Accepted {
            id: SessionId {
                client: client.clone(),
                generation,
            },
            replaces: existing.map(|(id, _)| id),
            evicts,
            early_candidates,
        })
    }

    /// A candidate from a viewer: the session to give it to, or `None` when
    /// it was kept for an offer yet to come.
    pub fn candidate(
        &mut self,
        client: &ClientId,
        c: IceCandidate,
        now: Instant,
    ) -> Result<Option<SessionId>, SignalError> {
        if let Some(e) = self.sessions.get_mut(client) {
            e.candidates += 1;
            if e.candidates > MAX_SESSION_CANDIDATES {
                // Said once; the rest are dropped without a reply.
                if std::mem::replace(&mut e.told_too_many, true) {
                    return Ok(None);
                }
                return Err(SignalError::new(
                    ErrorCode::TooManyCandidates,
                    format!(
                        "a session takes at most {MAX_SESSION_CANDIDATES} candidates; the rest are ignored"
                    ),
                ));
            }
            return Ok(Some(Self::id(client, e)));
        }
        self.expire_early(now);
        if self.refused.contains_key(client) {
            return Ok(None);
        }
        if !self.early.contains_key(client) && self.early.len() >= self.limits.early_ice_clients {
            return Err(SignalError::new(
                ErrorCode::TooManyCandidates,
                "too many clients sent candidates without an offer",
            ));
        }
        let (_, list) = self
            .early
            .entry(client.clone())
            .or_insert_with(|| (now, Vec::new()));
        if list.len() >= self.limits.early_ice_per_client {
            return Err(SignalError::new(
                ErrorCode::TooManyCandidates,
                format!(
                    "at most {} candidates are kept before the offer",
                    self.limits.early_ice_per_client
                ),
            ));
        }
        list.push(c);
        Ok(None)
    }

    /// The viewer said bye, presenting its session's secret: the session
    /// to end. Without the right secret nothing ends (anyone on the broker
    /// could otherwise end anyone's session).
    pub fn bye(
        &mut self,
        client: &ClientId,
        presented: Option<&str>,
    ) -> Result<SessionId, SignalError> {
        self.early.remove(client);
        let owned = self
            .sessions
            .get(client)
            .is_some_and(|e| presented.is_some_and(|p| same_secret(p, &e.secret)));
        if !owned {
            return Err(SignalError::new(
                ErrorCode::UnknownSession,
                "no session with this secret for this client id (a bye carries the \"session\" of the answer)",
            ));
        }
        let e = self.sessions.remove(client).expect("checked just above");
        Ok(Self::id(client, &e))
    }

    /// The viewer restarts ICE on its live session, presenting the session's
    /// secret (from the answer): the session keeps its generation, video and
    /// channels; a disconnected one gets a fresh `disconnected_timeout` to
    /// reconnect, and its candidate count starts over.
    pub fn restart(
        &mut self,
        client: &ClientId,
        presented: &str,
        now: Instant,
    ) -> Result<SessionId, SignalError> {
        let Some(e) = self
            .sessions
            .get_mut(client)
            .filter(|e| same_secret(presented, &e.secret))
        else {
            return Err(SignalError::new(
                ErrorCode::UnknownSession,
                "no live session with this secret for this client id to restart; send a new \
                 offer without \"restart\"",
            ));
        };
        if matches!(e.phase, Phase::Disconnected { .. }) {
            e.phase = Phase::Disconnected { since: now };
        }
        e.candidates = 0;
        e.told_too_many = false;
        Ok(Self::id(client, e))
    }

    /// A session's connection state changed; returns why it must end, if it must.
    pub fn link(&mut self, id: &SessionId, state: LinkState, now: Instant) -> Option<EndReason> {
        let e = self
            .sessions
            .get_mut(&id.client)
            .filter(|e| e.generation == id.generation)?;
        let end = match state {
            LinkState::Connected => {
                e.phase = Phase::Connected;
                None
            }
            LinkState::Disconnected => {
                // Still negotiating: the negotiation timeout covers it.
                if e.phase == Phase::Connected {
                    e.phase = Phase::Disconnected { since: now };
                }
                None
            }
            LinkState::Failed => Some(EndReason::Failed),
            LinkState::Closed => Some(EndReason::Closed),
        };
        if end.is_some() {
            self.sessions.remove(&id.client);
        }
        end
    }

    /// Sessions whose time ran out (removed from the table), with the reason.
    pub fn tick(&mut self, now: Instant) -> Vec<(SessionId, EndReason)> {
        self.expire_early(now);
        self.expire_offer_log(now);
        let limits = self.limits;
        let due: Vec<(ClientId, EndReason)> = self
            .sessions
            .iter()
            .filter_map(|(c, e)| match e.phase {
                Phase::Negotiating { since }
                    if now.saturating_duration_since(since) >= limits.negotiation_timeout =>
                {
                    Some((c.clone(), EndReason::NegotiationTimeout))
                }
                Phase::Disconnected { since }
                    if now.saturating_duration_since(since) >= limits.disconnected_timeout =>
                {
                    Some((c.clone(), EndReason::Disconnected))
                }
                _ => None,
            })
            .collect();
        due.into_iter()
            .filter_map(|(c, reason)| self.sessions.remove(&c).map(|e| (Self::id(&c, &e), reason)))
            .collect()
    }

    /// Removes a session that ended on its own; false if it was already gone.
    pub fn remove(&mut self, id: &SessionId) -> bool {
        let current = self
            .sessions
            .get(&id.client)
            .is_some_and(|e| e.generation == id.generation);
        if current {
            self.sessions.remove(&id.client);
        }
        current
    }

    /// Removes every session (shutdown).
    pub fn drain(&mut self) -> Vec<SessionId> {
        let all = self.all();
        self.sessions.clear();
        self.early.clear();
        self.refused.clear();
        self.offer_log.clear();
        all
    }

    fn expire_early(&mut self, now: Instant) {
        let ttl = self.limits.early_ice_ttl;
        self.early
            .retain(|_, (since, _)| now.saturating_duration_since(*since) < ttl);
        self.refused
            .retain(|_, at| now.saturating_duration_since(*at) < REFUSED_FOR);
    }
}

/// At most one forced keyframe per interval for one viewer. Pure.
#[derive(Debug, Clone)]
pub struct KeyframeGate {
    interval: Duration,
    last: Option<Instant>,
}

impl KeyframeGate {
    /// A gate letting one request through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether a request at `now` may go to the encoder.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(s: &str) -> ClientId {
        ClientId::parse(s).expect("valid test id")
    }

    fn cand(n: u32) -> IceCandidate {
        IceCandidate {
            candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {n} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        }
    }

    /// An offer from client `id` (its own principal), its secret `s-<id>`.
    fn offer_as(t: &mut SessionTable, id: &str, now: Instant) -> Result<Accepted, SignalError> {
        offer_full(t, id, &format!("client:{id}"), None, now)
    }

    fn offer_full(
        t: &mut SessionTable,
        id: &str,
        principal: &str,
        presented: Option<&str>,
        now: Instant,
    ) -> Result<Accepted, SignalError> {
        t.offer(
            OfferRequest {
                client: &cid(id),
                principal,
                presented,
                secret: format!("s-{id}"),
            },
            now,
        )
    }

    fn table(max_viewers: usize) -> (SessionTable, Instant) {
        (
            SessionTable::new(Limits {
                max_viewers,
                max_negotiating: max_viewers,
                ..Limits::default()
            }),
            Instant::now(),
        )
    }

    #[test]
    fn max_viewers_rejects_new_clients_but_not_renegotiation() {
        let (mut t, now) = table(2);
        offer_as(&mut t, "a", now).expect("first");
        offer_as(&mut t, "b", now).expect("second");
        let e = offer_as(&mut t, "c", now).expect_err("third");
        assert_eq!(e.code, ErrorCode::MaxViewers);
        assert_eq!(
            offer_as(&mut t, "a", now).expect_err("no secret").code,
            ErrorCode::ClientIdInUse
        );
        let again = offer_full(&mut t, "a", "client:a", Some("s-a"), now).expect("a re-offers");
        assert_eq!(again.replaces.map(|r| r.generation), Some(1));
        assert_eq!(t.counts().sessions, 2);
    }

    #[test]
    fn an_ice_restart_keeps_the_session_and_gives_a_disconnected_one_more_time() {
        let (mut t, now) = table(1);
        let a = offer_as(&mut t, "a", now).expect("first");
        t.link(&a.id, LinkState::Connected, now);
        for n in 0..=MAX_SESSION_CANDIDATES as u32 {
            let _ = t.candidate(&cid("a"), cand(n), now);
        }
        t.link(&a.id, LinkState::Disconnected, now);
        // Only its owner restarts it: no secret that fits, no session.
        assert_eq!(
            t.restart(&cid("a"), "s-b", now)
                .expect_err("wrong secret")
                .code,
            ErrorCode::UnknownSession
        );
        assert_eq!(
            t.restart(&cid("b"), "s-b", now)
                .expect_err("no session")
                .code,
            ErrorCode::UnknownSession
        );
        let later = now + Duration::from_secs(8);
        assert_eq!(t.restart(&cid("a"), "s-a", later), Ok(a.id.clone()));
        assert_eq!(t.counts().sessions, 1, "the same session, no new one");
        assert_eq!(
            t.candidate(&cid("a"), cand(1), later),
            Ok(Some(a.id.clone())),
            "the restart's candidates count afresh"
        );
        // 12 s after the cut, but 4 s after the restart: still alive.
        assert!(t.tick(now + Duration::from_secs(12)).is_empty());
        t.link(&a.id, LinkState::Connected, now + Duration::from_secs(13));
        assert!(t.tick(now + Duration::from_secs(60)).is_empty());
        assert_eq!(t.counts().connected, 1);
    }

    #[test]
    fn negotiating_sessions_are_limited_separately() {
        let mut t = SessionTable::new(Limits {
            max_viewers: 8,
            max_negotiating: 1,
            ..Limits::default()
        });
        let now = Instant::now();
        let a = offer_as(&mut t, "a", now).expect("first");
        assert_eq!(
            offer_as(&mut t, "b", now).expect_err("busy").code,
            ErrorCode::Busy
        );
        t.link(&a.id, LinkState::Connected, now);
        offer_as(&mut t, "b", now).expect("a connected: room again");
    }

    #[test]
    fn early_candidates_wait_for_the_offer_and_are_bounded() {
        let (mut t, now) = table(8);
        assert_eq!(t.candidate(&cid("a"), cand(1), now), Ok(None));
        assert_eq!(t.candidate(&cid("a"), cand(2), now), Ok(None));
        let acc = offer_as(&mut t, "a", now).expect("offer");
        assert_eq!(acc.early_candidates, vec![cand(1), cand(2)]);
        assert_eq!(t.candidate(&cid("a"), cand(3), now), Ok(Some(acc.id)));
        for n in 0..32 {
            t.candidate(&cid("x"), cand(n), now)
                .expect("within the cap");
        }
        assert_eq!(
            t.candidate(&cid("x"), cand(99), now)
                .expect_err("over")
                .code,
            ErrorCode::TooManyCandidates
        );
        assert_eq!(t.counts().early_clients, 1);
        t.tick(now + Duration::from_secs(31));
        assert_eq!(
            t.counts().early_clients,
            0,
            "unused early candidates expire"
        );
    }

    #[test]
    fn a_refused_offers_candidates_do_not_pile_up_for_the_next() {
        let (mut t, now) = table(8);
        t.candidate(&cid("a"), cand(1), now).expect("early");
        t.refused(&cid("a"), now);
        assert_eq!(t.counts().early_clients, 0, "its early candidates are gone");
        for n in 0..100 {
            assert_eq!(t.candidate(&cid("a"), cand(n), now), Ok(None), "dropped");
        }
        assert_eq!(t.counts().early_clients, 0);
        let acc = offer_as(&mut t, "a", now).expect("the next offer");
        assert!(acc.early_candidates.is_empty());
        t.bye(&cid("a"), Some("s-a")).expect("bye");
        t.candidate(&cid("a"), cand(1), now)
            .expect("kept again after a new offer");
        assert_eq!(t.counts().early_clients, 1);
    }

    #[test]
    fn early_candidate_clients_are_bounded() {
        let mut t = SessionTable::new(Limits {
            early_ice_clients: 2,
            ..Limits::default()
        });
        let now = Instant::now();
        t.candidate(&cid("a"), cand(1), now).expect("1");
        t.candidate(&cid("b"), cand(1), now).expect("2");
        assert!(t.candidate(&cid("c"), cand(1), now).is_err());
        assert!(
            t.candidate(&cid("a"), cand(2), now).is_ok(),
            "known clients may add more"
        );
    }

    #[test]
    fn negotiation_times_out_and_disconnection_lingers() {
        let (mut t, t0) = table(8);
        let a = offer_as(&mut t, "a", t0).expect("a").id;
        let b = offer_as(&mut t, "b", t0).expect("b").id;
        t.link(&b, LinkState::Connected, t0 + Duration::from_secs(1));
        assert!(t.tick(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(
            t.tick(t0 + Duration::from_secs(30)),
            vec![(a, EndReason::NegotiationTimeout)]
        );
        t.link(&b, LinkState::Disconnected, t0 + Duration::from_secs(40));
        assert!(t.tick(t0 + Duration::from_secs(49)).is_empty());
        t.link(&b, LinkState::Connected, t0 + Duration::from_secs(45));
        assert!(
            t.tick(t0 + Duration::from_secs(60)).is_empty(),
            "came back in time"
        );
        t.link(&b, LinkState::Disconnected, t0 + Duration::from_secs(60));
        assert_eq!(
            t.tick(t0 + Duration::from_secs(70)),
            vec![(b, EndReason::Disconnected)]
        );
        assert_eq!(t.counts(), Counts::default());
    }

    #[test]
    fn failure_closes_and_stale_generations_are_ignored() {
        let (mut t, now) = table(8);
        let old = offer_as(&mut t, "a", now).expect("a").id;
        let new = offer_full(&mut t, "a", "client:a", Some("s-a"), now)
            .expect("a again")
            .id;
        assert_eq!(
            t.link(&old, LinkState::Failed, now),
            None,
            "the old session is gone already"
        );
        assert!(!t.remove(&old));
        assert_eq!(
            t.link(&new, LinkState::Failed, now),
            Some(EndReason::Failed)
        );
        assert_eq!(t.counts().sessions, 0);
    }

    #[test]
    fn bye_ends_known_sessions_only_with_their_secret() {
        let (mut t, now) = table(8);
        assert_eq!(
            t.bye(&cid("a"), Some("s-a")).expect_err("unknown").code,
            ErrorCode::UnknownSession
        );
        let a = offer_as(&mut t, "a", now).expect("a").id;
        for wrong in [None, Some(""), Some("s-b"), Some("s-a ")] {
            assert_eq!(
                t.bye(&cid("a"), wrong).expect_err("not the owner").code,
                ErrorCode::UnknownSession,
                "{wrong:?}"
            );
        }
        assert_eq!(t.counts().sessions, 1, "nobody else ended it");
        assert_eq!(t.bye(&cid("a"), Some("s-a")), Ok(a));
        assert_eq!(t.counts().sessions, 0);
    }

    #[test]
    fn nobody_else_can_take_a_live_client_id_over() {
        let (mut t, now) = table(8);
        let a = offer_full(&mut t, "a", "token-1", None, now).expect("a");
        let e = offer_full(&mut t, "a", "token-2", Some("guess"), now).expect_err("not the owner");
        assert_eq!(e.code, ErrorCode::ClientIdInUse);
        let again = offer_full(&mut t, "a", "token-1", Some("s-a"), now).expect("the owner");
        assert_eq!(again.replaces, Some(a.id));
    }

    #[test]
    fn trickled_candidates_are_capped_per_session_and_said_once() {
        let (mut t, now) = table(8);
        let a = offer_as(&mut t, "a", now).expect("a").id;
        for n in 0..MAX_SESSION_CANDIDATES as u32 {
            assert_eq!(t.candidate(&cid("a"), cand(n), now), Ok(Some(a.clone())));
        }
        let e = t
            .candidate(&cid("a"), cand(999), now)
            .expect_err("over the cap");
        assert_eq!(e.code, ErrorCode::TooManyCandidates);
        assert_eq!(
            t.candidate(&cid("a"), cand(1000), now),
            Ok(None),
            "dropped quietly"
        );
    }

    #[test]
    fn slots_held_by_offers_that_never_connect_are_taken_back() {
        let mut t = SessionTable::new(Limits {
            max_negotiating: 3,
            max_negotiating_per_principal: 2,
            ..Limits::default()
        });
        let t0 = Instant::now();
        // One principal may hold only two slots.
        offer_full(&mut t, "x1", "attacker", None, t0).expect("1");
        offer_full(&mut t, "x2", "attacker", None, t0).expect("2");
        let e = offer_full(&mut t, "x3", "attacker", None, t0).expect_err("per principal");
        assert_eq!(e.code, ErrorCode::Busy);
        offer_full(&mut t, "y1", "other", None, t0).expect("another principal");
        // All slots taken: a fresh slot is not taken back...
        let e = offer_full(&mut t, "z1", "third", None, t0 + Duration::from_secs(1))
            .expect_err("too young to evict");
        assert_eq!(e.code, ErrorCode::Busy);
        // ...but once old enough, the biggest holder's oldest is.
        let later = t0 + EVICT_AFTER;
        let ok = offer_full(&mut t, "z1", "third", None, later).expect("room made");
        assert_eq!(ok.evicts.map(|e| e.client), Some(cid("x1")));
        assert_eq!(t.counts().negotiating, 3);
    }

    #[test]
    fn a_flood_of_new_principals_never_locks_anyone_out() {
        let now = Instant::now();
        let mut t = SessionTable::new(Limits {
            offers_per_minute: 3,
            ..Limits::default()
        });
        for i in 0..(OFFER_LOG_PRINCIPALS + 200) {
            t.note_offer(&format!("flood-{i}"), now)
                .expect("each new one is counted, not refused");
        }
        assert!(t.offer_log.len() <= OFFER_LOG_PRINCIPALS);
        t.note_offer("legit", now).expect("a real viewer gets in");
    }

    #[test]
    fn offers_per_principal_are_limited_per_minute() {
        let now = Instant::now();
        let mut t = SessionTable::new(Limits {
            offers_per_minute: 3,
            ..Limits::default()
        });
        for i in 0..3 {
            t.note_offer("a", now + Duration::from_secs(i))
                .expect("within budget");
        }
        let e = t
            .note_offer("a", now + Duration::from_secs(10))
            .expect_err("fourth in a minute");
        assert_eq!(e.code, ErrorCode::RateLimited);
        // Other principals have their own budget.
        t.note_offer("b", now + Duration::from_secs(10))
            .expect("b is within budget");
        // The window slides: a minute after the first offer, one more fits.
        t.note_offer("a", now + Duration::from_secs(60))
            .expect("the first offer left the window");
        assert!(t.note_offer("a", now + Duration::from_secs(60)).is_err());
        // Forgotten entirely once quiet for a minute.
        t.tick(now + Duration::from_secs(200));
        assert!(t.offer_log.is_empty());
    }

    #[test]
    fn keyframe_gate_allows_one_per_interval() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::new(Duration::from_secs(1));
        assert!(g.allow(t0));
        assert!(!g.allow(t0 + Duration::from_millis(999)));
        assert!(g.allow(t0 + Duration::from_secs(1)));
    }
}
