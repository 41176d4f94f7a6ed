//! The thin adapter over the `webrtc` crate: one [`Peer`] per viewer, its
//! callbacks turned into [`PeerEvent`]s on a channel. Nothing outside this
//! module names the crate's types, so the WebRTC stack can be swapped.

pub mod mdns;
pub mod reorder;
pub mod rtcp_forward;

pub use rtcam_proto::peer::sdp;

use crate::config::settings::{IceServer, MdnsMode, Secret, WebrtcSettings};
use bytes::{Bytes, BytesMut};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, Gcc, NackGeneratorBuilder, NackResponderBuilder,
    PacketReport, Slot, TwccSenderBuilder,
};
use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::peer_connection::transport::{RTCDtlsRole, RTCIceCandidateType};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::playout_delay_extension::{
    PLAYOUT_DELAY_MAX_VALUE, PlayoutDelayExtension,
};
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::statistics::report::RTCStatsReportEntry;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, StatsSelector, configure_rtcp_reports, configure_twcc_receiver_only,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// How often ICE checks candidate pairs while connecting.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// The fmtp line rtcam sends and accepts: what Chrome, Firefox and Safari all decode.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Why a peer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The remote description was rejected by the WebRTC stack.
    #[error("the SDP was rejected: {0}")]
    BadSdp(String),
    /// The offer's video cannot be H.264 Constrained Baseline, packetization-mode 1.
    #[error("the offer's video has no H.264 (Constrained Baseline, packetization-mode=1) codec")]
    NoVideoCodec,
    /// A remote candidate was rejected.
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    /// No address to gather candidates on.
    #[error("no network address for ICE (check webrtc.interfaces and webrtc.loopback)")]
    NoAddress,
    /// Anything else the stack reported.
    #[error("WebRTC error: {0}")]
    Stack(String),
    /// The peer is closed.
    #[error("the connection is closed")]
    Closed,
}

fn stack(e: impl std::fmt::Display) -> PeerError {
    // Some of the stack's errors embed whole packets; keep messages short.
    let mut text = e.to_string();
    if text.len() > 200 {
        text.truncate(200);
        text.push('…');
    }
    PeerError::Stack(text)
}

pub use crate::signaling::messages::IceCandidate;

/// Connection state as the rest of rtcam sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// ICE/DTLS in progress.
    Connecting,
    /// Media can flow.
    Connected,
    /// Connectivity lost; may come back.
    Disconnected,
    /// ICE or DTLS failed for good.
    Failed,
    /// Closed (DTLS close or local close).
    Closed,
}

/// What a peer reports.
pub enum PeerEvent {
    /// A local candidate to send to the remote.
    LocalCandidate(IceCandidate),
    /// No more local candidates.
    GatheringComplete,
    /// The connection state changed.
    State(PeerState),
    /// The remote opened a DataChannel.
    DataChannel(Channel),
    /// The remote's video started arriving (viewer side).
    RemoteVideo(RemoteVideo),
    /// The remote's audio started arriving (a viewer's talkback, or the
    /// camera's microphone on the viewer side).
    RemoteAudio(RemoteAudio),
    /// The remote asked for a keyframe (RTCP PLI/FIR). Coalesced: one per batch.
    KeyframeRequest,
}

impl std::fmt::Debug for PeerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerEvent::LocalCandidate(c) => write!(f, "LocalCandidate({})", c.candidate),
            PeerEvent::GatheringComplete => f.write_str("GatheringComplete"),
            PeerEvent::State(s) => write!(f, "State({s:?})"),
            PeerEvent::DataChannel(c) => write!(f, "DataChannel({})", c.label),
            PeerEvent::RemoteVideo(_) => f.write_str("RemoteVideo"),
            PeerEvent::RemoteAudio(_) => f.write_str("RemoteAudio"),
            PeerEvent::KeyframeRequest => f.write_str("KeyframeRequest"),
        }
    }
}

/// Network and ICE options for every peer.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// The secret shared with the TURN server and the lifetime of what is
    /// minted from it: each peer connection gets its own short-lived
    /// credential for the TURN servers configured without one.
    pub turn_secret: Option<(Secret, Duration)>,
    /// Use relay candidates only (tests of TURN).
    pub relay_only: bool,
    /// Local UDP addresses to bind (`ip:0`); each gives one host candidate.
    pub bind_addrs: Vec<String>,
    /// mDNS behaviour wanted (see [`mdns::MdnsGate`] for what is used).
    pub mdns: MdnsMode,
    /// Shared by every peer: leaves mDNS out while it cannot be used.
    pub mdns_gate: Arc<mdns::MdnsGate>,
    /// Address hidden behind the mDNS name in `Gather` mode.
    pub mdns_ip: Option<IpAddr>,
    /// ICE keepalive interval; `None` keeps the stack's default (2 s).
    /// The WebRTC stack flushes a DTLS client's first flight only on its next
    /// timer tick (at most every 200 ms once ICE is up); a short keepalive makes
    /// that tick come sooner. Only the probe (a DTLS client) sets it.
    pub keepalive: Option<Duration>,
    /// The playout delay a sending peer asks viewers for (the playout-delay
    /// RTP header extension, negotiated when the viewer offers it); `None`
    /// sends none (viewers, which send no video).
    pub playout_delay: Option<Duration>,
    /// Send-side bandwidth estimation for a peer sending video: the
    /// stack's Google Congestion Control (delay and loss halves) fed by the
    /// viewer's transport-wide feedback (TWCC), held within these bounds
    /// (min, max) in bit/s and started at the max; `None`: no estimation
    /// (viewers, or `video.congestion = "off"`).
    pub send_side_bwe: Option<(u32, u32)>,
    /// Negotiate Opus audio (the agent has a microphone or a speaker;
    /// viewers that want the camera's sound).
    pub audio: bool,
}

