//! Who may watch and who may control: viewer tokens and their roles. Pure
//! (no I/O, no clock: the caller passes the time).
//!
//! Two kinds of token, both carrying a [`Role`]:
//! - static tokens from the config (`[[auth.tokens]]`), compared in
//!   constant time (both sides hashed first, so not even the length leaks);
//! - signed expiring tokens `rtcam1.<role>.<expiry>.<mac>`, where `<mac>` is
//!   `base64url(HMAC-SHA256(secret, "rtcam1.<role>.<expiry>"))` and `<expiry>`
//!   is Unix seconds; minted by `rtcam token` with the secret from
//!   `auth.secret_file`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{digest, hmac};
use subtle::ConstantTimeEq;

/// Version tag that starts every signed token.
const SIGNED_PREFIX: &str = "rtcam1";
/// Longest token looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 512;
/// Shortest accepted static token and signing secret (bytes).
pub const MIN_SECRET_LEN: usize = 16;

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

/// Why a token was refused. Each maps to the `unauthorized` code; the text
/// tells the viewer which case it is without revealing any secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Tokens are required and the offer carried none.
    #[error("this camera requires a token; the offer carried none")]
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
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Decides the role of each offer.
pub struct Authorizer {
    required: bool,
    statics: Vec<StaticToken>,
    key: Option<hmac::Key>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("required", &self.required)
            .field("static_tokens", &self.statics.len())
            .field("signed_tokens", &self.key.is_some())
            .finish()
    }
}

impl Authorizer {
    /// `auth.mode = "none"`: every viewer may control.
    pub fn open() -> Self {
        Self {
            required: false,
            statics: Vec::new(),
            key: None,
        }
    }

    /// `auth.mode = "token"`: static tokens and, with a secret, signed ones.
    pub fn with_tokens(statics: Vec<StaticToken>, secret: Option<&[u8]>) -> Self {
        Self {
            required: true,
            statics,
            key: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)),
        }
    }

    /// Whether offers must carry a token.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The role an offer's token grants at `now_unix` (seconds).
    pub fn authorize(&self, token: Option<&str>, now_unix: u64) -> Result<Role, AuthError> {
        if !self.required {
            return Ok(Role::Control);
        }
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        // Every static token is compared, whatever matches first.
        let presented = sha256(token.as_bytes());
        let mut role = None;
        for s in &self.statics {
            if bool::from(s.digest.ct_eq(&presented)) {
                role = Some(s.role);
            }
        }
        if let Some(role) = role {
            return Ok(role);
        }
        match &self.key {
            Some(key) => verify_signed(key, token, now_unix),
            None => Err(AuthError::Invalid),
        }
    }
}

fn verify_signed(key: &hmac::Key, token: &str, now_unix: u64) -> Result<Role, AuthError> {
    let (signed, mac) = token.rsplit_once('.').ok_or(AuthError::Invalid)?;
    let mac = URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| AuthError::Invalid)?;
    hmac::verify(key, signed.as_bytes(), &mac).map_err(|_| AuthError::Invalid)?;
    // Authentic from here on: the fields are ours.
    let mut parts = signed.split('.');
    let (Some(SIGNED_PREFIX), Some(role), Some(expiry), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid);
    };
    let role = Role::parse(role).ok_or(AuthError::Invalid)?;
    let expiry: u64 = expiry.parse().map_err(|_| AuthError::Invalid)?;
    if now_unix >= expiry {
        return Err(AuthError::Expired { expired_at: expiry });
    }
    Ok(role)
}

/// Mints a signed token granting `role` until `expires_unix` (seconds).
pub fn mint(secret: &[u8], role: Role, expires_unix: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let signed = format!("{SIGNED_PREFIX}.{}.{expires_unix}", role.as_str());
    let mac = hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
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

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn signed_only() -> Authorizer {
        Authorizer::with_tokens(Vec::new(), Some(SECRET))
    }

    #[test]
    fn open_mode_grants_control_without_a_token() {
        let a = Authorizer::open();
        assert!(!a.required());
        assert_eq!(a.authorize(None, NOW), Ok(Role::Control));
        assert_eq!(a.authorize(Some("anything"), NOW), Ok(Role::Control));
    }

    #[test]
    fn static_tokens_grant_their_role_and_nothing_else_matches() {
        let a = Authorizer::with_tokens(
            vec![
                StaticToken::new("viewer-token-0001", Role::View),
                StaticToken::new("control-token-001", Role::Control),
            ],
            None,
        );
        assert_eq!(a.authorize(Some("viewer-token-0001"), NOW), Ok(Role::View));
        assert_eq!(
            a.authorize(Some("control-token-001"), NOW),
            Ok(Role::Control)
        );
        assert_eq!(
            a.authorize(Some("viewer-token-0002"), NOW),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            a.authorize(Some("viewer-token-000"), NOW),
            Err(AuthError::Invalid)
        );
        assert_eq!(a.authorize(None, NOW), Err(AuthError::Missing));
        assert_eq!(a.authorize(Some(""), NOW), Err(AuthError::Missing));
        // Without a secret, even a well-formed signed token is refused.
        let t = mint(SECRET, Role::Control, NOW + 60);
        assert_eq!(a.authorize(Some(&t), NOW), Err(AuthError::Invalid));
    }

    #[test]
    fn signed_tokens_carry_role_and_expiry() {
        let a = signed_only();
        let view = mint(SECRET, Role::View, NOW + 3600);
        let control = mint(SECRET, Role::Control, NOW + 3600);
        assert!(view.starts_with("rtcam1.view.1800003600."));
        assert_eq!(a.authorize(Some(&view), NOW), Ok(Role::View));
        assert_eq!(a.authorize(Some(&control), NOW), Ok(Role::Control));
        assert_eq!(
            a.authorize(Some(&control), NOW + 3600),
            Err(AuthError::Expired {
                expired_at: NOW + 3600
            })
        );
    }

    #[test]
    fn tampered_or_foreign_tokens_are_invalid() {
        let a = signed_only();
        let good = mint(SECRET, Role::View, NOW + 60);
        // Upgrading the role or extending the expiry breaks the MAC.
        let upgraded = good.replacen(".view.", ".control.", 1);
        assert_eq!(a.authorize(Some(&upgraded), NOW), Err(AuthError::Invalid));
        let extended = good.replacen(&(NOW + 60).to_string(), &(NOW + 6000).to_string(), 1);
        assert_eq!(a.authorize(Some(&extended), NOW), Err(AuthError::Invalid));
        let other = mint(b"another secret, also 32 bytes!!!", Role::View, NOW + 60);
        assert_eq!(a.authorize(Some(&other), NOW), Err(AuthError::Invalid));
        for junk in [
            "rtcam1",
            "rtcam1.view",
            "rtcam1.view.1.",
            "....",
            "rtcam1.view.99999999999.!!!",
        ] {
            assert_eq!(
                a.authorize(Some(junk), NOW),
                Err(AuthError::Invalid),
                "{junk}"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(a.authorize(Some(&huge), NOW), Err(AuthError::Invalid));
    }

    #[test]
    fn a_signed_token_with_a_bad_role_is_invalid_even_when_authentic() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let signed = format!("rtcam1.admin.{}", NOW + 60);
        let mac = hmac::sign(&key, signed.as_bytes());
        let t = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert_eq!(
            signed_only().authorize(Some(&t), NOW),
            Err(AuthError::Invalid)
        );
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
        let a = Authorizer::with_tokens(vec![t], Some(SECRET));
        assert!(!format!("{a:?}").contains("do-not-print"));
    }
}
