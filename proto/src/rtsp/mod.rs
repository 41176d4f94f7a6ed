//! The RTSP 1.0 server's pure half (RFC 2326): framing and checking what a
//! client sends (requests parsed by the `rtsp-types` crate, interleaved
//! `$` data frames), choosing a transport from its `Transport` header,
//! the stream's SDP, and the text of responses. The server in `src/rtsp/`
//! does the I/O. Pure: this is what `fuzz/fuzz_targets/rtsp.rs` feeds.

pub mod auth;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rtsp_types::headers::{self, RtpLowerTransport, RtpProfile, Transport, Transports};
use rtsp_types::{Message, ParseError, Version};

pub use rtsp_types::Method;

/// The largest request (headers and body) read before answering 400: RTSP
/// requests are a few hundred bytes, and a client must not make the server
/// buffer without bound.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// The RTP payload type of the H.264 track (dynamic, as RFC 3551 leaves it).
pub const PAYLOAD_TYPE: u8 = 96;

/// The control URL of the one track, relative to the stream's URL.
pub const TRACK: &str = "trackID=0";

/// Methods the server answers, for `Public` and `Allow`.
pub const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// Why bytes from a client are not a request the server can answer (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not RTSP syntax.
    #[error("malformed RTSP request")]
    Malformed,
    /// More than [`MAX_MESSAGE`] bytes without a complete request.
    #[error("request larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// A response (or other message) where a request was expected.
    #[error("expected a request")]
    NotARequest,
    /// Not RTSP/1.0.
    #[error("unsupported RTSP version (this server speaks RTSP/1.0)")]
    Version,
    /// No `CSeq`, or one that is not a number.
    #[error("missing or non-numeric CSeq header")]
    CSeq,
}

/// One message from a client.
#[derive(Debug)]
pub enum Incoming {
    /// A request.
    Request(Request),
    /// An interleaved binary frame (`$`, channel, length): RTCP from a
    /// client playing over TCP.
    Data {
        /// The interleaved channel.
        channel: u8,
        /// The frame's length.
        len: usize,
    },
}

/// A checked request: RTSP/1.0 with a numeric `CSeq`.
#[derive(Debug)]
pub struct Request {
    inner: rtsp_types::Request<Vec<u8>>,
    cseq: u32,
}

/// Parses the next message at the start of `buf`: `Ok(None)` when more bytes
/// are needed, else the message and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Incoming, usize)>, RequestError> {
    if buf.first() == Some(&b'$') {
        // Interleaved frames are parsed here rather than by rtsp-types so
        // that their payload (which the server ignores) is not copied.
        let Some(head) = buf.get(..4) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if buf.len() < 4 + len {
            return Ok(None);
        }
        return Ok(Some((
            Incoming::Data {
                channel: head[1],
                len,
            },
            4 + len,
        )));
    }
    match Message::<Vec<u8>>::parse(buf) {
        Ok((Message::Request(inner), used)) => {
            if inner.version() != Version::V1_0 {
                return Err(RequestError::Version);
            }
            let cseq = inner
                .header(&headers::CSEQ)
                .and_then(|v| v.as_str().trim().parse::<u32>().ok())
                .ok_or(RequestError::CSeq)?;
            Ok(Some((Incoming::Request(Request { inner, cseq }), used)))
        }
        Ok(_) => Err(RequestError::NotARequest),
        Err(ParseError::Incomplete(_)) if buf.len() > MAX_MESSAGE => Err(RequestError::TooLarge),
        Err(ParseError::Incomplete(_)) => Ok(None),
        Err(ParseError::Error) => Err(RequestError::Malformed),
    }
}

/// What a request's URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `*` (OPTIONS) or no URL.
    Server,
    /// The stream (`rtsp://host:port/PATH`, aggregate control).
    Stream,
    /// Its one track (`…/PATH/trackID=0`).
    Track,
    /// Anything else: 404.
    Unknown,
}

impl Request {
    /// The method.
    pub fn method(&self) -> &Method {
        self.inner.method()
    }

    /// The method's name as sent.
    pub fn method_name(&self) -> &str {
        self.inner.method().into()
    }

    /// The `CSeq` to echo.
    pub fn cseq(&self) -> u32 {
        self.cseq
    }

    /// The request URL, when it is not `*`.
    pub fn url(&self) -> Option<&rtsp_types::Url> {
        self.inner.request_uri()
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .header(&headers::HeaderName::try_from(name).ok()?)
            .map(|v| v.as_str())
    }

    /// The session id of the `Session` header (without `;timeout=`).
    pub fn session(&self) -> Option<&str> {
        let v = self.header("Session")?;
        Some(v.split(';').next().unwrap_or(v).trim())
    }

    /// What the URL names, for a stream served at `/path`.
    pub fn target(&self, path: &str) -> Target {
        let Some(url) = self.url() else {
            return Target::Server;
        };
        let p = url.path().trim_end_matches('/');
        let Some(rest) = p.strip_prefix('/').and_then(|r| r.strip_prefix(path)) else {
            return Target::Unknown;
        };
        match rest {
            "" => Target::Stream,
            r if r.strip_prefix('/') == Some(TRACK) => Target::Track,
            _ => Target::Unknown,
        }
    }

