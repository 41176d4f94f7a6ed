//! One RTSP connection and its session: reads requests (and interleaved
//! RTCP), answers them, and streams the hub's H.264 to the client over UDP
//! or interleaved in the connection.
//!
//! Writing goes through a bounded queue to a writer task, so the request
//! loop and the hub subscription are never held up by a client that does
//! not read. A full queue drops the access unit and the client resumes at
//! the next keyframe; a socket that takes nothing for [`WRITE_STALL`] ends
//! the connection.

use super::rtp::{self, RtpStream};
use super::{AUTH_WAIT, Context, KEYFRAME_WAIT, REQUEST_WAIT, SESSION_TIMEOUT, WRITE_STALL};
use crate::media::frame::{Packet, TrackId};
use crate::media::h264;
use crate::media::hub::Subscription;
use bytes::Bytes;
use rtcam_proto::rtsp::{
    self, Incoming, Method, PUBLIC, Request, Response, SdpParams, TRACK, Target, TransportChoice,
    TransportError, auth,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::UdpSocket;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Writes queued before the writer counts as behind: about a second of
/// video at 30 fps (each entry is one access unit's packets).
const OUT_QUEUE: usize = 32;

/// Where this session's RTP goes.
enum Media {
    /// UDP: our RTP and RTCP sockets, and the client's RTP address.
    Udp {
        rtp: UdpSocket,
        /// Shared with the request loop, which reads receiver reports from it.
        rtcp: Arc<UdpSocket>,
        dest: SocketAddr,
    },
    /// Interleaved in the RTSP connection on this channel.
    Interleaved { channel: u8 },
}

/// The one session a connection can hold (one track, aggregate control).
struct Session {
    id: String,
    media: Media,
    rtp: RtpStream,
    /// Set while playing.
    playing: Option<Subscription>,
    /// PLAY has succeeded once: interleaved RTCP may come (even after PAUSE).
    played: bool,
    /// A queue overflow dropped an access unit: skip to the next keyframe.
    need_keyframe: bool,
    dropped: u64,
}

struct Conn {
    ctx: Arc<Context>,
    peer: SocketAddr,
    local: SocketAddr,
    out: mpsc::Sender<Bytes>,
    /// The Digest nonce this connection hands out.
    nonce: String,
    session: Option<Session>,
    /// The keyframe PLAY waited for, sent right after its response.
    pending_first: Option<Packet>,
    /// A request has passed the credentials check (always false without credentials).
    authenticated: bool,
    /// The connection's stop: a wait for the hub ends when it is cancelled.
    stop: CancellationToken,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // Without OS randomness, ids are only less unpredictable; the session
    // id is not a credential (authentication is per request).
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// When the connection ends unless the client shows a sign of life that
/// counts (see [`SESSION_TIMEOUT`], [`REQUEST_WAIT`], [`AUTH_WAIT`]).
struct Deadlines {
    /// Refreshed by a complete request that passed authentication, and by
    /// RTCP while playing.
    idle: Instant,
    /// Set while a request is due soon: the first one after connecting, and
    /// the rest of a message whose first bytes are in the buffer.
    request: Option<Instant>,
    /// Set until a request authenticates, when credentials are configured.
    auth: Option<Instant>,
}

/// Which of the [`Deadlines`] passed, for the log.
#[derive(Clone, Copy)]
enum Expired {
    Idle,
    Request,
    Auth,
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expired::Idle => write!(
                f,
                "no request, or no RTCP while playing, for {}s",
                SESSION_TIMEOUT.as_secs()
            ),
            Expired::Request => write!(
                f,
                "a request not completed within {}s",
                REQUEST_WAIT.as_secs()
            ),
            Expired::Auth => write!(
                f,
                "not authenticated within {}s of connecting",
                AUTH_WAIT.as_secs()
            ),
        }
    }
}