/// The playout-delay extension's URI (what SDP negotiates an id for).
const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// The playout-delay extension for "show within `max`": min 0, max rounded
/// up to the extension's 10 ms units (at most 40.95 s). Zero is min = max =
/// 0, which Chromium takes as "render each frame as soon as it is decoded".
pub fn playout_delay_extension(max: Duration) -> PlayoutDelayExtension {
    let units = max.as_millis().div_ceil(10);
    PlayoutDelayExtension {
        min_delay: 0,
        max_delay: u16::try_from(units)
            .unwrap_or(PLAYOUT_DELAY_MAX_VALUE)
            .min(PLAYOUT_DELAY_MAX_VALUE),
    }
}

/// The addresses to bind for ICE: allowed interfaces' addresses (all
/// non-loopback IPv4 ones when `allow` is empty), plus 127.0.0.1 with `loopback`.
pub fn bind_addrs(ifaces: &[(String, IpAddr)], allow: &[String], loopback: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (name, ip) in ifaces {
        let allowed = if allow.is_empty() {
            !ip.is_loopback()
        } else {
            allow.iter().any(|a| a == name)
        };
        // IPv4 only: IPv6 link-local needs scope ids the stack does not handle.
        if allowed && ip.is_ipv4() && (!ip.is_loopback() || loopback) {
            out.push(format!("{ip}:0"));
        }
    }
    if loopback && !out.iter().any(|a| a.starts_with("127.")) {
        out.push("127.0.0.1:0".into());
    }
    out.dedup();
    out
}

impl PeerOptions {
    /// Options for a headless viewer (the probe): as [`Self::from_settings`],
    /// with a 50 ms ICE keepalive so its DTLS client handshake starts at
    /// once, and no playout delay (it sends no video).
    pub fn for_viewer(w: &WebrtcSettings) -> Self {
        Self {
            keepalive: Some(Duration::from_millis(50)),
            playout_delay: None,
            send_side_bwe: None,
            ..Self::from_settings(w)
        }
    }

    /// Options from `[webrtc]`, enumerating the machine's interfaces.
    pub fn from_settings(w: &WebrtcSettings) -> Self {
        let ifaces: Vec<(String, IpAddr)> = rtc::shared::ifaces::ifaces()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.addr.map(|a| (i.name, a.ip())))
            .collect();
        let addrs = bind_addrs(&ifaces, &w.interfaces, w.loopback);
        let mdns_ip = addrs
            .iter()
            .filter_map(|a| {
                a.rsplit_once(':')
                    .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
            })
            .find(|ip| !ip.is_loopback());
        Self {
            ice_servers: w.ice_servers.clone(),
            turn_secret: w.turn_secret.clone().map(|s| (s, w.turn_credential_ttl)),
            relay_only: false,
            bind_addrs: addrs,
            mdns: w.mdns,
            mdns_gate: Arc::default(),
            mdns_ip,
            keepalive: None,
            playout_delay: w.playout_delay,
            send_side_bwe: None,
            audio: false,
        }
    }
}

fn h264_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 102,
    }
}

/// Opus as browsers offer it: 48 kHz, two channels in SDP (RFC 7587 says
/// so even for mono), in-band FEC.
fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    }
}

struct Handler {
    tx: mpsc::UnboundedSender<PeerEvent>,
    /// The mid of the first m-line, put on our candidates (bundle: one transport).
    first_mid: std::sync::Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Ok(init) = event.candidate.to_json() else {
            return;
        };
        let mid = self
            .first_mid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let _ = self.tx.send(PeerEvent::LocalCandidate(IceCandidate {
            candidate: init.candidate,
            sdp_mid: mid.or(Some("0".into())),
            sdp_mline_index: Some(0),
        }));
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let s = match state {
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
            RTCPeerConnectionState::Failed => PeerState::Failed,
            RTCPeerConnectionState::Closed => PeerState::Closed,
            _ => PeerState::Connecting,
        };
        let _ = self.tx.send(PeerEvent::State(s));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let label = dc.label().await.unwrap_or_default();
        let _ = self.tx.send(PeerEvent::DataChannel(Channel { dc, label }));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let ev = if track.kind().await == RtpCodecKind::Audio {
            PeerEvent::RemoteAudio(RemoteAudio { track })
        } else {
            PeerEvent::RemoteVideo(RemoteVideo::new(track))
        };
        let _ = self.tx.send(ev);
    }
}

fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_string)
}

