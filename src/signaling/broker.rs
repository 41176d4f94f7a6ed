//! The embedded MQTT broker (rumqttd, patched: `vendor/rumqttd`), so rtcam
//! works with zero setup: MQTT 3.1.1 and 5 over TCP and MQTT 3.1.1 over
//! WebSocket for browsers. rumqttd has no shutdown: its threads live until
//! the process exits.
//!
//! The broker enforces the signaling protocol's access rules itself
//! ([`crate::signaling::acl`]): every client is authenticated at CONNECT
//! (the agent with a secret made at start and held only in memory; viewers
//! anonymously with `auth.mode = "none"`, with a viewer token as MQTT
//! password with `auth.mode = "token"`), and every PUBLISH, SUBSCRIBE and
//! will is checked against what its client may do. Browsers' WebSocket
//! handshakes are checked against the allowed origins
//! ([`crate::signaling::origin`]), and the sockets the broker holds are
//! bounded, per address and in all, below the process's descriptor limit.

use crate::auth::{Authorizer, Role};
use crate::config::Settings;
use crate::config::settings::{AuthMode, MqttScheme, Secret};
use crate::signaling::acl::{Acl, Principal};
use crate::signaling::origin::OriginPolicy;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest MQTT packet the embedded broker accepts; well above the 64 KiB
/// signaling limit so oversized offers reach the agent and get `too_large`.
/// A larger one closes its sender's connection, and only that one.
pub const MAX_PACKET: usize = 256 * 1024;

/// The MQTT user name of the agent's own connection.
pub const AGENT_USER: &str = "rtcam-agent";

/// Most connections (MQTT sessions) at once, when the descriptor limit
/// allows ([`limits`]).
pub const MAX_CONNECTIONS: usize = 256;
/// Sockets one IP address may hold at once, handshaking or connected.
pub const MAX_PER_IP: usize = 32;
/// Of which in their handshake (WebSocket upgrade, CONNECT) at once.
pub const MAX_PENDING_PER_IP: usize = 16;
/// Time a socket has for its WebSocket handshake, and then again for its CONNECT.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Retained messages kept: only the agent's are stored (status, info, pin
/// states, discovery), a few per pin.
pub const RETAINED: rumqttd::RetainedLimits = rumqttd::RetainedLimits {
    max_count: 1024,
    max_bytes: 1024 * 1024,
    max_message_bytes: 128 * 1024,
};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listen address is taken or not local.
    #[error("embedded broker cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The config key.
        key: &'static str,
        /// OS error.
        source: std::io::Error,
    },
    /// The broker thread could not start.
    #[error("cannot start the embedded broker: {0}")]
    Start(String),
    /// The configuration would let anyone on the (external) broker do
    /// what only token holders may ([`external_broker_check`]).
    #[error("refusing to start: {0}")]
    Unsafe(String),
}

/// The running embedded broker, as the agent sees it.
pub struct Embedded {
    /// The agent's user name ([`AGENT_USER`]).
    pub username: String,
    /// The agent's password: random, made at start, never written anywhere.
    pub password: Secret,
    web_port: Arc<AtomicU16>,
}

impl Embedded {
    /// Tells the origin check the web viewer's port once it is bound
    /// (`http.listen` may name port 0). Until then no browser page is
    /// allowed but those listed in `broker.ws_origins`.
    pub fn web_viewer_bound(&self, port: u16) {
        self.web_port.store(port, Ordering::Relaxed);
    }
}

/// How many sockets and connections the broker may hold, from the
/// process's descriptor limit (`RLIMIT_NOFILE`, 1024 under the systemd
/// unit): at most half of it, so WebRTC, the camera and the web viewer keep
/// theirs. Returns (connections, sockets).
pub fn limits(nofile: u64) -> (usize, usize) {
    let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
    let sockets = half.clamp(8, MAX_CONNECTIONS + 64);
    let connections = sockets.saturating_sub(64).clamp(4, MAX_CONNECTIONS);
    (connections, sockets)
}

/// The process's soft descriptor limit.
fn nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        // rlim_t is u32 on 32-bit targets (armv7), u64 elsewhere.
        #[allow(clippy::useless_conversion)]
        u64::from(r.rlim_cur)
    } else {
        1024
    }
}

