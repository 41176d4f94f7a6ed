//! Shared helpers for the end-to-end tests: isolated settings, an agent on
//! free loopback ports, and headless viewers.
#![allow(dead_code)] // each test binary uses a different subset

use rtcam::agent::{Agent, AgentOptions};
use rtcam::config::Settings;
use rtcam::config::settings::{MdnsMode, MqttProtocol, MqttScheme, MqttUrl};
use rtcam::peer::PeerOptions;
use rtcam::probe::{Viewer, ViewerOptions};
use rtcam::signaling::mqtt::{MqttOptions, TlsFiles};
use rtcam::signaling::topics::ClientId;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

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

/// Points the agent at an external broker.
pub fn use_broker(s: &mut Settings, port: u16, protocol: MqttProtocol) {
    s.mqtt.url = Some(MqttUrl {
        scheme: MqttScheme::Mqtt,
        host: "127.0.0.1".into(),
        port,
        path: String::new(),
    });
    s.mqtt.protocol = protocol;
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
    MqttOptions {
        url,
        protocol,
        client_id: client_id.into(),
        username: None,
        password: None,
        tls: TlsFiles::default(),
        keep_alive: Duration::from_secs(30),
    }
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
        peer: PeerOptions::from_settings(&s.webrtc),
        timeout: WAIT,
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