/// One WebRTC peer connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    handler: Arc<Handler>,
    video: Option<VideoSender>,
    audio: Option<AudioSender>,
    playout: Option<PlayoutDelayExtension>,
    /// Helper tasks (RTCP, close watch), aborted with the peer.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What the viewer's receiver reports said (answering peers sending video).
    reports: Arc<rtcp_forward::ReceiverReports>,
}

/// How often an answering peer checks whether the remote closed DTLS.
const CLOSE_POLL: Duration = Duration::from_secs(1);

/// Reports [`PeerState::Closed`] once the remote has closed the DTLS
/// transport (a browser's `pc.close()` or closed tab sends close_notify).
/// The standard's connection state stays "connected" then, until ICE
/// consent times out many seconds later, and the stack raises no event of
/// its own: the transport's state is polled.
fn spawn_close_watch(
    pc: Arc<dyn PeerConnection>,
    tx: mpsc::UnboundedSender<PeerEvent>,
) -> tokio::task::JoinHandle<()> {
    use rtc::peer_connection::transport::RTCDtlsTransportState as Dtls;
    tokio::spawn(async move {
        let mut transport = None;
        // Our own close aborts this task first: a closed transport seen
        // here was closed by the remote.
        while !tx.is_closed() {
            tokio::time::sleep(CLOSE_POLL).await;
            if transport.is_none() {
                transport = dtls_transport(pc.as_ref()).await;
            }
            let Some(t) = &transport else { continue };
            match t.state().await {
                Ok(Dtls::Closed) => {
                    let _ = tx.send(PeerEvent::State(PeerState::Closed));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
}

/// The DTLS transport everything of a peer runs over (bundled: one).
async fn dtls_transport(
    pc: &dyn PeerConnection,
) -> Option<Arc<dyn webrtc::peer_connection::transport::DtlsTransport>> {
    for sender in pc.get_senders().await {
        if let Ok(Some(t)) = sender.transport().await {
            return Some(t);
        }
    }
    pc.sctp().await.map(|s| s.transport())
}

/// Events of one peer; ends after the peer is closed and dropped.
pub type PeerEvents = mpsc::UnboundedReceiver<PeerEvent>;

/// GCC's delay-based half as the estimate the stack hands on. Its loss
/// half is left to rate control's own estimator: the stack's acts on every
/// 200 ms of feedback, so a queue overflowing for a second (a keyframe into
/// a shallow buffer) took a 1 Mbit/s link's estimate to the floor in the
/// lab, where receiver reports once a second cut it once, in proportion.
struct DelayBased(Gcc);

impl BandwidthEstimator for DelayBased {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.0.on_reports(now, reports);
    }

    fn target_bitrate(&self) -> f64 {
        self.0.delay_based_bitrate()
    }
}

async fn build(
    opts: &PeerOptions,
    handler: Arc<Handler>,
    forward_rtcp: Option<Arc<rtcp_forward::ReceiverReports>>,
) -> Result<Arc<dyn PeerConnection>, PeerError> {
    if opts.bind_addrs.is_empty() {
        return Err(PeerError::NoAddress);
    }
    let mut media = MediaEngine::default();
    media
        .register_codec(h264_codec(), RtpCodecKind::Video)
        .map_err(stack)?;
    media.register_feedback(
        RTCPFeedback {
            typ: "ccm".into(),
            parameter: "fir".into(),
        },
        RtpCodecKind::Video,
    );
    if opts.audio {
        media
            .register_codec(opus_codec(), RtpCodecKind::Audio)
            .map_err(stack)?;
    }
    if opts.playout_delay.is_some() {
        // Answered when the viewer offers it (Chromium does), so its
        // jitter buffer holds frames no longer than asked.
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: PLAYOUT_DELAY_URI.into(),
                },
                RtpCodecKind::Video,
                None,
            )
            .map_err(stack)?;
    }
    let mut registry = interceptors(&mut media)?;
    if let (Some((min, max)), Some(_)) = (opts.send_side_bwe, &forward_rtcp) {
        // Transport-wide sequence numbers on what we send, and GCC on the
        // viewer's feedback about them (its estimate reaches the forwarder
        // as an attribute of that feedback). No pacer: it would pace at the
        // estimate itself, holding every keyframe back by its size over the
        // rate, on links that need no pacing at all.
        registry = registry
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(DelayBased(Gcc::new(
                    f64::from(max),
                    f64::from(min),
                    f64::from(max),
                )))
                .build(),
            );
    }
    if let Some(reports) = forward_rtcp {
        registry = registry.with(
            Slot::from(usize::from(rtcp_forward::SLOT)),
            rtcp_forward::KeyframeRequestForwarder::new(reports),
        );
    }
    let mdns_mode = opts
        .mdns_gate
        .effective(opts.mdns, Instant::now(), probe_mdns_socket);
    let mdns = match mdns_mode {
        MdnsMode::Disabled => MulticastDnsMode::Disabled,
        MdnsMode::Query => MulticastDnsMode::QueryOnly,
        MdnsMode::Gather => MulticastDnsMode::QueryAndGather,
    };
    let mut settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(mdns)
        // Check candidates every 50 ms while connecting (the default 200 ms
        // dominates setup on a LAN), keeping the ~1.4 s window per candidate.
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(28))
        // As answerer be the DTLS server: the viewer's ClientHello is answered
        // at once, whereas our own first flight would wait for a timer tick.
        .with_answering_dtls_role(RTCDtlsRole::Server);
    if let Some(k) = opts.keepalive {
        settings = settings.with_ice_timeouts(None, None, Some(k));
    }
    if mdns_mode == MdnsMode::Gather {
        settings = settings
            .with_multicast_dns_local_name(format!("rtcam-{:08x}.local", rand_u32()))
            .with_multicast_dns_local_ip(opts.mdns_ip);
    }
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + opts
            .turn_secret
            .as_ref()
            .map_or(0, |(_, ttl)| ttl.as_secs());
    let ice_servers = rtcam_proto::turn::with_minted(
        &opts.ice_servers,
        opts.turn_secret
            .as_ref()
            .map(|(secret, _)| secret.expose().as_bytes()),
        expires,
        &format!("rtcam-agent-{:08x}", rand_u32()),
    )
    .iter()
    .map(|s| RTCIceServer {
        urls: s.urls.clone(),
        username: s.username.clone().unwrap_or_default(),
        credential: s.credential.clone().unwrap_or_default(),
    })
    .collect();
    let mut config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers);
    if opts.relay_only {
        config = config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
    }
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config.build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings.build())
        .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
        .with_udp_addrs(opts.bind_addrs.clone())
        .build()
        .await
        .map_err(stack)?;
    Ok(Arc::new(pc))
}

