//! The built-in web viewer: static files embedded at build time, plus
//! `/config.json` (how the page reaches the broker), `/stats.json`, and
//! `/metrics` (Prometheus text format; public like `/stats.json`: viewers
//! are authorised on the signaling path, the page itself has no login), and
//! `/recordings` (the recorder's segments, behind viewer tokens:
//! [`recordings`]), and the WHEP door at `/whep`
//! ([`crate::signaling::whep`]).

pub mod bearer;
pub mod conn;
pub mod mqtt_ws;
pub mod recordings;
pub mod snapshot;
pub mod tls;

use crate::config::settings::{IceServer, Secret};
use crate::throttle::{Throttle, Verdict};
use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rtcam_proto::http::{HostError, HostName, parse_host};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use conn::{Limits, LocalAddr, PeerAddr, Secure, WebCounts};
pub use recordings::{RecordingEntry, Recordings, RecordingsDoor, RecordingsError};

#[derive(rust_embed::RustEmbed)]
#[folder = "src/web/assets/"]
struct Assets;

/// What the page needs to connect.
#[derive(Debug, Clone)]
pub struct PageConfig {
    /// Device name.
    pub device: String,
    /// Topic prefix `P`.
    pub topic_prefix: String,
    /// MQTT version for the browser (4 = 3.1.1).
    pub mqtt_protocol: u8,
    /// ICE servers for the browser's peer connection, as configured.
    pub ice_servers: Vec<IceServer>,
    /// The secret TURN credentials are minted from, and their lifetime.
    pub turn_secret: Option<(Secret, Duration)>,
    /// Give the page static TURN credentials.
    pub serve_static_turn_credentials: bool,
}

/// One ICE server as the page's `RTCPeerConnection` takes it.
#[derive(Debug, Serialize)]
struct PageIceServer {
    urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

/// How to tell the browser where the MQTT WebSocket is.
#[derive(Debug, Clone)]
pub enum WsUrl {
    /// A fixed URL.
    Fixed(String),
    /// The embedded broker's WebSocket port on the host that served the
    /// page, when that host is one the server is reached by ([`page_host`]).
    SameHost {
        /// Port.
        port: u16,
    },
    /// None known.
    Unknown,
}

/// The names the web viewer accepts in a `Host` header besides IP literals
/// of the address a request arrived at.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    /// The machine's own name (and `NAME.local`), lowercase.
    pub machine: Vec<String>,
    /// `http.hosts`.
    pub configured: Vec<String>,
}

impl KnownHosts {
    /// The machine's names from the kernel, plus `configured`.
    pub fn of_this_machine(configured: &[String]) -> KnownHosts {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|n| n.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let machine = if name.is_empty() {
            Vec::new()
        } else if name.ends_with(".local") {
            vec![name]
        } else {
            vec![format!("{name}.local"), name]
        };
        KnownHosts {
            machine,
            configured: configured.to_vec(),
        }
    }
}

/// The host the page's broker URL names, for a request with `host` (its
/// `Host` header) that arrived at the local address `local`: the `Host`
/// when the server is reached by it (the IP literal `local` itself, one in
/// `http.hosts`, `localhost` on a loopback connection, the machine's name, a
/// name in `http.hosts`), else `local`. A malformed `Host` is an error (400).
pub fn page_host(
    host: Option<&str>,
    local: IpAddr,
    known: &KnownHosts,
) -> Result<String, HostError> {
    let local = local.to_canonical();
    let fallback = HostName::Ip(local).to_string();
    let Some(text) = host.filter(|h| !h.is_empty()) else {
        return Ok(fallback);
    };
    let parsed = parse_host(text)?;
    let listed = |n: &str| known.configured.iter().any(|c| c == n);
    let ok = match &parsed.name {
        HostName::Ip(ip) => ip.to_canonical() == local || listed(&parsed.name.to_string()),
        HostName::Name(n) if n == "localhost" => local.is_loopback(),
        HostName::Name(n) => known.machine.contains(n) || listed(n),
    };
    Ok(if ok {
        match parsed.name {
            HostName::Ip(ip) => HostName::Ip(ip.to_canonical()).to_string(),
            name => name.to_string(),
        }
    } else {
        fallback
    })
}

/// Live figures for `/stats.json`.
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The `/metrics` text, built at each scrape.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Where `/stats.json` and `/metrics` get their figures.
#[derive(Clone)]
pub struct Figures {
    /// `/stats.json`.
    pub stats: StatsFn,
    /// `/metrics`.
    pub metrics: MetricsFn,
}

