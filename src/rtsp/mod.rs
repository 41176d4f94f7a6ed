//! The RTSP server (`[rtsp]`): `rtsp://HOST:PORT/PATH` for NVRs, VLC,
//! ffmpeg, GStreamer. Every client is one more subscriber of the hub, so
//! the stream is the same single encode the WebRTC viewers get.
//!
//! - this file: the accept loop, the connection cap (`rtsp.max_clients`,
//!   counted apart from `webrtc.max_viewers`; one more gets 503), shutdown
//!   on the agent's cancel token;
//! - [`session`]: one connection: requests, authentication, its session
//!   (UDP or TCP interleaved), streaming, keep-alive and timeout;
//! - [`rtp`]: packetisation and UDP port pairs.
//!
//! The parsing and checking of what clients send is pure and lives in
//! `rtcam-proto` ([`rtcam_proto::rtsp`]), where it is fuzzed.

pub mod rtp;
pub mod session;

use crate::config::rtsp::RtspSettings;
use crate::media::hub::Hub;
use rtcam_proto::rtsp::{Incoming, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A session (and its connection) showing no sign of life this long is
/// ended. Only a complete request that passed authentication is one (and
/// RTCP while the session plays): stray bytes are not. Announced in
/// `Session: …;timeout=60`.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection gets for its first request after connecting, and
/// for the rest of any message once its first bytes arrived: more bytes do
/// not extend it, so a client trickling a byte at a time cannot hold one
/// of the `max_clients` slots.
pub const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// With credentials configured, how long after connecting a client gets to
/// send a request that authenticates; until then its requests (`OPTIONS`,
/// 401s) do not keep it alive.
pub const AUTH_WAIT: Duration = Duration::from_secs(15);
/// How long DESCRIBE and PLAY wait for a keyframe from the hub (the camera
/// may be starting) before answering 503.
pub const KEYFRAME_WAIT: Duration = Duration::from_secs(10);
/// A client whose socket takes no byte for this long is ended: it cannot
/// keep up, and its queue would only hold stale frames.
pub const WRITE_STALL: Duration = Duration::from_secs(5);
/// Kernel send buffer of an RTSP connection. Without a bound, Linux grows
/// it up to 4 MB (tcp_wmem): half a minute of video at 1 Mbit/s queued for a
/// client that does not read, before [`WRITE_STALL`] could notice.
const SEND_BUFFER: usize = 256 * 1024;
/// How long a refused connection (over `max_clients`) gets to send the
/// request its 503 answers.
const REFUSE_READ: Duration = Duration::from_secs(2);

/// Why the RTSP server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    /// The listen address.
    #[error("RTSP server cannot listen on {addr} (rtsp.listen): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// The server's figures, for `/stats.json` and `/metrics`.
#[derive(Debug, Default)]
pub struct RtspCounts {
    /// RTSP connections open now.
    pub clients: AtomicUsize,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused at `max_clients` (answered 503, or closed at
    /// once when `max_clients` refusals are already under way).
    pub refused: AtomicU64,
}

/// What every connection needs.
pub struct Context {
    /// The shared encoded stream.
    pub hub: Arc<Hub>,
    /// `[rtsp]`.
    pub settings: RtspSettings,
    /// The figures.
    pub counts: Arc<RtspCounts>,
}

/// Binds the listener and returns it with the URL clients use.
pub async fn bind(settings: &RtspSettings) -> Result<Option<(TcpListener, String)>, RtspError> {
    let Some(addr) = settings.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RtspError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| RtspError::Bind { addr, source })?;
    let shown = if bound.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port())
    } else {
        bound
    };
    Ok(Some((
        listener,
        format!("rtsp://{shown}/{}", settings.path),
    )))
}

/// Holds one of the `max_clients` slots while a connection lives.
struct Slot(Arc<RtspCounts>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts RTSP connections until `stop` is cancelled; each connection is a
/// task of `tracker`, so the agent's shutdown waits for them.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let max = ctx.settings.max_clients;
    // Refusals under way, each holding its socket up to 2 × REFUSE_READ:
    // bounded, so a flood of connections cannot pile up tasks and fds.
    let refusals = Arc::new(Semaphore::new(max));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!("rtsp: accept failed: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Best effort: the default buffer only makes a stalled client noticed later.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        let counts = &ctx.counts;
        // Only this loop increments, so the check and the increment cannot race.
        if counts.clients.load(Ordering::Acquire) >= max {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            match refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracing::info!(%peer, max, "rtsp: refused a client: rtsp.max_clients reached");
                    tracker.spawn(refuse(stream, permit, stop.clone()));
                }
                // Already `max` refusals answering: no 503, the socket is
                // closed here (dropping it), and quietly, a flood being likely.
                Err(_) => {
                    tracing::debug!(%peer, "rtsp: refused a client without an answer: too many refusals under way");
                    drop(stream);
                }
            }
            continue;
        }
        counts.clients.fetch_add(1, Ordering::AcqRel);
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(ctx.counts.clone());
        let ctx = ctx.clone();
        let stop = stop.child_token();
        tracker.spawn(async move {
            let _slot = slot;
            session::serve_connection(stream, peer, ctx, stop).await;
        });
    }
    tracing::debug!("rtsp: accept loop stopped");
}

/// Answers a connection over the limit with 503 (echoing its first
/// request's CSeq when one arrives in time), then closes it; `_permit` is
/// its place among the refusals under way.
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit, stop: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let cseq = tokio::select! {
        _ = stop.cancelled() => return,
        c = tokio::time::timeout(REFUSE_READ, async {
            loop {
                let n = stream.read(&mut buf[len..]).await.ok()?;
                if n == 0 {
                    return None;
                }
                len += n;
                match rtcam_proto::rtsp::parse(&buf[..len]) {
                    Ok(Some((Incoming::Request(r), _))) => return Some(r.cseq()),
                    Ok(None) if len < buf.len() => continue,
                    _ => return None,
                }
            }
        }) => c.ok().flatten(),
    };
    let resp = Response::new(503, cseq)
        .header("Retry-After", "10")
        .to_bytes();
    let _ = tokio::time::timeout(REFUSE_READ, stream.write_all(&resp)).await;
    let _ = stream.shutdown().await;
}
