//! Bearer tokens on HTTP (RFC 6750): from `Authorization: Bearer` (§2.1)
//! or, since a `<video>` or `<img src>` cannot send headers, the
//! `access_token` query parameter (§2.3); the same static and signed tokens
//! and roles as on MQTT. With `auth.mode = "none"` everyone passes.

use super::json_error;
use crate::auth::{AuthError, Authorizer, Role};
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// Why a request's token does not let it through.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No token, and one is required.
    #[error("{0}")]
    MissingToken(AuthError),
    /// A token that grants nothing, or a malformed `Authorization`.
    #[error("{0}")]
    BadToken(String),
    /// The token is carried wrongly (twice, or two ways).
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// A valid token for a lesser role.
    #[error("this needs a {} token; the one presented is {}", need.as_str(), have.as_str())]
    Forbidden {
        /// The role the request needs.
        need: Role,
        /// The role the token grants.
        have: Role,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // RFC 6750 §3: the challenge names the error, except for a missing token.
        let (status, code, challenge) = match &self {
            Refusal::MissingToken(_) => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "Bearer realm=\"rtcam\"",
            ),
            Refusal::BadToken(_) => (
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "Bearer realm=\"rtcam\", error=\"invalid_token\"",
            ),
            Refusal::InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Bearer realm=\"rtcam\", error=\"invalid_request\"",
            ),
            Refusal::Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Bearer realm=\"rtcam\", error=\"insufficient_scope\"",
            ),
        };
        let mut r = json_error(status, code, self.to_string());
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        r
    }
}

/// Checks the request's token grants `need`.
pub fn authorize(
    auth: &Authorizer,
    headers: &HeaderMap,
    uri: &Uri,
    need: Role,
) -> Result<(), Refusal> {
    if !auth.required() {
        // `auth.mode = "none"`: whatever the request carries, it may do anything.
        return Ok(());
    }
    let token = bearer_token(headers, uri)?;
    match auth.authorize(token.as_deref(), super::unix_now()) {
        Ok(have) if have == Role::Control || need == Role::View => Ok(()),
        Ok(have) => Err(Refusal::Forbidden { need, have }),
        Err(e @ AuthError::Missing) => Err(Refusal::MissingToken(e)),
        Err(e) => Err(Refusal::BadToken(e.to_string())),
    }
}

/// The bearer token of a request, from `Authorization: Bearer` or the
/// `access_token` query parameter; `None` if it has neither.
pub fn bearer_token(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() {
        return Err(Refusal::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    let from_header = match first {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| Refusal::BadToken("the Authorization header is not text".into()))?;
            // RFC 9110 §11.1: the scheme is case-insensitive.
            match text.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(token.trim_matches(' ').to_string())
                }
                _ => {
                    return Err(Refusal::BadToken(
                        "the Authorization header is not \"Bearer <token>\"".into(),
                    ));
                }
            }
        }
    };
    let Ok(Query(query)) = Query::<Vec<(String, String)>>::try_from_uri(uri) else {
        return Err(Refusal::InvalidRequest("the query string is malformed"));
    };
    let mut in_query = query.into_iter().filter(|(k, _)| k == "access_token");
    let (from_query, again) = (in_query.next(), in_query.next());
    if again.is_some() {
        return Err(Refusal::InvalidRequest(
            "more than one access_token parameter",
        ));
    }
    match (from_header, from_query) {
        // RFC 6750 §2: one method per request.
        (Some(_), Some(_)) => Err(Refusal::InvalidRequest(
            "the token is in both the Authorization header and access_token: send it once",
        )),
        (Some(t), None) | (None, Some((_, t))) => Ok(Some(t)),
        (None, None) => Ok(None),
    }
}