/// Opens (and closes) a socket as the WebRTC stack opens its mDNS one:
/// bound to the mDNS port and joined to its multicast group.
fn probe_mdns_socket() -> std::io::Result<()> {
    rtc::mdns::MulticastSocket::new().into_std().map(drop)
}

/// Packets kept for NACK retransmission per stream: ~1.2 s at 2 Mbit/s,
/// plenty for a round trip, and a quarter of the stack's default (1024, about
/// 1.2 MB per viewer).
const NACK_BUFFER_PACKETS: u16 = 256;
/// How often a viewer asks for one lost packet.
const NACK_RETRIES: u16 = 3;

/// The stack's default interceptors (NACK, TWCC feedback, RTCP reports),
/// with a smaller NACK buffer. Call after registering the codec: the NACK
/// feedback is added to the codecs already registered.
fn interceptors(media: &mut MediaEngine) -> Result<Registry, PeerError> {
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: "nack".into(),
                parameter: parameter.into(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new()
                .with_size(NACK_BUFFER_PACKETS)
                .build(),
        )
        // A viewer (the probe) asks for a lost packet at most three times:
        // on a link with a deep queue, each retry is itself queued, and
        // unbounded retries would resend every lost packet ten times.
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(NACK_RETRIES)
                .build(),
        );
    let registry = configure_twcc_receiver_only(registry, media).map_err(stack)?;
    Ok(configure_rtcp_reports(registry))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; mixed with time for per-call variety.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    h.finish() as u32
}

