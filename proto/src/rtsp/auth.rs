//! RTSP authentication (RFC 2617, as RTSP 1.0 clients implement it): the
//! `WWW-Authenticate` challenges, and checking an `Authorization` header,
//! Digest (MD5, the server's nonce) or Basic. Pure: the server brings the
//! nonce (random, one per connection) and the configured credentials.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq;

/// The realm clients show and hash.
pub const REALM: &str = "rtcam";

/// Why an `Authorization` header is not accepted (the answer is 401 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no credentials")]
    Missing,
    /// A scheme other than Digest or Basic, or a header that does not parse.
    #[error("malformed or unsupported Authorization header")]
    Malformed,
    /// A Digest answer to a nonce this connection did not hand out.
    #[error("stale or foreign nonce")]
    Nonce,
    /// Wrong user name or password.
    #[error("wrong user name or password")]
    Wrong,
}

/// How a client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 2617 Digest (MD5): the password never crosses the network.
    Digest,
    /// Basic: the password in base64.
    Basic,
}

/// The two challenges of a 401, strongest first: Digest then Basic.
pub fn challenges(nonce: &str, stale: bool) -> [String; 2] {
    let stale = if stale { ", stale=TRUE" } else { "" };
    [
        format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5{stale}"),
        format!("Basic realm=\"{REALM}\""),
    ]
}

/// Checks `header` (the `Authorization` value, if any) of a request with
/// `method` against the credentials, for a connection that handed out `nonce`.
pub fn check(
    header: Option<&str>,
    method: &str,
    nonce: &str,
    username: &str,
    password: &str,
) -> Result<Scheme, AuthError> {
    let header = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, rest) = header.split_once(' ').ok_or(AuthError::Malformed)?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest.trim())
            .map_err(|_| AuthError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (u, p) = text.split_once(':').ok_or(AuthError::Malformed)?;
        // Both compared whole, in constant time, so neither leaks by timing.
        let ok = u.as_bytes().ct_eq(username.as_bytes()) & p.as_bytes().ct_eq(password.as_bytes());
        return if bool::from(ok) {
            Ok(Scheme::Basic)
        } else {
            Err(AuthError::Wrong)
        };
    }
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(AuthError::Malformed);
    }
    let params = parse_params(rest)?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let (Some(user), Some(realm), Some(their_nonce), Some(uri), Some(response)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return Err(AuthError::Malformed);
    };
    if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
        return Err(AuthError::Malformed);
    }
    if !bool::from(their_nonce.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(AuthError::Nonce);
    }
    let ha1 = md5_hex(&format!("{username}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let expected = match get("qop") {
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                return Err(AuthError::Malformed);
            };
            md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
        }
        Some(_) => return Err(AuthError::Malformed),
    };
    let ok = user.as_bytes().ct_eq(username.as_bytes())
        & realm.as_bytes().ct_eq(REALM.as_bytes())
        & response
            .to_ascii_lowercase()
            .as_bytes()
            .ct_eq(expected.as_bytes());
    if bool::from(ok) {
        Ok(Scheme::Digest)
    } else {
        Err(AuthError::Wrong)
    }
}

/// Lower-case hex MD5 of `s`, as RFC 2617 hashes everything.
pub fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name=value` and `name="quoted \"value\""` pairs separated by commas.
fn parse_params(s: &str) -> Result<Vec<(String, String)>, AuthError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(AuthError::Malformed);
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.push(chars.next().ok_or(AuthError::Malformed)?),
                    Some(c) => value.push(c),
                    None => return Err(AuthError::Malformed),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((name.trim().to_string(), value.trim().to_string()));
        if out.len() > 32 {
            return Err(AuthError::Malformed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "abc123";

    fn digest(user: &str, pass: &str, nonce: &str, method: &str, uri: &str) -> String {
        let ha1 = md5_hex(&format!("{user}:{REALM}:{pass}"));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let resp = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\""
        )
    }

    #[test]
    fn rfc2617_md5_vector() {
        // RFC 2617 section 3.5's HA1 input, hashed the same way.
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn digest_is_checked_against_user_password_nonce_and_method() {
        let uri = "rtsp://127.0.0.1:8554/cam";
        let good = digest("viewer", "pw", NONCE, "DESCRIBE", uri);
        assert_eq!(
            check(Some(&good), "DESCRIBE", NONCE, "viewer", "pw"),
            Ok(Scheme::Digest)
        );
        assert_eq!(
            check(Some(&good), "DESCRIBE", NONCE, "viewer", "other"),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            check(Some(&good), "PLAY", NONCE, "viewer", "pw"),
            Err(AuthError::Wrong),
            "a response is bound to its method"
        );
        assert_eq!(
            check(Some(&good), "DESCRIBE", "other-nonce", "viewer", "pw"),
            Err(AuthError::Nonce)
        );
        let wrong_user = digest("intruder", "pw", NONCE, "DESCRIBE", uri);
        assert_eq!(
            check(Some(&wrong_user), "DESCRIBE", NONCE, "viewer", "pw"),
            Err(AuthError::Wrong)
        );
    }

    #[test]
    fn digest_with_qop_auth() {
        let ha1 = md5_hex(&format!("u:{REALM}:p"));
        let ha2 = md5_hex("PLAY:rtsp://h/cam/");
        let resp = md5_hex(&format!("{ha1}:{NONCE}:00000001:xyz:auth:{ha2}"));
        let h = format!(
            "Digest username=\"u\",realm=\"{REALM}\",nonce=\"{NONCE}\",uri=\"rtsp://h/cam/\",qop=auth,nc=00000001,cnonce=\"xyz\",response=\"{resp}\""
        );
        assert_eq!(check(Some(&h), "PLAY", NONCE, "u", "p"), Ok(Scheme::Digest));
    }

    #[test]
    fn basic_and_malformed_headers() {
        let basic = format!("Basic {}", STANDARD.encode("viewer:pw"));
        assert_eq!(
            check(Some(&basic), "PLAY", NONCE, "viewer", "pw"),
            Ok(Scheme::Basic)
        );
        let bad = format!("Basic {}", STANDARD.encode("viewer:nope"));
        assert_eq!(
            check(Some(&bad), "PLAY", NONCE, "viewer", "pw"),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            check(None, "PLAY", NONCE, "viewer", "pw"),
            Err(AuthError::Missing)
        );
        for h in [
            "Bearer x",
            "Basic !!!",
            "Digest username=\"a",
            "Digest realm",
            "Digest",
        ] {
            assert_eq!(
                check(Some(h), "PLAY", NONCE, "viewer", "pw"),
                Err(AuthError::Malformed),
                "{h}"
            );
        }
    }

    #[test]
    fn challenges_offer_digest_then_basic() {
        let [d, b] = challenges("n1", false);
        assert_eq!(d, "Digest realm=\"rtcam\", nonce=\"n1\", algorithm=MD5");
        assert_eq!(b, "Basic realm=\"rtcam\"");
    }
}
