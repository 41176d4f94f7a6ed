//! Shared helpers for the end-to-end tests: isolated settings, an agent on
//! free loopback ports, and headless viewers.
#![allow(dead_code)] // each test binary uses a different subset

pub mod agent;
pub mod browser;
pub mod channels;
pub mod coturn;
pub mod h264_camera;
pub mod lab;
pub mod lines;
pub mod memory;
pub mod mosquitto;
pub mod mqtt_raw;
pub mod players;
pub mod process;
pub mod tap;
pub mod tls;
pub mod whep;

use bytes::Bytes;
use rtcam::agent::{Agent, AgentOptions};
use rtcam::config::Settings;
use rtcam::config::settings::{MdnsMode, MqttProtocol, MqttScheme, MqttUrl};
use rtcam::gpio::BackendKind;
use rtcam::gpio::pins::{PinMode, PinRef, PinSpec, Pull};
use rtcam::peer::PeerOptions;
use rtcam::probe::{Viewer, ViewerOptions};
use rtcam::signaling::mqtt::{Link, LinkEvent, MqttOptions, TlsFiles};
use rtcam::signaling::topics::{ClientId, Topics};
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Two simulated outputs, `relay1` (pin 17) and `lamp` (pin 22), for the
/// tests that drive pins over MQTT.
pub const TWO_OUTPUTS: &str = r#"
[[gpio.pins]]
name = "relay1"
pin = 17
mode = "output"

[[gpio.pins]]
name = "lamp"
pin = 22
mode = "output"
"#;

/// The simulated pins the control and security tests declare in their
/// config files: an output, a pulled-up input, a PWM and a servo.
pub const SIM_PINS: &str = r#"
[[gpio.pins]]
name = "relay1"
pin = 17
mode = "output"
failsafe = false

[[gpio.pins]]
name = "door"
pin = 27
mode = "input"
pull = "up"
debounce_ms = 0

[[gpio.pins]]
name = "dim"
pin = 18
mode = "pwm"
max_duty = 0.9

[[gpio.pins]]
name = "pan"
pin = 12
mode = "servo"
"#;

/// Generous bound for anything that should take well under a second.
pub const WAIT: Duration = Duration::from_secs(20);

/// WebRTC traffic in tests must stay on loopback: the suite runs inside a
/// private network namespace holding only `lo` (see `.ci/test`).
pub fn assert_private_netns() {
    let dev = std::fs::read_to_string("/proc/self/net/dev")
        .expect("/proc/self/net/dev is readable on Linux");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        ifaces,
        ["lo"],
        "WebRTC tests must run in a private network namespace with only lo; run them with .ci/test \
         (or: unshare -rn sh -c 'ip link set lo up && cargo test')"
    );
}

/// GET on an HTTP server: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(addr, "GET", path, &[]).await;
    (status, body)
}

/// An HTTP request with extra headers: (status, headers, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let (status, headers, body) = http_request_bytes(addr, method, path, headers).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// [`http_request`] with the body as bytes (up to 64 MiB).
pub async fn http_request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let secure = tls_addrs().lock().expect("not poisoned").contains(&addr);
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if secure {
        req = req.uri(path).header("host", addr.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(axum::body::Body::empty())
        .expect("a valid request");
    let resp = if secure {
        tokio::time::timeout(WAIT, https_request(addr, req))
            .await
            .expect("an HTTPS answer in time")
    } else {
        let client: Client<_, axum::body::Body> =
            Client::builder(TokioExecutor::new()).build_http();
        tokio::time::timeout(WAIT, client.request(req))
            .await
            .expect("an HTTP answer in time")
            .expect("an HTTP response")
    };
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 64 << 20)
        .await
        .expect("the body");
    (status, headers, body.to_vec())
}

/// Web servers that speak HTTPS (an agent with `http.tls`): the helpers
/// above reach them over TLS, taking whatever certificate they show (the
/// HTTPS tests check the certificate themselves).
pub fn tls_addrs() -> &'static std::sync::Mutex<std::collections::HashSet<SocketAddr>> {
    static ADDRS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<SocketAddr>>> =
        std::sync::OnceLock::new();
    ADDRS.get_or_init(Default::default)
}