impl Peer {
    /// Answers a viewer's offer: sets it, adds the H.264 track when
    /// `send_video` and the Opus track when `send_audio`, and returns the
    /// peer, its answer SDP and its event stream.
    pub async fn answer(
        opts: &PeerOptions,
        offer_sdp: &str,
        send_video: bool,
        send_audio: bool,
    ) -> Result<(Peer, String, PeerEvents), PeerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            tx,
            first_mid: std::sync::Mutex::new(first_mid(offer_sdp)),
        });
        let reports = Arc::new(rtcp_forward::ReceiverReports::default());
        let pc = build(opts, handler.clone(), send_video.then(|| reports.clone())).await?;
        let mut peer = Peer {
            pc,
            handler,
            video: None,
            audio: None,
            playout: opts.playout_delay.map(playout_delay_extension),
            tasks: Vec::new(),
            reports,
        };
        match peer
            .negotiate_answer(offer_sdp, send_video, send_audio && opts.audio)
            .await
        {
            Ok(answer) => {
                let watch = spawn_close_watch(peer.pc.clone(), peer.handler.tx.clone());
                peer.tasks.push(watch);
                Ok((peer, answer, rx))
            }
            Err(e) => {
                peer.close().await;
                Err(e)
            }
        }
    }

    async fn negotiate_answer(
        &mut self,
        offer_sdp: &str,
        send_video: bool,
        send_audio: bool,
    ) -> Result<String, PeerError> {
        self.set_offer(offer_sdp).await?;
        let mut audio = None;
        if send_audio {
            let ssrc = rand_u32() | 1;
            let t = Arc::new(
                TrackLocalStaticSample::new(
                    Instant::now(),
                    MediaStreamTrack::new(
                        "rtcam".into(),
                        "audio".into(),
                        "microphone".into(),
                        RtpCodecKind::Audio,
                        vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters {
                                ssrc: Some(ssrc),
                                ..Default::default()
                            },
                            codec: opus_codec().rtp_codec,
                            ..Default::default()
                        }],
                    ),
                )
                .map_err(stack)?,
            );
            let sender = self
                .pc
                .add_track(t.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(stack)?;
            audio = Some((t, ssrc, sender));
        }
        let mut track = None;
        if send_video {
            let ssrc = rand_u32() | 1;
            let t = Arc::new(
                TrackLocalStaticSample::new(
                    Instant::now(),
                    MediaStreamTrack::new(
                        "rtcam".into(),
                        "video".into(),
                        "camera".into(),
                        RtpCodecKind::Video,
                        vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters {
                                ssrc: Some(ssrc),
                                ..Default::default()
                            },
                            codec: h264_codec().rtp_codec,
                            ..Default::default()
                        }],
                    ),
                )
                .map_err(stack)?,
            );
            let sender = self
                .pc
                .add_track(t.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(stack)?;
            track = Some((t, ssrc, sender));
        }
        let sdp = self.make_answer().await?;
        if let Some((t, ssrc, sender)) = track {
            let pt = sender
                .get_parameters()
                .await
                .map_err(stack)?
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .ok_or(PeerError::NoVideoCodec)?;
            self.tasks
                .push(spawn_rtcp_poll(t.clone(), self.handler.tx.clone()));
            self.video = Some(VideoSender {
                track: t,
                ssrc,
                pt,
                playout: self.playout,
            });
        }
        if let Some((t, ssrc, sender)) = audio {
            // An offer whose audio section we could not match leaves the
            // track without a codec: no audio for this viewer, not an error.
            let pt = sender
                .get_parameters()
                .await
                .map_err(stack)?
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type);
            if let Some(pt) = pt {
                self.audio = Some(AudioSender { track: t, ssrc, pt });
            }
        }
        Ok(sdp)
    }

    /// Creates an offer as a viewer would: recvonly video if `video`, and a
    /// DataChannel named `channel` if given. Returns the peer, the offer SDP,
    /// the channel and the event stream.
    pub async fn offer(
        opts: &PeerOptions,
        video: bool,
        channel: Option<&str>,
    ) -> Result<(Peer, String, Option<Channel>, PeerEvents), PeerError> {
        let labels: Vec<&str> = channel.into_iter().collect();
        let (peer, sdp, mut channels, events) = Self::offer_channels(opts, video, &labels).await?;
        Ok((peer, sdp, channels.pop(), events))
    }

    /// [`Self::offer`] with a DataChannel for each of `labels`.
    pub async fn offer_channels(
        opts: &PeerOptions,
        video: bool,
        labels: &[&str],
    ) -> Result<(Peer, String, Vec<Channel>, PeerEvents), PeerError> {
        Self::offer_media(opts, video, false, labels).await
    }

    /// [`Self::offer_channels`], with a recvonly Opus audio section when
    /// `audio` (the camera's microphone; `opts.audio` must be set).
    pub async fn offer_media(
        opts: &PeerOptions,
        video: bool,
        audio: bool,
        labels: &[&str],
    ) -> Result<(Peer, String, Vec<Channel>, PeerEvents), PeerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            tx,
            first_mid: std::sync::Mutex::new(None),
        });
        let pc = build(opts, handler.clone(), None).await?;
        let peer = Peer {
            pc,
            handler,
            video: None,
            audio: None,
            playout: None,
            tasks: Vec::new(),
            reports: Arc::default(),
        };
        let made = async {
            if video {
                peer.pc
                    .add_transceiver_from_kind(
                        RtpCodecKind::Video,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Recvonly,
                            ..Default::default()
                        }),
                    )
                    .await
                    .map_err(stack)?;
            }
            if audio {
                peer.pc
                    .add_transceiver_from_kind(
                        RtpCodecKind::Audio,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Recvonly,
                            ..Default::default()
                        }),
                    )
                    .await
                    .map_err(stack)?;
            }
            let mut channels = Vec::with_capacity(labels.len());
            for label in labels {
                let dc = peer
                    .pc
                    .create_data_channel(label, None)
                    .await
                    .map_err(stack)?;
                channels.push(Channel {
                    dc,
                    label: label.to_string(),
                });
            }
            let offer = peer.pc.create_offer(None).await.map_err(stack)?;
            let sdp = offer.sdp.clone();
            *peer
                .handler
                .first_mid
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = first_mid(&sdp);
            peer.pc.set_local_description(offer).await.map_err(stack)?;
            Ok::<_, PeerError>((sdp, channels))
        }
        .await;
        match made {
            Ok((sdp, channels)) => Ok((peer, sdp, channels, rx)),
            Err(e) => {
                peer.close().await;
                Err(e)
            }
        }
    }

    /// Answers a viewer's ICE-restart offer on this live connection: the
    /// stack sees new remote ICE credentials and restarts its ICE agent
    /// (new local credentials, candidates gathered again, trickled as
    /// events); DTLS, SRTP, the video track and the channels go on.
    pub async fn answer_restart(&self, offer_sdp: &str) -> Result<String, PeerError> {
        self.set_offer(offer_sdp).await?;
        self.make_answer().await
    }

    /// Applies the viewer's offer as the remote description.
    async fn set_offer(&self, offer_sdp: &str) -> Result<(), PeerError> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_string())
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| PeerError::BadSdp(e.to_string()))
    }

    /// Creates the answer, sets it locally and returns its SDP.
    async fn make_answer(&self) -> Result<String, PeerError> {
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;
        let sdp = answer.sdp.clone();
        self.pc.set_local_description(answer).await.map_err(stack)?;
        Ok(sdp)
    }

    /// Starts an ICE restart (viewer side): returns the offer with new ICE
    /// credentials, to signal; apply the answer with [`Self::accept_answer`].
    pub async fn restart_offer(&self) -> Result<String, PeerError> {
        self.pc.restart_ice().await.map_err(stack)?;
        let offer = self.pc.create_offer(None).await.map_err(stack)?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await.map_err(stack)?;
        Ok(sdp)
    }

    /// Applies the remote answer (viewer side).
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp.to_string())
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| PeerError::BadSdp(e.to_string()))
    }

    /// Adds a remote ICE candidate; an empty one (end of candidates) is accepted and ignored.
    pub async fn add_remote_candidate(&self, c: &IceCandidate) -> Result<(), PeerError> {
        if c.candidate.trim().is_empty() {
            return Ok(());
        }
        let init = webrtc::peer_connection::RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid.clone(),
            sdp_mline_index: c.sdp_mline_index,
            ..Default::default()
        };
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| PeerError::BadCandidate(e.to_string()))
    }

    /// The video sender, when this peer sends video.
    pub fn video(&self) -> Option<VideoSender> {
        self.video.clone()
    }

    /// The audio sender, when this peer sends the microphone.
    pub fn audio(&self) -> Option<AudioSender> {
        self.audio.clone()
    }

    /// Transport statistics.
    pub async fn stats(&self) -> PeerStats {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let mut s = PeerStats::default();
        for o in report.outbound_rtp_streams() {
            s.bytes_sent += o.sent_rtp_stream_stats.bytes_sent;
            s.packets_sent += o.sent_rtp_stream_stats.packets_sent;
        }
        for i in report.inbound_rtp_streams() {
            s.bytes_received += i.bytes_received;
            s.packets_received += i.received_rtp_stream_stats.packets_received;
        }
        for e in report.iter() {
            if let RTCStatsReportEntry::RemoteInboundRtp(r) = e {
                s.fraction_lost = Some(r.fraction_lost);
                s.packets_lost = Some(r.received_rtp_stream_stats.packets_lost);
            }
        }
        if let Some(cp) = report.candidate_pairs().find(|cp| cp.nominated) {
            s.rtt = Some(Duration::from_secs_f64(cp.current_round_trip_time.max(0.0)));
            // The pair names its candidates by their ICE ids; the stack files
            // them under `RTC{Local,Remote}IceCandidate_{id}`.
            let kind = |local: bool, id: &str| {
                report.iter().find_map(|e| match (local, e) {
                    (true, RTCStatsReportEntry::LocalCandidate(c))
                    | (false, RTCStatsReportEntry::RemoteCandidate(c))
                        if c.stats.id == id
                            || c.stats
                                .id
                                .strip_suffix(id)
                                .is_some_and(|p| p.ends_with('_')) =>
                    {
                        CandidateKind::from_stack(c.candidate_type)
                    }
                    _ => None,
                })
            };
            s.selected_local = kind(true, &cp.local_candidate_id);
            s.selected_remote = kind(false, &cp.remote_candidate_id);
        }
        s
    }

    /// What the remote's receiver reports on our video said so far.
    pub fn receiver_reports(&self) -> rtcp_forward::ReportFigures {
        self.reports.figures()
    }

    /// Closes the connection and frees its sockets and tasks. Idempotent.
    pub async fn close(&self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %stack(e), "closing peer connection");
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Drains the local track's events (required once RTCP forwarding is on)
/// and turns keyframe requests into one coalesced event per batch.
fn spawn_rtcp_poll(
    track: Arc<TrackLocalStaticSample>,
    tx: mpsc::UnboundedSender<PeerEvent>,
) -> tokio::task::JoinHandle<()> {
    let pending = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Some(ev) = track.poll().await {
            if let TrackLocalEvent::OnRtcpPacket(packets) = ev
                && packets
                    .iter()
                    .any(|p| rtcp_forward::is_keyframe_request(p.as_ref()))
                && !pending.swap(true, Ordering::AcqRel)
            {
                if tx.send(PeerEvent::KeyframeRequest).is_err() {
                    break;
                }
                // The session applies its own per-viewer rate limit; one event per batch is enough here.
                pending.store(false, Ordering::Release);
            }
        }
    })
}

