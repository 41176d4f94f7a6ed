//! Faults the `rtcam` binary must survive, caused from outside as they
//! happen in the field: a broker that is down, silent or slow, viewers that
//! vanish or never connect, and a controlling viewer whose connection, bye
//! or control channel ends its control while commands and a pulse are in
//! flight (the failsafe must apply, for good). After each,
//! sessions, hub subscriptions and tasks
//! return to idle (from `/stats.json`) and the agent exits cleanly on
//! SIGTERM. Faults that can only be injected inside the agent (a camera
//! unplugged, a panicking session, a GPIO write refused) are in
//! `tests/faults_inprocess.rs`. Runs inside a private network namespace
//! (see `.ci/test`).

mod common;

use bytes::Bytes;
use common::agent::{AgentProcess, TestConfig, start};
use common::channels::ChannelViewer;
use common::mosquitto::Mosquitto;
use common::process::rtcam;
use common::{Raw, WAIT, frames, free_port, http_get, mqtt_for, viewer};
use rtcam::config::Settings;
use rtcam::peer::{Peer, PeerOptions};
use rtcam::probe::Viewer;
use rtcam::signaling::mqtt::{Link, LinkEvent};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// A test agent whose broker is at `mqtt://127.0.0.1:{port}`.
fn with_broker(prefix: &str, port: u16) -> TestConfig {
    TestConfig::new(prefix).with("mqtt.url", format!("mqtt://127.0.0.1:{port}"))
}

/// The viewers' side of `cfg`, with their broker at `port` instead.
fn viewers_via(cfg: &TestConfig, port: u16) -> Settings {
    cfg.clone()
        .with("mqtt.url", format!("mqtt://127.0.0.1:{port}"))
        .settings()
}

/// The web viewer answers while the broker is away, and says so in `/stats.json`.
async fn web_viewer_serves_without_a_broker(agent: &AgentProcess) {
    let addr = agent.http_addr();
    let (status, page) = http_get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the viewer page: {page:.200}");
    let (status, config) = http_get(addr, "/config.json").await;
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&config).expect("config.json is JSON");
    assert_eq!(config["topic_prefix"], agent.settings().mqtt.topic_prefix);
    let (status, stats) = http_get(addr, "/stats.json").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&stats).expect("stats.json is JSON");
    assert_eq!(stats["mqtt_connected"], false, "{stats}");
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

/// Waits for the agent's retained `P/status` `online`, as the web page does
/// before it offers.
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

