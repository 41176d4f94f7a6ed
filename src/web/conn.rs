//! The web viewer's connections: rtcam's own accept loop over hyper's
//! HTTP/1, because a camera must not let idle or slow HTTP clients use up
//! the file descriptors its WebRTC viewers need.
//!
//! - A request's headers must arrive within `header_timeout` of the
//!   connection opening or of the previous response (hyper's header read
//!   timeout, which also ends idle keep-alive connections).
//! - A connection that moves no byte for `idle_timeout` is closed (a client
//!   that stops reading a response).
//! - At most `cap` connections are open; when a new one arrives at the cap,
//!   the one idle longest is closed to make room, so a flood of idle
//!   sockets cannot lock out the page, `/stats.json` or anything else.

use crate::throttle::{Throttle, Verdict};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a graceful shutdown waits for a request in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long the accept loop waits for an evicted connection to let go of
/// its socket before it takes the next one.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Connection limits (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most open connections.
    pub cap: usize,
    /// Time allowed for a request's headers.
    pub header_timeout: Duration,
    /// Time a connection may move no byte.
    pub idle_timeout: Duration,
}

/// What the connections did, for `/stats.json`.
#[derive(Debug, Default)]
pub struct WebCounts {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Closed by the header or idle timeout.
    pub timed_out: AtomicU64,
    /// Closed to make room for a new one at the cap.
    pub evicted: AtomicU64,
}

/// The local address a request arrived at (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub IpAddr);

/// The address a request came from (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A request that arrived over HTTPS, at this local port (a request
/// extension).
#[derive(Debug, Clone, Copy)]
pub struct Secure {
    /// The listener's port.
    pub port: u16,
}

/// What a connection is served over: the socket, or TLS on it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The cap actually used: `wanted`, but at most a quarter of the process's
/// file descriptor limit (the rest is for viewers, the broker and the camera).
pub fn effective_cap(wanted: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    wanted.min((soft / 4).max(4))
}

struct Entry {
    last: Arc<AtomicU64>,
    /// Cancelled to close the connection.
    close: CancellationToken,
    /// Cancelled once its task has dropped the socket.
    closed: CancellationToken,
}

/// The open connections, for the cap and eviction.
struct Registry {
    cap: usize,
    next: u64,
    open: HashMap<u64, Entry>,
}

impl Registry {
    /// Registers a new connection; at the cap, closes the one whose last
    /// byte moved longest ago. Returns its id and, when one was evicted,
    /// what is cancelled once it has let go of its socket.
    fn admit(
        &mut self,
        last: Arc<AtomicU64>,
        close: CancellationToken,
        closed: CancellationToken,
    ) -> (u64, Option<CancellationToken>) {
        let mut evicted = None;
        while self.open.len() >= self.cap {
            let Some((&oldest, _)) = self
                .open
                .iter()
                .min_by_key(|(_, e)| e.last.load(Ordering::Relaxed))
            else {
                break;
            };
            if let Some(e) = self.open.remove(&oldest) {
                e.close.cancel();
                evicted = Some(e.closed);
            }
        }
        let id = self.next;
        self.next += 1;
        self.open.insert(
            id,
            Entry {
                last,
                close,
                closed,
            },
        );
        (id, evicted)
    }
}

type Shared = Arc<Mutex<Registry>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes its connection from the registry when the task ends (after the
/// socket, declared before it, is dropped).
struct Registered {
    registry: Shared,
    id: u64,
    counts: Arc<WebCounts>,
    closed: CancellationToken,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry).open.remove(&self.id);
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
        self.closed.cancel();
    }
}