/// Transport counters of one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerStats {
    /// RTP bytes sent.
    pub bytes_sent: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP bytes received.
    pub bytes_received: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Round-trip time of the selected candidate pair.
    pub rtt: Option<Duration>,
    /// Kind of the selected candidate pair's local candidate.
    pub selected_local: Option<CandidateKind>,
    /// Kind of its remote candidate (unknown for one learnt from checks).
    pub selected_remote: Option<CandidateKind>,
    /// Share of our packets the remote lost, from its last receiver report.
    pub fraction_lost: Option<f64>,
    /// Our packets the remote lost in all, from its receiver reports.
    pub packets_lost: Option<i64>,
}

/// The kind of an ICE candidate: how its address was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    /// A local interface's address.
    Host,
    /// The address a STUN server saw (server reflexive).
    ServerReflexive,
    /// An address learnt from connectivity checks (peer reflexive).
    PeerReflexive,
    /// An address allocated on a TURN server: traffic goes through the relay.
    Relay,
}

impl CandidateKind {
    fn from_stack(t: RTCIceCandidateType) -> Option<Self> {
        match t {
            RTCIceCandidateType::Host => Some(Self::Host),
            RTCIceCandidateType::Srflx => Some(Self::ServerReflexive),
            RTCIceCandidateType::Prflx => Some(Self::PeerReflexive),
            RTCIceCandidateType::Relay => Some(Self::Relay),
            _ => None,
        }
    }
}

