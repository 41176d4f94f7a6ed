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
/// Client ids whose recent offers are remembered; beyond it new ids are refused.
const OFFER_LOG_CLIENTS: usize = 4096;

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
    /// Offers accepted from one client id per minute.
    pub offers_per_minute: usize,
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
}

/// A new session, as decided by [`SessionTable::offer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The new session.
    pub id: SessionId,
    /// The client's previous session, to end.
    pub replaces: Option<SessionId>,
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
    offer_log: BTreeMap<ClientId, VecDeque<Instant>>,
    next_generation: u64,
}

impl SessionTable {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: BTreeMap::new(),
            early: BTreeMap::new(),
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

    /// Every current session.
    pub fn all(&self) -> Vec<SessionId> {
        self.sessions.iter().map(|(c, e)| Self::id(c, e)).collect()
    }

    /// Counts an offer attempt against the client's per-minute budget (before
    /// anything else is looked at, so token guessing is throttled too).
    pub fn note_offer(&mut self, client: &ClientId, now: Instant) -> Result<(), SignalError> {
        self.expire_offer_log(now);
        if !self.offer_log.contains_key(client) && self.offer_log.len() >= OFFER_LOG_CLIENTS {
            return Err(SignalError::new(
                ErrorCode::RateLimited,
                "too many client ids are sending offers; try again in a minute",
            ));
        }
        let log = self.offer_log.entry(client.clone()).or_default();
        if log.len() >= self.limits.offers_per_minute {
            return Err(SignalError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} offers from this client id in a minute",
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

    /// An offer arrived. A client's new offer replaces its old session and
    /// does not count against the limits; otherwise the limits apply.
    pub fn offer(&mut self, client: &ClientId, now: Instant) -> Result<Accepted, SignalError> {
        let existing = self
            .sessions
            .get(client)
            .map(|e| (Self::id(client, e), e.phase));
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
        let negotiating = self.counts().negotiating
            - usize::from(matches!(existing, Some((_, Phase::Negotiating { .. }))));
        if negotiating >= self.limits.max_negotiating {
            return Err(SignalError::new(
                ErrorCode::Busy,
                format!("{negotiating} viewers are connecting; try again shortly"),
            ));
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.sessions.insert(
            client.clone(),
            Entry {
                generation,
                phase: Phase::Negotiating { since: now },
            },
        );
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
        if let Some(e) = self.sessions.get(client) {
            return Ok(Some(Self::id(client, e)));
        }
        self.expire_early(now);
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

    /// The viewer said bye: the session to end.
    pub fn bye(&mut self, client: &ClientId) -> Result<SessionId, SignalError> {
        self.early.remove(client);
        let e = self.sessions.remove(client).ok_or_else(|| {
            SignalError::new(ErrorCode::UnknownSession, "no session for this client id")
        })?;
        Ok(Self::id(client, &e))
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
        self.offer_log.clear();
        all
    }

    fn expire_early(&mut self, now: Instant) {
        let ttl = self.limits.early_ice_ttl;
        self.early
            .retain(|_, (since, _)| now.saturating_duration_since(*since) < ttl);
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
        t.offer(&cid("a"), now).expect("first");
        t.offer(&cid("b"), now).expect("second");
        let e = t.offer(&cid("c"), now).expect_err("third");
        assert_eq!(e.code, ErrorCode::MaxViewers);
        let again = t.offer(&cid("a"), now).expect("a re-offers");
        assert_eq!(again.replaces.map(|r| r.generation), Some(1));
        assert_eq!(t.counts().sessions, 2);
    }

    #[test]
    fn negotiating_sessions_are_limited_separately() {
        let mut t = SessionTable::new(Limits {
            max_viewers: 8,
            max_negotiating: 1,
            ..Limits::default()
        });
        let now = Instant::now();
        let a = t.offer(&cid("a"), now).expect("first");
        assert_eq!(
            t.offer(&cid("b"), now).expect_err("busy").code,
            ErrorCode::Busy
        );
        t.link(&a.id, LinkState::Connected, now);
        t.offer(&cid("b"), now).expect("a connected: room again");
    }

    #[test]
    fn early_candidates_wait_for_the_offer_and_are_bounded() {
        let (mut t, now) = table(8);
        assert_eq!(t.candidate(&cid("a"), cand(1), now), Ok(None));
        assert_eq!(t.candidate(&cid("a"), cand(2), now), Ok(None));
        let acc = t.offer(&cid("a"), now).expect("offer");
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
        let a = t.offer(&cid("a"), t0).expect("a").id;
        let b = t.offer(&cid("b"), t0).expect("b").id;
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
        let old = t.offer(&cid("a"), now).expect("a").id;
        let new = t.offer(&cid("a"), now).expect("a again").id;
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
    fn bye_ends_known_sessions_only() {
        let (mut t, now) = table(8);
        assert_eq!(
            t.bye(&cid("a")).expect_err("unknown").code,
            ErrorCode::UnknownSession
        );
        let a = t.offer(&cid("a"), now).expect("a").id;
        assert_eq!(t.bye(&cid("a")), Ok(a));
        assert_eq!(t.counts().sessions, 0);
    }

    #[test]
    fn offers_per_client_are_limited_per_minute() {
        let now = Instant::now();
        let mut t = SessionTable::new(Limits {
            offers_per_minute: 3,
            ..Limits::default()
        });
        for i in 0..3 {
            t.note_offer(&cid("a"), now + Duration::from_secs(i))
                .expect("within budget");
        }
        let e = t
            .note_offer(&cid("a"), now + Duration::from_secs(10))
            .expect_err("fourth in a minute");
        assert_eq!(e.code, ErrorCode::RateLimited);
        // Other clients have their own budget.
        t.note_offer(&cid("b"), now + Duration::from_secs(10))
            .expect("b is within budget");
        // The window slides: a minute after the first offer, one more fits.
        t.note_offer(&cid("a"), now + Duration::from_secs(60))
            .expect("the first offer left the window");
        assert!(
            t.note_offer(&cid("a"), now + Duration::from_secs(60))
                .is_err()
        );
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
