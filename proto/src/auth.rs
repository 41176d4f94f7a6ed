//! Who may watch and who may control: viewer tokens, their roles, and how an
//! offer proves it holds one without sending it. Pure (no I/O, no clock:
//! the caller passes the time).
//!
//! Two kinds of token, both carrying a [`Role`]:
//! - static tokens from the config (`[[auth.tokens]]`);
//! - signed expiring tokens `rtcam2.<role>.<aud>.<expiry>.<mac>`, where
//!   `<aud>` is base64url of the device they are for (its topic prefix),
//!   `<expiry>` is Unix seconds and `<mac>` is
//!   `base64url(HMAC-SHA256(secret, "rtcam2.<role>.<aud>.<expiry>"))`;
//!   minted by `rtcam token` with the secret from `auth.secret_file`. A
//!   token for another device, or living longer than `auth.max_token_ttl`
//!   from now, is refused.
//!
//! A token is a bearer secret where the channel is private to the camera
//! (the MQTT password the embedded broker checks; HTTP `Authorization` over
//! TLS). On the shared broker an offer carries a [`Proof`] instead: the
//! token's public id and `HMAC-SHA256(SHA-256(token), "rtcam-offer-v1\n" +
//! client id + "\n" + DTLS fingerprint + "\n" + time)`. Anyone reading the
//! offer learns neither the token nor how to reuse it: a replayed offer is
//! refused ([`ReplayCache`]), and could not complete DTLS anyway, since the
//! fingerprint is the offerer's key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{digest, hmac};
use std::collections::{BTreeMap, VecDeque};
use subtle::ConstantTimeEq;

/// Version tag that starts every signed token.
const SIGNED_PREFIX: &str = "rtcam2";
/// The tag of the first format, which had no audience (refused, with a hint).
const LEGACY_PREFIX: &str = "rtcam1";
/// Prefix of a static token's id.
const STATIC_ID_PREFIX: &str = "s.";
/// What an offer proof signs, before its fields.
const PROOF_CONTEXT: &str = "rtcam-offer-v1";
/// Longest token looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 512;
/// Shortest accepted static token and signing secret (bytes).
pub const MIN_SECRET_LEN: usize = 16;
/// How far an offer proof's time may be from the camera's clock (ms).
pub const PROOF_WINDOW_MS: u64 = 5 * 60 * 1000;

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watch and read state.
    View,
    /// Also drive GPIO, the encoder and the camera.
    Control,
}

impl Role {
    /// The role as written in config and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Control => "control",
        }
    }

    /// Parses `view` or `control`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "view" => Some(Role::View),
            "control" => Some(Role::Control),
            _ => None,
        }
    }
}

/// Why a token or proof was refused. Each maps to the `unauthorized` code;
/// the text tells the viewer which case it is without revealing any secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Tokens are required and none was presented.
    #[error("this camera requires a token; none was presented")]
    Missing,
    /// Neither a known static token nor a valid signature.
    #[error("the token is not valid for this camera")]
    Invalid,
    /// A correctly signed token whose time is over.
    #[error("the token expired at {expired_at} (Unix seconds)")]
    Expired {
        /// When it expired.
        expired_at: u64,
    },
    /// A signed token minted for another device.
    #[error("the token was minted for another camera")]
    WrongAudience,
    /// A signed token living longer than this camera allows.
    #[error("the token lives until {expires_at}, beyond auth.max_token_ttl ({max_s} s) from now")]
    TooLong {
        /// When it expires.
        expires_at: u64,
        /// The longest lifetime allowed, in seconds.
        max_s: u64,
    },
    /// A token in the first format, which named no camera.
    #[error(
        "rtcam1 tokens name no camera and are no longer accepted: mint a new one with `rtcam token`"
    )]
    Legacy,
    /// The offer carried the token itself, readable by everyone on the broker.
    #[error("send a proof of the token (\"auth\"), never the token itself: see docs/protocol.md")]
    BearerInOffer,
    /// The proof's time is too far from the camera's clock.
    #[error("the proof's time is {skew_s} s from the camera's clock (more than {} s): check both clocks", PROOF_WINDOW_MS / 1000)]
    Stale {
        /// How far off, in seconds.
        skew_s: u64,
    },
    /// The proof does not match its token, client id and fingerprint.
    #[error("the proof does not match the token, client id and DTLS fingerprint")]
    BadProof,
    /// This exact proof was used before.
    #[error("this proof was already used: make a new offer")]
    Replayed,
}