    /// The transport to use, from the client's `Transport` preferences.
    pub fn transport(&self) -> Result<TransportChoice, TransportError> {
        let parsed = self
            .inner
            .typed_header::<Transports>()
            .map_err(|_| TransportError::Malformed)?
            .ok_or(TransportError::Missing)?;
        choose_transport(&parsed)
    }
}

/// How the client asked to receive RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// RTP/AVP over UDP to the client's address, at these ports.
    Udp {
        /// The client's RTP port.
        rtp: u16,
        /// Its RTCP port.
        rtcp: u16,
    },
    /// RTP/AVP/TCP interleaved in the RTSP connection, on these channels.
    Interleaved {
        /// RTP channel.
        rtp: u8,
        /// RTCP channel.
        rtcp: u8,
    },
}

/// Why no transport the client offered can be used (461, or 400 when malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No `Transport` header.
    #[error("SETUP needs a Transport header")]
    Missing,
    /// A `Transport` header that does not parse.
    #[error("malformed Transport header")]
    Malformed,
    /// Only transports this server does not offer (multicast, RTP/SAVP, …).
    #[error("only unicast RTP/AVP over UDP (client_port) or RTP/AVP/TCP (interleaved) is served")]
    Unsupported,
}

/// The first of the client's transports this server can serve, in its order of preference.
pub fn choose_transport(offered: &[Transport]) -> Result<TransportChoice, TransportError> {
    for t in offered {
        let Transport::Rtp(rtp) = t else { continue };
        if rtp.profile != RtpProfile::Avp || rtp.params.multicast {
            continue;
        }
        match rtp.lower_transport {
            Some(RtpLowerTransport::Tcp) => {
                let (a, b) = rtp.params.interleaved.unwrap_or((0, Some(1)));
                let b = b.unwrap_or(a.wrapping_add(1));
                if a == b {
                    continue;
                }
                return Ok(TransportChoice::Interleaved { rtp: a, rtcp: b });
            }
            None | Some(RtpLowerTransport::Udp) => {
                // A destination other than the client's own address is never
                // honoured (it would turn the server into a traffic
                // reflector), so only client_port matters.
                let Some((a, b)) = rtp.params.client_port else {
                    continue;
                };
                if a == 0 {
                    continue;
                }
                let b = b.unwrap_or(a.saturating_add(1));
                return Ok(TransportChoice::Udp { rtp: a, rtcp: b });
            }
            Some(RtpLowerTransport::Other(_)) => continue,
        }
    }
    Err(TransportError::Unsupported)
}

/// What the SDP of `DESCRIBE` says about the stream.
#[derive(Debug, Clone)]
pub struct SdpParams<'a> {
    /// `o=` session id (any number unique enough).
    pub session_id: u64,
    /// The server's address as the client reached it.
    pub server_ip: std::net::IpAddr,
    /// `profile-level-id` (six hex digits), from the SPS.
    pub profile_level_id: &'a str,
    /// The sequence parameter set NAL unit (no start code).
    pub sps: &'a [u8],
    /// The picture parameter set NAL unit.
    pub pps: &'a [u8],
}

/// The SDP (RFC 4566) describing the one H.264 track (RFC 6184).
pub fn sdp(p: &SdpParams<'_>) -> String {
    let ip = match p.server_ip {
        std::net::IpAddr::V4(a) => format!("IP4 {a}"),
        std::net::IpAddr::V6(a) => format!("IP6 {a}"),
    };
    format!(
        "v=0\r\n\
         o=- {id} 1 IN {ip}\r\n\
         s=rtcam\r\n\
         c=IN {ip}\r\n\
         t=0 0\r\n\
         a=tool:rtcam\r\n\
         a=range:npt=now-\r\n\
         a=control:*\r\n\
         m=video 0 RTP/AVP {pt}\r\n\
         a=rtpmap:{pt} H264/90000\r\n\
         a=fmtp:{pt} packetization-mode=1;profile-level-id={pli};sprop-parameter-sets={sps},{pps}\r\n\
         a=control:{TRACK}\r\n",
        id = p.session_id,
        pt = PAYLOAD_TYPE,
        pli = p.profile_level_id,
        sps = STANDARD.encode(p.sps),
        pps = STANDARD.encode(p.pps),
    )
}

/// A response to write: status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with `status`, echoing `cseq` when the request had one.
    pub fn new(status: u16, cseq: Option<u32>) -> Self {
        let mut r = Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        };
        if let Some(c) = cseq {
            r.headers.push(("CSeq", c.to_string()));
        }
        r.headers.push(("Server", "rtcam".into()));
        r
    }

    /// Adds a header. Values come from the server, never verbatim from a
    /// client; a CR or LF is dropped all the same, so no value can start a
    /// header of its own.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let mut v: String = value.into();
        v.retain(|c| c != '\r' && c != '\n');
        self.headers.push((name, v));
        self
    }

    /// Sets the body and its `Content-Type` (`Content-Length` is added when written).
    pub fn body(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.headers.push(("Content-Type", content_type.into()));
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response as sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("RTSP/1.0 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// The reason phrase of the status codes this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        453 => "Not Enough Bandwidth",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        _ => "Unknown",
    }
}