#[derive(Clone)]
struct AppState {
    page: Arc<PageConfig>,
    ws: WsUrl,
    stats: StatsFn,
    metrics: MetricsFn,
    known: Arc<KnownHosts>,
    /// Requests whose `Host` is not used (logged once a minute, with a count).
    host_log: Arc<Mutex<Throttle>>,
}

/// The web server's options from `[http]`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connection limits.
    pub limits: Limits,
    /// Host names accepted besides the machine's.
    pub hosts: Vec<String>,
    /// The recorder's segments at `/recordings`; `None` when recording is
    /// off (those routes then answer 404 `recording_off`).
    pub recordings: Option<Recordings>,
    /// `/snapshot.jpg`.
    pub snapshot: Option<snapshot::Shots>,
    /// The WHEP door at `/whep`.
    pub whep: Option<crate::signaling::whep::Whep>,
    /// HTTPS.
    pub tls: Option<TlsOn>,
    /// The embedded broker's WebSocket listener, proxied at `/mqtt` (what
    /// an HTTPS page uses: it may not open `ws://`).
    pub mqtt_ws: Option<std::net::SocketAddr>,
}

/// The web server's TLS acceptor.
#[derive(Clone)]
pub struct TlsOn(pub tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for TlsOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsOn")
    }
}