/// Trusts any certificate: the harness's own status requests only.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn https_request(
    addr: SocketAddr,
    req: axum::http::Request<axum::body::Body>,
) -> axum::http::Response<hyper::body::Incoming> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .expect("a TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("an HTTP/1 connection");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("an HTTPS response")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port is available")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Settings for a test agent: 640x480@30 test pattern, embedded broker on
/// free ports, loopback-only WebRTC, web viewer on a free port.
pub fn settings(prefix: &str) -> Settings {
    let mut s = Settings::default();
    s.video.width = 640;
    s.video.height = 480;
    s.video.fps = 30;
    s.video.bitrate_kbps = 1000;
    s.webrtc.interfaces = vec!["lo".into()];
    s.webrtc.loopback = true;
    s.webrtc.mdns = MdnsMode::Disabled;
    s.mqtt.topic_prefix = format!("rtcam-test/{prefix}");
    s.mqtt.client_id = format!("rtcam-agent-{prefix}");
    s.broker.listen = local(free_port());
    s.broker.v5_listen = local(free_port());
    s.broker.ws_listen = local(free_port());
    s.http.listen = Some(local(0));
    s
}

/// `n` random bytes as hex: secrets no log can contain by accident.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A config file for the `rtcam` binary with `s`'s topics, client id and
/// loopback-only WebRTC (so [`viewer_options`]`(s, ..)` reaches it): the
/// test pattern at 320x240@15, no web viewer, simulated GPIO. `mqtt` holds
/// more `[mqtt]` keys (url, credentials, TLS files); `more`, more sections.
pub fn agent_toml(s: &Settings, mqtt: &str, more: &str) -> String {
    format!(
        "[video]\nsource = \"test\"\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 300\n\n\
         [webrtc]\ninterfaces = [\"lo\"]\nloopback = true\nmdns = \"disabled\"\n\n\
         [http]\nlisten = \"off\"\n\n\
         [mqtt]\nclient_id = {:?}\ntopic_prefix = {:?}\n{mqtt}\n\n{more}\n",
        s.mqtt.client_id, s.mqtt.topic_prefix
    )
}

/// Starts an agent and waits until it is connected to its broker.
pub async fn start(settings: Settings) -> Agent {
    start_with(settings, AgentOptions::default()).await
}

/// Starts an agent with options and waits for its broker connection.
pub async fn start_with(settings: Settings, opts: AgentOptions) -> Agent {
    assert_private_netns();
    let agent = Agent::start(settings, opts)
        .await
        .expect("the agent starts");
    assert!(
        agent.wait_mqtt_connected(WAIT).await,
        "the agent connects to the broker"
    );
    agent
}

/// MQTT options reaching the agent's broker.
pub fn mqtt_for(s: &Settings, client_id: &str) -> MqttOptions {
    let url = s.mqtt.url.clone().unwrap_or_else(|| MqttUrl {
        scheme: MqttScheme::Mqtt,
        host: "127.0.0.1".into(),
        port: s.broker.v5_listen.port(),
        path: String::new(),
    });
    let protocol = if s.mqtt.url.is_some() {
        s.mqtt.protocol
    } else {
        MqttProtocol::V5
    };
    let token = broker_token(s);
    MqttOptions {
        url,
        protocol,
        client_id: client_id.into(),
        // A password goes with a user name (any will do).
        username: token.as_ref().map(|_| client_id.to_string()),
        password: token.map(rtcam::config::settings::Secret::new),
        tls: TlsFiles::default(),
        keep_alive: Duration::from_secs(30),
    }
}

/// The MQTT password test clients give the embedded broker: with
/// `auth.mode = "token"` it wants a valid token (the first static one, a
/// view token when there is one); the agent still judges each offer's own
/// token. `None` for an external broker (tests run theirs open) and in
/// mode none.
pub fn broker_token(s: &Settings) -> Option<String> {
    use rtcam::config::settings::AuthMode;
    if s.mqtt.url.is_some() || s.auth.mode != AuthMode::Token {
        return None;
    }
    let view = s
        .auth
        .tokens
        .iter()
        .find(|t| t.role == rtcam::auth::Role::View);
    view.or(s.auth.tokens.first())
        .map(|t| t.token.expose().to_string())
}

