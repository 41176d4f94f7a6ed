//! The WHEP door (draft-ietf-wish-whep-04) on the web server's port: a
//! player `POST`s its SDP offer to `/whep` with a bearer token and gets
//! `201 Created`, the answer (every candidate of the agent in it), the
//! session's resource in `Location` and its ICE session's `ETag`. `PATCH`
//! on the resource trickles candidates (`204`) or restarts ICE (`If-Match`,
//! `200` with the new credentials); `DELETE` ends the session. Every offer
//! goes through the session core's admission like an MQTT one.
//!
//! The resource URL is unguessable (128 random bits) and goes to its maker
//! only; a token presented on it must be the maker's.

use super::messages::{ErrorCode, IceCandidate, SignalError};
use super::mqtt_door::WHEP_PREFIX;
use super::topics::ClientId;
use super::whep_text::{
    FragError, IfMatch, SDP_TYPE, SDPFRAG_TYPE, answer_with_candidates, ice_credentials,
    parse_sdpfrag, restart_answer_frag, restart_offer,
};
use crate::auth::Authorizer;
use crate::config::settings::{IceServer, Secret};
use crate::session::signal::{Credential, Door, InEvent, OfferIn, Outgoing, Request};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest offer read (a browser's is 3-8 KB).
pub const MAX_OFFER: usize = 64 * 1024;
/// How long a request waits for the session core's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// How long an answer waits for the agent's candidates: they all go in the
/// `201` (host candidates come at once; a STUN server's may take longer).
const GATHER_WAIT: Duration = Duration::from_secs(3);
/// Live resources; the session table's limits apply long before this.
const MAX_RESOURCES: usize = 1024;

/// What the WHEP door needs from the agent.
#[derive(Clone)]
pub struct WhepOptions {
    /// The session core's input.
    pub requests: mpsc::Sender<Request>,
    /// Bearer tokens, as on MQTT.
    pub auth: Arc<Authorizer>,
    /// ICE servers for the player (`Link: rel="ice-server"`).
    pub ice_servers: Vec<IceServer>,
    /// The secret TURN credentials are minted from, and their lifetime.
    pub turn_secret: Option<(Secret, Duration)>,
    /// Give players static TURN credentials.
    pub serve_static_turn_credentials: bool,
}

/// The WHEP endpoint's state: its resources, and the door the session
/// core answers through.
#[derive(Clone)]
pub struct Whep {
    inner: Arc<Inner>,
}

struct Inner {
    opts: WhepOptions,
    /// Resource id → resource.
    resources: Mutex<HashMap<String, Arc<Resource>>>,
    /// Client id → where its replies go (from the offer until the end).
    routes: Mutex<HashMap<ClientId, Route>>,
}

struct Route {
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Its resource, once answered.
    resource: Option<String>,
}

/// One WHEP session.
struct Resource {
    client: ClientId,
    /// The session's secret (a restart or bye presents it).
    secret: String,
    /// Who made it (admission's principal): only they may change it.
    principal: String,
    /// Serialises PATCH and DELETE, and holds what a restart changes.
    state: tokio::sync::Mutex<ResourceState>,
}

struct ResourceState {
    /// The offer, with the player's current ICE credentials.
    offer: String,
    /// The player's current `ice-ufrag`.
    remote_ufrag: String,
    /// The ICE session's entity-tag (the agent's `ice-ufrag`, quoted).
    etag: String,
    /// The agent's candidates. An ICE restart keeps its sockets (the
    /// WebRTC stack gathers no new ones), so a restart's answer repeats
    /// these unless new ones come.
    local: Vec<IceCandidate>,
    /// The session core's replies to this client.
    replies: mpsc::UnboundedReceiver<Outgoing>,
}

impl Door for Inner {
    fn send(&self, client: &ClientId, out: Outgoing) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Outgoing::Bye(reason) = &out {
            // The session is over: its resource goes with it.
            if let Some(route) = routes.remove(client) {
                if let Some(r) = &route.resource {
                    self.resources
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(r);
                }
                tracing::debug!(client = %client, reason = %reason, "WHEP session ended");
                let _ = route.tx.send(out);
            }
            return;
        }
        if let Some(route) = routes.get(client) {
            let _ = route.tx.send(out);
        }
    }

    fn name(&self) -> &'static str {
        "whep"
    }
}

impl std::fmt::Debug for Whep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whep")
            .field("resources", &self.resources())
            .finish()
    }
}