/// What an accepted token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What the session may do.
    pub role: Role,
    /// Who it is, for per-principal budgets: the token's id, or
    /// `anonymous` without authentication.
    pub principal: String,
}

impl Grant {
    fn anonymous() -> Self {
        Self {
            role: Role::Control,
            principal: "anonymous".into(),
        }
    }
}

/// An offer's proof of holding a token (the offer's `"auth"` object).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proof {
    /// The token's public id ([`token_id`]).
    pub token_id: String,
    /// When the proof was made (Unix milliseconds).
    pub ts: u64,
    /// `base64url(HMAC-SHA256(SHA-256(token), message))`.
    pub proof: String,
}

/// A token that grants a role, as configured.
#[derive(Clone)]
pub struct StaticToken {
    digest: [u8; 32],
    role: Role,
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticToken(***, {})", self.role.as_str())
    }
}

impl StaticToken {
    /// A static token granting `role`.
    pub fn new(token: &str, role: Role) -> Self {
        Self {
            digest: sha256(token.as_bytes()),
            role,
        }
    }

    fn id(&self) -> String {
        static_id(&self.digest)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn static_id(digest: &[u8; 32]) -> String {
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{STATIC_ID_PREFIX}{hex}")
}

/// A token's public id, sent in proofs: a signed token's claims (role,
/// camera, expiry: worthless without the signature), or for a static token
/// `s.` and 16 hex digits of its SHA-256.
pub fn token_id(token: &str) -> String {
    let signed = [SIGNED_PREFIX, LEGACY_PREFIX]
        .iter()
        .any(|p| token.strip_prefix(p).is_some_and(|r| r.starts_with('.')));
    if signed && let Some((claims, _mac)) = token.rsplit_once('.') {
        return claims.to_string();
    }
    static_id(&sha256(token.as_bytes()))
}

/// The message an offer proof signs.
fn proof_message(client_id: &str, fingerprint: &str, ts: u64) -> String {
    format!(
        "{PROOF_CONTEXT}\n{client_id}\n{}\n{ts}",
        normalize_fingerprint(fingerprint)
    )
}

/// A DTLS fingerprint as the proof signs it: trimmed, lower case.
fn normalize_fingerprint(fp: &str) -> String {
    fp.trim().to_ascii_lowercase()
}

/// The first `a=fingerprint:` value of an SDP (`sha-256 AB:CD:…`).
pub fn sdp_fingerprint(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
        .map(str::trim)
}

fn proof_mac(token_digest: &[u8; 32], message: &str) -> hmac::Tag {
    hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, token_digest),
        message.as_bytes(),
    )
}

/// Makes the proof an offer carries: for `token`, from `client_id`, with the
/// offer's DTLS `fingerprint`, at `ts` (Unix ms).
pub fn prove(token: &str, client_id: &str, fingerprint: &str, ts: u64) -> Proof {
    let mac = proof_mac(
        &sha256(token.as_bytes()),
        &proof_message(client_id, fingerprint, ts),
    );
    Proof {
        token_id: token_id(token),
        ts,
        proof: URL_SAFE_NO_PAD.encode(mac.as_ref()),
    }
}

/// Decides the role of each offer or bearer token.
pub struct Authorizer {
    required: bool,
    statics: Vec<StaticToken>,
    key: Option<hmac::Key>,
    audience: String,
    max_ttl_s: u64,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("required", &self.required)
            .field("static_tokens", &self.statics.len())
            .field("signed_tokens", &self.key.is_some())
            .field("audience", &self.audience)
            .field("max_ttl_s", &self.max_ttl_s)
            .finish()
    }
}

/// The audience field of a signed token for `audience`.
fn encode_audience(audience: &str) -> String {
    URL_SAFE_NO_PAD.encode(audience.as_bytes())
}