/// Options for a viewer of the agent with these settings.
pub fn viewer_options(s: &Settings, client_id: &str, video: bool) -> ViewerOptions {
    ViewerOptions {
        mqtt: mqtt_for(s, client_id),
        topic_prefix: s.mqtt.topic_prefix.clone(),
        client_id: ClientId::parse(client_id).expect("valid test client id"),
        video,
        control: true,
        token: None,
        peer: PeerOptions::for_viewer(&s.webrtc),
        timeout: WAIT,
        decode: true,
        replaces: None,
        audio: false,
    }
}

/// Connects a viewer and waits until its peer connection is up.
pub async fn viewer(s: &Settings, client_id: &str, video: bool) -> Viewer {
    let mut v = Viewer::connect(&viewer_options(s, client_id, video))
        .await
        .expect("the viewer's offer is answered");
    assert!(v.wait_connected(WAIT).await, "{client_id} connects");
    v
}

/// The next DataChannel event named `name` within `within`, skipping others.
pub async fn event(v: &mut Viewer, name: &str, within: Duration) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = v.next_event(left).await?;
        if ev["event"] == name {
            return Some(ev);
        }
    }
}

/// `n` frames decoded one after another (each within [`WAIT`]): a count,
/// not a rate, so it holds on a loaded or emulated machine.
pub struct Run {
    /// Whether the first one was a keyframe.
    pub first_keyframe: bool,
    /// Their block-code sequence numbers.
    pub seqs: Vec<u32>,
}

impl Run {
    /// Frames the camera captured in this run that never decoded: the gaps
    /// in the sequence numbers.
    pub fn missing(&self) -> u32 {
        match (self.seqs.first(), self.seqs.last()) {
            (Some(a), Some(b)) => (b - a + 1).saturating_sub(self.seqs.len() as u32),
            _ => 0,
        }
    }

    /// The longest run of consecutive frames lost.
    pub fn longest_gap(&self) -> u32 {
        self.seqs
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]).saturating_sub(1))
            .max()
            .unwrap_or(0)
    }

    /// Whether the sequence numbers only ever increase.
    pub fn in_order(&self) -> bool {
        self.seqs.windows(2).all(|w| w[1] > w[0])
    }
}

/// Receives the next `n` frames (see [`Run`]); panics if one does not come.
pub async fn frames(v: &mut Viewer, n: usize) -> Run {
    let mut run = Run {
        first_keyframe: false,
        seqs: Vec::with_capacity(n),
    };
    for i in 0..n {
        let f = v
            .next_frame(WAIT)
            .await
            .unwrap_or_else(|| panic!("frame {i} of {n} decodes"));
        if i == 0 {
            run.first_keyframe = f.keyframe;
        }
        run.seqs.extend(f.seq);
    }
    run
}

/// A raw MQTT client that sends malformed messages and collects error replies.
///
/// The embedded broker lets a client publish only on its own topics
/// (`P/offer/C`, `P/ice/C`, `P/bye/C` for client id `C`) and read only its
/// own replies: there, `Raw` opens one connection per client id it speaks
/// for (the last [`Raw::KEEP`] stay open). An external broker (tests run
/// theirs open) gets one connection for every id, reading `P/error/+` and
/// `P/answer/+`.
pub struct Raw {
    settings: Settings,
    topics: Topics,
    /// External broker: the one connection.
    shared: Option<Conn>,
    /// Embedded broker: a connection per client id, oldest first.
    own: std::sync::Mutex<Vec<(String, Conn)>>,
    tx: tokio::sync::mpsc::UnboundedSender<(String, Bytes)>,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>,
}

