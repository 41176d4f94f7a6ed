//! `GET /snapshot.jpg`: a JPEG of the camera now, behind a `view` token
//! (bearer, as [`super::bearer`] reads it). The web server knows snapshots
//! only through [`SnapshotFn`].

use super::bearer::authorize;
use super::json_error;
use crate::auth::{Authorizer, Role};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::Arc;

/// Takes a snapshot: the JPEG, or why there is none.
pub type SnapshotFn = Arc<dyn Fn() -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;

/// What `/snapshot.jpg` needs: how to take one, and who may.
#[derive(Clone)]
pub struct Shots {
    /// Takes a snapshot.
    pub take: SnapshotFn,
    /// Checks bearer tokens.
    pub auth: Arc<Authorizer>,
}

impl std::fmt::Debug for Shots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shots").field("auth", &self.auth).finish()
    }
}

/// The `/snapshot.jpg` route.
pub fn routes(shots: Shots) -> Router {
    Router::new()
        .route("/snapshot.jpg", get(snapshot))
        .with_state(shots)
}

async fn snapshot(State(s): State<Shots>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(refused) = authorize(&s.auth, &headers, &uri, Role::View) {
        return refused.into_response();
    }
    match (s.take)().await {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            jpeg,
        )
            .into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, "no_picture", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::StaticToken;
    use axum::body::Body;
    use axum::http::Request;
    use std::time::Duration;
    use tower::ServiceExt;

    fn app(ok: bool) -> Router {
        let take: SnapshotFn = Arc::new(move || {
            Box::pin(async move {
                if ok {
                    Ok(Bytes::from_static(&[0xff, 0xd8, 0xff, 0xd9]))
                } else {
                    Err("the camera gave no picture within 10s".to_string())
                }
            })
        });
        let auth = Authorizer::with_tokens(
            vec![StaticToken::new("viewer-token-000001", Role::View)],
            None,
            "cam",
            Duration::from_secs(3600),
        );
        routes(Shots {
            take,
            auth: Arc::new(auth),
        })
    }

    async fn get(app: Router, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
        let r = app
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("a response");
        let (parts, body) = r.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        (parts.status, parts.headers, body)
    }

    #[tokio::test]
    async fn a_view_token_gets_the_jpeg_and_no_token_a_challenge() {
        let (status, headers, body) =
            get(app(true), "/snapshot.jpg?access_token=viewer-token-000001").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "image/jpeg");
        assert_eq!(&body[..2], &[0xff, 0xd8]);
        let (status, headers, _) = get(app(true), "/snapshot.jpg").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        let (status, _, body) =
            get(app(false), "/snapshot.jpg?access_token=viewer-token-000001").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&body).contains("no_picture"));
    }
}