/// A viewer decodes a run of frames from its first keyframe, in order.
async fn decodes(v: &mut Viewer) {
    let run = frames(v, 30).await;
    assert!(run.first_keyframe, "the first frame is a keyframe");
    assert!(run.in_order(), "frames arrive in order");
    assert!(
        run.missing() <= 3,
        "{} of {} frames lost",
        run.missing(),
        run.missing() + 30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_is_joined_when_it_comes_up() {
    let port = free_port();
    let cfg = with_broker("faults-late-broker", port);
    let agent = AgentProcess::start_unconnected(&cfg).await;
    let s = agent.settings().clone();
    web_viewer_serves_without_a_broker(&agent).await;

    let broker = Mosquitto::start(port);
    agent.wait_mqtt(true).await;
    // (Taken now: the ready line comes just before the agent's last task
    // starts, so a figure read at once can be one task short.)
    let base = agent.stats().await;
    online(&s).await;
    let mut v = viewer(&s, "late-broker", true).await;
    decodes(&mut v).await;
    v.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
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
    let cfg = with_broker("faults-silent-broker", port);
    let agent = AgentProcess::start_unconnected(&cfg).await;
    web_viewer_serves_without_a_broker(&agent).await;

    // The agent sends CONNECT, gets no CONNACK, gives the connection up
    // (rather than hanging on it forever) and tries again.
    let mut seen = Conns::default();
    seen.until(&mut rx, "a CONNECT", |c| c.connects >= 1).await;
    // (Taken once it is trying: the ready line comes just before the
    // agent's last task starts, so a figure read at once can be one short.)
    let base = agent.stats().await;
    seen.until(&mut rx, "the unanswered attempt to be abandoned", |c| {
        c.closed.contains(&0)
    })
    .await;
    seen.until(&mut rx, "a second CONNECT", |c| c.connects >= 2)
        .await;
    assert!(!agent.stats().await.mqtt_connected, "never connected");
    agent.wait_idle(&base).await;
    // SIGTERM in the middle of an attempt: it must not wait for the broker
    // (exit 0 within the bound), and leaves no connection open.
    agent.shutdown().await;
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
    let cfg = with_broker("faults-slow-broker", port);
    let agent = AgentProcess::start_unconnected(&cfg).await;
    // The agent waits for the slow CONNACK instead of abandoning every attempt.
    agent.wait_mqtt(true).await;
    let base = agent.stats().await;
    agent
        .log()
        .wait_line("the connection to be logged", WAIT, |l| {
            l.contains("connected to MQTT broker")
        })
        .await;
    assert_eq!(
        agent.log().count(|l| l.contains("MQTT connection failed")),
        0,
        "no attempt was abandoned: {}",
        agent.log().tail(20)
    );
    // Viewers talk to the broker directly: only the agent's link is slow.
    let direct = viewers_via(&cfg, broker_port);
    online(&direct).await;
    let mut v = viewer(&direct, "slow-broker", true).await;
    decodes(&mut v).await;
    v.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
    proxy.abort();
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_vanishes_is_ended_by_the_disconnected_timeout() {
    let cfg = TestConfig::new("faults-vanish").with("webrtc.disconnected_timeout_ms", 1000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    // The viewer is `rtcam probe` in a process of its own, started with the
    // agent's own config file as a user would, and killed (SIGKILL)
    // mid-stream: no bye, no DTLS close, no more ICE responses.
    let mut probe = common::process::RtcamProcess::spawn(
        {
            let mut c = rtcam();
            c.arg("--config").arg(agent.config_path()).args([
                "probe",
                "--client-id",
                "ghost",
                "--seconds",
                "600",
            ]);
            c
        },
        None,
    );
    let streaming = agent
        .wait_stats("the probe's session to stream", |st| {
            st.connected == 1 && st.subscribers == 1
        })
        .await;
    assert_eq!(streaming.sessions, 1);
    probe.assert_running("the probe streams");
    probe.signal(libc::SIGKILL);
    probe.log().wait_closed("the probe to die", WAIT).await;
    probe.wait();
    // Only the client itself may read its bye on the embedded broker: a
    // watcher takes the dead probe's client id (the disconnected timeout
    // runs seconds after ICE gives up; subscribing takes milliseconds).
    let (mut byes, bye_task) =
        subscribe(&s, "ghost", format!("{}/bye/ghost", s.mqtt.topic_prefix)).await;

    let (topic, payload) = tokio::time::timeout(WAIT, byes.recv())
        .await
        .expect("the session ends in time")
        .expect("subscribed");
    assert_eq!(topic, format!("{}/bye/ghost", s.mqtt.topic_prefix));
    let bye: Value = serde_json::from_slice(&payload).expect("JSON");
    assert_eq!(bye["reason"], "disconnected", "{bye}");
    agent.wait_idle(&base).await;
    bye_task.abort();
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_reconnects_by_itself_when_the_agent_restarts() {
    let cfg = TestConfig::new("faults-restart");
    let mut agent = start(&cfg).await;
    // `rtcam probe` as a user runs it, watching for 25 s; the agent dies
    // under it (SIGKILL: no bye, no DTLS close) and comes back.
    let mut probe = common::watching_probe(agent.config_path(), "survivor", 25).await;
    agent.kill().await;
    let agent = start(&cfg).await;
    // Polled (a process boundary has no event to wait on), within ICE's
    // stall detection plus the probe's backoff and a generous margin.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = agent.stats().await;
        if st.connected == 1 && st.subscribers == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the probe's new session did not stream: {st:?}\nprobe log:\n{}\nagent log:\n{}",
            probe.log().tail(30),
            agent.log().tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (report, log) = common::probe_finished(&mut probe).await;
    assert!(report["reconnects"].as_u64() >= Some(1), "{report}");
    assert!(report["freezes"].as_u64() >= Some(1), "{report}");
    assert!(
        report["longest_freeze_ms"].as_f64() > Some(1000.0),
        "the restart shows as a freeze: {report}"
    );
    assert!(log.contains("no video: reconnecting"), "{log}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_that_never_connects_times_out() {
    let cfg = TestConfig::new("faults-noice").with("webrtc.negotiation_timeout_ms", 1000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
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
    let mark = agent.log().len();
    let offer = json!({"type": "offer", "sdp": sdp}).to_string();
    let code = raw.code("offer", "never-ice", offer).await;
    // The offer was accepted (a session was started for it)...
    line_after(&agent, mark, "the offer to be accepted", |l| {
        l.contains("offer accepted") && l.contains("client=never-ice")
    })
    .await;
    // ...and dropped after webrtc.negotiation_timeout_ms.
    assert_eq!(code, "timeout", "dropped after webrtc.negotiation_timeout");
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}

/// Simulated pins: relay1 is an output whose failsafe is off; lamp an
/// output without one (a witness for timers); pan a servo.
const PINS: &str = r#"
[[gpio.pins]]
name = "relay1"
pin = 17
mode = "output"
failsafe = false

[[gpio.pins]]
name = "lamp"
pin = 22
mode = "output"

[[gpio.pins]]
name = "pan"
pin = 12
mode = "servo"
"#;

fn gpio_config(prefix: &str) -> TestConfig {
    TestConfig::new(prefix)
        .with("gpio.backend", "sim")
        .with("webrtc.disconnected_timeout_ms", 1000)
        .with("gpio.max_pulse_ms", 30_000)
        .with_env("RTCAM_LOG", "info,rtcam::gpio::sim=debug")
        .with_toml(PINS)
}

/// Waits until a line logged after `mark` satisfies `pred`.
async fn line_after(
    agent: &AgentProcess,
    mark: usize,
    what: &str,
    pred: impl Fn(&str) -> bool + Clone + Send + 'static,
) {
    let before = agent.log().since(0)[..mark]
        .iter()
        .filter(|l| pred(l))
        .count();
    agent.log().wait_count(what, before + 1, WAIT, pred).await;
}

/// Waits until the simulator logs `change` (`relay1: high`) after `mark`.
async fn electrical(agent: &AgentProcess, mark: usize, change: &str) {
    let want = format!("simulated line {change}");
    line_after(
        agent,
        mark,
        &format!("the simulated line to go {change}"),
        move |l| l.ends_with(&want),
    )
    .await;
}

/// The next `gpio.changed` event for `pin` on a panel.
async fn changed(v: &mut Viewer, pin: &str) -> Value {
    loop {
        let ev = v.next_event(WAIT).await.expect("an event");
        if ev["event"] == "gpio.changed" && ev["pin"] == pin {
            return ev;
        }
    }
}

async fn command(v: &Viewer, req: Value) -> Value {
    let reply = v.command(req.clone(), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], true, "{req} -> {reply}");
    reply["result"].clone()
}

/// How long the "off" pulse lasts when the session ends at once (a bye, a
/// channel closed): long enough to outlast that even under emulation.
const PULSE: Duration = Duration::from_secs(5);
/// ... and when the agent must first find the connection gone: ICE reports
/// it disconnected after about 5 s, then `webrtc.disconnected_timeout_ms`.
const LONG_PULSE: Duration = Duration::from_secs(15);

/// Sets relay1 on from `controller`, then sends an "off" pulse that would
/// switch it back on when it ends, and a burst of commands behind it.
/// Returns once the pulse has driven relay1 off (seen by `panel`), with the
/// burst's replies still on their way. `panel` then starts a longer pulse on
/// lamp: a witness that ends after relay1's pulse would have.
async fn pulse_with_commands_in_flight(
    agent: &AgentProcess,
    controller: &ChannelViewer,
    panel: &mut Viewer,
    pulse: Duration,
) {
    let mark = agent.log().len();
    let reply = controller
        .command(
            1,
            json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    electrical(agent, mark, "relay1: high").await;
    assert_eq!(changed(panel, "relay1").await["value"], true);
    controller
        .send(&json!({"id": 2, "cmd": "gpio.pulse", "pin": "relay1",
            "ms": pulse.as_millis() as u64, "value": false}))
        .await;
    for id in 3..50 {
        controller
            .send(&json!({"id": id, "cmd": "gpio.get", "pin": "relay1"}))
            .await;
    }
    assert_eq!(
        changed(panel, "relay1").await["value"],
        false,
        "the pulse started"
    );
    // Started after relay1's pulse and longer: it ends after relay1's would.
    let witness = command(
        panel,
        json!({"cmd": "gpio.pulse", "pin": "lamp", "value": true,
            "ms": pulse.as_millis() as u64 + 100}),
    )
    .await;
    assert_eq!(witness["restores_to"], false);
}

/// After the controller's session ended mid-pulse (`mark`: just before the
/// test ended it): relay1 is at its failsafe (logged, seen by `panel`), and
/// stays there when the pulse's time runs out.
async fn failsafe_holds_past_the_pulse(agent: &AgentProcess, panel: &mut Viewer, mark: usize) {
    line_after(agent, mark, "relay1's failsafe", |l| {
        l.contains("failsafe applied") && l.contains("pin=relay1")
    })
    .await;
    let lamp_lows = agent
        .log()
        .count(|l| l.ends_with("simulated line lamp: low"));
    assert_eq!(
        lamp_lows, 1,
        "the witness pulse still runs: the session ended before relay1's pulse (test premise)"
    );
    assert_eq!(
        command(panel, json!({"cmd": "gpio.get", "pin": "relay1"})).await["value"],
        false,
        "relay1 at its failsafe"
    );
    // The failsafe is final: relay1's pulse ending does not switch it back
    // on. Every relay1 event until the witness pulse ends must be "off"...
    loop {
        let ev = panel.next_event(WAIT).await.expect("an event");
        if ev["event"] != "gpio.changed" {
            continue;
        }
        if ev["pin"] == "lamp" && ev["value"] == false {
            break;
        }
        if ev["pin"] == "relay1" {
            assert_eq!(ev["value"], false, "nobody controls relay1 any more: {ev}");
        }
    }
    // ...and so is every line (the witness's comes after relay1's: one log).
    electrical(agent, mark, "lamp: low").await;
    let high: Vec<String> = agent
        .log()
        .since(mark)
        .into_iter()
        .filter(|l| l.ends_with("simulated line relay1: high"))
        .collect();
    assert!(high.is_empty(), "relay1 was switched back on: {high:#?}");
    assert_eq!(
        command(panel, json!({"cmd": "gpio.get", "pin": "relay1"})).await["value"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_channel_closed_mid_command_applies_the_failsafe() {
    let agent = start(&gpio_config("faults-dc")).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    let mut panel = viewer(&s, "dc-panel", false).await;
    let controller = ChannelViewer::connect(&s, "dc-controller", &["control"], None).await;
    pulse_with_commands_in_flight(&agent, &controller, &mut panel, PULSE).await;
    // The controller closes its control channel, replies still pending;
    // its peer connection stays up.
    let mark = agent.log().len();
    controller.channels[0].close().await;
    failsafe_holds_past_the_pulse(&agent, &mut panel, mark).await;
    controller.close().await;

    // Another viewer works afterwards, and its bye applies the failsafe too.
    let next = viewer(&s, "dc-next", false).await;
    let mark = agent.log().len();
    command(
        &next,
        json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
    )
    .await;
    electrical(&agent, mark, "relay1: high").await;
    let mark = agent.log().len();
    next.bye().await;
    electrical(&agent, mark, "relay1: low").await;
    panel.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_mid_command_applies_the_failsafe() {
    let agent = start(&gpio_config("faults-pc")).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    let mut panel = viewer(&s, "pc-panel", false).await;
    let controller = ChannelViewer::connect(&s, "pc-controller", &["control"], None).await;
    pulse_with_commands_in_flight(&agent, &controller, &mut panel, LONG_PULSE).await;
    // The controller closes its peer connection, and with it the channel,
    // replies still pending, without a bye: its DTLS close_notify ends the
    // session at once (not the ICE disconnection timeout).
    let mark = agent.log().len();
    controller.close().await;
    failsafe_holds_past_the_pulse(&agent, &mut panel, mark).await;
    let is_end = |l: &str| l.contains("session ended") && l.contains("client=pc-controller");
    line_after(&agent, mark, "the controller's session to end", is_end).await;
    let ended = agent
        .log()
        .since(mark)
        .into_iter()
        .find(|l| is_end(l))
        .expect("just seen");
    assert!(ended.contains("reason=\"closed\""), "{ended}");
    panel.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_mid_pulse_applies_the_failsafe_and_the_pulse_end_does_not_undo_it() {
    let agent = start(&gpio_config("faults-bye")).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    let mut panel = viewer(&s, "bye-panel", false).await;
    let controller = ChannelViewer::connect(&s, "bye-controller", &["control"], None).await;
    pulse_with_commands_in_flight(&agent, &controller, &mut panel, PULSE).await;
    // A bye: the session ends at once, mid-pulse and with replies pending.
    let mark = agent.log().len();
    controller.bye().await;
    failsafe_holds_past_the_pulse(&agent, &mut panel, mark).await;
    controller.close().await;
    panel.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}
