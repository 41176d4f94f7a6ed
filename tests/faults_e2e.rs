//! Faults the agent must survive: a broker that is down, silent or slow, a
//! camera unplugged mid-stream, a panicking session, viewers that vanish
//! or never connect, and a DataChannel that closes mid-command. After each,
//! sessions, hub subscriptions and tasks return to idle and the agent shuts
//! down cleanly. Runs inside a private network namespace (see `.ci/test`).

mod common;

use bytes::Bytes;
use common::mosquitto::Mosquitto;
use common::process::rtcam;
use common::{
    Raw, WAIT, assert_private_netns, free_port, gpio_settings, mqtt_for, settings, start,
    start_with, use_broker, viewer, viewer_options, watch_from_now,
};
use rtcam::agent::{Agent, AgentOptions, AgentStats};
use rtcam::capture::test_pattern::TestPattern;
use rtcam::capture::{Source, SourceError, SourceFactory, SourceInfo};
use rtcam::config::Settings;
use rtcam::config::settings::MqttProtocol;
use rtcam::frame::RawFrame;
use rtcam::gpio::PinValue;
use rtcam::peer::{Peer, PeerOptions, PeerState};
use rtcam::probe::{Signal, Viewer};
use rtcam::session::Faults;
use rtcam::signaling::mqtt::{Link, LinkEvent};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Waits for a condition that has no event to wait on (task counts).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sessions, hub subscriptions and the agent's tasks are back to idle.
async fn assert_idle(agent: &Agent, base: &AgentStats) {
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 0 && c.tasks == 0)
            .await,
        "sessions end: {:?}",
        agent.stats()
    );
    eventually("hub subscriptions and agent tasks back to idle", || {
        let st = agent.stats();
        st.subscribers == 0 && st.holds == 0 && st.tasks == base.tasks
    })
    .await;
}

/// Shutdown must finish by itself (it has its own deadline; this is a bound).
async fn shut_down(agent: Agent) {
    tokio::time::timeout(WAIT, agent.shutdown())
        .await
        .expect("the agent shuts down");
}

/// GET on the agent's web viewer: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, axum::body::Body> = Client::builder(TokioExecutor::new()).build_http();
    let uri: axum::http::Uri = format!("http://{addr}{path}").parse().expect("a URI");
    let resp = tokio::time::timeout(WAIT, client.get(uri))
        .await
        .expect("an HTTP answer in time")
        .expect("an HTTP response");
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 20)
        .await
        .expect("the body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The web viewer answers while the broker is away, and says so in `/stats.json`.
async fn web_viewer_serves_without_a_broker(agent: &Agent, s: &Settings) {
    let addr = agent.http_addr().expect("the web viewer listens");
    let (status, page) = http_get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the viewer page: {page:.200}");
    let (status, config) = http_get(addr, "/config.json").await;
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&config).expect("config.json is JSON");
    assert_eq!(config["topic_prefix"], s.mqtt.topic_prefix);
    let (status, stats) = http_get(addr, "/stats.json").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&stats).expect("stats.json is JSON");
    assert_eq!(stats["mqtt_connected"], false, "{stats}");
    assert!(!agent.stats().mqtt_connected);
}

/// Starts an agent without waiting for its broker.
async fn start_unconnected(s: &Settings) -> Agent {
    assert_private_netns();
    Agent::start(s.clone(), AgentOptions::default())
        .await
        .expect("the agent starts without its broker")
}