impl Whep {
    /// A WHEP endpoint feeding `opts.requests`.
    pub fn new(opts: WhepOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                opts,
                resources: Mutex::default(),
                routes: Mutex::default(),
            }),
        }
    }

    /// Live WHEP resources.
    pub fn resources(&self) -> usize {
        self.inner
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn door(&self) -> Arc<dyn Door> {
        self.inner.clone()
    }

    fn forget(&self, client: &ClientId) {
        self.inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(client);
    }
}

/// `/whep` and `/whep/{resource}`.
pub fn routes(whep: Whep) -> Router {
    Router::new()
        .route(
            "/whep",
            post(offer).options(options_endpoint).head(head_endpoint),
        )
        .route(
            "/whep/{resource}",
            axum::routing::patch(patch)
                .delete(delete)
                .options(options_resource),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER))
        // The router's own answers (405, 413) need CORS too, or a browser
        // player sees a network error instead of the status.
        .layer(axum::middleware::map_response(with_cors))
        .with_state(whep)
}

/// A WHEP error: the status, a stable code and a text naming the problem.
struct WhepError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `WWW-Authenticate`, `Retry-After`, …
    extra: Vec<(HeaderName, HeaderValue)>,
}

impl WhepError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    fn with(mut self, name: HeaderName, value: &'static str) -> Self {
        self.extra.push((name, HeaderValue::from_static(value)));
        self
    }
}

impl IntoResponse for WhepError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        let h = r.headers_mut();
        cors(h);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (k, v) in self.extra {
            h.insert(k, v);
        }
        r
    }
}

/// The session core's refusal as an HTTP answer.
fn from_signal(e: SignalError) -> WhepError {
    use StatusCode as S;
    let (status, retry) = match e.code {
        ErrorCode::BadJson | ErrorCode::BadMessage | ErrorCode::BadSdp => (S::BAD_REQUEST, None),
        ErrorCode::TooLarge => (S::PAYLOAD_TOO_LARGE, None),
        ErrorCode::NoVideoCodec | ErrorCode::TooManyCandidates | ErrorCode::BadCandidate => {
            (S::UNPROCESSABLE_ENTITY, None)
        }
        ErrorCode::Unauthorized => (S::UNAUTHORIZED, None),
        ErrorCode::UnknownSession | ErrorCode::ClientIdInUse => (S::NOT_FOUND, None),
        ErrorCode::RateLimited => (S::TOO_MANY_REQUESTS, Some("60")),
        ErrorCode::MaxViewers | ErrorCode::Busy => (S::SERVICE_UNAVAILABLE, Some("5")),
        ErrorCode::Timeout => (S::GATEWAY_TIMEOUT, None),
        ErrorCode::Internal => (S::INTERNAL_SERVER_ERROR, None),
    };
    let mut w = WhepError::new(status, e.code.as_str(), e.message);
    if let Some(secs) = retry {
        w = w.with(header::RETRY_AFTER, secs);
    }
    if status == S::UNAUTHORIZED {
        w = w.with(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"rtcam\", error=\"invalid_token\"",
        );
    }
    w
}

async fn with_cors(mut r: Response) -> Response {
    cors(r.headers_mut());
    r
}

fn cors(h: &mut HeaderMap) {
    // Tokens travel in headers, never cookies: any origin may call.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After"),
    );
}

fn preflight(allow: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    cors(&mut h);
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allow),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    // A player on a page from elsewhere (a dashboard) may reach a camera
    // on the LAN (Private Network Access).
    h.insert(
        "access-control-allow-private-network",
        HeaderValue::from_static("true"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h
}

async fn options_endpoint() -> Response {
    let mut h = preflight("OPTIONS, POST, HEAD");
    h.insert("accept-post", HeaderValue::from_static(SDP_TYPE));
    (StatusCode::NO_CONTENT, h).into_response()
}

/// Discovery: the endpoint exists and takes SDP offers.
async fn head_endpoint() -> Response {
    let mut h = preflight("OPTIONS, POST, HEAD");
    h.insert("accept-post", HeaderValue::from_static(SDP_TYPE));
    (StatusCode::NO_CONTENT, h).into_response()
}

async fn options_resource() -> Response {
    let mut h = preflight("OPTIONS, PATCH, DELETE");
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG_TYPE));
    (StatusCode::NO_CONTENT, h).into_response()
}

/// The request's media type, without parameters, lowercase.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_ascii_lowercase())
}

fn require_type(headers: &HeaderMap, want: &'static str) -> Result<(), WhepError> {
    match media_type(headers) {
        Some(t) if t == want => Ok(()),
        got => Err(WhepError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be {want}; this one is {}",
                got.as_deref().unwrap_or("untyped")
            ),
        )
        .with(
            if want == SDP_TYPE {
                HeaderName::from_static("accept-post")
            } else {
                HeaderName::from_static("accept-patch")
            },
            want,
        )),
    }
}

