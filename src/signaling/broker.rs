//! The embedded MQTT broker (rumqttd), so rtcam works with zero setup:
//! MQTT 3.1.1 and 5 over TCP and MQTT 3.1.1 over WebSocket for browsers.
//! rumqttd has no shutdown: its threads live until the process exits.

use crate::config::settings::BrokerSettings;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

/// Largest MQTT packet the embedded broker accepts; well above the 64 KiB
/// signaling limit so oversized offers reach the agent and get `too_large`.
pub const MAX_PACKET: usize = 256 * 1024;

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
}

fn connection() -> rumqttd::ConnectionSettings {
    rumqttd::ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: MAX_PACKET,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    }
}

fn server(name: &str, listen: SocketAddr) -> HashMap<String, rumqttd::ServerSettings> {
    HashMap::from([(
        "1".to_string(),
        rumqttd::ServerSettings {
            name: name.to_string(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: connection(),
        },
    )])
}

/// Starts the broker on its own threads (after checking its addresses are free).
pub fn start(settings: &BrokerSettings) -> Result<(), BrokerError> {
    // rumqttd only logs a failed bind; check first so the error reaches the user.
    for (addr, key) in [
        (settings.listen, "broker.listen"),
        (settings.v5_listen, "broker.v5_listen"),
        (settings.ws_listen, "broker.ws_listen"),
    ] {
        TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, key, source })?;
    }
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 256,
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
            ..Default::default()
        },
        v4: Some(server("mqtt-v4", settings.listen)),
        v5: Some(server("mqtt-v5", settings.v5_listen)),
        ws: Some(server("mqtt-ws", settings.ws_listen)),
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
    tracing::info!(mqtt = %settings.listen, mqtt5 = %settings.v5_listen, websocket = %settings.ws_listen, "embedded broker listening");
    Ok(())
}
