//! The agent's MQTT connection: connects (MQTT 5 or 3.1.1, TCP, TLS or
//! WebSocket), reconnects with backoff until shutdown, resubscribes and
//! republishes `status` and `info` on every ConnAck, filters its own echoes,
//! and hands viewer messages to the session manager.

use super::echo::EchoFilter;
use super::topics::{ClientId, Kind, TopicError, Topics};
use crate::backoff::Backoff;
use crate::config::settings::{MqttProtocol, MqttScheme, MqttUrl, Secret};
use crate::throttle::{Throttle, Verdict};
use bytes::Bytes;
use rumqttc::{Transport, v5};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Largest incoming packet the client accepts; larger ones are the broker's
/// business. Above the 64 KiB signaling limit so oversized offers get `too_large`.
pub const MAX_INCOMING: usize = 1024 * 1024;
/// QoS 1 messages in flight at once.
const MAX_INFLIGHT: u16 = 100;
/// Publishes that may wait while the broker is away; beyond that they are dropped.
const REQUEST_QUEUE: usize = 256;

/// TLS material for `mqtts://` and `wss://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM).
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// The files named in `[mqtt]`.
    pub fn from_settings(m: &crate::config::settings::MqttSettings) -> Self {
        Self {
            ca_file: m.ca_file.clone(),
            client_cert: m.client_cert.clone(),
            client_key: m.client_key.clone(),
        }
    }

    /// Reads and parses the files as a connection would, without
    /// connecting (for `rtcam config --check`).
    pub fn check(&self) -> Result<(), MqttError> {
        tls_config(self).map(|_| ())
    }
}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct MqttOptions {
    /// Broker URL.
    pub url: MqttUrl,
    /// Protocol version.
    pub protocol: MqttProtocol,
    /// Client id.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// TLS files.
    pub tls: TlsFiles,
    /// Keep-alive interval.
    pub keep_alive: Duration,
}

/// Why a connection could not be set up (before any network traffic).
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// TLS files unreadable or invalid.
    #[error("MQTT TLS setup: {0}")]
    Tls(String),
}

/// A message from a viewer, with its topic already parsed.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// offer, ice or bye.
    pub kind: Kind,
    /// The viewer.
    pub client: ClientId,
    /// Raw payload.
    pub payload: Bytes,
}

/// What to publish as retained on every (re)connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// `P/info` JSON.
    pub info: String,
}