/// Waits for the agent's retained `P/status` `online`, as the web page does
/// before it offers. The agent subscribes before it publishes `online`, so
/// offers sent after it are heard; `wait_mqtt` (CONNACK) comes before the
/// subscription is in place.
async fn online(s: &Settings) {
    let (mut rx, task) =
        subscribe(s, "status-watch", format!("{}/status", s.mqtt.topic_prefix)).await;
    loop {
        let (_, payload) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the agent says it is online")
            .expect("subscribed");
        if &payload[..] == b"online" {
            break;
        }
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_is_joined_when_it_comes_up() {
    let port = free_port();
    let mut s = settings("faults-late-broker");
    use_broker(&mut s, port, MqttProtocol::V5);
    let agent = start_unconnected(&s).await;
    let base = agent.stats();
    web_viewer_serves_without_a_broker(&agent, &s).await;

    let broker = Mosquitto::start(port);
    assert!(
        agent.wait_mqtt(true, WAIT).await,
        "the agent connects once the broker is up"
    );
    online(&s).await;
    let mut v = viewer(&s, "late-broker", true).await;
    let (n, first_key, seqs) = watch_from_now(&mut v, Duration::from_millis(500)).await;
    assert!(first_key && n > 1, "the viewer decodes ({n} frames)");
    assert!(seqs.windows(2).all(|w| w[1] > w[0]));
    v.bye().await;
    assert_idle(&agent, &base).await;
    shut_down(agent).await;
    broker.kill();
}

/// What a fake broker saw of one connection.
#[derive(Debug, PartialEq, Eq)]
enum Conn {
    Accepted(usize),
    /// The first byte received (0x10: an MQTT CONNECT).
    FirstByte(usize, u8),
    Closed(usize),
}

/// A "broker" that accepts TCP connections, reads what comes and never answers.
async fn silent_broker() -> (
    u16,
    mpsc::UnboundedReceiver<Conn>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("bound").port();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        // Connections are held (and aborted with this task).
        let mut conns = tokio::task::JoinSet::new();
        let mut i = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = tx.send(Conn::Accepted(i));
            let tx = tx.clone();
            conns.spawn(async move {
                let mut buf = [0u8; 1024];
                let mut first = true;
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if first {
                        first = false;
                        let _ = tx.send(Conn::FirstByte(i, buf[0]));
                    }
                }
                let _ = tx.send(Conn::Closed(i));
            });
            i += 1;
        }
    });
    (port, rx, task)
}

/// What the fake broker has seen so far.
#[derive(Debug, Default)]
struct Conns {
    accepted: usize,
    /// Connections whose first bytes were an MQTT CONNECT.
    connects: usize,
    closed: std::collections::BTreeSet<usize>,
}