/// What one authenticated client may do on this broker.
#[derive(Debug)]
struct Rights {
    who: Principal,
    rules: Arc<Acl>,
}

impl rumqttd::ClientAcl for Rights {
    fn may_publish(&self, topic: &str) -> bool {
        let ok = self.rules.may_publish(&self.who, topic);
        if !ok {
            tracing::debug!(who = ?self.who, topic, "MQTT publish refused");
        }
        ok
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        let ok = self.rules.may_subscribe(&self.who, filter);
        if !ok {
            tracing::debug!(who = ?self.who, filter, "MQTT subscription refused");
        }
        ok
    }

    fn may_retain(&self) -> bool {
        self.rules.may_retain(&self.who)
    }

    fn privileged(&self) -> bool {
        self.who == Principal::Agent
    }
}

/// Who may connect, and as whom.
struct Gate {
    rules: Arc<Acl>,
    agent_id: String,
    agent_password: Secret,
    viewers: Authorizer,
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Gate {
    /// The decision for one CONNECT: the agent's credential goes with the
    /// agent's client id and nothing else; anyone else needs what
    /// `auth.mode` asks of viewers (nothing, or a token as password).
    fn decide(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
        now: u64,
    ) -> Result<Principal, rumqttd::Refusal> {
        let as_agent = username == Some(AGENT_USER);
        if as_agent || client_id == self.agent_id {
            let proven = password
                .is_some_and(|p| same(p.as_bytes(), self.agent_password.expose().as_bytes()));
            return match (as_agent && proven, client_id == self.agent_id) {
                (true, true) => Ok(Principal::Agent),
                (false, _) if as_agent => Err(rumqttd::Refusal::BadCredentials),
                _ => Err(rumqttd::Refusal::NotAuthorized),
            };
        }
        match self.viewers.authorize(password, now) {
            Ok(role) => Ok(Principal::Client {
                client_id: client_id.to_string(),
                control: role == Role::Control,
            }),
            Err(_) => Err(rumqttd::Refusal::BadCredentials),
        }
    }
}

fn random_secret() -> Result<Secret, BrokerError> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most `len` bytes into the buffer it is given.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(BrokerError::Start(format!(
                "no random bytes for the agent's secret: {e}"
            )));
        }
        filled += n as usize;
    }
    Ok(Secret::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

fn connection(gate: &Arc<Gate>) -> rumqttd::ConnectionSettings {
    let gate = gate.clone();
    rumqttd::ConnectionSettings {
        connection_timeout_ms: HANDSHAKE_TIMEOUT.as_millis() as u16,
        max_payload_size: MAX_PACKET,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
        authenticator: Some(rumqttd::Authenticator(Arc::new(
            move |info: &rumqttd::ConnectInfo<'_>| {
                let who = gate
                    .decide(info.client_id, info.username, info.password, now_unix())
                    .inspect_err(|why| {
                        tracing::info!(
                            client_id = info.client_id,
                            peer = %info.peer,
                            refusal = ?why,
                            "MQTT connection refused"
                        );
                    })?;
                let rights: rumqttd::Acl = Arc::new(Rights {
                    who,
                    rules: gate.rules.clone(),
                });
                Ok(rights)
            },
        ))),
    }
}