/// Writes H.264 access units to a peer's video track.
#[derive(Clone)]
pub struct VideoSender {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
    /// Sent with every packet; the stack leaves it out unless negotiated.
    playout: Option<PlayoutDelayExtension>,
}

impl VideoSender {
    /// Sends one Annex B access unit lasting `duration` (its RTP timestamp
    /// advances by that much). Waits when the transport is backed up.
    pub async fn send(
        &self,
        au: Bytes,
        duration: Duration,
        captured: Instant,
    ) -> Result<(), PeerError> {
        let sample = Sample {
            data: au,
            duration,
            ..Sample::new(captured)
        };
        let extensions = self.playout.map(HeaderExtension::PlayoutDelay);
        self.track
            .write_sample(self.ssrc, self.pt, &sample, extensions.as_slice())
            .await
            .map_err(|_| PeerError::Closed)
    }
}

/// Writes Opus packets to a peer's audio track.
#[derive(Clone)]
pub struct AudioSender {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
}

impl AudioSender {
    /// Sends one Opus packet lasting `duration` (its RTP timestamp
    /// advances by that much at 48 kHz).
    pub async fn send(
        &self,
        packet: Bytes,
        duration: Duration,
        captured: Instant,
    ) -> Result<(), PeerError> {
        let sample = Sample {
            data: packet,
            duration,
            ..Sample::new(captured)
        };
        self.track
            .write_sample(self.ssrc, self.pt, &sample, &[])
            .await
            .map_err(|_| PeerError::Closed)
    }
}

/// One Opus packet received from the remote.
#[derive(Debug, Clone)]
pub struct ReceivedAudio {
    /// RTP sequence number (the jitter buffer orders by it).
    pub seq: u16,
    /// RTP timestamp (48 kHz).
    pub rtp_timestamp: u32,
    /// The Opus packet.
    pub payload: Bytes,
}

/// The remote's audio track: Opus packets as they arrive, one per RTP packet.
pub struct RemoteAudio {
    track: Arc<dyn TrackRemote>,
}

impl RemoteAudio {
    /// The next packet; `None` when the track ends.
    pub async fn next_packet(&mut self) -> Option<ReceivedAudio> {
        loop {
            if let TrackRemoteEvent::OnRtpPacket(p) = self.track.poll().await? {
                if p.payload.is_empty() {
                    continue;
                }
                return Some(ReceivedAudio {
                    seq: p.header.sequence_number,
                    rtp_timestamp: p.header.timestamp,
                    payload: p.payload.clone(),
                });
            }
        }
    }
}

/// What a DataChannel reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The channel is open.
    Open,
    /// A text message.
    Text(String),
    /// A binary message (its length; rtcam's protocol is text only).
    Binary(usize),
    /// The channel closed.
    Closed,
}

/// A DataChannel.
pub struct Channel {
    dc: Arc<dyn DataChannel>,
    label: String,
}

impl Channel {
    /// The channel's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The next event; `None` once the channel or its connection is gone.
    pub async fn recv(&self) -> Option<ChannelEvent> {
        loop {
            let ev = self.dc.poll().await?;
            return Some(match ev {
                DataChannelEvent::OnOpen => ChannelEvent::Open,
                DataChannelEvent::OnMessage(m) if m.is_string => {
                    ChannelEvent::Text(String::from_utf8_lossy(&m.data).into_owned())
                }
                DataChannelEvent::OnMessage(m) => ChannelEvent::Binary(m.data.len()),
                DataChannelEvent::OnClose => ChannelEvent::Closed,
                // Buffered-amount and closing notices are not interesting here.
                _ => continue,
            });
        }
    }

    /// Sends a text message.
    pub async fn send_text(&self, text: &str) -> Result<(), PeerError> {
        self.dc.send_text(text).await.map_err(stack)
    }

    /// Sends a binary message.
    pub async fn send_binary(&self, data: &[u8]) -> Result<(), PeerError> {
        self.dc.send(BytesMut::from(data)).await.map_err(stack)
    }

    /// Waits until the remote has acknowledged everything sent (SCTP), at
    /// most `timeout`: closing the connection right after a send loses it.
    /// The stack has no event for this: its counter is polled.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.dc.outstanding_bytes().await {
                Ok(0) | Err(_) => return true,
                Ok(_) if tokio::time::Instant::now() >= deadline => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Closes the channel.
    pub async fn close(&self) {
        let _ = self.dc.close().await;
    }
}

