//! Admission: the one decision every offer goes through, whichever door it
//! came by. Pure: fed the offer, the session table, the authorizer and the
//! time; it returns what to start (or the refusal), and the manager does
//! it. So a limit, a role or a rate cannot be bypassed by choosing another
//! door: MQTT and WHEP offers meet the same checks, in the same order, on
//! the same table.

use super::signal::{Credential, OfferIn};
use super::table::{Accepted, OfferRequest, SessionId, SessionTable};
use crate::auth::{AuthError, Authorizer, Grant, ReplayCache};
use crate::peer::sdp::{OfferSummary, SdpError, summarize_offer};
use crate::signaling::messages::{ErrorCode, SignalError};
use crate::signaling::topics::ClientId;
use std::time::Instant;

/// Candidates an offer may list; more are refused before the WebRTC stack
/// sees them (each one costs connectivity checks).
pub const MAX_OFFER_CANDIDATES: usize = 64;

/// An admitted offer.
#[derive(Debug)]
pub struct Admitted {
    /// What the offer asks for.
    pub summary: OfferSummary,
    /// Its DTLS fingerprint (a restart must keep the session's).
    pub fingerprint: String,
    /// Who it is and what it may do.
    pub grant: Grant,
    /// What to do.
    pub kind: AdmitKind,
}

/// A new session, or a restart of a live one.
#[derive(Debug)]
pub enum AdmitKind {
    /// Start a session (ending those it replaces or evicts).
    New {
        /// The table's decision.
        accepted: Accepted,
        /// The new session's secret.
        secret: String,
    },
    /// Restart ICE on this live session.
    Restart(SessionId),
}

/// The clocks admission reads.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for the table's windows.
    pub instant: Instant,
    /// Unix milliseconds, for token expiry and proof times.
    pub unix_ms: u64,
}

/// Decides on `offer` from `client`: cheap checks of the SDP first, then
/// the credential, then the principal's offer rate, then the table's
/// limits (viewers, negotiations, the client id's live session). `secret`
/// becomes a new session's. A refusal is noted against the client (its
/// early candidates are dropped).
pub fn admit(
    auth: &Authorizer,
    replay: &mut ReplayCache,
    table: &mut SessionTable,
    client: &ClientId,
    offer: &OfferIn,
    secret: String,
    now: Now,
) -> Result<Admitted, SignalError> {
    let result = decide(auth, replay, table, client, offer, secret, now);
    if result.is_err() {
        table.refused(client, now.instant);
    }
    result
}