impl Authorizer {
    /// `auth.mode = "none"`: every viewer may control.
    pub fn open() -> Self {
        Self {
            required: false,
            statics: Vec::new(),
            key: None,
            audience: String::new(),
            max_ttl_s: 0,
        }
    }

    /// `auth.mode = "token"`: static tokens and, with a secret, signed ones
    /// for `audience` living at most `max_ttl` from now.
    pub fn with_tokens(
        statics: Vec<StaticToken>,
        secret: Option<&[u8]>,
        audience: &str,
        max_ttl: std::time::Duration,
    ) -> Self {
        Self {
            required: true,
            statics,
            key: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)),
            audience: audience.to_string(),
            max_ttl_s: max_ttl.as_secs(),
        }
    }

    /// Whether offers must carry a token.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The role a bearer token grants at `now_unix` (seconds): for channels
    /// private to the camera (the embedded broker's password, HTTPS).
    pub fn authorize(&self, token: Option<&str>, now_unix: u64) -> Result<Role, AuthError> {
        self.grant(token, now_unix).map(|g| g.role)
    }

    /// [`Self::authorize`], with the principal.
    pub fn grant(&self, token: Option<&str>, now_unix: u64) -> Result<Grant, AuthError> {
        if !self.required {
            return Ok(Grant::anonymous());
        }
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        let (digest, role) = self.resolve(&token_id(token), now_unix)?;
        // Compared in constant time, whatever the token looked like.
        if !bool::from(digest.ct_eq(&sha256(token.as_bytes()))) {
            return Err(AuthError::Invalid);
        }
        Ok(Grant {
            role,
            principal: token_id(token),
        })
    }

    /// Checks an offer's proof (`None`: the offer had none) made by
    /// `client_id` for the offer whose DTLS fingerprint is `fingerprint`, at
    /// `now_ms` (Unix ms). Replays are [`ReplayCache`]'s business.
    pub fn verify_proof(
        &self,
        proof: Option<&Proof>,
        client_id: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<Grant, AuthError> {
        if !self.required {
            return Ok(Grant::anonymous());
        }
        let proof = proof.ok_or(AuthError::Missing)?;
        if proof.token_id.len() > MAX_TOKEN_LEN || proof.proof.len() > 128 {
            return Err(AuthError::Invalid);
        }
        let (digest, role) = self.resolve(&proof.token_id, now_ms / 1000)?;
        let skew = now_ms.abs_diff(proof.ts);
        if skew > PROOF_WINDOW_MS {
            return Err(AuthError::Stale {
                skew_s: skew / 1000,
            });
        }
        let presented = URL_SAFE_NO_PAD
            .decode(&proof.proof)
            .map_err(|_| AuthError::BadProof)?;
        let expected = proof_mac(&digest, &proof_message(client_id, fingerprint, proof.ts));
        if !bool::from(expected.as_ref().ct_eq(presented.as_slice())) {
            return Err(AuthError::BadProof);
        }
        Ok(Grant {
            role,
            principal: proof.token_id.clone(),
        })
    }

    /// The SHA-256 of the token with this id, and its role, if it is valid
    /// at `now_unix`.
    fn resolve(&self, id: &str, now_unix: u64) -> Result<([u8; 32], Role), AuthError> {
        if id.starts_with(STATIC_ID_PREFIX) {
            // Every static token is looked at, whatever matches first.
            let mut found = None;
            for s in &self.statics {
                if bool::from(s.id().as_bytes().ct_eq(id.as_bytes())) {
                    found = Some((s.digest, s.role));
                }
            }
            return found.ok_or(AuthError::Invalid);
        }
        if id.starts_with(LEGACY_PREFIX) {
            return Err(AuthError::Legacy);
        }
        let key = self.key.as_ref().ok_or(AuthError::Invalid)?;
        let mut parts = id.split('.');
        let (Some(SIGNED_PREFIX), Some(role), Some(aud), Some(expiry), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::Invalid);
        };
        // The claims are not authentic yet: the token is rebuilt from them
        // with our secret, and only the holder of that token can match it.
        let role = Role::parse(role).ok_or(AuthError::Invalid)?;
        let expiry: u64 = expiry.parse().map_err(|_| AuthError::Invalid)?;
        if aud != encode_audience(&self.audience) {
            return Err(AuthError::WrongAudience);
        }
        if now_unix >= expiry {
            return Err(AuthError::Expired { expired_at: expiry });
        }
        if expiry - now_unix > self.max_ttl_s {
            return Err(AuthError::TooLong {
                expires_at: expiry,
                max_s: self.max_ttl_s,
            });
        }
        let mac = hmac::sign(key, id.as_bytes());
        let token = format!("{id}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        Ok((sha256(token.as_bytes()), role))
    }
}