impl Conns {
    /// Takes events until `done` holds.
    async fn until(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Conn>,
        what: &str,
        done: impl Fn(&Conns) -> bool,
    ) {
        while !done(self) {
            let ev = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}: {self:?}"))
                .expect("the fake broker runs");
            match ev {
                Conn::Accepted(_) => self.accepted += 1,
                Conn::FirstByte(_, b) => self.connects += usize::from(b == 0x10),
                Conn::Closed(i) => {
                    self.closed.insert(i);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_connect_is_retried_and_shutdown_still_works() {
    let (port, mut rx, broker) = silent_broker().await;
    let mut s = settings("faults-silent-broker");
    use_broker(&mut s, port, MqttProtocol::V5);
    let agent = start_unconnected(&s).await;
    let base = agent.stats();
    web_viewer_serves_without_a_broker(&agent, &s).await;

    // The agent sends CONNECT, gets no CONNACK, gives the connection up
    // (rather than hanging on it forever) and tries again.
    let mut seen = Conns::default();
    seen.until(&mut rx, "a CONNECT", |c| c.connects >= 1).await;
    seen.until(&mut rx, "the unanswered attempt to be abandoned", |c| {
        c.closed.contains(&0)
    })
    .await;
    seen.until(&mut rx, "a second CONNECT", |c| c.connects >= 2)
        .await;
    assert!(!agent.stats().mqtt_connected, "never connected");
    assert_idle(&agent, &base).await;
    // Shut down in the middle of an attempt: it must not wait for the broker,
    // and leaves no connection open.
    shut_down(agent).await;
    seen.until(&mut rx, "every connection to be closed", |c| {
        c.closed.len() == c.accepted
    })
    .await;
    broker.abort();
}

/// A TCP proxy to `upstream` that holds every new connection for `delay`
/// before forwarding it: a broker slow to answer CONNECT (slow link, busy broker).
async fn slow_proxy(upstream: u16, delay: Duration) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("bound").port();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut down, _)) = listener.accept().await {
            conns.spawn(async move {
                // The fault being simulated, not a synchronisation.
                tokio::time::sleep(delay).await;
                if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_slow_to_answer_connect_is_still_joined() {
    let broker_port = free_port();
    let broker = Mosquitto::start(broker_port);
    // CONNACK comes 2 s after connecting: longer than the agent's 1 s
    // heartbeat tick, shorter than its 5 s connection timeout.
    let (port, proxy) = slow_proxy(broker_port, Duration::from_secs(2)).await;
    let mut s = settings("faults-slow-broker");
    use_broker(&mut s, port, MqttProtocol::V5);
    let agent = start_unconnected(&s).await;
    let base = agent.stats();
    assert!(
        agent.wait_mqtt(true, WAIT).await,
        "the agent waits for a slow CONNACK instead of abandoning every attempt"
    );
    // Viewers talk to the broker directly: only the agent's link is slow.
    let mut direct = s.clone();
    use_broker(&mut direct, broker_port, MqttProtocol::V5);
    online(&direct).await;
    let mut v = viewer(&direct, "slow-broker", true).await;
    let (n, first_key, _) = watch_from_now(&mut v, Duration::from_millis(500)).await;
    assert!(first_key && n > 1, "the viewer decodes ({n} frames)");
    v.bye().await;
    assert_idle(&agent, &base).await;
    shut_down(agent).await;
    proxy.abort();
    broker.kill();
}

/// What the pluggable camera reports to the test.
#[derive(Debug, PartialEq, Eq)]
enum Plug {
    Opened,
    OpenRefused,
    ReadFailed,
}

/// A test-pattern camera that can be unplugged: while unplugged, reading
/// and opening fail like a USB camera that went away. The pattern (and so
/// its sequence numbers) survives a reopen, as a real scene would.
struct Camera {
    unplugged: AtomicBool,
    pattern: Mutex<Option<TestPattern>>,
    events: mpsc::UnboundedSender<Plug>,
}

struct CameraFactory(Arc<Camera>);

struct CameraSource {
    camera: Arc<Camera>,
    pattern: Option<TestPattern>,
}

impl SourceFactory for CameraFactory {
    fn open(&self) -> Result<Box<dyn Source>, SourceError> {
        let camera = &self.0;
        if camera.unplugged.load(Ordering::SeqCst) {
            let _ = camera.events.send(Plug::OpenRefused);
            return Err(SourceError::Device {
                path: "/dev/video-test".into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such device"),
            });
        }
        let pattern = camera
            .pattern
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| TestPattern::new(640, 480, 30));
        let _ = camera.events.send(Plug::Opened);
        Ok(Box::new(CameraSource {
            camera: camera.clone(),
            pattern: Some(pattern),
        }))
    }
}

impl Source for CameraSource {
    fn info(&self) -> SourceInfo {
        self.pattern.as_ref().expect("kept until dropped").info()
    }

    fn next_frame(&mut self) -> Result<RawFrame<'_>, SourceError> {
        if self.camera.unplugged.load(Ordering::SeqCst) {
            let _ = self.camera.events.send(Plug::ReadFailed);
            return Err(SourceError::Read("device unplugged".into()));
        }
        self.pattern
            .as_mut()
            .expect("kept until dropped")
            .next_frame()
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        *self
            .camera
            .pattern
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.pattern.take();
    }
}

async fn next_plug(rx: &mut mpsc::UnboundedReceiver<Plug>) -> Plug {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the media thread acts in time")
        .expect("the camera lives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_unplugged_mid_stream_resumes_for_the_same_viewer() {
    let s = settings("faults-unplug");
    let (tx, mut plug) = mpsc::unbounded_channel();
    let camera = Arc::new(Camera {
        unplugged: AtomicBool::new(false),
        pattern: Mutex::new(None),
        events: tx,
    });
    let agent = start_with(
        s.clone(),
        AgentOptions {
            source: Some(Arc::new(CameraFactory(camera.clone()))),
            ..AgentOptions::default()
        },
    )
    .await;
    online(&s).await;
    let base = agent.stats();
    let mut v = viewer(&s, "unplug", true).await;
    assert_eq!(next_plug(&mut plug).await, Plug::Opened);
    let (_, first_key, seqs) = watch_from_now(&mut v, Duration::from_millis(500)).await;
    assert!(first_key);
    let before = *seqs.last().expect("frames carry sequence numbers");
    assert!(agent.stats().camera.starts_with("running"));

    // Unplugged: reading fails, and reopening keeps failing (with backoff).
    camera.unplugged.store(true, Ordering::SeqCst);
    assert_eq!(next_plug(&mut plug).await, Plug::ReadFailed);
    assert_eq!(
        next_plug(&mut plug).await,
        Plug::OpenRefused,
        "the agent retries"
    );
    let st = agent.stats();
    assert!(
        st.camera.starts_with("failed"),
        "the camera state shows the failure: {}",
        st.camera
    );
    assert_eq!(
        (st.sessions, st.connected, st.subscribers),
        (1, 1, 1),
        "the session and its subscription stay"
    );
    assert_eq!(v.state(), Some(PeerState::Connected));
    v.drain_frames();

    // Plugged back in: the same viewer decodes again, without reconnecting.
    camera.unplugged.store(false, Ordering::SeqCst);
    loop {
        match next_plug(&mut plug).await {
            Plug::Opened => break,
            Plug::OpenRefused => {}
            Plug::ReadFailed => panic!("no read while unplugged"),
        }
    }
    let first = v.next_frame(WAIT).await.expect("frames again");
    assert!(first.keyframe, "the reopened camera starts with a keyframe");
    let mut last = first.seq.expect("a sequence number");
    assert!(
        last > before,
        "the stream continues ({last} after {before})"
    );
    for _ in 0..30 {
        let f = v.next_frame(WAIT).await.expect("frames keep coming");
        let seq = f.seq.expect("a sequence number");
        assert!(seq > last, "in order ({seq} after {last})");
        last = seq;
    }
    assert!(agent.stats().camera.starts_with("running"));
    assert!(
        v.next_signal(Duration::ZERO).await.is_none(),
        "no bye or error"
    );
    assert_eq!(v.state(), Some(PeerState::Connected));
    v.bye().await;
    assert_idle(&agent, &base).await;
    shut_down(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_ends_alone() {
    let s = settings("faults-panic");
    let agent = start_with(
        s.clone(),
        AgentOptions {
            faults: Faults {
                panic_client: Some("boom".into()),
            },
            ..AgentOptions::default()
        },
    )
    .await;
    online(&s).await;
    let base = agent.stats();
    let mut steady = viewer(&s, "steady", true).await;
    steady.drain_frames();
    let s0 = steady
        .next_frame(WAIT)
        .await
        .and_then(|f| f.seq)
        .expect("steady decodes");
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 1 && c.tasks == 1)
            .await
    );
    let steady_tasks = agent.stats().tasks;

    // "boom"'s session panics as soon as it is connected.
    let mut boom = Viewer::connect(&viewer_options(&s, "boom", true))
        .await
        .expect("boom's offer is answered");
    let mut told = None;
    while let Some(sig) = boom.next_signal(WAIT).await {
        told = Some(sig);
        if told == Some(Signal::Bye) {
            break;
        }
    }
    assert_eq!(told, Some(Signal::Bye), "boom is told its session ended");
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 1 && c.tasks == 1)
            .await,
        "only boom's session ended: {:?}",
        agent.stats()
    );
    let ended = Instant::now();
    eventually("agent tasks back to the steady value", || {
        agent.stats().tasks == steady_tasks
    })
    .await;
    let st = agent.stats();
    assert_eq!((st.connected, st.subscribers, st.holds), (1, 1, 0));
    assert!(st.mqtt_connected, "the agent is still up");
    boom.close().await;

    // Steady decoded throughout: every frame since before boom came, in order.
    let mut seqs = vec![s0];
    loop {
        let f = steady
            .next_frame(WAIT)
            .await
            .expect("steady keeps decoding");
        seqs.extend(f.seq);
        if f.decoded_at > ended {
            break;
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "in order");
    let span = seqs[seqs.len() - 1] - s0 + 1;
    assert!(
        seqs.len() as u32 * 10 >= span * 9,
        "steady decoded {} of {span} frames while boom came and went",
        seqs.len()
    );
    assert!(steady.next_signal(Duration::ZERO).await.is_none());

    // Someone else can still join.
    let mut after = viewer(&s, "after-boom", true).await;
    let f = after.next_frame(WAIT).await.expect("a new viewer decodes");
    assert!(f.keyframe);
    after.bye().await;
    steady.bye().await;
    assert_idle(&agent, &base).await;
    shut_down(agent).await;
}

/// An MQTT subscription collecting messages, returned once subscribed.
async fn subscribe(
    s: &Settings,
    client_id: &str,
    filter: String,
) -> (
    mpsc::UnboundedReceiver<(String, Bytes)>,
    tokio::task::JoinHandle<()>,
) {
    let mut link = Link::new(&mqtt_for(s, client_id), vec![filter]).expect("link");
    let (tx, rx) = mpsc::unbounded_channel();
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
    (rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_vanishes_is_ended_by_the_disconnected_timeout() {
    let mut s = settings("faults-vanish");
    s.webrtc.disconnected_timeout = Duration::from_secs(1);
    let agent = start(s.clone()).await;
    online(&s).await;
    let base = agent.stats();
    let (mut byes, bye_task) =
        subscribe(&s, "bye-watch", format!("{}/bye/+", s.mqtt.topic_prefix)).await;
    // The viewer is `rtcam probe` in a process of its own, killed (SIGKILL)
    // mid-stream: no bye, no DTLS close, no more ICE responses.
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let mut probe = rtcam()
        .args([
            "--broker-v5-listen",
            &s.broker.v5_listen.to_string(),
            "--mqtt-topic-prefix",
            &s.mqtt.topic_prefix,
            "--webrtc-interfaces",
            r#"["lo"]"#,
            "--webrtc-loopback",
            "true",
            "--webrtc-mdns",
            "disabled",
            "probe",
            "--client-id",
            "ghost",
            "--seconds",
            "600",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().expect("log file"))
        .spawn()
        .expect("rtcam probe starts");
    let streaming = agent.wait_sessions(WAIT, |c| c.connected == 1).await;
    if !streaming {
        let _ = probe.kill();
        panic!(
            "the probe connects; its log:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
    }
    eventually("the probe's video subscription", || {
        agent.stats().subscribers == 1
    })
    .await;
    probe.kill().expect("SIGKILL");
    probe.wait().expect("reaped");

    let (topic, payload) = tokio::time::timeout(WAIT, byes.recv())
        .await
        .expect("the session ends in time")
        .expect("subscribed");
    assert_eq!(topic, format!("{}/bye/ghost", s.mqtt.topic_prefix));
    let bye: Value = serde_json::from_slice(&payload).expect("JSON");
    assert_eq!(bye["reason"], "disconnected", "{bye}");
    assert_idle(&agent, &base).await;
    bye_task.abort();
    shut_down(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_that_never_connects_times_out() {
    let mut s = settings("faults-noice");
    s.webrtc.negotiation_timeout = Duration::from_secs(1);
    let agent = start(s.clone()).await;
    online(&s).await;
    let base = agent.stats();
    // A real viewer's offer, whose peer is closed before anyone answers it:
    // no ICE candidate and no connectivity check will ever come.
    let (peer, sdp, _channel, _events) = Peer::offer(
        &PeerOptions::for_viewer(&s.webrtc),
        true,
        Some(rtcam::control::CHANNEL_LABEL),
    )
    .await
    .expect("an offer");
    peer.close().await;
    let mut raw = Raw::connect(&s).await;
    let offer = json!({"type": "offer", "sdp": sdp}).to_string();
    let (code, negotiating) = tokio::join!(
        raw.code("offer", "never-ice", offer),
        agent.wait_sessions(WAIT, |c| c.negotiating == 1)
    );
    assert!(negotiating, "the offer was accepted");
    assert_eq!(code, "timeout", "dropped after webrtc.negotiation_timeout");
    assert_idle(&agent, &base).await;
    shut_down(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_channel_closed_mid_command_applies_the_failsafe() {
    let mut s = gpio_settings("faults-dc");
    s.webrtc.disconnected_timeout = Duration::from_secs(1);
    let agent = start(s.clone()).await;
    online(&s).await;
    let base = agent.stats();
    let sim = agent
        .gpio()
        .and_then(|g| g.simulator())
        .expect("sim backend")
        .clone();
    let gpio = agent.gpio().expect("gpio").clone();
    let controller = viewer(&s, "dc-controller", false).await;
    let reply = controller
        .command(
            json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
            WAIT,
        )
        .await
        .expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(true));

    // An "off" pulse (it would switch relay1 back on when it ends), then a
    // burst of commands, and the viewer leaves while they are being served.
    let mut events = gpio.subscribe();
    // Long enough to outlast the session even under emulation.
    let pulse = Duration::from_secs(5);
    let pulse_end = tokio::time::Instant::now() + pulse;
    controller
        .send_raw(
            &json!({"id": 1, "cmd": "gpio.pulse", "pin": "relay1", "ms": pulse.as_millis() as u64, "value": false})
                .to_string(),
        )
        .await
        .expect("sent");
    for id in 2..50 {
        controller
            .send_raw(&json!({"id": id, "cmd": "gpio.get", "pin": "relay1"}).to_string())
            .await
            .expect("sent");
    }
    let ev = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("the pulse starts")
        .expect("events");
    assert_eq!(
        (ev.pin.as_str(), ev.value),
        ("relay1", PinValue::Level(false))
    );
    // A bye, so the session ends at once, mid-pulse and with replies
    // pending. (`close()` alone looks like a vanished viewer to the agent:
    // the session would only end after the ICE disconnected timeout.)
    controller.bye().await;
    assert_idle(&agent, &base).await;
    assert!(
        tokio::time::Instant::now() < pulse_end,
        "the session ended before the pulse (test premise)"
    );
    assert_eq!(
        sim.pin("relay1").map(|p| p.high),
        Some(false),
        "relay1 at its failsafe"
    );
    // The failsafe is final: the pulse ending later does not switch relay1 back on.
    loop {
        match tokio::time::timeout_at(pulse_end + Duration::from_millis(500), events.recv()).await {
            Err(_) => break,
            Ok(Ok(ev)) if ev.pin == "relay1" => {
                assert_eq!(
                    ev.value,
                    PinValue::Level(false),
                    "nobody controls relay1 any more"
                );
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                panic!("GPIO events ended")
            }
            Ok(_) => {}
        }
    }
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(false));

    // Another viewer works afterwards.
    let next = viewer(&s, "dc-next", false).await;
    let reply = next
        .command(json!({"cmd": "gpio.get", "pin": "relay1"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(reply["result"]["value"], false, "{reply}");
    let reply = next
        .command(
            json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
            WAIT,
        )
        .await
        .expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(true));
    next.bye().await;
    assert_idle(&agent, &base).await;
    assert_eq!(
        sim.pin("relay1").map(|p| p.high),
        Some(false),
        "failsafe after a bye too"
    );
    shut_down(agent).await;
}