fn server(
    name: &str,
    listen: SocketAddr,
    gate: &Arc<Gate>,
    origins: Option<rumqttd::OriginCheck>,
) -> HashMap<String, rumqttd::ServerSettings> {
    HashMap::from([(
        "1".to_string(),
        rumqttd::ServerSettings {
            name: name.to_string(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: connection(gate),
            ws_origin_check: origins,
        },
    )])
}

/// The names this machine's own web page may be loaded by, besides the IP
/// address the WebSocket is opened to: `localhost`, the machine's name (and
/// `NAME.local`) and `http.hosts`, as the web viewer accepts them.
fn local_names(settings: &Settings) -> Vec<String> {
    let known = crate::web::KnownHosts::of_this_machine(&settings.http.hosts);
    let mut names = vec!["localhost".to_string()];
    names.extend(known.machine);
    names.extend(known.configured);
    names
}

/// Starts the broker on its own threads (after checking its addresses are
/// free) and returns the credential the agent connects with.
pub fn start(settings: &Settings) -> Result<Embedded, BrokerError> {
    let b = &settings.broker;
    // rumqttd only logs a failed bind; check first so the error reaches the user.
    for (addr, key) in [
        (b.listen, "broker.listen"),
        (b.v5_listen, "broker.v5_listen"),
        (b.ws_listen, "broker.ws_listen"),
    ] {
        TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, key, source })?;
    }
    let password = random_secret()?;
    let gate = Arc::new(Gate {
        rules: Arc::new(Acl::new(
            &settings.mqtt.topic_prefix,
            &settings.gpio.ha_prefix,
        )),
        agent_id: settings.mqtt.client_id.clone(),
        agent_password: password.clone(),
        viewers: settings.auth.authorizer(),
    });
    let web_port = Arc::new(AtomicU16::new(0));
    let policy_port = web_port.clone();
    let listed = b.ws_origins.clone();
    let names = local_names(settings);
    let origins = rumqttd::OriginCheck(Arc::new(move |r: &rumqttd::WsRequest<'_>| {
        let port = match policy_port.load(Ordering::Relaxed) {
            0 => None,
            p => Some(p),
        };
        OriginPolicy::new(&listed, port, &names).allows(r.origin, r.host)
    }));
    let (connections, sockets) = limits(nofile());
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: connections,
            max_outgoing_packet_count: 200,
            // Each subscription filter keeps its recent messages in `count`
            // segments of this size (the active one included; each may
            // overrun by one packet), so a flood costs at most ~0.5 MB per
            // filter. When the active segment fills, the oldest is dropped:
            // a subscriber behind by more than one segment (~35 offers or
            // ~400 ICE candidates) loses messages. With a single segment the
            // agent lost ICE candidates when 20 viewers connected at once.
            max_segment_size: MAX_PACKET / 2,
            max_segment_count: 2,
            retained: Some(RETAINED),
            ..Default::default()
        },
        v4: Some(server("mqtt-v4", b.listen, &gate, None)),
        v5: Some(server("mqtt-v5", b.v5_listen, &gate, None)),
        ws: Some(server("mqtt-ws", b.ws_listen, &gate, Some(origins))),
        socket_limits: Some(rumqttd::SocketLimits {
            max_sockets: sockets,
            max_per_ip: MAX_PER_IP,
            max_pending_per_ip: MAX_PENDING_PER_IP,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("rtcam-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    // The listeners bind on their own threads within milliseconds; clients retry with backoff meanwhile.
    tracing::info!(
        mqtt = %b.listen,
        mqtt5 = %b.v5_listen,
        websocket = %b.ws_listen,
        max_connections = connections,
        max_sockets = sockets,
        viewers = match settings.auth.mode {
            AuthMode::None => "anonymous",
            AuthMode::Token => "token as MQTT password",
        },
        "embedded broker listening"
    );
    Ok(Embedded {
        username: AGENT_USER.to_string(),
        password,
        web_port,
    })
}

/// What an external broker setup risks, checked at start: with
/// `auth.mode = "token"`, a broker rtcam reaches without credentials (no
/// `mqtt.username`, no client certificate) probably lets anyone publish
/// anywhere: spoof `P/status`, answer for the camera, or, with
/// `gpio.mqtt`, drive the outputs without any token. The first is a
/// warning (`Ok(Some)`), the last an error naming the keys.
pub fn external_broker_check(settings: &Settings) -> Result<Option<String>, String> {
    let Some(url) = &settings.mqtt.url else {
        return Ok(None);
    };
    let authenticated = settings.mqtt.username.is_some() || settings.mqtt.client_cert.is_some();
    if settings.auth.mode != AuthMode::Token || authenticated {
        return Ok(None);
    }
    let gpio_over_mqtt =
        settings.gpio.mqtt && (settings.gpio.demo || !settings.gpio.pins.is_empty());
    if gpio_over_mqtt {
        return Err(format!(
            "gpio.mqtt = true with auth.mode = \"token\" and an unauthenticated broker ({url}, no mqtt.username): \
             anyone who can publish on {}/gpio/+/set would drive the outputs without a token. \
             Set mqtt.username and mqtt.password (and an ACL on the broker that gives …/set to \
             control automations only, see docs/SECURITY.md), or gpio.mqtt = false",
            settings.mqtt.topic_prefix
        ));
    }
    let ws = matches!(url.scheme, MqttScheme::Ws | MqttScheme::Wss);
    Ok(Some(format!(
        "auth.mode = \"token\" with an external broker reached without credentials ({url}, no mqtt.username){}: \
         tokens guard the sessions, but anyone who can reach the broker may spoof {p}/status and answer \
         viewers in the camera's name. Set mqtt.username and mqtt.password, and an ACL on the broker \
         (docs/SECURITY.md, \"Locking the broker down\")",
        if ws { " over WebSocket" } else { "" },
        p = settings.mqtt.topic_prefix
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::StaticToken;

    fn gate(viewers: Authorizer) -> Gate {
        Gate {
            rules: Arc::new(Acl::new("rtcam/cam", "homeassistant")),
            agent_id: "rtcam-cam".into(),
            agent_password: Secret::new("s3cret-s3cret-s3cret"),
            viewers,
        }
    }

    #[test]
    fn the_agents_credential_goes_with_its_client_id_only() {
        let g = gate(Authorizer::open());
        let secret = Some("s3cret-s3cret-s3cret");
        assert_eq!(
            g.decide("rtcam-cam", Some(AGENT_USER), secret, 0),
            Ok(Principal::Agent)
        );
        // The agent's id without its credential: refused, not taken over.
        for (user, pass) in [(None, None), (Some("x"), Some("y")), (None, secret)] {
            assert_eq!(
                g.decide("rtcam-cam", user, pass, 0),
                Err(rumqttd::Refusal::NotAuthorized),
                "{user:?}"
            );
        }
        assert_eq!(
            g.decide("rtcam-cam", Some(AGENT_USER), Some("wrong"), 0),
            Err(rumqttd::Refusal::BadCredentials)
        );
        // Its credential under another id.
        assert_eq!(
            g.decide("viewer", Some(AGENT_USER), secret, 0),
            Err(rumqttd::Refusal::NotAuthorized)
        );
    }

    #[test]
    fn viewers_are_anonymous_controls_without_tokens_and_need_one_with() {
        let open = gate(Authorizer::open());
        assert_eq!(
            open.decide("v1", None, None, 0),
            Ok(Principal::Client {
                client_id: "v1".into(),
                control: true
            })
        );
        let tokens = gate(Authorizer::with_tokens(
            vec![
                StaticToken::new("view-token-0123456789", Role::View),
                StaticToken::new("control-token-0123456", Role::Control),
            ],
            None,
            "rtcam/cam",
            Duration::from_secs(3600),
        ));
        assert_eq!(
            tokens.decide("v1", None, None, 0),
            Err(rumqttd::Refusal::BadCredentials)
        );
        assert_eq!(
            tokens.decide("v1", Some("any"), Some("not-a-token"), 0),
            Err(rumqttd::Refusal::BadCredentials)
        );
        assert_eq!(
            tokens.decide("v1", None, Some("view-token-0123456789"), 0),
            Ok(Principal::Client {
                client_id: "v1".into(),
                control: false
            })
        );
        assert_eq!(
            tokens.decide(
                "ha",
                Some("homeassistant"),
                Some("control-token-0123456"),
                0
            ),
            Ok(Principal::Client {
                client_id: "ha".into(),
                control: true
            })
        );
    }

    #[test]
    fn limits_stay_below_the_descriptor_limit() {
        assert_eq!(limits(1024), (256, 320));
        assert_eq!(limits(524_288), (256, 320));
        let (c, s) = limits(256);
        assert!(s <= 128 && c < s, "{c} {s}");
        let (c, s) = limits(16);
        assert!(s <= 8 && c >= 4, "{c} {s}");
    }

    #[test]
    fn secrets_are_random_and_hidden() {
        let a = random_secret().expect("random bytes");
        let b = random_secret().expect("random bytes");
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert_eq!(format!("{a:?}"), "Secret(***)");
    }
}