/// One H.264 access unit received from the remote.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    /// Annex B bytes.
    pub data: Bytes,
    /// RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// Packets of it were lost for good (not resent in time): `data` is
    /// empty, and the decoder needs a keyframe before it can go on.
    pub after_loss: bool,
}

/// How long a viewer waits for a lost packet to be resent (NACK) before it
/// gives its picture up: the NACK generator's 100 ms tick plus a round
/// trip on a slow link with a queue (a keyframe given up costs far more:
/// a keyframe request, and another big picture into the same queue).
pub const REORDER_WAIT: Duration = Duration::from_millis(500);

/// The remote's video track (viewer side), reassembled into access units
/// through a reorder buffer that waits for resent packets.
pub struct RemoteVideo {
    track: Arc<dyn TrackRemote>,
    depacketizer: H264Packet,
    buffer: BytesMut,
    reorder: reorder::Reorder,
}

impl RemoteVideo {
    fn new(track: Arc<dyn TrackRemote>) -> Self {
        Self {
            track,
            depacketizer: H264Packet::default(),
            buffer: BytesMut::new(),
            reorder: reorder::Reorder::new(REORDER_WAIT),
        }
    }

    /// The next access unit (ended by the RTP marker bit), or a picture
    /// given up for lost packets (`after_loss`); `None` when the track ends.
    pub async fn next_frame(&mut self) -> Option<ReceivedFrame> {
        loop {
            if let Some(p) = self.reorder.pop(Instant::now()) {
                if !p.complete {
                    // Its fragments would confuse the next picture's.
                    self.depacketizer = H264Packet::default();
                    return Some(ReceivedFrame {
                        data: Bytes::new(),
                        rtp_timestamp: p.timestamp,
                        after_loss: true,
                    });
                }
                let mut whole = true;
                for payload in &p.payloads {
                    match self.depacketizer.depacketize(payload) {
                        Ok(nal) => self.buffer.extend_from_slice(&nal),
                        Err(_) => whole = false,
                    }
                }
                let data = self.buffer.split().freeze();
                if data.is_empty() && whole {
                    continue;
                }
                return Some(ReceivedFrame {
                    data: if whole { data } else { Bytes::new() },
                    rtp_timestamp: p.timestamp,
                    after_loss: !whole,
                });
            }
            // Wait for a packet, or until a missing one is given up.
            let ev = match self.reorder.deadline() {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, self.track.poll()).await {
                        Ok(ev) => ev?,
                        Err(_) => continue,
                    }
                }
                None => self.track.poll().await?,
            };
            let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
                continue;
            };
            self.reorder.push(
                reorder::RtpIn {
                    seq: pkt.header.sequence_number,
                    timestamp: pkt.header.timestamp,
                    marker: pkt.header.marker,
                    payload: pkt.payload.clone(),
                },
                Instant::now(),
            );
        }
    }

    /// Asks the sender for a keyframe (RTCP PLI).
    pub async fn request_keyframe(&self) -> Result<(), PeerError> {
        let media_ssrc = self.track.ssrcs().await.first().copied().unwrap_or(0);
        self.track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await
            .map_err(stack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn playout_delay_is_min_zero_max_in_10_ms_units() {
        let ext = |ms| {
            let e = playout_delay_extension(Duration::from_millis(ms));
            (e.min_delay, e.max_delay)
        };
        assert_eq!(ext(0), (0, 0), "live: render at once");
        assert_eq!(ext(95), (0, 10), "rounded up");
        assert_eq!(ext(10_000), (0, 1000));
        assert_eq!(ext(100_000), (0, PLAYOUT_DELAY_MAX_VALUE), "clamped");
    }

    #[test]
    fn bind_addresses_follow_allow_list_and_loopback() {
        let ifaces = vec![
            ("lo".to_string(), ip("127.0.0.1")),
            ("eth0".to_string(), ip("192.0.2.2")),
            ("eth0".to_string(), ip("fe80::1")),
            ("wlan0".to_string(), ip("10.0.0.5")),
        ];
        assert_eq!(
            bind_addrs(&ifaces, &[], false),
            ["192.0.2.2:0", "10.0.0.5:0"]
        );
        assert_eq!(
            bind_addrs(&ifaces, &["wlan0".into()], false),
            ["10.0.0.5:0"]
        );
        assert_eq!(bind_addrs(&ifaces, &["lo".into()], true), ["127.0.0.1:0"]);
        assert_eq!(
            bind_addrs(&ifaces, &["lo".into()], false),
            Vec::<String>::new()
        );
        assert_eq!(bind_addrs(&[], &[], true), ["127.0.0.1:0"]);
    }

    #[test]
    fn first_mid_is_read_from_sdp() {
        assert_eq!(
            first_mid("v=0\r\nm=video 9 X 1\r\na=mid:video0\r\na=mid:1\r\n").as_deref(),
            Some("video0")
        );
        assert_eq!(first_mid("v=0\r\n"), None);
    }
}
