//! The built-in web viewer: static files embedded at build time, plus
//! `/config.json` (how the page reaches the broker) and `/stats.json`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(rust_embed::RustEmbed)]
#[folder = "src/web/assets/"]
struct Assets;

/// What the page needs to connect.
#[derive(Debug, Clone, Serialize)]
pub struct PageConfig {
    /// Device name.
    pub device: String,
    /// Topic prefix `P`.
    pub topic_prefix: String,
    /// MQTT version for the browser (4 = 3.1.1).
    pub mqtt_protocol: u8,
    /// ICE servers for the browser's peer connection.
    pub ice_servers: Vec<crate::config::settings::IceServer>,
}

/// How to tell the browser where the MQTT WebSocket is.
#[derive(Debug, Clone)]
pub enum WsUrl {
    /// A fixed URL.
    Fixed(String),
    /// The embedded broker's WebSocket port on whatever host served the page.
    SameHost {
        /// Port.
        port: u16,
    },
    /// None known.
    Unknown,
}

/// Live figures for `/stats.json`.
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
struct AppState {
    page: Arc<PageConfig>,
    ws: WsUrl,
    stats: StatsFn,
}

/// Serves the viewer on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    page: PageConfig,
    ws: WsUrl,
    stats: StatsFn,
    shutdown: CancellationToken,
) {
    let state = AppState {
        page: Arc::new(page),
        ws,
        stats,
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/config.json", get(config))
        .route("/stats.json", get(stats_json))
        .route("/assets/{*path}", get(asset))
        // Browsers ask for an icon on every page load; /favicon.ico too
        // (some ignore the page's <link>), and both get the same SVG.
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .with_state(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "web server stopped");
    }
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

/// The host part of a `Host` header (`[::1]:8080` → `[::1]`, `cam.lan:8080` → `cam.lan`).
pub fn host_only(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

async fn config(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let ws_url = match &s.ws {
        WsUrl::Fixed(u) => Some(u.clone()),
        WsUrl::SameHost { port } => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(host_only)
                .filter(|h| !h.is_empty())
                .unwrap_or("127.0.0.1");
            Some(format!("ws://{host}:{port}"))
        }
        WsUrl::Unknown => None,
    };
    let mut v =
        serde_json::to_value(&*s.page).expect("PageConfig is plain data and always serialises");
    v["mqtt_ws_url"] = ws_url.map_or(serde_json::Value::Null, serde_json::Value::String);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_parsing() {
        assert_eq!(host_only("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_only("cam.lan"), "cam.lan");
        assert_eq!(host_only("[::1]:8080"), "[::1]");
    }

    #[test]
    fn page_files_are_embedded() {
        for f in [
            "index.html",
            "app.js",
            "panel.js",
            "style.css",
            "favicon.svg",
            "vendor/mqtt.min.js",
            "vendor/sha256.min.js",
        ] {
            assert!(Assets::get(f).is_some(), "{f} missing from the binary");
        }
    }
}
