//! `/mqtt`: the embedded broker's MQTT WebSocket, on the web server's own
//! origin. A page served over HTTPS may not open a plain `ws://` socket
//! (mixed content), and the broker has no TLS of its own; so the page's
//! handshake is passed to the broker's WebSocket listener as it came
//! (`Host`, `Origin`, key, subprotocol: the broker's origin rules still
//! decide), and once the broker accepts, bytes are copied both ways.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the broker has to answer the handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Largest handshake answer read from the broker.
const MAX_ANSWER: usize = 8 * 1024;

/// `/mqtt`, proxied to the broker's WebSocket listener at `broker`.
pub fn routes(broker: SocketAddr) -> axum::Router {
    axum::Router::new()
        .route("/mqtt", axum::routing::get(upgrade))
        .with_state(broker)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    super::json_error(status, "bad_websocket", message.to_string())
}

/// The headers a WebSocket handshake carries through, in order.
const PASSED: [header::HeaderName; 6] = [
    header::HOST,
    header::ORIGIN,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

fn is_upgrade(h: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

async fn upgrade(State(broker): State<SocketAddr>, mut req: Request) -> Response {
    if !is_upgrade(req.headers()) || req.headers().get(header::SEC_WEBSOCKET_KEY).is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "/mqtt is the broker's MQTT WebSocket: a WebSocket handshake is expected",
        );
    }
    let mut text = String::from("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n");
    for name in PASSED {
        for v in req.headers().get_all(&name) {
            let Ok(v) = v.to_str() else {
                return refuse(StatusCode::BAD_REQUEST, "a handshake header is not text");
            };
            text.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    text.push_str("\r\n");
    let target = match broker.ip() {
        // A wildcard listener is reached on loopback.
        ip if ip.is_unspecified() => SocketAddr::new(
            if ip.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            broker.port(),
        ),
        _ => broker,
    };
    let answered = tokio::time::timeout(HANDSHAKE, async {
        let mut s = TcpStream::connect(target).await?;
        s.write_all(text.as_bytes()).await?;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < MAX_ANSWER {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>((s, got))
    })
    .await;
    let (stream, answer) = match answered {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, broker = %target, "the broker's WebSocket listener is not reachable");
            return refuse(
                StatusCode::BAD_GATEWAY,
                "the broker's WebSocket listener is not reachable",
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::GATEWAY_TIMEOUT,
                "the broker did not answer the handshake",
            );
        }
    };
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "the broker's handshake answer is not HTTP",
        );
    };
    // Bytes after the head would be MQTT the broker sent before the page
    // spoke: none are expected, and none may be lost.
    let early = answer[end + 4..].to_vec();
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(502);
    let mut out = HeaderMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && let (Ok(k), Ok(v)) = (
                header::HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            )
        {
            out.append(k, v);
        }
    }
    if status != 101 {
        // The broker's refusal (an origin it does not allow), as it gave it.
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return refuse(code, "the broker refused the WebSocket");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut page = hyper_util::rt::TokioIo::new(upgraded);
        let mut broker = stream;
        if !early.is_empty() && page.write_all(&early).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut page, &mut broker).await;
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = out;
    r.into_response()
}