fn tls_config(files: &TlsFiles) -> Result<rumqttc::TlsConfiguration, MqttError> {
    use rumqttc::tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = RootCertStore::empty();
    // A private broker's CA replaces the system roots: no public CA can then
    // vouch for an impostor.
    if files.ca_file.is_none() {
        // Unreadable system certificates are skipped, not fatal.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    }
    if let Some(ca) = &files.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| MqttError::Tls(format!("mqtt.ca_file {}: {e}", ca.display())))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| MqttError::Tls(format!("mqtt.ca_file {}: {e}", ca.display())))?;
            roots
                .add(cert)
                .map_err(|e| MqttError::Tls(format!("mqtt.ca_file {}: {e}", ca.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(MqttError::Tls(format!(
                "mqtt.ca_file {}: no PEM certificate in it",
                ca.display()
            )));
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain_pem = std::fs::read(cert)
                .map_err(|e| MqttError::Tls(format!("mqtt.client_cert {}: {e}", cert.display())))?;
            let chain = rustls_pemfile::certs(&mut chain_pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| MqttError::Tls(format!("mqtt.client_cert {}: {e}", cert.display())))?;
            let key_pem = std::fs::read(key)
                .map_err(|e| MqttError::Tls(format!("mqtt.client_key {}: {e}", key.display())))?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .map_err(|e| MqttError::Tls(format!("mqtt.client_key {}: {e}", key.display())))?
                .ok_or_else(|| {
                    MqttError::Tls(format!(
                        "mqtt.client_key {}: no private key in it",
                        key.display()
                    ))
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| MqttError::Tls(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(MqttError::Tls(
                "mqtt.client_cert and mqtt.client_key must be set together".into(),
            ));
        }
    };
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

fn transport(url: &MqttUrl, tls: &TlsFiles) -> Result<(String, Transport), MqttError> {
    Ok(match url.scheme {
        MqttScheme::Mqtt => (url.host.clone(), Transport::Tcp),
        MqttScheme::Mqtts => (
            url.host.clone(),
            Transport::tls_with_config(tls_config(tls)?),
        ),
        // rumqttc takes the whole URL as the host for WebSockets.
        MqttScheme::Ws => (url.to_string(), Transport::Ws),
        MqttScheme::Wss => (
            url.to_string(),
            Transport::wss_with_config(tls_config(tls)?),
        ),
    })
}

/// A connected-or-reconnecting client of either protocol version.
#[derive(Clone)]
enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

enum Event {
    ConnAck,
    SubAck,
    /// The broker acknowledged one of our QoS 1 publishes.
    PubAck,
    Publish(String, Bytes),
    Other,
}

impl Client {
    fn try_publish(&self, topic: &str, retain: bool, payload: Bytes) -> bool {
        match self {
            Client::V4(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec())
                .is_ok(),
            Client::V5(c) => c
                .try_publish(topic, v5::mqttbytes::QoS::AtLeastOnce, retain, payload)
                .is_ok(),
        }
    }

    fn try_subscribe(&self, filters: &[String]) -> bool {
        match self {
            Client::V4(c) => c
                .try_subscribe_many(
                    filters.iter().map(|f| {
                        rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce)
                    }),
                )
                .is_ok(),
            Client::V5(c) => c
                .try_subscribe_many_with_properties(
                    filters.iter().map(|f| {
                        let mut filter = v5::mqttbytes::v5::Filter::new(
                            f.clone(),
                            v5::mqttbytes::QoS::AtLeastOnce,
                        );
                        // The broker should not echo our own ICE; the echo filter covers brokers that do.
                        filter.nolocal = true;
                        filter
                    }),
                    v5::mqttbytes::v5::SubscribeProperties {
                        id: None,
                        user_properties: Vec::new(),
                    },
                )
                .is_ok(),
        }
    }

    fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|_| ()),
            Client::V5(c) => c.try_disconnect().map_err(|_| ()),
        };
    }
}

impl EventLoop {
    async fn poll(&mut self) -> Result<Event, String> {
        match self {
            EventLoop::V4(l) => match l.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => Ok(Event::ConnAck),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => Ok(Event::SubAck),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => Ok(Event::PubAck),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    Ok(Event::Publish(p.topic, p.payload))
                }
                Ok(_) => Ok(Event::Other),
                Err(e) => Err(e.to_string()),
            },
            EventLoop::V5(l) => match l.poll().await {
                Ok(v5::Event::Incoming(v5::Incoming::ConnAck(_))) => Ok(Event::ConnAck),
                Ok(v5::Event::Incoming(v5::Incoming::SubAck(_))) => Ok(Event::SubAck),
                Ok(v5::Event::Incoming(v5::Incoming::PubAck(_))) => Ok(Event::PubAck),
                Ok(v5::Event::Incoming(v5::Incoming::Publish(p))) => Ok(Event::Publish(
                    String::from_utf8_lossy(&p.topic).into_owned(),
                    p.payload,
                )),
                Ok(_) => Ok(Event::Other),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

fn connect(
    opts: &MqttOptions,
    will_topic: Option<String>,
) -> Result<(Client, EventLoop), MqttError> {
    let (host, transport) = transport(&opts.url, &opts.tls)?;
    Ok(match opts.protocol {
        MqttProtocol::V5 => {
            let mut o = v5::MqttOptions::new(opts.client_id.clone(), host, opts.url.port);
            o.set_transport(transport)
                .set_keep_alive(opts.keep_alive.max(Duration::from_secs(5)))
                .set_connection_timeout(5)
                .set_max_packet_size(Some(MAX_INCOMING as u32))
                // rumqttc preallocates one slot per possible in-flight message:
                // its default (65535) costs 14 MB of RAM; 3.1.1 uses 100 too.
                .set_outgoing_inflight_upper_limit(MAX_INFLIGHT);
            if let Some(t) = will_topic {
                o.set_last_will(v5::mqttbytes::v5::LastWill::new(
                    t,
                    "offline",
                    v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ));
            }
            if let Some(user) = &opts.username {
                o.set_credentials(
                    user.clone(),
                    opts.password.as_ref().map_or("", Secret::expose),
                );
            }
            o.set_network_options(network_options());
            let (c, l) = v5::AsyncClient::new(o, REQUEST_QUEUE);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(opts.client_id.clone(), host, opts.url.port);
            o.set_transport(transport)
                .set_keep_alive(opts.keep_alive.max(Duration::from_secs(5)))
                .set_max_packet_size(MAX_INCOMING, MAX_INCOMING);
            if let Some(t) = will_topic {
                o.set_last_will(rumqttc::LastWill::new(
                    t,
                    "offline",
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ));
            }
            if let Some(user) = &opts.username {
                o.set_credentials(
                    user.clone(),
                    opts.password.as_ref().map_or("", Secret::expose),
                );
            }
            let (c, mut l) = rumqttc::AsyncClient::new(o, REQUEST_QUEUE);
            l.set_network_options(network_options());
            (Client::V4(c), EventLoop::V4(Box::new(l)))
        }
    })
}

/// Signaling is many small request/reply messages: without TCP_NODELAY,
/// Nagle's algorithm and delayed ACKs add ~40 ms to each exchange.
fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

/// Publishes signaling messages; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    echo: Arc<Mutex<EchoFilter>>,
    topics: Topics,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    flow: Arc<Flow>,
}

/// QoS 1 publishes queued and acknowledged, to see a backlog building.
#[derive(Debug, Default)]
struct Flow {
    queued: std::sync::atomic::AtomicU64,
    acked: std::sync::atomic::AtomicU64,
}

impl Publisher {
    /// The topic scheme in use.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Queues a QoS 1 publish. Never waits: while the broker is away the
    /// queue fills and further messages are dropped (and counted).
    pub fn publish(&self, topic: &str, payload: impl Into<Bytes>) {
        let payload = payload.into();
        self.echo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sent(topic, &payload, Instant::now());
        if self.client.try_publish(topic, false, payload) {
            self.flow
                .queued
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                topic,
                "MQTT publish dropped: broker unreachable or queue full"
            );
        }
    }