impl Deadlines {
    /// The earliest deadline, and which it is.
    fn next(&self) -> (Instant, Expired) {
        [
            Some((self.idle, Expired::Idle)),
            self.request.map(|t| (t, Expired::Request)),
            self.auth.map(|t| (t, Expired::Auth)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(t, _)| *t)
        .unwrap_or((self.idle, Expired::Idle))
    }
}

/// Serves one connection until the client leaves, times out, cannot keep
/// up, or `stop` is cancelled.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    stop: CancellationToken,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    tracing::debug!(%peer, "rtsp: client connected");
    let connected = Instant::now();
    let mut due = Deadlines {
        idle: connected + SESSION_TIMEOUT,
        request: Some(connected + REQUEST_WAIT),
        auth: ctx
            .settings
            .credentials
            .as_ref()
            .map(|_| connected + AUTH_WAIT),
    };
    let (mut rd, wr) = stream.into_split();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(write_loop(wr, out_rx, stop.clone()));
    let mut conn = Conn {
        ctx,
        peer,
        local,
        out,
        nonce: random_hex(16),
        session: None,
        pending_first: None,
        authenticated: false,
        stop: stop.clone(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    // Whether a complete request has arrived yet (the first is due within REQUEST_WAIT).
    let mut any_request = false;
    let mut rtcp_buf = vec![0u8; 2048];
    'conn: loop {
        let rtcp = conn.rtcp_socket();
        let (deadline, why) = due.next();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(%peer, "rtsp: connection closed: {why}");
                break;
            }
            n = read_some(&mut rd, &mut buf) => {
                // Bytes alone are no sign of life: only complete messages count.
                if matches!(n, Ok(0) | Err(_)) {
                    break;
                }
                let mut completed = false;
                loop {
                    match rtsp::parse(&buf) {
                        Ok(None) => break,
                        Ok(Some((msg, used))) => {
                            buf.drain(..used);
                            completed = true;
                            let req = match msg {
                                Incoming::Request(req) => req,
                                // Interleaved RTCP from a client that has played.
                                Incoming::Data { .. } => match &conn.session {
                                    Some(s) if s.played => {
                                        if s.playing.is_some() {
                                            due.idle = Instant::now() + SESSION_TIMEOUT;
                                        }
                                        continue;
                                    }
                                    _ => {
                                        tracing::info!(%peer, "rtsp: bad request: interleaved data before PLAY");
                                        let resp = Response::new(400, None)
                                            .body("text/plain", "interleaved data before PLAY\n");
                                        conn.send_response(resp).await;
                                        break 'conn;
                                    }
                                },
                            };
                            any_request = true;
                            let (resp, authorized) = conn.handle(&req).await;
                            if stop.is_cancelled() {
                                break 'conn;
                            }
                            if authorized {
                                due.idle = Instant::now() + SESSION_TIMEOUT;
                            }
                            if conn.authenticated {
                                due.auth = None;
                            }
                            if !conn.send_response(resp).await {
                                break 'conn;
                            }
                            // The PLAY response is queued first: now the stream.
                            conn.start_stream();
                        }
                        Err(e) => {
                            tracing::info!(%peer, "rtsp: bad request: {e}");
                            let resp = Response::new(400, None).body("text/plain", format!("{e}\n"));
                            conn.send_response(resp).await;
                            break 'conn;
                        }
                    }
                }
                if buf.is_empty() {
                    if any_request {
                        due.request = None;
                    }
                } else if completed || due.request.is_none() {
                    // The first bytes of the next message: it has REQUEST_WAIT
                    // to complete, however slowly the rest arrives.
                    due.request = Some(Instant::now() + REQUEST_WAIT);
                }
            }
            p = next_packet(&mut conn.session) => match p {
                Some(p) => {
                    if !conn.send_packet(p) {
                        break;
                    }
                }
                // The hub closed: the agent is stopping.
                None => break,
            },
            r = rtcp_recv(rtcp.as_deref(), &mut rtcp_buf) => {
                if r && conn.session.as_ref().is_some_and(|s| s.playing.is_some()) {
                    due.idle = Instant::now() + SESSION_TIMEOUT;
                }
            }
        }
    }
    if let Some(s) = &conn.session
        && s.dropped > 0
    {
        tracing::info!(%peer, dropped = s.dropped, "rtsp: a slow client lost access units");
    }
    // Dropping the queue's sender lets the writer flush what is left (a
    // last error response) and close.
    drop(conn);
    let _ = tokio::time::timeout(WRITE_STALL, writer).await;
    tracing::debug!(%peer, "rtsp: client gone");
}