/// Mints a signed token granting `role` on the camera `audience` until
/// `expires_unix` (seconds).
pub fn mint(secret: &[u8], role: Role, audience: &str, expires_unix: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let claims = format!(
        "{SIGNED_PREFIX}.{}.{}.{expires_unix}",
        role.as_str(),
        encode_audience(audience)
    );
    let mac = hmac::sign(&key, claims.as_bytes());
    format!("{claims}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
}

/// Proofs seen recently, so each is accepted once. Bounded: past `capacity`
/// the oldest entry is forgotten (it could only be replayed within the
/// proof window, and that entry is the closest to leaving it anyway).
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    seen: BTreeMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl ReplayCache {
    /// A cache remembering up to `capacity` proofs.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `proof` at `now_ms`; `Err(Replayed)` if it was seen within the window.
    pub fn check(&mut self, proof: &Proof, now_ms: u64) -> Result<(), AuthError> {
        while let Some((t, key)) = self.order.front() {
            if now_ms.saturating_sub(*t) <= 2 * PROOF_WINDOW_MS && self.order.len() < self.capacity
            {
                break;
            }
            self.seen.remove(key);
            self.order.pop_front();
        }
        if self.seen.contains_key(&proof.proof) {
            return Err(AuthError::Replayed);
        }
        self.seen.insert(proof.proof.clone(), now_ms);
        self.order.push_back((now_ms, proof.proof.clone()));
        Ok(())
    }

    /// Proofs remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Parses a lifetime such as `90s`, `15m`, `1h`, `7d` (or combined, `1h30m`).
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 15m, 1h or 7d ({e})"))?;
    if d.as_secs() == 0 {
        return Err(format!("{text:?}: a token must live at least one second"));
    }
    // Ten years: beyond this a token is a password, use a static one.
    if d.as_secs() > 10 * 365 * 24 * 3600 {
        return Err(format!("{text:?} is longer than ten years"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;
    const CAM: &str = "rtcam/garage";
    const DAY: Duration = Duration::from_secs(86_400);
    const FP: &str = "sha-256 AB:CD:EF:01";

    fn signed_only() -> Authorizer {
        Authorizer::with_tokens(Vec::new(), Some(SECRET), CAM, 30 * DAY)
    }

    fn statics() -> Authorizer {
        Authorizer::with_tokens(
            vec![
                StaticToken::new("viewer-token-0001", Role::View),
                StaticToken::new("control-token-001", Role::Control),
            ],
            None,
            CAM,
            30 * DAY,
        )
    }

    #[test]
    fn open_mode_grants_control_without_a_token() {
        let a = Authorizer::open();
        assert!(!a.required());
        assert_eq!(a.authorize(None, NOW), Ok(Role::Control));
        assert_eq!(a.authorize(Some("anything"), NOW), Ok(Role::Control));
        let g = a.verify_proof(None, "c", FP, NOW * 1000).expect("open");
        assert_eq!((g.role, g.principal.as_str()), (Role::Control, "anonymous"));
    }

    #[test]
    fn static_tokens_grant_their_role_and_nothing_else_matches() {
        let a = statics();
        assert_eq!(a.authorize(Some("viewer-token-0001"), NOW), Ok(Role::View));
        assert_eq!(
            a.authorize(Some("control-token-001"), NOW),
            Ok(Role::Control)
        );
        for wrong in ["viewer-token-0002", "viewer-token-000"] {
            assert_eq!(a.authorize(Some(wrong), NOW), Err(AuthError::Invalid));
        }
        assert_eq!(a.authorize(None, NOW), Err(AuthError::Missing));
        assert_eq!(a.authorize(Some(""), NOW), Err(AuthError::Missing));
        // Without a secret, even a well-formed signed token is refused.
        let t = mint(SECRET, Role::Control, CAM, NOW + 60);
        assert_eq!(a.authorize(Some(&t), NOW), Err(AuthError::Invalid));
    }

    #[test]
    fn signed_tokens_carry_role_camera_and_expiry() {
        let a = signed_only();
        let view = mint(SECRET, Role::View, CAM, NOW + 3600);
        let control = mint(SECRET, Role::Control, CAM, NOW + 3600);
        assert!(view.starts_with("rtcam2.view."), "{view}");
        assert_eq!(a.authorize(Some(&view), NOW), Ok(Role::View));
        assert_eq!(a.authorize(Some(&control), NOW), Ok(Role::Control));
        assert_eq!(
            a.authorize(Some(&control), NOW + 3600),
            Err(AuthError::Expired {
                expired_at: NOW + 3600
            })
        );
        // For another camera sharing the secret: refused.
        let other = mint(SECRET, Role::Control, "rtcam/porch", NOW + 60);
        assert_eq!(
            a.authorize(Some(&other), NOW),
            Err(AuthError::WrongAudience)
        );
        // Longer-lived than the policy allows now: refused.
        let long = mint(SECRET, Role::View, CAM, NOW + 31 * 86_400);
        assert!(matches!(
            a.authorize(Some(&long), NOW),
            Err(AuthError::TooLong { .. })
        ));
    }

    #[test]
    fn tampered_foreign_and_legacy_tokens_are_refused() {
        let a = signed_only();
        let good = mint(SECRET, Role::View, CAM, NOW + 60);
        let upgraded = good.replacen(".view.", ".control.", 1);
        assert_eq!(a.authorize(Some(&upgraded), NOW), Err(AuthError::Invalid));
        let extended = good.replacen(&(NOW + 60).to_string(), &(NOW + 600).to_string(), 1);
        assert_eq!(a.authorize(Some(&extended), NOW), Err(AuthError::Invalid));
        let other = mint(
            b"another secret, also 32 bytes!!!",
            Role::View,
            CAM,
            NOW + 60,
        );
        assert_eq!(a.authorize(Some(&other), NOW), Err(AuthError::Invalid));
        assert_eq!(
            a.authorize(Some("rtcam1.view.1800000060.AAAA"), NOW),
            Err(AuthError::Legacy)
        );
        for junk in [
            "rtcam2",
            "rtcam2.view",
            "rtcam2.view.x.1.",
            "....",
            "rtcam2.admin.x.9.!!",
        ] {
            assert!(a.authorize(Some(junk), NOW).is_err(), "{junk}");
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(a.authorize(Some(&huge), NOW), Err(AuthError::Invalid));
    }

    #[test]
    fn proofs_bind_the_token_to_client_fingerprint_and_time() {
        let a = signed_only();
        let token = mint(SECRET, Role::Control, CAM, NOW + 3600);
        let now_ms = NOW * 1000;
        let p = prove(&token, "web-1", FP, now_ms - 2000);
        assert!(!p.token_id.contains(&p.proof) && !token.ends_with(&p.token_id));
        let g = a
            .verify_proof(Some(&p), "web-1", FP, now_ms)
            .expect("valid");
        assert_eq!(g.role, Role::Control);
        assert_eq!(g.principal, p.token_id);
        // The fingerprint's case and spacing do not matter; its value does.
        let fp_upper = format!("  {}  ", FP.to_ascii_uppercase());
        assert!(a.verify_proof(Some(&p), "web-1", &fp_upper, now_ms).is_ok());
        assert_eq!(
            a.verify_proof(Some(&p), "web-1", "sha-256 00:11", now_ms),
            Err(AuthError::BadProof)
        );
        assert_eq!(
            a.verify_proof(Some(&p), "web-2", FP, now_ms),
            Err(AuthError::BadProof),
            "another client id cannot reuse it"
        );
        let mut later = p.clone();
        later.ts += 1;
        assert_eq!(
            a.verify_proof(Some(&later), "web-1", FP, now_ms),
            Err(AuthError::BadProof)
        );
        assert!(matches!(
            a.verify_proof(Some(&p), "web-1", FP, now_ms + PROOF_WINDOW_MS + 5000),
            Err(AuthError::Stale { .. })
        ));
        assert_eq!(
            a.verify_proof(None, "web-1", FP, now_ms),
            Err(AuthError::Missing)
        );
        // A view token's id cannot be relabelled control.
        let view = mint(SECRET, Role::View, CAM, NOW + 3600);
        let mut forged = prove(&view, "web-1", FP, now_ms);
        forged.token_id = forged.token_id.replacen(".view.", ".control.", 1);
        assert_eq!(
            a.verify_proof(Some(&forged), "web-1", FP, now_ms),
            Err(AuthError::BadProof)
        );
    }

    #[test]
    fn static_token_proofs_name_the_token_by_its_hash() {
        let a = statics();
        let p = prove("viewer-token-0001", "probe-1", FP, NOW * 1000);
        assert!(
            p.token_id.starts_with("s.") && p.token_id.len() == 18,
            "{}",
            p.token_id
        );
        assert!(!p.token_id.contains("viewer"));
        let g = a
            .verify_proof(Some(&p), "probe-1", FP, NOW * 1000)
            .expect("valid");
        assert_eq!(g.role, Role::View);
        let unknown = prove("not-a-configured-token", "probe-1", FP, NOW * 1000);
        assert_eq!(
            a.verify_proof(Some(&unknown), "probe-1", FP, NOW * 1000),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn a_proof_is_accepted_once_and_the_cache_stays_bounded() {
        let token = mint(SECRET, Role::View, CAM, NOW + 3600);
        let mut cache = ReplayCache::new(3);
        let p = prove(&token, "c", FP, NOW * 1000);
        assert_eq!(cache.check(&p, NOW * 1000), Ok(()));
        assert_eq!(cache.check(&p, NOW * 1000 + 10), Err(AuthError::Replayed));
        for i in 1..=5 {
            let q = prove(&token, "c", FP, NOW * 1000 + i);
            assert_eq!(cache.check(&q, NOW * 1000 + i), Ok(()));
        }
        assert!(cache.len() <= 3, "{}", cache.len());
        // Entries leave once no proof of theirs could be fresh any more.
        let late = prove(&token, "c", FP, NOW * 1000 + 3 * PROOF_WINDOW_MS);
        assert_eq!(cache.check(&late, NOW * 1000 + 3 * PROOF_WINDOW_MS), Ok(()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_known_proof_vector_shared_with_the_web_page() {
        // The same inputs through js-sha256 in the page's code (src/web/assets/app.js)
        // give the same id and proof: computed with Node.js.
        let p = prove(
            "viewer-token-0001",
            "probe-1",
            "sha-256 AB:CD:EF:01",
            1_800_000_000_000,
        );
        assert_eq!(p.token_id, "s.30182e35bf94d26b");
        assert_eq!(p.proof, "IUiXTlgYRnAPJb0PQpC02YenZvIWavELF67UDAS4vAg");
    }

    #[test]
    fn fingerprints_are_read_from_the_sdp() {
        let sdp = "v=0\r\na=fingerprint:sha-256 AB:CD\r\na=fingerprint:sha-1 00\r\n";
        assert_eq!(sdp_fingerprint(sdp), Some("sha-256 AB:CD"));
        assert_eq!(sdp_fingerprint("v=0\r\n"), None);
    }

    #[test]
    fn ttls_parse_with_units_and_bounds() {
        assert_eq!(parse_ttl("1h").map(|d| d.as_secs()), Ok(3600));
        assert_eq!(parse_ttl("1h30m").map(|d| d.as_secs()), Ok(5400));
        assert_eq!(parse_ttl(" 7d ").map(|d| d.as_secs()), Ok(7 * 86400));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("20years").is_err());
    }

    #[test]
    fn debug_output_hides_tokens() {
        let t = StaticToken::new("do-not-print-me-please", Role::View);
        assert!(!format!("{t:?}").contains("do-not-print"));
        let a = Authorizer::with_tokens(vec![t], Some(SECRET), CAM, DAY);
        assert!(!format!("{a:?}").contains("do-not-print"));
    }
}
