//! `/mqtt`: the embedded broker's MQTT WebSocket, on the web server's own
//! origin. A page served over HTTPS may not open a plain `ws://` socket
//! (mixed content), and the broker has no TLS of its own; so the page's
//! handshake is passed to the broker's WebSocket listener as it came
//! (`Host`, `Origin`, key, subprotocol: the broker's origin rules still
//! decide), and once the broker accepts, bytes are copied both ways.
//!
//! The broker limits connections per source address, and every proxied
//! socket would come from loopback, the agent's own address: one page could
//! then use up the budget of all of them and of the agent. So each page's
//! address maps to a loopback address of its own (127.128.0.0/9, all on
//! `lo`) that its sockets come from.

use super::PeerAddr;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long the broker has to answer the handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Largest handshake answer read from the broker.
const MAX_ANSWER: usize = 8 * 1024;

#[derive(Clone)]
struct Proxy {
    broker: SocketAddr,
    /// Ends the copies of upgraded connections with the web server.
    shutdown: CancellationToken,
}

/// `/mqtt`, proxied to the broker's WebSocket listener at `broker`, until
/// `shutdown`.
pub fn routes(broker: SocketAddr, shutdown: CancellationToken) -> axum::Router {
    axum::Router::new()
        .route("/mqtt", axum::routing::get(upgrade))
        .with_state(Proxy { broker, shutdown })
}

/// The loopback address the sockets of a page at `peer` come from: one per
/// page address, in 127.128.0.0/9 (never 127.0.0.1, the agent's).
pub fn source_for(peer: IpAddr) -> Ipv4Addr {
    use std::hash::{BuildHasher, Hasher};
    // A fixed hash: the same page keeps its address (and its budget).
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(peer.to_canonical().to_string().as_bytes());
    let [a, b, c, ..] = h.finish().to_le_bytes();
    Ipv4Addr::new(127, 128 | (a & 0x7f), b, c.max(1))
}

/// Connects to the broker from `peer`'s own loopback address when the
/// broker is on IPv4 loopback, else plainly.
async fn connect(target: SocketAddr, peer: Option<IpAddr>) -> std::io::Result<TcpStream> {
    if let (IpAddr::V4(t), Some(p)) = (target.ip(), peer)
        && t.is_loopback()
    {
        let socket = TcpSocket::new_v4()?;
        if socket
            .bind(SocketAddr::new(source_for(p).into(), 0))
            .is_ok()
        {
            return socket.connect(target).await;
        }
    }
    TcpStream::connect(target).await
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

async fn upgrade(State(proxy): State<Proxy>, mut req: Request) -> Response {
    let broker = proxy.broker;
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
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
        let mut s = connect(target, peer).await?;
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
    let stop = proxy.shutdown.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut page = hyper_util::rt::TokioIo::new(upgraded);
        let mut broker = stream;
        if !early.is_empty() && page.write_all(&early).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::io::copy_bidirectional(&mut page, &mut broker) => {}
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = out;
    r.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_page_gets_a_loopback_address_of_its_own() {
        let a = source_for("192.168.1.20".parse().expect("ip"));
        let b = source_for("192.168.1.21".parse().expect("ip"));
        assert_eq!(a, source_for("::ffff:192.168.1.20".parse().expect("ip")));
        assert_ne!(a, b);
        for s in [a, b, source_for("127.0.0.1".parse().expect("ip"))] {
            assert!(
                s.is_loopback() && s.octets()[1] >= 128 && s.octets()[3] >= 1,
                "{s}"
            );
            assert_ne!(s, Ipv4Addr::LOCALHOST);
        }
    }
}