    /// Publishes queued but not yet acknowledged by the broker: a growing
    /// backlog means the link is busy (a flood to answer, a slow broker).
    pub fn backlog(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let acked = self.flow.acked.load(Ordering::Relaxed);
        self.flow
            .queued
            .load(Ordering::Relaxed)
            .saturating_sub(acked)
    }

    /// Queues a retained QoS 1 publish (state that late subscribers need).
    pub fn publish_retained(&self, topic: &str, payload: impl Into<Bytes>) {
        if self.client.try_publish(topic, true, payload.into()) {
            self.flow
                .queued
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Publishes to `P/{kind}/{client}` helpers.
    pub fn to_client(&self, kind: ToClient, client: &ClientId, payload: impl Into<Bytes>) {
        let topic = match kind {
            ToClient::Answer => self.topics.answer(client),
            ToClient::Ice => self.topics.ice(client),
            ToClient::Error => self.topics.error(client),
            ToClient::Bye => self.topics.bye(client),
        };
        self.publish(&topic, payload);
    }

    /// Publishes dropped because the broker was away.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Agent → viewer topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToClient {
    /// `P/answer/{id}`
    Answer,
    /// `P/ice/{id}`
    Ice,
    /// `P/error/{id}`
    Error,
    /// `P/bye/{id}`
    Bye,
}

/// Returns once the broker connection is up again after a change (`None`
/// once the connection task has ended). Retained state may be gone after a
/// broker restart: whoever keeps some republishes it then. Cancel-safe.
pub async fn connected_again(connected: &mut watch::Receiver<bool>) -> Option<()> {
    loop {
        connected.changed().await.ok()?;
        if *connected.borrow_and_update() {
            return Some(());
        }
    }
}

/// Where incoming messages go.
pub struct Routes {
    /// Viewer signaling (offer, ice, bye).
    pub inbound: mpsc::Sender<Inbound>,
    /// More subscriptions (e.g. `P/gpio/+/set`); their messages go to `extra`.
    pub extra_filters: Vec<String>,
    /// Receiver of messages on `extra_filters`.
    pub extra: Option<mpsc::Sender<(String, Bytes)>>,
    /// Beaten by the connection loop at least every second (watchdog).
    pub heartbeat: Arc<crate::systemd::Heartbeat>,
}

/// The running connection: its publisher and connection state.
pub struct Connection {
    /// Publishes messages.
    pub publisher: Publisher,
    /// True while connected to the broker.
    pub connected: watch::Receiver<bool>,
    /// The agent's own messages the broker echoed back and the filter
    /// dropped (MQTT 3.1.1 has no "no local" subscriptions).
    pub echoes_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Viewer messages handed to the session manager or dropped.
    pub inbound: Arc<InboundCounts>,
    /// The task driving the connection; ends after shutdown.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the connection task. Viewer messages go to `inbound` (dropped when
/// it is full, so a flood cannot stall the connection). On `shutdown` it
/// publishes `offline`, disconnects and ends.
pub fn start(
    opts: &MqttOptions,
    topics: Topics,
    retained: watch::Receiver<Retained>,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<Connection, MqttError> {
    let (client, event_loop) = connect(opts, Some(topics.status()))?;
    let echo = Arc::new(Mutex::new(EchoFilter::new(1024, Duration::from_secs(60))));
    let flow = Arc::new(Flow::default());
    let publisher = Publisher {
        client: client.clone(),
        echo: echo.clone(),
        topics: topics.clone(),
        dropped: Arc::default(),
        flow: flow.clone(),
    };
    let (connected_tx, connected) = watch::channel(false);
    let echoes_dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let inbound = Arc::new(InboundCounts::default());
    let url = opts.url.to_string();
    let task = tokio::spawn(drive(
        client,
        event_loop,
        topics,
        retained,
        routes,
        shutdown,
        Echoes {
            filter: echo,
            dropped: echoes_dropped.clone(),
            inbound: inbound.clone(),
            backlog_log: Throttle::new(1, Duration::from_secs(10)),
        },
        flow,
        connected_tx,
        url,
    ));
    Ok(Connection {
        publisher,
        connected,
        echoes_dropped,
        inbound,
        task,
    })
}

/// The echo filter and the count of echoes it dropped; the inbound
/// backlog's drops, and their log throttle.
struct Echoes {
    filter: Arc<Mutex<EchoFilter>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    inbound: Arc<InboundCounts>,
    backlog_log: Throttle,
}

/// Viewer messages handed to the session manager, and dropped because it
/// was behind (a flood).
#[derive(Debug, Default)]
pub struct InboundCounts {
    /// Handed over.
    pub received: std::sync::atomic::AtomicU64,
    /// Dropped: the manager's queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
}

#[allow(clippy::too_many_arguments)] // one task's whole state, passed once
async fn drive(
    client: Client,
    mut event_loop: EventLoop,
    topics: Topics,
    mut retained: watch::Receiver<Retained>,
    routes: Routes,
    shutdown: CancellationToken,
    mut echoes: Echoes,
    flow: Arc<Flow>,
    connected: watch::Sender<bool>,
    url: String,
) {
    let mut backoff = Backoff::standard();
    let mut last_error: Option<String> = None;
    let publish_retained = |info: &str| {
        client.try_publish(&topics.status(), true, Bytes::from_static(b"online"));
        client.try_publish(
            &topics.info(),
            true,
            Bytes::copy_from_slice(info.as_bytes()),
        );
    };
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    'run: loop {
        // Each poll runs to completion, with the heartbeat and `info` updates
        // served beside it. Racing a fresh poll against them instead would
        // cancel it: rumqttc's poll is not cancel-safe (a cancelled connect
        // is abandoned, so a broker slower than the 1 s tick to answer CONNECT
        // was never joined and was re-dialled every second without backoff; a
        // cancelled send can lose a request such as SUBSCRIBE).
        let event = {
            let poll = event_loop.poll();
            tokio::pin!(poll);
            loop {
                routes.heartbeat.beat();
                tokio::select! {
                    _ = shutdown.cancelled() => break 'run,
                    _ = alive.tick() => {}
                    changed = retained.changed() => {
                        if changed.is_err() {
                            break 'run;
                        }
                        if *connected.borrow() {
                            publish_retained(&retained.borrow_and_update().info);
                        }
                    }
                    event = &mut poll => break event,
                }
            }
        };
        match event {
            Ok(Event::ConnAck) => {
                backoff.reset();
                last_error = None;
                tracing::info!(broker = %url, "connected to MQTT broker");
                // Sessions may not survive a reconnect: subscribe and publish again every time.
                let mut filters = topics.inbound_filters().to_vec();
                filters.extend(routes.extra_filters.iter().cloned());
                if !client.try_subscribe(&filters) {
                    tracing::warn!("cannot queue MQTT subscriptions");
                }
                publish_retained(&retained.borrow_and_update().info);
            }
            // Connected means subscribed: an offer published before the
            // broker has our subscription is lost (seen under emulation,
            // where a viewer started right after a reconnect was never
            // answered).
            Ok(Event::SubAck) => {
                let _ = connected.send(true);
            }
            Ok(Event::Publish(topic, payload)) => {
                let is_echo = echoes
                    .filter
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_echo(&topic, &payload, Instant::now());
                if is_echo {
                    echoes
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                match topics.parse(&topic) {
                    Ok((kind, client)) => {
                        match routes.inbound.try_send(Inbound {
                            kind,
                            client,
                            payload,
                        }) {
                            Ok(()) => {
                                echoes
                                    .inbound
                                    .received
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                echoes
                                    .inbound
                                    .dropped
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if let Verdict::Pass { suppressed } =
                                    echoes.backlog_log.check(Instant::now())
                                {
                                    tracing::warn!(
                                        topic,
                                        more_since_last = suppressed,
                                        "signaling backlog full (a flood?); messages dropped"
                                    );
                                }
                            }
                            // The session manager stopped first (shutdown): nobody to tell.
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                tracing::debug!(topic, "message after the sessions stopped");
                            }
                        }
                    }
                    Err(TopicError::BadClientId(e)) => {
                        tracing::debug!(topic, error = %e, "ignored message")
                    }
                    Err(TopicError::NotOurs) => {
                        if let Some(extra) = &routes.extra
                            && extra.try_send((topic, payload)).is_err()
                            && let Verdict::Pass { suppressed } =
                                echoes.backlog_log.check(Instant::now())
                        {
                            tracing::warn!(
                                more_since_last = suppressed,
                                "MQTT backlog full (a flood?); messages dropped"
                            );
                        }
                    }
                }
            }
            Ok(Event::PubAck) => {
                flow.acked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(Event::Other) => {}
            Err(e) => {
                let _ = connected.send(false);
                // What was in flight is resent or lost: start counting afresh.
                flow.acked.store(
                    flow.queued.load(std::sync::atomic::Ordering::Relaxed),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let delay = backoff.next_delay();
                // Log a new failure once, not every retry.
                if last_error.as_deref() != Some(e.as_str()) {
                    let hint = connect_hint(&e).unwrap_or("");
                    tracing::warn!(broker = %url, error = %e, hint, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed; retrying");
                    last_error = Some(e);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    // Orderly goodbye: retained offline, then DISCONNECT (which cancels the will).
    if *connected.borrow() {
        client.try_publish(&topics.status(), true, Bytes::from_static(b"offline"));
        client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while event_loop.poll().await.is_ok() {}
        })
        .await;
    }
    let _ = connected.send(false);
}

/// What to change for a connection error, when the error's text shows it:
/// rumqttc's errors name the protocol's reason, not the setting behind it.
pub fn connect_hint(error: &str) -> Option<&'static str> {
    const HINTS: [(&[&str], &str); 5] = [
        (
            &["UnknownIssuer", "invalid peer certificate"],
            "the broker's certificate is not trusted: set mqtt.ca_file to the CA that signed it, \
             and check the host name in mqtt.url matches the certificate",
        ),
        (
            &["CertificateRequired"],
            "the broker requires a client certificate: set mqtt.client_cert and mqtt.client_key",
        ),
        (
            &[
                "NotAuthorized",
                "BadUserNamePassword",
                "BadUsernamePassword",
            ],
            "the broker refused the credentials: check mqtt.username and the password \
             (RTCAM_MQTT_PASSWORD or mqtt.password_file), and the broker's ACL",
        ),
        (
            &["Connection refused"],
            "nothing accepts connections at mqtt.url: is the broker running and listening there?",
        ),
        (
            &["payload size limit exceeded"],
            "the broker passed on a message larger than rtcam takes (1 MiB), which drops the \
             connection with MQTT 3.1.1: set the broker's max_packet_size (Mosquitto: \
             max_packet_size 262144, see docs/SECURITY.md), or use mqtt.protocol = \"5\"",
        ),
    ];
    HINTS
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| error.contains(n)))
        .map(|(_, hint)| *hint)
}

/// A plain MQTT connection for tools (the probe viewer): subscribe on every
/// ConnAck, publish without waiting, receive messages.
pub struct Link {
    client: Client,
    events: EventLoop,
    filters: Vec<String>,
    acks: Arc<Acks>,
}

/// What a [`Link`] yields.
#[derive(Debug)]
pub enum LinkEvent {
    /// (Re)connected and subscribed.
    Connected,
    /// A message.
    Message(String, Bytes),
}

/// Publishes queued and acknowledged on one link. A broker acknowledges
/// QoS 1 publishes in the order it received them, so the n-th publish is
/// delivered once n acknowledgements came back.
#[derive(Debug, Default)]
struct Acks {
    published: std::sync::atomic::AtomicU64,
    acked: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

/// Publishes on a [`Link`]; cheap to clone.
#[derive(Clone)]
pub struct LinkPublisher {
    client: Client,
    acks: Arc<Acks>,
}

impl LinkPublisher {
    /// Queues a QoS 1 publish; false if the queue is full.
    pub fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> bool {
        self.publish_counted(topic, payload).is_some()
    }

    /// Queues a QoS 1 publish and returns its place in the link's order,
    /// for [`Self::wait_acked`]; `None` if the queue is full.
    pub fn publish_counted(&self, topic: &str, payload: impl Into<Bytes>) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let queued = self.client.try_publish(topic, false, payload.into());
        queued.then(|| self.acks.published.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Waits until the broker has acknowledged the publish numbered `n`
    /// (while the link is being polled); false after `timeout`.
    pub async fn wait_acked(&self, n: u64, timeout: Duration) -> bool {
        use std::sync::atomic::Ordering;
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.acks.notify.notified();
                if self.acks.acked.load(Ordering::Acquire) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// Asks for an orderly disconnect.
    pub fn disconnect(&self) {
        self.client.try_disconnect();
    }
}

impl Link {
    /// A connection that subscribes to `filters` whenever it (re)connects.
    pub fn new(opts: &MqttOptions, filters: Vec<String>) -> Result<Self, MqttError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (client, events) = connect(opts, None)?;
        Ok(Self {
            client,
            events,
            filters,
            acks: Arc::default(),
        })
    }

    /// A publisher for this connection.
    pub fn publisher(&self) -> LinkPublisher {
        LinkPublisher {
            client: self.client.clone(),
            acks: self.acks.clone(),
        }
    }

    /// The next event; errors are returned after a short pause (the caller keeps polling to reconnect).
    pub async fn next(&mut self) -> Result<LinkEvent, String> {
        loop {
            match self.events.poll().await {
                Ok(Event::ConnAck) => {
                    if self.filters.is_empty() {
                        return Ok(LinkEvent::Connected);
                    }
                    self.client.try_subscribe(&self.filters);
                }
                // Subscribed: replies to what is published from now on arrive.
                Ok(Event::SubAck) => return Ok(LinkEvent::Connected),
                Ok(Event::Publish(t, p)) => return Ok(LinkEvent::Message(t, p)),
                Ok(Event::PubAck) => {
                    self.acks
                        .acked
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    self.acks.notify.notify_waiters();
                }
                Ok(Event::Other) => {}
                Err(e) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::connect_hint;

    #[test]
    fn connection_errors_name_the_setting_to_change() {
        let cases = [
            (
                "Tls: invalid peer certificate: UnknownIssuer",
                "mqtt.ca_file",
            ),
            (
                "Mqtt serialization/deserialization error: TLS alert CertificateRequired",
                "mqtt.client_cert",
            ),
            ("Connection refused: NotAuthorized", "mqtt.username"),
            (
                "Connection refused: BadUserNamePassword",
                "mqtt.password_file",
            ),
            (
                "I/O: Connection refused (os error 111)",
                "is the broker running",
            ),
            (
                "Mqtt state: Mqtt serialization/deserialization error: payload size limit exceeded: 1100019",
                "max_packet_size",
            ),
        ];
        for (error, setting) in cases {
            let hint = connect_hint(error).unwrap_or_else(|| panic!("a hint for {error}"));
            assert!(hint.contains(setting), "{error} -> {hint}");
        }
        assert_eq!(connect_hint("Network timeout"), None);
    }
}