/// A socket that notes when a byte last moved (ms since `epoch`).
struct Activity {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once no byte has moved for `idle`.
async fn idle_for(last: &AtomicU64, epoch: Instant, idle: Duration) {
    loop {
        let deadline = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Why a connection ended, for the counts.
enum End {
    Done,
    TimedOut,
    Evicted,
    Shutdown,
}

/// Accepts and serves connections on `listener` until `shutdown`, over
/// TLS when `tls` is given.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    counts: Arc<WebCounts>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let epoch = Instant::now();
    let registry: Shared = Arc::new(Mutex::new(Registry {
        cap: limits.cap.max(1),
        next: 0,
        open: HashMap::new(),
    }));
    let mut accept_log = Throttle::new(1, Duration::from_secs(60));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before
                // accept: report once a minute, and let the process breathe.
                if let Verdict::Pass { suppressed } = accept_log.check(Instant::now()) {
                    tracing::warn!(error = %e, more_since_last = suppressed, "web viewer cannot accept a connection");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let last = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
        let (close, closed) = (CancellationToken::new(), CancellationToken::new());
        let (id, evicted) = lock(&registry).admit(last.clone(), close.clone(), closed.clone());
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        if let Some(gone) = evicted {
            counts.evicted.fetch_add(1, Ordering::Relaxed);
            // Its socket is closed before the next is taken: the cap bounds
            // the descriptors in use, not just the connections counted.
            let _ = tokio::time::timeout(EVICT_WAIT, gone.cancelled()).await;
        }
        counts.open.fetch_add(1, Ordering::Relaxed);
        let guard = Registered {
            registry: registry.clone(),
            id,
            counts: counts.clone(),
            closed,
        };
        let io = Activity {
            inner: stream,
            last: last.clone(),
            epoch,
        };
        tokio::spawn(serve_one(
            io,
            tls.clone(),
            (local, peer),
            app.clone(),
            limits,
            (last, epoch),
            close,
            shutdown.clone(),
            (guard, counts.clone()),
        ));
    }
}

#[allow(clippy::too_many_arguments)] // one connection's parts, passed once
async fn serve_one(
    io: Activity,
    tls: Option<tokio_rustls::TlsAcceptor>,
    (local, peer): (SocketAddr, SocketAddr),
    app: Router,
    limits: Limits,
    (last, epoch): (Arc<AtomicU64>, Instant),
    close: CancellationToken,
    shutdown: CancellationToken,
    (guard, counts): (Registered, Arc<WebCounts>),
) {
    let secure = tls.is_some().then_some(Secure { port: local.port() });
    let local = LocalAddr(local.ip().to_canonical());
    let io: Box<dyn Io> = match tls {
        None => Box::new(io),
        Some(acceptor) => {
            // The handshake is bounded like a request's headers, and an
            // eviction or shutdown ends it too.
            let shaken = tokio::select! {
                r = tokio::time::timeout(limits.header_timeout, acceptor.accept(io)) => r,
                _ = close.cancelled() => return,
                _ = shutdown.cancelled() => return,
            };
            match shaken {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => {
                    static FAILED: crate::throttle::LogBudget =
                        crate::throttle::LogBudget::new(5, Duration::from_secs(60));
                    if let Some(suppressed) = FAILED.check() {
                        tracing::info!(error = %e, suppressed, "https: a TLS handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    counts.timed_out.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(local);
        req.extensions_mut().insert(PeerAddr(peer));
        if let Some(s) = secure {
            req.extensions_mut().insert(s);
        }
        let mut app = app.clone();
        // A Router is always ready: `call` without `poll_ready` is allowed.
        tower_service::Service::call(&mut app, req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    // Upgrades: the MQTT WebSocket of an HTTPS page goes through here.
    let mut conn = Box::pin(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
    );
    let end = tokio::select! {
        r = conn.as_mut() => match r {
            Err(e) if e.is_timeout() => End::TimedOut,
            _ => End::Done,
        },
        _ = idle_for(&last, epoch, limits.idle_timeout) => End::TimedOut,
        _ = close.cancelled() => End::Evicted,
        _ = shutdown.cancelled() => End::Shutdown,
    };
    match end {
        End::TimedOut => {
            counts.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        End::Shutdown => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
        End::Done | End::Evicted => {}
    }
    // The socket first, then the registration (which tells an evicting
    // accept loop the descriptor is free).
    drop(conn);
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_registry_evicts_the_connection_idle_longest() {
        let mut r = Registry {
            cap: 3,
            next: 0,
            open: HashMap::new(),
        };
        let tokens: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
        for (t, last) in tokens.iter().zip([50, 10, 30]) {
            let (_, evicted) = r.admit(
                Arc::new(AtomicU64::new(last)),
                t.clone(),
                CancellationToken::new(),
            );
            assert!(evicted.is_none());
        }
        let newcomer = CancellationToken::new();
        let (id, evicted) = r.admit(
            Arc::new(AtomicU64::new(60)),
            newcomer.clone(),
            CancellationToken::new(),
        );
        assert!(evicted.is_some());
        assert_eq!(id, 3);
        assert!(tokens[1].is_cancelled(), "the one idle since 10 ms goes");
        assert!(!tokens[0].is_cancelled() && !tokens[2].is_cancelled());
        assert!(!newcomer.is_cancelled());
        assert_eq!(r.open.len(), 3);
    }

    #[test]
    fn the_cap_leaves_most_descriptors_to_the_rest() {
        assert!(effective_cap(1_000_000) < 1_000_000);
        assert!(effective_cap(4) <= 4);
    }
}