/// The request's bearer token (RFC 6750 §2.1, or `access_token` §2.3).
fn token(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>, WhepError> {
    crate::web::bearer::bearer_token(headers, uri).map_err(|r| {
        WhepError::new(StatusCode::BAD_REQUEST, "invalid_request", r.to_string()).with(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"rtcam\", error=\"invalid_request\"",
        )
    })
}

fn random_id(bytes: usize) -> String {
    use base64::Engine as _;
    let mut b = vec![0u8; bytes];
    if let Err(e) = getrandom::fill(&mut b) {
        tracing::error!(error = %e, "no randomness for a WHEP id");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /whep`: a new session.
async fn offer(
    State(whep): State<Whep>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, WhepError> {
    require_type(&headers, SDP_TYPE)?;
    let sdp = std::str::from_utf8(&body)
        .map_err(|_| {
            WhepError::new(
                StatusCode::BAD_REQUEST,
                "bad_sdp",
                "the offer is not UTF-8 text",
            )
        })?
        .to_string();
    let token = token(&headers, &uri)?;
    let client = ClientId::parse(&format!("{WHEP_PREFIX}{}", random_id(9))).map_err(|e| {
        WhepError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })?;
    let remote_ufrag = ice_credentials(&sdp).map(|(u, _)| u).unwrap_or_default();
    let (tx, mut replies) = mpsc::unbounded_channel();
    {
        // Routes of offers in flight count too: refused ones never become
        // resources, and must not pile up either.
        let mut routes = whep
            .inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if routes.len() >= MAX_RESOURCES {
            return Err(WhepError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many WHEP sessions",
            )
            .with(header::RETRY_AFTER, "5"));
        }
        routes.insert(client.clone(), Route { tx, resource: None });
    }
    // Whatever ends this request before its resource is registered (an
    // error, a timeout, the player hanging up) takes the route back, and
    // ends a session that was answered but never handed out.
    let mut pending = Pending {
        whep: &whep,
        client: client.clone(),
        secret: None,
        registered: false,
    };
    let req = Request {
        client: client.clone(),
        door: whep.door(),
        event: InEvent::Offer(OfferIn {
            sdp: sdp.clone(),
            credential: Credential::Bearer(token),
            session: None,
            restart: false,
        }),
    };
    send(&whep, req).await?;
    let Answered {
        sdp: answer,
        secret,
        principal,
        candidates,
        complete,
    } = wait_answer(&mut replies, &mut pending.secret).await?;
    let etag = etag_of(&answer);
    let id = random_id(16);
    let resource = Arc::new(Resource {
        client: client.clone(),
        secret,
        principal,
        state: tokio::sync::Mutex::new(ResourceState {
            offer: sdp,
            remote_ufrag,
            etag: etag.clone(),
            local: candidates.clone(),
            replies,
        }),
    });
    {
        let mut routes = whep
            .inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match routes.get_mut(&client) {
            Some(route) => route.resource = Some(id.clone()),
            // The session ended while its candidates were gathered.
            None => {
                return Err(WhepError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the session ended before it was answered",
                ));
            }
        }
        whep.inner
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), resource);
        pending.registered = true;
    }
    tracing::info!(client = %client, candidates = candidates.len(), "WHEP session created");
    let body = answer_with_candidates(&answer, &candidates, complete);
    let mut h = HeaderMap::new();
    cors(&mut h);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("/whep/{id}")) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG_TYPE));
    for link in ice_links(&whep.inner.opts, &client) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    Ok((StatusCode::CREATED, h, body).into_response())
}

/// A POST's route until its resource is registered.
struct Pending<'a> {
    whep: &'a Whep,
    client: ClientId,
    /// The session's secret, once answered.
    secret: Option<String>,
    registered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.registered {
            return;
        }
        self.whep.forget(&self.client);
        if let Some(secret) = self.secret.take() {
            // Not awaited (a drop cannot): if the queue is full, the
            // unanswered session ends at its negotiation timeout instead.
            let _ = self.whep.inner.opts.requests.try_send(Request {
                client: self.client.clone(),
                door: self.whep.door(),
                event: InEvent::Bye(Some(secret)),
            });
        }
    }
}

/// Hands a request to the session core.
async fn send(whep: &Whep, req: Request) -> Result<(), WhepError> {
    match tokio::time::timeout(ANSWER_WAIT, whep.inner.opts.requests.send(req)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WhepError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the camera is stopping",
        )),
        Err(_) => Err(WhepError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the session manager is busy; try again",
        )
        .with(header::RETRY_AFTER, "5")),
    }
}

/// What the core answered an offer with.
struct Answered {
    /// The SDP answer.
    sdp: String,
    /// The session's secret.
    secret: String,
    /// Who made the session, as admission decided.
    principal: String,
    /// The agent's candidates.
    candidates: Vec<IceCandidate>,
    /// Whether gathering completed in time.
    complete: bool,
}

/// Waits for the answer and the agent's candidates. `secret_seen` is set as
/// soon as the answer comes (the caller may be dropped while candidates
/// are gathered).
async fn wait_answer(
    replies: &mut mpsc::UnboundedReceiver<Outgoing>,
    secret_seen: &mut Option<String>,
) -> Result<Answered, WhepError> {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    let (sdp, secret, principal) = loop {
        match tokio::time::timeout_at(deadline, replies.recv()).await {
            Ok(Some(Outgoing::Answer {
                sdp,
                secret,
                principal,
            })) => {
                *secret_seen = Some(secret.clone());
                break (sdp, secret, principal);
            }
            Ok(Some(Outgoing::Error(e))) => return Err(from_signal(e)),
            Ok(Some(Outgoing::Bye(reason))) => {
                return Err(WhepError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ended",
                    format!("the session ended before it was answered ({reason})"),
                ));
            }
            // Candidates of an earlier ICE session.
            Ok(Some(Outgoing::Candidate(_))) => {}
            Ok(None) => {
                return Err(WhepError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the camera is stopping",
                ));
            }
            Err(_) => {
                return Err(WhepError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "no answer in time",
                ));
            }
        }
    };
    let mut candidates = Vec::new();
    let gathered = tokio::time::Instant::now() + GATHER_WAIT;
    let complete = loop {
        match tokio::time::timeout_at(gathered, replies.recv()).await {
            Ok(Some(Outgoing::Candidate(c))) if c.is_end() => break true,
            Ok(Some(Outgoing::Candidate(c))) => candidates.push(c),
            Ok(Some(Outgoing::Error(e))) => return Err(from_signal(e)),
            Ok(Some(Outgoing::Bye(reason))) => {
                return Err(WhepError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ended",
                    format!("the session ended while its candidates were gathered ({reason})"),
                ));
            }
            Ok(Some(Outgoing::Answer { .. })) => {}
            Ok(None) | Err(_) => break false,
        }
    };
    Ok(Answered {
        sdp,
        secret,
        principal,
        candidates,
        complete,
    })
}

/// The entity-tag of the ICE session an answer starts: its `ice-ufrag`.
fn etag_of(answer: &str) -> String {
    let ufrag = ice_credentials(answer).map(|(u, _)| u).unwrap_or_default();
    format!("\"{}\"", ufrag.replace(['"', '\\'], ""))
}

/// `Link: <url>; rel="ice-server"` for each configured server (RFC 8288,
/// as WHIP and WHEP use it), TURN credentials minted per session.
fn ice_links(opts: &WhepOptions, client: &ClientId) -> Vec<String> {
    let ttl = opts
        .turn_secret
        .as_ref()
        .map(|(_, t)| *t)
        .unwrap_or_default();
    let servers = rtcam_proto::turn::for_page(
        &opts.ice_servers,
        opts.turn_secret
            .as_ref()
            .map(|(s, _)| s.expose().as_bytes()),
        unix_now() + ttl.as_secs(),
        client.as_str(),
        opts.serve_static_turn_credentials,
    );
    let quote = |s: &str| s.replace(['"', '\\'], "");
    let mut links = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut l = format!("<{}>; rel=\"ice-server\"", url.replace(['<', '>'], ""));
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                l.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quote(u),
                    quote(c)
                ));
            }
            links.push(l);
        }
    }
    links
}

/// The resource, if the request may change it.
fn resource(
    whep: &Whep,
    id: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(Arc<Resource>, Option<String>), WhepError> {
    let found = whep
        .inner
        .resources
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(id)
        .cloned();
    let Some(r) = found else {
        return Err(WhepError::new(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no WHEP session here (it ended, or never was)",
        ));
    };
    let token = token(headers, uri)?;
    let auth = &whep.inner.opts.auth;
    // The unguessable URL went to its maker only, and is enough (as the
    // draft allows): a player that carried its token in the POST's URL
    // (`?access_token=`) has none on the resource's. A token that is
    // presented must be good, and its maker's.
    if let (true, Some(_)) = (auth.required(), &token) {
        let grant = auth
            .grant(token.as_deref(), unix_now())
            .map_err(|e| from_signal(SignalError::new(ErrorCode::Unauthorized, e.to_string())))?;
        if grant.principal != r.principal {
            return Err(WhepError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this session was made with another token",
            ));
        }
    }
    Ok((r, token))
}

/// `PATCH /whep/{resource}`: trickle, or restart ICE.
async fn patch(
    State(whep): State<Whep>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, WhepError> {
    let (r, token) = resource(&whep, &id, &headers, &uri)?;
    require_type(&headers, SDPFRAG_TYPE)?;
    let frag = parse_sdpfrag(&body).map_err(|e| {
        let status = match e {
            FragError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FragError::NotText | FragError::BadLine { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        WhepError::new(status, "bad_sdpfrag", e.to_string())
    })?;
    let if_match = IfMatch::parse(headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()));
    let mut st = r.state.lock().await;
    let restart = frag
        .credentials
        .as_ref()
        .filter(|(u, _)| *u != st.remote_ufrag);
    let Some((ufrag, pwd)) = restart else {
        if !if_match.matches(&st.etag) {
            return Err(precondition_failed(&st.etag));
        }
        trickle(&whep, &r.client, frag.candidates).await?;
        let mut h = HeaderMap::new();
        cors(&mut h);
        return Ok((StatusCode::NO_CONTENT, h).into_response());
    };
    match &if_match {
        IfMatch::Absent => {
            return Err(WhepError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "if_match_required",
                "an ICE restart (new ice-ufrag and ice-pwd) needs an If-Match header: \"*\" or the session's ETag",
            ));
        }
        m if !m.matches(&st.etag) => return Err(precondition_failed(&st.etag)),
        _ => {}
    }
    // Candidates of the old ICE session are of no use now.
    while st.replies.try_recv().is_ok() {}
    let offer = restart_offer(&st.offer, ufrag, pwd);
    let req = Request {
        client: r.client.clone(),
        door: whep.door(),
        event: InEvent::Offer(OfferIn {
            sdp: offer.clone(),
            // Without a token the resource's URL, and so the session's
            // secret, vouches for the restart.
            credential: match token {
                Some(t) => Credential::Bearer(Some(t)),
                None => Credential::Session,
            },
            session: Some(r.secret.clone()),
            restart: true,
        }),
    };
    send(&whep, req).await?;
    let Answered {
        sdp: answer,
        candidates: fresh,
        complete,
        ..
    } = wait_answer(&mut st.replies, &mut None).await?;
    if !fresh.is_empty() {
        st.local = fresh;
    }
    let candidates = st.local.clone();
    st.offer = offer;
    st.remote_ufrag = ufrag.clone();
    st.etag = etag_of(&answer);
    trickle(&whep, &r.client, frag.candidates).await?;
    tracing::info!(client = %r.client, "WHEP ICE restart");
    let mut h = HeaderMap::new();
    cors(&mut h);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG_TYPE));
    if let Ok(v) = HeaderValue::from_str(&st.etag) {
        h.insert(header::ETAG, v);
    }
    Ok((
        StatusCode::OK,
        h,
        restart_answer_frag(&answer, &candidates, complete),
    )
        .into_response())
}

/// Hands the player's candidates to its session.
async fn trickle(
    whep: &Whep,
    client: &ClientId,
    candidates: Vec<IceCandidate>,
) -> Result<(), WhepError> {
    for c in candidates {
        let req = Request {
            client: client.clone(),
            door: whep.door(),
            event: InEvent::Candidate(c),
        };
        send(whep, req).await?;
    }
    Ok(())
}

fn precondition_failed(etag: &str) -> WhepError {
    WhepError::new(
        StatusCode::PRECONDITION_FAILED,
        "etag_mismatch",
        format!("If-Match names another ICE session; the current one is {etag}"),
    )
}

/// `DELETE /whep/{resource}`: ends the session.
async fn delete(
    State(whep): State<Whep>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WhepError> {
    let (r, _) = resource(&whep, &id, &headers, &uri)?;
    let _st = r.state.lock().await;
    whep.inner
        .resources
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    let req = Request {
        client: r.client.clone(),
        door: whep.door(),
        event: InEvent::Bye(Some(r.secret.clone())),
    };
    send(&whep, req).await?;
    whep.forget(&r.client);
    tracing::info!(client = %r.client, "WHEP session deleted by the player");
    let mut h = HeaderMap::new();
    cors(&mut h);
    Ok((StatusCode::OK, h).into_response())
}
