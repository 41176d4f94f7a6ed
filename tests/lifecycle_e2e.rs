//! The `rtcam` binary's life as a service sees it: retained `P/status`
//! `online`, then `offline` on a clean stop and by the last will when it
//! dies; a second SIGTERM during a slow stop exits at once; and what it
//! tells systemd (`READY=1`, `STATUS=`, watchdog pings, `STOPPING=1`).
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use common::agent::{AgentProcess, TestConfig};
use common::mosquitto::Mosquitto;
use common::{WAIT, Watch, free_port};
use std::os::unix::net::UnixDatagram;

/// An agent config using a Mosquitto on `port` (its last will outlives it).
fn with_mosquitto(prefix: &str, port: u16, protocol: &str) -> TestConfig {
    TestConfig::new(prefix)
        .with("mqtt.url", format!("mqtt://127.0.0.1:{port}"))
        .with("mqtt.protocol", protocol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_offline_after_a_clean_stop_and_by_last_will_after_a_crash() {
    let port = free_port();
    let _broker = Mosquitto::start(port);
    for protocol in ["5", "3.1.1"] {
        let cfg = with_mosquitto(
            &format!("status-{}", protocol.replace('.', "")),
            port,
            protocol,
        );
        let s = cfg.settings();
        let topic = format!("{}/status", s.mqtt.topic_prefix);
        let mut status =
            Watch::start(&s, &format!("status-watch-{}", protocol.len()), &topic).await;

        let agent = AgentProcess::start(&cfg).await;
        status.wait_for("online", &topic, |p| p == b"online").await;
        agent.shutdown().await;
        status
            .wait_for("offline after SIGTERM", &topic, |p| p == b"offline")
            .await;

        // Killed: no goodbye of its own; the broker publishes its will.
        let mut agent = AgentProcess::start(&cfg).await;
        status
            .wait_for("online again", &topic, |p| p == b"online")
            .await;
        agent.kill().await;
        status
            .wait_for("offline by the last will", &topic, |p| p == b"offline")
            .await;
        // Retained: a client arriving later learns it too.
        let mut late = Watch::start(&s, &format!("late-{}", protocol.len()), &topic).await;
        late.wait_for("the retained offline", &topic, |p| p == b"offline")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_a_slow_stop_exits_at_once() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let cfg = with_mosquitto("second-term", port, "5");
    let mut agent = AgentProcess::start(&cfg).await;
    // A frozen broker: the graceful stop waits (bounded) to say offline.
    broker.signal(libc::SIGSTOP);
    agent.signal(libc::SIGTERM);
    agent
        .log()
        .wait_line("the graceful stop to begin", WAIT, |l| {
            l.contains("shutting down")
        })
        .await;
    agent.signal(libc::SIGTERM);
    agent
        .log()
        .wait_closed("rtcam to exit after the second signal", WAIT)
        .await;
    let status = agent.reap();
    broker.signal(libc::SIGCONT);
    assert_eq!(status.code(), Some(130), "exits at once with 130: {status}");
    assert_eq!(
        agent
            .log()
            .count(|l| l.contains("second signal, exiting now")),
        1,
        "{}",
        agent.log().tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_watchdog_pings_and_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).expect("a notify socket");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let cfg = TestConfig::new("notify")
        .with_env("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"))
        // A 1 s watchdog: pinged every ~333 ms while all is well.
        .with_env("WATCHDOG_USEC", "1000000");
    let agent = AgentProcess::start(&cfg).await;
    let recv = |sock: &UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    let sock = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        // Bounded: READY, a STATUS and three pings come within a few seconds.
        for _ in 0..50 {
            let m = recv(&sock);
            seen.push(m);
            let pings = seen.iter().filter(|m| *m == "WATCHDOG=1").count();
            if seen.iter().any(|m| m == "READY=1")
                && seen
                    .iter()
                    .any(|m| m.starts_with("STATUS=broker connected"))
                && pings >= 3
            {
                return (sock, seen);
            }
        }
        panic!("expected READY, STATUS and watchdog pings, got {seen:?}");
    })
    .await
    .expect("the reader ran");
    let (sock, seen) = sock;
    // READY=1 comes before any watchdog ping (the status line may precede
    // it: systemd takes them in any order).
    let ready = seen.iter().position(|m| m == "READY=1").expect("READY=1");
    let first_ping = seen.iter().position(|m| m == "WATCHDOG=1").expect("a ping");
    assert!(ready < first_ping, "ready before the first ping: {seen:?}");
    agent.shutdown().await;
    let after = tokio::task::spawn_blocking(move || {
        let mut rest = Vec::new();
        // Bounded: the stop sends STOPPING=1 then exits.
        for _ in 0..50 {
            let m = recv(&sock);
            let stop = m == "STOPPING=1";
            rest.push(m);
            if stop {
                break;
            }
        }
        rest
    })
    .await
    .expect("the reader ran");
    assert_eq!(
        after.last().map(String::as_str),
        Some("STOPPING=1"),
        "{after:?}"
    );
}