/// Serves the viewer on `listener` until `shutdown`; `counts` tracks its
/// connections.
pub async fn serve(
    listener: TcpListener,
    page: PageConfig,
    ws: WsUrl,
    figures: Figures,
    opts: ServeOptions,
    counts: Arc<WebCounts>,
    shutdown: CancellationToken,
) {
    let state = AppState {
        page: Arc::new(page),
        ws,
        stats: figures.stats,
        metrics: figures.metrics,
        known: Arc::new(KnownHosts::of_this_machine(&opts.hosts)),
        host_log: Arc::new(Mutex::new(Throttle::new(1, Duration::from_secs(60)))),
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/config.json", get(config))
        .route("/stats.json", get(stats_json))
        .route("/metrics", get(metrics_text))
        .route("/assets/{*path}", get(asset))
        // Browsers ask for an icon on every page load; /favicon.ico too
        // (some ignore the page's <link>), and both get the same SVG.
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .with_state(state)
        .merge(recordings::routes(opts.recordings));
    let app = match opts.snapshot {
        Some(shots) => app.merge(snapshot::routes(shots)),
        None => app,
    };
    let app = match opts.whep {
        Some(whep) => app.merge(crate::signaling::whep::routes(whep)),
        None => app,
    };
    let app = match opts.mqtt_ws {
        Some(broker) => app.merge(mqtt_ws::routes(broker, shutdown.clone())),
        None => app,
    };
    let mut limits = opts.limits;
    let cap = conn::effective_cap(limits.cap);
    if cap < limits.cap {
        tracing::info!(
            http_max_connections = limits.cap,
            used = cap,
            "web viewer connections capped at a quarter of the file descriptor limit"
        );
    }
    limits.cap = cap;
    conn::run(
        listener,
        app,
        limits,
        counts,
        opts.tls.map(|t| t.0),
        shutdown,
    )
    .await;
}

fn file(path: &str) -> Response {
    match Assets::get(path) {
        Some(f) => {
            let mime = match path.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("md") => "text/markdown; charset=utf-8",
                Some("svg") => "image/svg+xml",
                _ => "application/octet-stream",
            };
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                ],
                f.data.into_owned(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn index() -> Response {
    file("index.html")
}

async fn favicon() -> Response {
    file("favicon.svg")
}

async fn asset(Path(path): Path<String>) -> Response {
    file(&path)
}

fn bad_request(code: &str, message: String) -> Response {
    json_error(StatusCode::BAD_REQUEST, code, message)
}

/// An error answer: `{"error": code, "message": message}`, never cached.
fn json_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random id for a page load's TURN credential (names it in the TURN
/// server's log).
fn page_id() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    format!("rtcam-page-{:08x}", u32::from_be_bytes(b))
}

async fn config(
    State(s): State<AppState>,
    Extension(LocalAddr(local)): Extension<LocalAddr>,
    secure: Option<Extension<Secure>>,
    headers: HeaderMap,
) -> Response {
    let ws_url = match &s.ws {
        WsUrl::Fixed(u) => Some(u.clone()),
        WsUrl::SameHost { port } => {
            let mut hosts = headers.get_all(header::HOST).iter();
            let (first, second) = (hosts.next(), hosts.next());
            if second.is_some() {
                return bad_request("bad_host", "more than one Host header".into());
            }
            let text = match first.map(|h| h.to_str()) {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(_)) => {
                    return bad_request("bad_host", "the Host header is not text".into());
                }
            };
            let host = match page_host(text, local, &s.known) {
                Ok(h) => h,
                Err(e) => return bad_request("bad_host", format!("Host header refused: {e}")),
            };
            if let Some(t) = text.filter(|t| {
                rtcam_proto::http::parse_host(t).is_ok_and(|p| p.name.to_string() != host)
            }) && let Verdict::Pass { suppressed } = s
                .host_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .check(Instant::now())
            {
                tracing::info!(
                    host = %t.escape_debug(),
                    used = %host,
                    more_since_last = suppressed,
                    "a page was loaded by a host name not in http.hosts: its broker URL names the address instead"
                );
            }
            Some(match secure {
                // An HTTPS page may only open wss://: the broker's socket
                // through this server (`/mqtt`).
                Some(Extension(Secure { port: https })) => format!("wss://{host}:{https}/mqtt"),
                None => format!("ws://{host}:{port}"),
            })
        }
        WsUrl::Unknown => None,
    };
    let ttl = s.page.turn_secret.as_ref().map(|(_, ttl)| *ttl);
    let expires = unix_now() + ttl.unwrap_or_default().as_secs();
    let ice: Vec<PageIceServer> = rtcam_proto::turn::for_page(
        &s.page.ice_servers,
        s.page
            .turn_secret
            .as_ref()
            .map(|(secret, _)| secret.expose().as_bytes()),
        expires,
        &page_id(),
        s.page.serve_static_turn_credentials,
    )
    .into_iter()
    .map(|i| PageIceServer {
        urls: i.urls,
        username: i.username,
        credential: i.credential,
    })
    .collect();
    let minted = s.page.turn_secret.is_some() && s.page.ice_servers.iter().any(IceServer::minted);
    let v = serde_json::json!({
        "device": s.page.device,
        "topic_prefix": s.page.topic_prefix,
        "mqtt_protocol": s.page.mqtt_protocol,
        "ice_servers": ice,
        "ice_expires": if minted { serde_json::Value::from(expires) } else { serde_json::Value::Null },
        "mqtt_ws_url": ws_url,
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(v),
    )
        .into_response()
}

async fn stats_json(State(s): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json((s.stats)()),
    )
        .into_response()
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        (s.metrics)(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> KnownHosts {
        KnownHosts {
            machine: vec!["garage.local".into(), "garage".into()],
            configured: vec!["cam.example.org".into(), "203.0.113.7".into()],
        }
    }

    #[test]
    fn the_page_host_is_one_the_server_is_reached_by() {
        let lan: IpAddr = "192.168.1.5".parse().expect("ip");
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let k = known();
        let host = |h: Option<&str>, local| page_host(h, local, &k);
        assert_eq!(
            host(Some("192.168.1.5:8080"), lan),
            Ok("192.168.1.5".into())
        );
        assert_eq!(host(Some("Garage:8080"), lan), Ok("garage".into()));
        assert_eq!(host(Some("garage.local"), lan), Ok("garage.local".into()));
        assert_eq!(
            host(Some("CAM.example.org."), lan),
            Ok("cam.example.org".into())
        );
        assert_eq!(host(Some("203.0.113.7:80"), lan), Ok("203.0.113.7".into()));
        assert_eq!(host(Some("localhost:8080"), lo), Ok("localhost".into()));
        assert_eq!(
            host(Some("[::1]:8080"), "::1".parse().expect("ip")),
            Ok("[::1]".into())
        );
        // Anything else: the address the request arrived at.
        assert_eq!(host(Some("evil.example"), lan), Ok("192.168.1.5".into()));
        assert_eq!(host(Some("6.6.6.6"), lan), Ok("192.168.1.5".into()));
        assert_eq!(host(Some("localhost"), lan), Ok("192.168.1.5".into()));
        assert_eq!(host(None, lan), Ok("192.168.1.5".into()));
        assert_eq!(
            host(Some("x"), "::ffff:10.0.0.2".parse().expect("ip")),
            Ok("10.0.0.2".into()),
            "an IPv4 client of a dual-stack listener"
        );
        // Malformed: refused.
        for bad in ["evil.com@cam", "cam/x", "cam:0", "a b", "[zz]", "1.2.3"] {
            assert!(host(Some(bad), lan).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_files_are_embedded() {
        for f in [
            "index.html",
            "app.js",
            "panel.js",
            "latency.js",
            "recordings.js",
            "audio.js",
            "style.css",
            "favicon.svg",
            "vendor/mqtt.min.js",
            "vendor/sha256.min.js",
        ] {
            assert!(Assets::get(f).is_some(), "{f} missing from the binary");
        }
    }
}
