//! Short-lived TURN credentials from a secret shared with the TURN server:
//! coturn's `use-auth-secret` ("TURN REST API", draft-uberti-behave-turn-rest).
//! The user name is `<expiry>:<id>` (expiry in Unix seconds), the password
//! `base64(HMAC-SHA1(secret, username))`. The TURN server recomputes the
//! password from the name and refuses names whose expiry has passed, so a
//! credential handed to a browser stops working on its own. Pure.

use crate::config::settings::IceServer;
use base64::Engine;
use ring::hmac;

/// A user name and password for a TURN server.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `<expiry>:<id>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub credential: String,
}

impl std::fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .field("credential", &"***")
            .finish()
    }
}

/// The longest id kept in a user name; longer ones are cut.
pub const MAX_ID_LEN: usize = 64;

/// A credential valid until `expires_unix` for `id` (which names the holder
/// in the TURN server's log; `:` and characters outside `[A-Za-z0-9_.-]`
/// become `-`).
pub fn mint(secret: &[u8], expires_unix: u64, id: &str) -> TurnCredential {
    let id: String = id
        .chars()
        .take(MAX_ID_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let username = format!("{expires_unix}:{id}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, username.as_bytes());
    TurnCredential {
        credential: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        username,
    }
}

/// The expiry a minted user name carries, if it has the `<expiry>:<id>` form.
pub fn expiry_of(username: &str) -> Option<u64> {
    username.split_once(':')?.0.parse().ok()
}

/// `servers` with minted credentials (valid until `expires_unix`, for `id`)
/// filled into every TURN server configured without any
/// ([`IceServer::minted`]); without a `secret` those are left out.
pub fn with_minted(
    servers: &[IceServer],
    secret: Option<&[u8]>,
    expires_unix: u64,
    id: &str,
) -> Vec<IceServer> {
    servers
        .iter()
        .filter_map(|s| {
            if !s.minted() {
                return Some(s.clone());
            }
            let c = mint(secret?, expires_unix, id);
            Some(IceServer {
                urls: s.urls.clone(),
                username: Some(c.username),
                credential: Some(c.credential),
            })
        })
        .collect()
}

/// What a web page is given: [`with_minted`], and servers with a static
/// credential only when `serve_static` (otherwise just their `stun:` URLs,
/// which need none).
pub fn for_page(
    servers: &[IceServer],
    secret: Option<&[u8]>,
    expires_unix: u64,
    id: &str,
    serve_static: bool,
) -> Vec<IceServer> {
    servers
        .iter()
        .filter_map(|s| {
            if s.credential.is_none() || serve_static {
                return with_minted(std::slice::from_ref(s), secret, expires_unix, id).pop();
            }
            let urls: Vec<String> = s
                .urls
                .iter()
                .filter(|u| u.starts_with("stun:"))
                .cloned()
                .collect();
            (!urls.is_empty()).then_some(IceServer {
                urls,
                username: None,
                credential: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(urls: &[&str], user: Option<&str>, cred: Option<&str>) -> IceServer {
        IceServer {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            username: user.map(Into::into),
            credential: cred.map(Into::into),
        }
    }

    #[test]
    fn minted_servers_get_credentials_and_static_ones_stay_off_the_page() {
        let servers = vec![
            server(&["stun:s:3478"], None, None),
            server(&["turn:t:3478"], None, None),
            server(
                &["stun:u:3478", "turn:u:3478"],
                Some("cam"),
                Some("hunter2"),
            ),
            server(&["turn:v:3478"], Some("cam"), Some("hunter2")),
        ];
        let secret = b"north-by-northwest".as_slice();
        let own = with_minted(&servers, Some(secret), 1_700_000_000, "rtcam");
        assert_eq!(own.len(), 4);
        assert_eq!(own[1].username.as_deref(), Some("1700000000:rtcam"));
        assert_eq!(
            own[1].credential.as_deref(),
            Some("cQj/y/fUmq3cd/4EApPKvCWIf/A=")
        );
        assert_eq!(
            own[3].credential.as_deref(),
            Some("hunter2"),
            "rtcam's own side keeps static ones"
        );
        let page = for_page(&servers, Some(secret), 1_700_000_000, "rtcam", false);
        assert_eq!(
            page.len(),
            3,
            "the TURN-only static server is left out: {page:?}"
        );
        assert_eq!(page[0], servers[0]);
        assert_eq!(page[1], own[1]);
        assert_eq!(page[2], server(&["stun:u:3478"], None, None));
        assert!(!format!("{page:?}").contains("hunter2"));
        let shared = for_page(&servers, Some(secret), 1_700_000_000, "rtcam", true);
        assert_eq!(shared, own, "served when explicitly asked for");
        // Without a secret a minted server cannot be used.
        assert_eq!(with_minted(&servers, None, 1, "x").len(), 3);
        assert_eq!(for_page(&servers, None, 1, "x", false).len(), 2);
    }

    #[test]
    fn matches_coturns_rest_api_formula() {
        // python3: base64.b64encode(hmac.new(b"north-by-northwest",
        //   b"1700000000:rtcam", hashlib.sha1).digest())
        let c = mint(b"north-by-northwest", 1_700_000_000, "rtcam");
        assert_eq!(c.username, "1700000000:rtcam");
        assert_eq!(c.credential, "cQj/y/fUmq3cd/4EApPKvCWIf/A=");
        assert_eq!(expiry_of(&c.username), Some(1_700_000_000));
    }

    #[test]
    fn ids_cannot_forge_the_expiry_and_the_password_stays_hidden() {
        let c = mint(b"secret-secret-secret", 10, "99999999999:x y");
        assert_eq!(c.username, "10:99999999999-x-y");
        assert_eq!(expiry_of(&c.username), Some(10));
        assert!(!format!("{c:?}").contains(&c.credential));
        let long = mint(b"s", 1, &"a".repeat(500));
        assert_eq!(long.username.len(), 2 + MAX_ID_LEN);
        assert_eq!(expiry_of("rtcam"), None);
    }
}