/// Whether a method exists in RTSP 1.0 but this server does not offer it
/// (405 with `Allow`), as opposed to an unknown one (501).
pub fn known_but_not_allowed(m: &Method) -> bool {
    matches!(
        m,
        Method::Announce | Method::Record | Method::Redirect | Method::PlayNotify
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Ok(Some((Incoming::Request(r), n))) => {
                assert_eq!(n, text.len());
                r
            }
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn requests_parse_with_cseq_session_and_target() {
        let r = request(
            "PLAY rtsp://127.0.0.1:8554/cam/ RTSP/1.0\r\nCSeq: 5\r\nSession: abc;timeout=60\r\n\r\n",
        );
        assert_eq!(r.method(), &Method::Play);
        assert_eq!(r.cseq(), 5);
        assert_eq!(r.session(), Some("abc"));
        assert_eq!(r.target("cam"), Target::Stream);
        let r = request("SETUP rtsp://h/cam/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        assert_eq!(r.target("cam"), Target::Track);
        assert_eq!(r.target("other"), Target::Unknown);
        let r = request("DESCRIBE rtsp://h/camera RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        assert_eq!(r.target("cam"), Target::Unknown);
        let r = request("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        assert_eq!(r.target("cam"), Target::Server);
    }

    #[test]
    fn incomplete_garbage_oversized_and_versions() {
        assert!(matches!(
            parse(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n"),
            Ok(None)
        ));
        assert_eq!(
            parse(b"\x16\x03\x01garbage\r\n\r\n").err(),
            Some(RequestError::Malformed)
        );
        let mut big = b"OPTIONS * RTSP/1.0\r\nX: ".to_vec();
        big.resize(MAX_MESSAGE + 10, b'a');
        assert_eq!(parse(&big).err(), Some(RequestError::TooLarge));
        assert_eq!(
            parse(b"OPTIONS * RTSP/1.0\r\n\r\n").err(),
            Some(RequestError::CSeq)
        );
        assert_eq!(
            parse(b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n").err(),
            Some(RequestError::Version)
        );
        assert_eq!(
            parse(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n").err(),
            Some(RequestError::NotARequest)
        );
    }

    #[test]
    fn interleaved_frames_are_skipped_whole() {
        assert!(matches!(parse(b"$\x01\x00"), Ok(None)));
        assert!(matches!(parse(b"$\x01\x00\x03ab"), Ok(None)));
        match parse(b"$\x01\x00\x02abOPTIONS") {
            Ok(Some((Incoming::Data { channel: 1, len: 2 }, 6))) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transports_prefer_the_clients_order() {
        let setup = |t: &str| {
            request(&format!(
                "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: {t}\r\n\r\n"
            ))
            .transport()
        };
        assert_eq!(
            setup("RTP/AVP/TCP;unicast;interleaved=0-1"),
            Ok(TransportChoice::Interleaved { rtp: 0, rtcp: 1 })
        );
        assert_eq!(
            setup("RTP/AVP;unicast;client_port=5000-5001"),
            Ok(TransportChoice::Udp {
                rtp: 5000,
                rtcp: 5001
            })
        );
        assert_eq!(
            setup("RTP/AVP;multicast,RTP/AVP/UDP;unicast;client_port=6000-6001"),
            Ok(TransportChoice::Udp {
                rtp: 6000,
                rtcp: 6001
            })
        );
        assert_eq!(
            setup("RTP/SAVP;unicast;client_port=5000-5001"),
            Err(TransportError::Unsupported)
        );
        let none = request("SETUP rtsp://h/cam RTSP/1.0\r\nCSeq: 3\r\n\r\n");
        assert_eq!(none.transport(), Err(TransportError::Missing));
    }

    #[test]
    fn sdp_carries_h264_parameters() {
        let sdp = sdp(&SdpParams {
            session_id: 7,
            server_ip: "127.0.0.1".parse().expect("ip"),
            profile_level_id: "42e01f",
            sps: &[0x67, 0x42, 0xe0, 0x1f],
            pps: &[0x68, 0xce],
        });
        assert!(sdp.contains("m=video 0 RTP/AVP 96\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"));
        assert!(sdp.contains(
            "packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=Z0LgHw==,aM4="
        ));
        assert!(sdp.contains("a=control:trackID=0\r\n"));
    }

    #[test]
    fn responses_echo_cseq_and_cannot_be_split() {
        let r = Response::new(200, Some(9))
            .header("Session", "x\r\nEvil: 1")
            .body("application/sdp", "v=0\r\n");
        let text = String::from_utf8(r.to_bytes()).expect("text");
        assert!(text.starts_with("RTSP/1.0 200 OK\r\nCSeq: 9\r\n"), "{text}");
        assert!(text.contains("Session: xEvil: 1\r\n"));
        assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
    }
}