/// One of [`Raw`]'s connections.
struct Conn {
    publisher: rtcam::signaling::mqtt::LinkPublisher,
    /// The number of the last publish queued.
    queued: std::sync::atomic::AtomicU64,
    up: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn open(
        s: &Settings,
        id: &str,
        filters: Vec<String>,
        tx: tokio::sync::mpsc::UnboundedSender<(String, Bytes)>,
    ) -> Conn {
        let mut link = Link::new(&mqtt_for(s, id), filters).expect("link");
        let publisher = link.publisher();
        let (up_tx, up) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                match link.next().await {
                    Ok(LinkEvent::Connected) => {
                        let _ = up_tx.send(true);
                    }
                    Ok(LinkEvent::Message(t, p)) => {
                        let _ = tx.send((t, p));
                    }
                    Err(_) => {}
                }
            }
        });
        Conn {
            publisher,
            queued: std::sync::atomic::AtomicU64::new(0),
            up,
            task,
        }
    }

    /// Waits until subscribed (replies to what is published from now on arrive).
    async fn ready(&self) {
        let mut up = self.up.clone();
        tokio::time::timeout(WAIT, up.wait_for(|c| *c))
            .await
            .expect("raw client connects")
            .expect("link alive");
    }

    fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> bool {
        match self.publisher.publish_counted(topic, payload) {
            Some(n) => {
                self.queued
                    .fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Waits until the broker has acknowledged everything queued.
    async fn flushed(&self) {
        let n = self.queued.load(std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            assert!(
                self.publisher.wait_acked(n, WAIT).await,
                "the broker acknowledges what was sent"
            );
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Raw {
    /// Connections kept open on the embedded broker (one per client id:
    /// the last one stays open for the next message in its name).
    pub const KEEP: usize = 1;

    pub async fn connect(s: &rtcam::config::Settings) -> Raw {
        let topics = Topics::new(&s.mqtt.topic_prefix);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = if s.mqtt.url.is_some() {
            // Unique per client: two with one id would take the connection
            // from each other at every reconnect.
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let id = format!(
                "raw-{}",
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let conn = Conn::open(
                s,
                &id,
                vec![
                    format!("{}/error/+", topics.prefix()),
                    format!("{}/answer/+", topics.prefix()),
                ],
                tx.clone(),
            );
            conn.ready().await;
            Some(conn)
        } else {
            None
        };
        Raw {
            settings: s.clone(),
            topics,
            shared,
            own: std::sync::Mutex::new(Vec::new()),
            tx,
            rx,
        }
    }

    /// Publishes through the connection that may speak for `client`
    /// (opened now if need be; `wait` waits until it is subscribed).
    async fn publish_as(&self, client: &str, topic: &str, payload: Bytes, wait: bool) -> bool {
        if let Some(c) = &self.shared {
            return c.publish(topic, payload);
        }
        self.open_for(client);
        if wait {
            // Subscribed before publishing: the reply cannot come first.
            let up = self.with_own(client, |c| c.up.clone());
            let mut up = up.expect("opened above");
            tokio::time::timeout(WAIT, up.wait_for(|c| *c))
                .await
                .expect("raw client connects")
                .expect("link alive");
        }
        self.with_own(client, |c| c.publish(topic, payload))
            .expect("opened above")
    }

    fn with_own<T>(&self, client: &str, f: impl FnOnce(&Conn) -> T) -> Option<T> {
        let own = self
            .own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        own.iter().find(|(id, _)| id == client).map(|(_, c)| f(c))
    }

    /// Opens the connection for `client` if it has none.
    fn open_for(&self, client: &str) {
        let mut own = self
            .own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if own.iter().any(|(id, _)| id == client) {
            return;
        }
        let conn = match ClientId::parse(client) {
            Ok(id) => Conn::open(
                &self.settings,
                client,
                vec![self.topics.error(&id), self.topics.answer(&id)],
                self.tx.clone(),
            ),
            // Not a client's own topic (`P/gpio/relay1/set`: `client` is
            // then `relay1/set`): any client id will do.
            Err(_) => {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Conn::open(
                    &self.settings,
                    &format!("raw-{n}"),
                    Vec::new(),
                    self.tx.clone(),
                )
            }
        };
        own.push((client.to_string(), conn));
    }

    /// Closes the oldest connections beyond [`Self::KEEP`], once what they
    /// sent is acknowledged.
    async fn trim(&self) {
        loop {
            let oldest = {
                let mut own = self
                    .own
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if own.len() <= Self::KEEP {
                    return;
                }
                own.remove(0)
            };
            oldest.1.flushed().await;
        }
    }

    /// Sends `payload` to `P/{kind}/{client}` without waiting for a reply.
    pub fn send(&self, kind: &str, client: &str, payload: impl Into<Bytes>) {
        let topic = format!("{}/{kind}/{client}", self.topics.prefix());
        let payload = payload.into();
        let queued = match &self.shared {
            Some(c) => c.publish(&topic, payload),
            None => {
                self.open_for(client);
                self.with_own(client, |c| c.publish(&topic, payload))
                    .expect("opened above")
            }
        };
        assert!(queued, "the publish is queued");
    }

    /// Like [`Self::send`] for floods: when the client's queue is full,
    /// waits for the broker to acknowledge what was queued.
    pub async fn send_flood(&self, kind: &str, client: &str, payload: impl Into<Bytes>) {
        let topic = format!("{}/{kind}/{client}", self.topics.prefix());
        self.flood(client, &topic, payload.into()).await;
    }

    /// [`Self::send_flood`] to any topic (on the embedded broker, through
    /// a connection of its own: what it may publish is up to its rights).
    pub async fn send_flood_topic(&self, topic: &str, payload: impl Into<Bytes>) {
        self.flood("\0any", topic, payload.into()).await;
    }

    /// Publishes through the connection for `key` (a client id; anything
    /// else names a connection with an id of its own), waiting for acks
    /// while its queue is full.
    async fn flood(&self, key: &str, topic: &str, payload: Bytes) {
        loop {
            if self.publish_as(key, topic, payload.clone(), false).await {
                break;
            }
            let (publisher, n) = match &self.shared {
                Some(c) => (
                    c.publisher.clone(),
                    c.queued.load(std::sync::atomic::Ordering::Relaxed),
                ),
                None => self
                    .with_own(key, |c| {
                        (
                            c.publisher.clone(),
                            c.queued.load(std::sync::atomic::Ordering::Relaxed),
                        )
                    })
                    .expect("opened by publish_as"),
            };
            assert!(
                publisher.wait_acked(n, WAIT).await,
                "the broker acknowledges the flood"
            );
        }
        self.trim().await;
    }

    /// Sends `payload` to `P/{kind}/{client}`; `None` when the agent
    /// answered it (`P/answer/{client}`), else the error code replied.
    pub async fn answer_or_code(
        &mut self,
        kind: &str,
        client: &str,
        payload: impl Into<Bytes>,
    ) -> Option<String> {
        let topic = format!("{}/{kind}/{client}", self.topics.prefix());
        assert!(self.publish_as(client, &topic, payload.into(), true).await);
        let id = ClientId::parse(client).expect("valid");
        let (error, answer) = (self.topics.error(&id), self.topics.answer(&id));
        let got = loop {
            let (t, p) = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("an answer or an error")
                .expect("link alive");
            if t == answer {
                break None;
            }
            if t == error {
                let v: Value = serde_json::from_slice(&p).expect("error replies are JSON");
                break Some(v["code"].as_str().expect("a code").to_string());
            }
        };
        self.trim().await;
        got
    }

    /// Sends `payload` to `P/{kind}/{client}` and returns the error code replied on `P/error/{client}`.
    pub async fn code(&mut self, kind: &str, client: &str, payload: impl Into<Bytes>) -> String {
        let topic = format!("{}/{kind}/{client}", self.topics.prefix());
        assert!(self.publish_as(client, &topic, payload.into(), true).await);
        let want = self.topics.error(&ClientId::parse(client).expect("valid"));
        let code = loop {
            let (t, p) = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("an error reply")
                .expect("link alive");
            if t == want {
                let v: Value = serde_json::from_slice(&p).expect("error replies are JSON");
                assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
                break v["code"].as_str().expect("a code").to_string();
            }
        };
        self.trim().await;
        code
    }

    /// Closes every connection.
    pub fn close(self) {}
}

const VP8_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n";

/// Proves `v` (client id `client`) got no signaling message so far: a bad
/// candidate sent now in its name (which the viewer, subscribed to the same
/// topic, ignores) makes the agent publish a `bad_json` error on
/// its error topic, which must be the first signal it sees (the agent
/// handles messages in order, and the broker keeps a topic's order).
pub async fn no_error_before_barrier(_s: &Settings, v: &mut Viewer, client: &str) {
    // Sent through the viewer's own connection: only `client` may publish
    // on its topics on the embedded broker.
    assert!(
        v.signal("ice", Bytes::from_static(b"barrier: not JSON")),
        "the barrier is queued"
    );
    match v.next_signal(WAIT).await {
        Some(rtcam::probe::Signal::Error(code, _)) if code == "bad_json" => {}
        other => panic!("{client} got {other:?} before the barrier's bad_json"),
    }
}

/// Every kind of malformed message gets its documented code, while a viewer keeps streaming.
pub async fn malformed_messages_get_codes(s: &rtcam::config::Settings) {
    let mut watcher = viewer(s, "steady", true).await;
    let mut raw = Raw::connect(s).await;
    let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(70_000));
    let cases: Vec<(&str, &str, Bytes, &str)> = vec![
        ("offer", "m1", Bytes::from_static(b"{not json"), "bad_json"),
        (
            "offer",
            "m2",
            Bytes::from_static(&[0xff, 0xfe, 0xfd]),
            "bad_json",
        ),
        (
            "offer",
            "m3",
            Bytes::from_static(br#"{"type":"answer","sdp":"v=0"}"#),
            "bad_message",
        ),
        (
            "offer",
            "m4",
            Bytes::from_static(br#"{"sdp":"v=0"}"#),
            "bad_message",
        ),
        (
            "offer",
            "m5",
            Bytes::from_static(br#"{"type":"offer","sdp":"hello"}"#),
            "bad_sdp",
        ),
        ("offer", "m6", Bytes::from(big), "too_large"),
        (
            "offer",
            "m7",
            Bytes::from(json!({"type": "offer", "sdp": VP8_ONLY}).to_string()),
            "no_video_codec",
        ),
        (
            "ice",
            "m8",
            Bytes::from_static(br#"{"candidate":"not a candidate"}"#),
            "bad_candidate",
        ),
        ("ice", "m9", Bytes::from_static(b"[]"), "bad_message"),
        ("bye", "m10", Bytes::from_static(b"{}"), "unknown_session"),
        ("bye", "m11", Bytes::from_static(b"bye!"), "bad_json"),
        // WHEP sessions' client ids are not for MQTT viewers.
        (
            "ice",
            "whep-abc",
            Bytes::from_static(br#"{"candidate":""}"#),
            "bad_message",
        ),
    ];
    for (kind, client, payload, want) in cases {
        let code = raw.code(kind, client, payload).await;
        assert_eq!(code, want, "{kind} from {client}");
    }
    // An offer whose SDP parses as text but that the WebRTC stack rejects.
    let broken = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
    let code = raw
        .code(
            "offer",
            "m12",
            json!({"type": "offer", "sdp": broken}).to_string(),
        )
        .await;
    assert_eq!(code, "bad_sdp");
    // The streaming viewer was not disturbed: it decodes new frames.
    watcher.drain_frames();
    let run = frames(&mut watcher, 10).await;
    assert!(run.in_order(), "the steady viewer kept decoding");
    no_error_before_barrier(s, &mut watcher, "steady").await;
    raw.close();
    watcher.bye().await;
}

/// An MQTT client subscribed to `filter` (returned once the broker has the
/// subscription), collecting every message it receives.
pub struct Watch {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>,
    task: tokio::task::JoinHandle<()>,
    publisher: rtcam::signaling::mqtt::LinkPublisher,
}

impl Watch {
    /// Subscribes as `client_id` to `filter` on the broker of `s`.
    pub async fn start(s: &Settings, client_id: &str, filter: &str) -> Watch {
        let mut link = Link::new(&mqtt_for(s, client_id), vec![filter.to_string()]).expect("link");
        let publisher = link.publisher();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (up_tx, mut up) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                match link.next().await {
                    Ok(LinkEvent::Connected) => {
                        let _ = up_tx.send(true);
                    }
                    Ok(LinkEvent::Message(t, p)) => {
                        let _ = tx.send((t, p));
                    }
                    Err(_) => {}
                }
            }
        });
        tokio::time::timeout(WAIT, up.wait_for(|c| *c))
            .await
            .expect("subscribed in time")
            .expect("link alive");
        Watch {
            rx,
            task,
            publisher,
        }
    }

    /// The next message, or `None` after [`WAIT`].
    pub async fn next(&mut self) -> Option<(String, Bytes)> {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for a message on `topic` whose payload satisfies `pred`, and
    /// returns its payload; panics naming `what` after [`WAIT`].
    pub async fn wait_for(
        &mut self,
        what: &str,
        topic: &str,
        pred: impl Fn(&[u8]) -> bool,
    ) -> Bytes {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            match got {
                Ok(Some((t, p))) if t == topic && pred(&p) => return p,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("timed out waiting for {what} on {topic}"),
            }
        }
    }

    /// Publishes through this client (QoS 1), waiting for the broker's ack.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) {
        let n = self
            .publisher
            .publish_counted(topic, payload)
            .expect("the publish is queued");
        assert!(
            self.publisher.wait_acked(n, WAIT).await,
            "the broker acknowledged {topic}"
        );
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings with four simulated pins (no demo driver): relay1 (output,
/// failsafe off), door (input, pulled up), dim (pwm, duty ≤ 0.9), pan (servo).
pub fn gpio_settings(prefix: &str) -> Settings {
    let mut s = settings(prefix);
    s.gpio.backend = BackendKind::Sim;
    s.gpio.demo = false;
    s.gpio.pins = vec![
        PinSpec {
            name: "relay1".into(),
            pin: PinRef::Number(17),
            active_low: false,
            mode: PinMode::Output {
                initial: false,
                failsafe: Some(false),
            },
        },
        PinSpec {
            name: "door".into(),
            pin: PinRef::Number(27),
            active_low: false,
            mode: PinMode::Input {
                pull: Pull::Up,
                debounce: Duration::ZERO,
            },
        },
        PinSpec {
            name: "dim".into(),
            pin: PinRef::Number(18),
            active_low: false,
            mode: PinMode::Pwm {
                frequency_hz: 1000.0,
                min_duty: 0.0,
                max_duty: 0.9,
                initial: 0.0,
                failsafe: None,
            },
        },
        PinSpec {
            name: "pan".into(),
            pin: PinRef::Number(12),
            active_low: false,
            mode: PinMode::Servo {
                min_us: 1000,
                max_us: 2000,
                max_angle: 180.0,
                initial: 90.0,
                failsafe: None,
            },
        },
    ];
    s
}

/// The JSON report `rtcam probe --json` printed (its log lines are on stderr).
pub fn probe_report(log: &str) -> serde_json::Value {
    let start = log
        .find("\n{\n")
        .map(|i| i + 1)
        .or_else(|| log.starts_with("{\n").then_some(0))
        .unwrap_or_else(|| panic!("no JSON report in:\n{log}"));
    let end = log[start..]
        .find("\n}")
        .map(|i| start + i + 2)
        .unwrap_or_else(|| panic!("unterminated JSON report in:\n{log}"));
    serde_json::from_str(&log[start..end]).unwrap_or_else(|e| panic!("{e}: {log}"))
}

/// `rtcam probe --json` as a user runs it, watching for `seconds` with
/// the camera of `config`; returns once it decoded its first frame.
pub async fn watching_probe(
    config: &std::path::Path,
    client_id: &str,
    seconds: u32,
) -> process::RtcamProcess {
    let mut c = process::rtcam();
    c.arg("--config").arg(config).args([
        "probe",
        "--client-id",
        client_id,
        "--seconds",
        &seconds.to_string(),
        "--timeout",
        "10",
        "--json",
    ]);
    let probe = process::RtcamProcess::spawn(c, None);
    probe
        .log()
        .wait_line("the probe's first frame", WAIT, |l| {
            l.contains("first frame decoded")
        })
        .await;
    probe
}

/// Waits for a [`watching_probe`] to finish, asserts it succeeded, and
/// returns its JSON report and its whole output.
pub async fn probe_finished(probe: &mut process::RtcamProcess) -> (serde_json::Value, String) {
    probe
        .log()
        .wait_closed("the probe to finish", Duration::from_secs(60))
        .await;
    let status = probe.wait();
    let log = probe.log().text();
    assert!(status.success(), "{status}: {log}");
    (probe_report(&log), log)
}

/// One counter or gauge of the agent's `/metrics`, by its name and labels.
pub async fn metric(agent: &agent::AgentProcess, name: &str) -> Option<f64> {
    let (status, text) = http_get(agent.http_addr(), "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Writes `~/.asoundrc` under `home` (an agent started with `HOME` there
/// reads it): ALSA's `file` plugin over `null` stands in for a sound card,
/// `rtcam_mic` capturing from `mic_file` (raw S16LE mono 48 kHz) and
/// `rtcam_spk` playing into `spk_file`.
pub fn asoundrc(home: &std::path::Path, mic_file: &std::path::Path, spk_file: &std::path::Path) {
    let text = format!(
        "pcm.rtcam_mic {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n\
         pcm.rtcam_spk {{\n  type file\n  slave.pcm \"null\"\n  file \"{}\"\n  format \"raw\"\n}}\n",
        mic_file.display(),
        spk_file.display()
    );
    std::fs::write(home.join(".asoundrc"), text).expect("asoundrc written");
}