/// Reads more bytes into `buf`.
async fn read_some(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    if buf.len() > rtsp::MAX_MESSAGE + 4 + usize::from(u16::MAX) {
        // parse() has already refused an oversized request; this only
        // guards against a parser that keeps asking for more.
        return Err(std::io::Error::other("request too large"));
    }
    let mut chunk = [0u8; 4096];
    let n = rd.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The next packet of a playing session; pending forever otherwise.
async fn next_packet(session: &mut Option<Session>) -> Option<Packet> {
    match session.as_mut().and_then(|s| s.playing.as_mut()) {
        Some(sub) => sub.recv().await,
        None => std::future::pending().await,
    }
}

/// RTCP from a UDP client (receiver reports): true when one arrived.
async fn rtcp_recv(rtcp: Option<&UdpSocket>, buf: &mut [u8]) -> bool {
    match rtcp {
        Some(sock) => sock.recv_from(buf).await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Writes queued buffers; ends (cancelling nothing but itself, the request
/// loop sees the queue close) when the socket stalls for [`WRITE_STALL`].
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    loop {
        let b = tokio::select! {
            _ = stop.cancelled() => break,
            b = rx.recv() => match b { Some(b) => b, None => break },
        };
        match tokio::time::timeout(WRITE_STALL, wr.write_all(&b)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::info!(
                    "rtsp: a client took nothing for {}s: cannot keep up, disconnected",
                    WRITE_STALL.as_secs()
                );
                break;
            }
        }
    }
    rx.close();
    let _ = wr.shutdown().await;
}

impl Conn {
    fn rtcp_socket(&self) -> Option<Arc<UdpSocket>> {
        match self.session.as_ref().map(|s| &s.media) {
            Some(Media::Udp { rtcp, .. }) => Some(rtcp.clone()),
            _ => None,
        }
    }

    async fn send_response(&self, resp: Response) -> bool {
        self.out.send(Bytes::from(resp.to_bytes())).await.is_ok()
    }

    fn session_header(&self) -> Option<String> {
        self.session
            .as_ref()
            .map(|s| format!("{};timeout={}", s.id, SESSION_TIMEOUT.as_secs()))
    }

    /// 454 unless the request names this connection's session.
    fn check_session(&self, req: &Request) -> Result<(), Response> {
        match (&self.session, req.session()) {
            (Some(s), Some(id)) if s.id == id => Ok(()),
            _ => Err(Response::new(454, Some(req.cseq()))),
        }
    }

    /// Answers a request; the flag is false when it was refused for want of
    /// credentials (a 401), which keeps nothing alive.
    async fn handle(&mut self, req: &Request) -> (Response, bool) {
        let cseq = Some(req.cseq());
        let method = req.method().clone();
        if let Some(c) = &self.ctx.settings.credentials
            && method != Method::Options
        {
            let checked = auth::check(
                req.header("Authorization"),
                req.method_name(),
                &self.nonce,
                &c.username,
                c.password.expose(),
            );
            let e = match checked {
                Ok(scheme) => {
                    tracing::debug!(peer = %self.peer, method = req.method_name(), "rtsp: authenticated ({scheme:?})");
                    self.authenticated = true;
                    return (self.dispatch(req).await, true);
                }
                Err(e) => e,
            };
            if e != auth::AuthError::Missing {
                tracing::info!(peer = %self.peer, "rtsp: authentication failed: {e}");
            }
            let [digest, basic] = auth::challenges(&self.nonce, e == auth::AuthError::Nonce);
            let resp = Response::new(401, cseq)
                .header("WWW-Authenticate", digest)
                .header("WWW-Authenticate", basic);
            return (resp, false);
        }
        (self.dispatch(req).await, true)
    }

    async fn dispatch(&mut self, req: &Request) -> Response {
        let cseq = Some(req.cseq());
        let method = req.method().clone();
        let target = req.target(&self.ctx.settings.path);
        if target == Target::Unknown {
            return Response::new(404, cseq);
        }
        match method {
            Method::Options => Response::new(200, cseq).header("Public", PUBLIC),
            Method::Describe => self.describe(req).await,
            Method::Setup => self.setup(req).await,
            Method::Play => self.play(req).await,
            Method::Pause => match self.check_session(req) {
                Ok(()) => {
                    if let Some(s) = &mut self.session {
                        s.playing = None;
                    }
                    self.ok_with_session(req)
                }
                Err(r) => r,
            },
            Method::Teardown => match self.check_session(req) {
                Ok(()) => {
                    // The session ends; the connection may carry another.
                    self.session = None;
                    Response::new(200, cseq)
                }
                Err(r) => r,
            },
            Method::GetParameter | Method::SetParameter => {
                // Keep-alives: they carry the session when there is one.
                if req.session().is_some() {
                    match self.check_session(req) {
                        Ok(()) => self.ok_with_session(req),
                        Err(r) => r,
                    }
                } else {
                    Response::new(200, cseq)
                }
            }
            ref m if rtsp::known_but_not_allowed(m) => {
                Response::new(405, cseq).header("Allow", PUBLIC)
            }
            _ => Response::new(501, cseq).header("Public", PUBLIC),
        }
    }

    fn ok_with_session(&self, req: &Request) -> Response {
        let mut r = Response::new(200, Some(req.cseq()));
        if let Some(s) = self.session_header() {
            r = r.header("Session", s);
        }
        r
    }

    /// The request URL without credentials, as the base clients resolve against.
    fn base_url(req: &Request) -> String {
        let Some(url) = req.url() else {
            return String::new();
        };
        let mut url = url.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut s = url.to_string();
        if !s.ends_with('/') {
            s.push('/');
        }
        s
    }

    async fn describe(&mut self, req: &Request) -> Response {
        let cseq = Some(req.cseq());
        let Some(key) = first_keyframe(&mut self.ctx.hub.subscribe(), &self.stop).await else {
            return Response::new(503, cseq).body("text/plain", "no picture from the camera yet\n");
        };
        let (mut sps, mut pps) = (None, None);
        for nal in h264::nal_units(&key.data) {
            match h264::nal_type(nal) {
                h264::NAL_SPS => sps = Some(nal),
                h264::NAL_PPS => pps = Some(nal),
                _ => {}
            }
        }
        let (Some(sps), Some(pps)) = (sps, pps) else {
            tracing::warn!("rtsp: a keyframe without SPS/PPS: cannot describe the stream");
            return Response::new(503, cseq);
        };
        let Some(pli) = h264::profile_level_id(sps) else {
            return Response::new(503, cseq);
        };
        let session_id = key.pts.as_micros() as u64;
        let sdp = rtsp::sdp(&SdpParams {
            session_id,
            server_ip: self.local.ip(),
            profile_level_id: &pli,
            sps,
            pps,
        });
        Response::new(200, cseq)
            .header("Content-Base", Self::base_url(req))
            .body("application/sdp", sdp)
    }

    async fn setup(&mut self, req: &Request) -> Response {
        let cseq = Some(req.cseq());
        if let Some(s) = &self.session {
            if req.session() != Some(s.id.as_str()) {
                // One session per connection: a second aggregate is not served.
                return Response::new(459, cseq);
            }
            if s.playing.is_some() {
                return Response::new(455, cseq).header("Allow", "PLAY, PAUSE, TEARDOWN");
            }
        }
        let choice = match req.transport() {
            Ok(c) => c,
            Err(e @ TransportError::Unsupported) => {
                return Response::new(461, cseq).body("text/plain", format!("{e}\n"));
            }
            Err(e) => return Response::new(400, cseq).body("text/plain", format!("{e}\n")),
        };
        let stream = RtpStream::new();
        let ssrc = stream.ssrc();
        let (media, transport) = match choice {
            TransportChoice::Interleaved { rtp, rtcp } => (
                Media::Interleaved { channel: rtp },
                format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp};ssrc={ssrc:08X}"),
            ),
            TransportChoice::Udp { rtp, rtcp } => {
                let (rtp_sock, rtcp_sock) = match rtp::bind_pair(self.local.ip()).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!("rtsp: no UDP ports for a client: {e}");
                        return Response::new(453, cseq);
                    }
                };
                let server = rtp_sock.local_addr().map_or(0, |a| a.port());
                // RTP goes to the address the RTSP connection came from, never elsewhere.
                let dest = SocketAddr::new(self.peer.ip(), rtp);
                (
                    Media::Udp {
                        rtp: rtp_sock,
                        rtcp: Arc::new(rtcp_sock),
                        dest,
                    },
                    format!(
                        "RTP/AVP;unicast;client_port={rtp}-{rtcp};server_port={server}-{};ssrc={ssrc:08X}",
                        server + 1
                    ),
                )
            }
        };
        let id = self.session.take().map_or_else(|| random_hex(8), |s| s.id);
        self.session = Some(Session {
            id,
            media,
            rtp: stream,
            playing: None,
            played: false,
            need_keyframe: false,
            dropped: 0,
        });
        Response::new(200, cseq)
            .header("Transport", transport)
            .header("Session", self.session_header().unwrap_or_default())
    }

    async fn play(&mut self, req: &Request) -> Response {
        let cseq = Some(req.cseq());
        let Some(s) = &self.session else {
            return Response::new(455, cseq).header("Allow", "OPTIONS, DESCRIBE, SETUP");
        };
        if req.session() != Some(s.id.as_str()) {
            return Response::new(454, cseq);
        }
        if s.playing.is_some() {
            return self.ok_with_session(req);
        }
        let mut sub = self.ctx.hub.subscribe();
        let Some(first) = first_keyframe(&mut sub, &self.stop).await else {
            return Response::new(503, cseq).body("text/plain", "no picture from the camera yet\n");
        };
        let base = Self::base_url(req);
        let track_url = if req.target(&self.ctx.settings.path) == Target::Track {
            base.trim_end_matches('/').to_string()
        } else {
            format!("{base}{TRACK}")
        };
        let Some(s) = &mut self.session else {
            return Response::new(455, cseq);
        };
        let info = format!(
            "url={track_url};seq={};rtptime={}",
            s.rtp.next_seq(),
            s.rtp.timestamp(first.pts)
        );
        s.playing = Some(sub);
        s.played = true;
        s.need_keyframe = false;
        self.pending_first = Some(first);
        Response::new(200, cseq)
            .header("Range", "npt=now-")
            .header("RTP-Info", info)
            .header("Session", self.session_header().unwrap_or_default())
    }

    /// Sends the keyframe PLAY waited for, after its response.
    fn start_stream(&mut self) {
        if let Some(first) = self.pending_first.take() {
            self.send_packet(first);
        }
    }

    /// Sends one packet to the client; false when the connection is over.
    fn send_packet(&mut self, p: Packet) -> bool {
        let Some(s) = &mut self.session else {
            return true;
        };
        if p.track != TrackId::VIDEO || s.playing.is_none() {
            return true;
        }
        if s.need_keyframe && !p.keyframe {
            return true;
        }
        let packets = s.rtp.packetize(&p.data, p.pts);
        match &s.media {
            Media::Udp { rtp, dest, .. } => {
                for pkt in &packets {
                    match rtp.try_send_to(pkt, *dest) {
                        Ok(_) => {}
                        // A full socket buffer: drop the rest of this access unit.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            s.need_keyframe = true;
                            s.dropped += 1;
                            return true;
                        }
                        // Nobody listening yet (ICMP port unreachable), or a
                        // route hiccup: UDP is best effort, keep going.
                        Err(_) => {}
                    }
                }
                s.need_keyframe = false;
                true
            }
            Media::Interleaved { channel } => {
                match self.out.try_send(rtp::interleave(*channel, &packets)) {
                    Ok(()) => {
                        s.need_keyframe = false;
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.need_keyframe = true;
                        s.dropped += 1;
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            }
        }
    }
}

/// Waits (bounded) for the subscription's first video keyframe; `None`
/// at once when `stop` is cancelled (the agent is stopping).
async fn first_keyframe(sub: &mut Subscription, stop: &CancellationToken) -> Option<Packet> {
    let wait = tokio::time::timeout(KEYFRAME_WAIT, async {
        loop {
            match sub.recv().await {
                Some(p) if p.track == TrackId::VIDEO && p.keyframe => return Some(p),
                Some(_) => continue,
                None => return None,
            }
        }
    });
    tokio::select! {
        _ = stop.cancelled() => None,
        r = wait => r.ok().flatten(),
    }
}