fn decide(
    auth: &Authorizer,
    replay: &mut ReplayCache,
    table: &mut SessionTable,
    client: &ClientId,
    offer: &OfferIn,
    secret: String,
    now: Now,
) -> Result<Admitted, SignalError> {
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
    let Some(fingerprint) = summary.fingerprint.clone() else {
        return Err(SignalError::new(
            ErrorCode::BadSdp,
            "the offer has no a=fingerprint (DTLS)",
        ));
    };
    let grant = match &offer.credential {
        Credential::Session => {
            let presented = offer.session.as_deref().filter(|_| offer.restart);
            let Some(principal) = presented.and_then(|s| table.principal_of(client, s)) else {
                return Err(SignalError::new(
                    ErrorCode::UnknownSession,
                    "no live session with this secret to restart",
                ));
            };
            // The session's own principal: its budget, whatever the mode.
            Ok(Grant {
                role: crate::auth::Role::View,
                principal,
            })
        }
        Credential::Exposed => Err(AuthError::BearerInOffer),
        Credential::Bearer(token) => auth.grant(token.as_deref(), now.unix_ms / 1000),
        Credential::Proof(proof) => auth
            .verify_proof(proof.as_ref(), client.as_str(), &fingerprint, now.unix_ms)
            .and_then(|g| match (proof, auth.required()) {
                (Some(p), true) => replay.check(p, now.unix_ms).map(|()| g),
                _ => Ok(g),
            }),
    }
    .map_err(|e| SignalError::new(ErrorCode::Unauthorized, e.to_string()))?;
    // Without authentication every viewer is "anonymous": its client id is
    // what tells viewers apart.
    let principal = if auth.required() || offer.credential == Credential::Session {
        grant.principal.clone()
    } else {
        format!("client:{client}")
    };
    table.note_offer(&principal, now.instant)?;
    let kind = if offer.restart {
        // The same session goes on over new ICE candidates: no new slot,
        // subscription or secret.
        let presented = offer.session.as_deref().unwrap_or_default();
        AdmitKind::Restart(table.restart(client, presented, now.instant)?)
    } else {
        let accepted = table.offer(
            OfferRequest {
                client,
                principal: &principal,
                presented: offer.session.as_deref(),
                secret: secret.clone(),
            },
            now.instant,
        )?;
        AdmitKind::New { accepted, secret }
    };
    Ok(Admitted {
        summary,
        fingerprint,
        grant,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, StaticToken};
    use crate::session::table::Limits;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
        a=fingerprint:sha-256 AA:BB\r\na=setup:actpass\r\na=rtcp-mux\r\n\
        a=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";
    const VIEW: &str = "viewtoken-1234567890";
    const CONTROL: &str = "controltoken-1234567890";

    /// One camera's admission state.
    struct Door {
        auth: Authorizer,
        replay: ReplayCache,
        table: SessionTable,
    }

    impl Door {
        fn new(auth: Authorizer, limits: Limits) -> Self {
            Self {
                auth,
                replay: ReplayCache::new(16),
                table: SessionTable::new(limits),
            }
        }

        fn tokens() -> Self {
            let statics = vec![
                StaticToken::new(VIEW, Role::View),
                StaticToken::new(CONTROL, Role::Control),
            ];
            let auth =
                Authorizer::with_tokens(statics, None, "cam", std::time::Duration::from_secs(3600));
            Self::new(auth, Limits::default())
        }

        fn admit(&mut self, client: &str, offer: &OfferIn) -> Result<Admitted, SignalError> {
            let now = Now {
                instant: Instant::now(),
                unix_ms: 1_800_000_000_000,
            };
            let client = ClientId::parse(client).expect("valid");
            let secret = format!("secret-of-{client}");
            admit(
                &self.auth,
                &mut self.replay,
                &mut self.table,
                &client,
                offer,
                secret,
                now,
            )
        }

        fn refusal(&mut self, client: &str, offer: &OfferIn) -> ErrorCode {
            self.admit(client, offer).expect_err("refused").code
        }
    }

    fn offer(credential: Credential) -> OfferIn {
        OfferIn {
            sdp: SDP.into(),
            credential,
            session: None,
            restart: false,
        }
    }

    fn bearer(t: &str) -> OfferIn {
        offer(Credential::Bearer(Some(t.into())))
    }

    #[test]
    fn a_bearer_token_grants_its_role_and_a_bad_one_nothing() {
        let mut d = Door::tokens();
        let v = d.admit("w1", &bearer(VIEW)).expect("admitted");
        assert_eq!(v.grant.role, Role::View);
        assert!(matches!(v.kind, AdmitKind::New { .. }));
        assert_eq!(
            d.admit("w2", &bearer(CONTROL))
                .expect("admitted")
                .grant
                .role,
            Role::Control
        );
        assert_eq!(d.refusal("w3", &bearer("nope")), ErrorCode::Unauthorized);
        assert_eq!(
            d.refusal("w4", &offer(Credential::Bearer(None))),
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn a_token_in_the_clear_on_the_broker_is_refused_even_when_valid() {
        let mut d = Door::tokens();
        let e = d
            .admit("m1", &offer(Credential::Exposed))
            .expect_err("refused");
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.message.contains("proof"), "{e}");
        // Without a proof, an MQTT offer is refused when tokens are required.
        assert_eq!(
            d.refusal("m2", &offer(Credential::Proof(None))),
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn max_viewers_holds_across_doors() {
        // One slot: an MQTT viewer takes it, and a WHEP offer is refused.
        let limits = Limits {
            max_viewers: 1,
            ..Limits::default()
        };
        let mut d = Door::new(Authorizer::open(), limits);
        d.admit("mqtt-viewer", &offer(Credential::Proof(None)))
            .expect("admitted");
        assert_eq!(
            d.refusal("whep-x", &offer(Credential::Bearer(None))),
            ErrorCode::MaxViewers
        );
    }

    #[test]
    fn the_offer_rate_is_the_principals_whatever_the_door() {
        let mut d = Door::tokens();
        d.table = SessionTable::new(Limits {
            offers_per_minute: 2,
            ..Limits::default()
        });
        d.admit("a", &bearer(VIEW)).expect("admitted");
        d.admit("b", &bearer(VIEW)).expect("admitted");
        assert_eq!(d.refusal("c", &bearer(VIEW)), ErrorCode::RateLimited);
        // Another token has its own budget.
        d.admit("d", &bearer(CONTROL)).expect("admitted");
    }

    #[test]
    fn bad_sdp_is_refused_before_the_token_is_looked_at() {
        let mut d = Door::tokens();
        let with = |sdp: String| OfferIn {
            sdp,
            ..bearer("nope")
        };
        assert_eq!(d.refusal("x", &with("hello".into())), ErrorCode::BadSdp);
        let vp8 = SDP.replace("H264/90000", "VP8/90000");
        assert_eq!(d.refusal("x", &with(vp8)), ErrorCode::NoVideoCodec);
        let no_dtls = SDP.replace("a=fingerprint:sha-256 AA:BB\r\n", "");
        assert_eq!(d.refusal("x", &with(no_dtls)), ErrorCode::BadSdp);
    }

    #[test]
    fn a_restart_needs_the_live_sessions_secret() {
        let mut d = Door::new(Authorizer::open(), Limits::default());
        let AdmitKind::New { accepted, secret } = d.admit("r", &bearer("")).expect("admitted").kind
        else {
            panic!("a new session")
        };
        let restart = |s: &str| OfferIn {
            session: Some(s.into()),
            restart: true,
            ..bearer("")
        };
        let again = d.admit("r", &restart(&secret)).expect("restart");
        assert!(matches!(again.kind, AdmitKind::Restart(ref s) if *s == accepted.id));
        assert_eq!(d.refusal("r", &restart("wrong")), ErrorCode::UnknownSession);
    }

    #[test]
    fn the_sessions_secret_vouches_for_its_restart_only() {
        let mut d = Door::tokens();
        let AdmitKind::New { secret, .. } = d.admit("w", &bearer(VIEW)).expect("admitted").kind
        else {
            panic!("a new session")
        };
        let by_secret = |s: &str, restart: bool| OfferIn {
            session: Some(s.into()),
            restart,
            ..offer(Credential::Session)
        };
        let r = d.admit("w", &by_secret(&secret, true)).expect("a restart");
        assert!(matches!(r.kind, AdmitKind::Restart(_)));
        assert_eq!(
            d.refusal("w", &by_secret("wrong", true)),
            ErrorCode::UnknownSession
        );
        // Never a new session, nor a replacement, without a token.
        assert_eq!(
            d.refusal("w", &by_secret(&secret, false)),
            ErrorCode::UnknownSession
        );
        assert_eq!(
            d.refusal("other", &by_secret(&secret, true)),
            ErrorCode::UnknownSession
        );
    }
}
