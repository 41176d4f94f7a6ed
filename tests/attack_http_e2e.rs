//! Attacks through the web viewer, the TURN credentials it hands out and
//! the agent's log, against the `rtcam` binary from outside (HTTP, MQTT,
//! WebRTC, a real coturn, the agent's stderr):
//!
//! - 1,200 idle, half-sent and kept-alive HTTP sockets against an agent
//!   with the systemd unit's file descriptor limit: `/stats.json` and new
//!   viewers keep working, the agent's descriptors stay bounded, and the
//!   server closes every socket (finding 4); each kind of stalled
//!   connection is closed after its timeout;
//! - crafted `Host` headers never reach the broker URL of `/config.json`
//!   (finding 8);
//! - static TURN credentials are neither served nor printed, and minted
//!   ones relay video through coturn's `use-auth-secret` and expire
//!   (finding 9);
//! - a log output nobody reads never stalls signaling; the lines dropped
//!   are counted and reported once it drains, and per-message refusals an
//!   outsider can cause are logged a few at a time (finding 13).
//!
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use bytes::Bytes;
use common::agent::{AgentProcess, TestConfig, start};
use common::coturn::{Auth, Coturn};
use common::process::{all_output, rtcam};
use common::{Raw, WAIT, Watch, assert_private_netns, frames, http_get, viewer_options};
use rtcam::config::settings::IceServer;
use rtcam::peer::CandidateKind;
use rtcam::probe::Viewer;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ------------------------------------------------------------------ helpers

/// `LimitNOFILE=` of the shipped systemd unit; without one, systemd's
/// default soft limit for services (1024).
fn unit_nofile() -> libc::rlim_t {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/rtcam.service"
    ))
    .expect("systemd/rtcam.service is readable");
    unit.lines()
        .find_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .map_or(1024, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("LimitNOFILE={v} is a number"))
        })
}

/// Lets this test process open as many descriptors as its hard limit allows.
fn raise_own_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// The agent's open file descriptors.
fn agent_fds(agent: &AgentProcess) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .expect("the agent's /proc/<pid>/fd")
        .count()
}

/// Writes `request` as is on a new connection and reads the answer until
/// the server closes: (status, body).
async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write the request");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes in time")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// GET `/config.json` with exactly these `Host` headers.
async fn config_with_hosts(addr: SocketAddr, hosts: &[&str]) -> (u16, Value) {
    let mut req = String::from("GET /config.json HTTP/1.1\r\n");
    for h in hosts {
        req.push_str(&format!("Host: {h}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let (status, body) = raw_http(addr, req.as_bytes()).await;
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/config.json answers JSON ({e}): {body:?}"));
    (status, json)
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body) off a
/// kept-alive connection; `None` if the server closed it first.
async fn read_response(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

/// Resolves once the server has closed `s` (end of stream or reset),
/// discarding whatever it still sent.
async fn closed_by_server(mut s: TcpStream) {
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The three ways of holding a connection open without finishing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Connect and send nothing.
    Idle,
    /// Send half a request header, never the rest.
    PartialHeader,
    /// Finish a request, read the answer, keep the connection.
    KeepAlive,
}

async fn hold(addr: SocketAddr, kind: Hold) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    match kind {
        Hold::Idle => {}
        Hold::PartialHeader => s
            .write_all(b"GET /stats.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .expect("write half a header"),
        Hold::KeepAlive => {
            s.write_all(b"GET /favicon.svg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .expect("write a request");
            let status = tokio::time::timeout(WAIT, read_response(&mut s))
                .await
                .expect("the request is answered in time");
            assert_eq!(status, Some(200), "a kept-alive request is answered");
        }
    }
    s
}

// ----------------------------------------------------- finding 4: sockets

/// Header and idle timeouts short enough for a test (defaults: 10 s, 30 s).
fn short_timeouts(cfg: TestConfig) -> TestConfig {
    cfg.with("http.header_timeout_ms", 1500)
        .with("http.idle_timeout_ms", 2500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_http_sockets_never_cost_the_viewers_their_sockets() {
    assert_private_netns();
    let own = raise_own_nofile();
    let limit = unit_nofile();
    const SOCKETS: usize = 1200;
    assert!(
        own > (SOCKETS + 200) as libc::rlim_t,
        "this test needs {SOCKETS} sockets and its viewers' (hard limit {own})"
    );
    let cfg = short_timeouts(TestConfig::new("http-fds")).with_nofile(limit);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let cap = s.http.max_connections;
    let addr = agent.http_addr();
    let idle = agent.stats().await;
    let idle_fds = agent_fds(&agent);
    let mut steady = Viewer::connect(&viewer_options(&s, "fds-steady", true))
        .await
        .expect("the steady viewer's offer is answered");
    assert!(
        steady.wait_connected(WAIT).await,
        "the steady viewer connects"
    );
    frames(&mut steady, 3).await;
    let base = agent.stats().await;
    let base_fds = agent_fds(&agent);

    // 1,200 sockets that hold a connection and never finish a request, in
    // turn idle, half a header and kept alive after one answer.
    let kinds = [Hold::Idle, Hold::PartialHeader, Hold::KeepAlive];
    let mut held = Vec::with_capacity(SOCKETS);
    let mut max_fds = base_fds;
    let opened = Instant::now();
    for i in 0..SOCKETS {
        held.push(hold(addr, kinds[i % kinds.len()]).await);
        if (i + 1) % 150 == 0 {
            // The page's own figures keep coming, on a new connection.
            let st = agent.stats().await;
            let fds = agent_fds(&agent);
            max_fds = max_fds.max(fds);
            assert!(
                st.http_connections <= cap,
                "at most http.max_connections = {cap} open: {st:?}"
            );
            assert!(
                fds <= base_fds + cap + 8,
                "{} sockets held: the agent has {fds} descriptors open ({base_fds} at rest, cap {cap})",
                i + 1
            );
        }
    }
    eprintln!(
        "{SOCKETS} sockets held after {:?}; the agent (RLIMIT_NOFILE {limit}) peaked at {max_fds} descriptors ({base_fds} at rest)",
        opened.elapsed()
    );

    // With every one of them still held by this test: a new viewer gets its
    // UDP sockets, an answer and video.
    let mut newcomer = Viewer::connect(&viewer_options(&s, "fds-newcomer", true))
        .await
        .expect("a new viewer's offer is answered while the sockets are held");
    assert!(
        newcomer.wait_connected(WAIT).await,
        "the new viewer connects while the sockets are held"
    );
    frames(&mut newcomer, 10).await;
    frames(&mut steady, 10).await;

    // The server closes every one of them: most to make room for newer
    // ones, the last `cap` after the header timeout.
    let closing = Instant::now();
    let all = futures::future::join_all(held.into_iter().map(closed_by_server));
    tokio::time::timeout(WAIT, all)
        .await
        .expect("the server closes every held socket");
    let st = agent
        .wait_stats("the held connections closed", |st| {
            st.http_connections <= 1
                && st.http_timed_out + st.http_evicted - base.http_timed_out - base.http_evicted
                    >= SOCKETS as u64
        })
        .await;
    eprintln!(
        "all closed {:?} after the last was opened: {} evicted for newer ones, {} timed out; {} accepted",
        closing.elapsed(),
        st.http_evicted - base.http_evicted,
        st.http_timed_out - base.http_timed_out,
        st.http_accepted - base.http_accepted
    );
    assert!(
        st.http_timed_out - base.http_timed_out >= (cap / 2) as u64,
        "the ones left at the end are closed by the timeouts: {st:?}"
    );
    frames(&mut newcomer, 5).await;
    newcomer.bye().await;
    steady.bye().await;
    agent.wait_idle(&idle).await;
    let fds = agent_fds(&agent);
    assert!(
        fds <= idle_fds + 4,
        "the agent's descriptors return to rest: {fds}, {idle_fds} before"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_stalled_connection_is_closed_after_its_timeout() {
    assert_private_netns();
    let agent = start(&short_timeouts(TestConfig::new("http-timeouts"))).await;
    let addr = agent.http_addr();
    let base = agent.stats().await;
    let mut held = Vec::new();
    for kind in [Hold::Idle, Hold::PartialHeader, Hold::KeepAlive] {
        held.push((format!("{kind:?}"), hold(addr, kind).await));
    }
    // A client that asks for the biggest file many times over and reads
    // nothing: the server's writes stall once the socket buffers are full.
    let mut reader_gone = TcpStream::connect(addr).await.expect("connect");
    let mut pipelined = Vec::new();
    for _ in 0..400 {
        pipelined.extend_from_slice(
            b"GET /assets/vendor/mqtt.min.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        );
    }
    reader_gone
        .write_all(&pipelined)
        .await
        .expect("write the requests");
    let t0 = Instant::now();
    // Closed by the server, not by anything this test does: the non-reader
    // is only read once the server has counted its timeout.
    agent
        .wait_stats("four connections timed out", |st| {
            st.http_timed_out - base.http_timed_out >= 4
        })
        .await;
    eprintln!("4 stalled connections timed out within {:?}", t0.elapsed());
    held.push(("NotReading".into(), reader_gone));
    for (what, s) in held {
        tokio::time::timeout(WAIT, closed_by_server(s))
            .await
            .unwrap_or_else(|_| panic!("the {what} connection was closed by the server"));
    }
    let st = agent.stats().await;
    assert_eq!(
        st.http_evicted, base.http_evicted,
        "nothing evicted below the cap"
    );
    agent.shutdown().await;
}

// --------------------------------------------------------- finding 8: Host

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_json_names_only_hosts_the_server_is_reached_by() {
    assert_private_netns();
    let cfg = TestConfig::new("http-host").with("http.hosts", vec!["cam.example.org"]);
    let agent = start(&cfg).await;
    let addr = agent.http_addr();
    let ws_port = agent.settings().broker.ws_listen.port();
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the host name")
        .trim()
        .to_ascii_lowercase();
    let url = |h: &str| Value::String(format!("ws://{h}:{ws_port}"));
    for (host, want) in [
        // Names and addresses this server is reached by.
        (
            format!("127.0.0.1:{}", addr.port()),
            "127.0.0.1".to_string(),
        ),
        ("localhost:8080".into(), "localhost".into()),
        ("CAM.example.org:8080".into(), "cam.example.org".into()),
        (machine.clone(), machine.clone()),
        (format!("{machine}.local"), format!("{machine}.local")),
        // Anything else gets the address the request arrived at.
        ("evil.example".into(), "127.0.0.1".into()),
        ("evil.example:9001".into(), "127.0.0.1".into()),
        ("10.66.66.66".into(), "127.0.0.1".into()),
        ("[2001:db8::1]:80".into(), "127.0.0.1".into()),
    ] {
        let (status, c) = config_with_hosts(addr, &[&host]).await;
        assert_eq!(status, 200, "Host: {host}: {c}");
        assert_eq!(c["mqtt_ws_url"], url(&want), "Host: {host}");
    }
    // No Host at all (HTTP/1.0): the address it arrived at.
    let (status, body) = raw_http(addr, b"GET /config.json HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{body}");
    let c: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(c["mqtt_ws_url"], url("127.0.0.1"));
    // Malformed ones are refused with a reason, and never echoed into a URL.
    for bad in [
        "evil.example@127.0.0.1",
        "127.0.0.1/evil",
        "evil example",
        "evil.example:0",
        "evil.example:1:2",
        "[evil]",
        "1.2.3",
        "evil.example\"><script>",
    ] {
        let (status, c) = config_with_hosts(addr, &[bad]).await;
        assert_eq!(status, 400, "Host: {bad}: {c}");
        assert_eq!(c["error"], "bad_host", "Host: {bad}: {c}");
        assert!(c.get("mqtt_ws_url").is_none(), "{c}");
    }
    let (status, c) = config_with_hosts(addr, &["127.0.0.1", "evil.example"]).await;
    assert_eq!(status, 400, "two Host headers: {c}");
    // The page itself still loads whatever the Host.
    let (status, _) = raw_http(
        addr,
        b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    agent.shutdown().await;
}

// ---------------------------------------------------------- finding 9: TURN

const STATIC_USER: &str = "static-turn-user";
const STATIC_PASSWORD: &str = "static-turn-password-9f3c1e";

fn inline(text: &str) -> toml::Value {
    let t: toml::Table = toml::from_str(&format!("v = {text}")).expect("TOML");
    t["v"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_turn_credentials_are_neither_served_nor_printed() {
    assert_private_netns();
    let servers = inline(&format!(
        r#"[{{ urls = ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478"], username = "{STATIC_USER}", credential = "{STATIC_PASSWORD}" }}]"#
    ));
    let cfg = TestConfig::new("turn-static").with("webrtc.ice_servers", servers);
    let agent = start(&cfg).await;
    let (status, body) = http_get(agent.http_addr(), "/config.json").await;
    assert_eq!(status, 200);
    assert!(
        !body.contains(STATIC_PASSWORD) && !body.contains(STATIC_USER),
        "/config.json gives away the static TURN credential: {body}"
    );
    let c: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        c["ice_servers"],
        serde_json::json!([{ "urls": ["stun:127.0.0.1:3478"] }]),
        "only the STUN URL, which needs no credential"
    );
    // `config --print` says it is set, and does not print it.
    let out = rtcam()
        .arg("--config")
        .arg(agent.config_path())
        .args(["config", "--print"])
        .output()
        .expect("rtcam config --print runs");
    let printed = all_output(&out);
    assert!(out.status.success(), "{printed}");
    assert!(
        !printed.contains(STATIC_PASSWORD),
        "config --print prints the TURN credential:\n{printed}"
    );
    assert!(
        printed.contains("static credential of entry 0 is set"),
        "{printed}"
    );
    agent.shutdown().await;
    assert!(!agent_log_contains(&cfg, STATIC_PASSWORD).await);

    // Served only when the configuration says so.
    let cfg = cfg.with("http.serve_static_turn_credentials", true);
    let agent = start(&cfg).await;
    let (_, body) = http_get(agent.http_addr(), "/config.json").await;
    assert!(body.contains(STATIC_PASSWORD), "explicitly served: {body}");
    agent.shutdown().await;
}

/// Runs the agent of `cfg` at trace level with a viewer, and searches its log.
async fn agent_log_contains(cfg: &TestConfig, needle: &str) -> bool {
    let agent = start(&cfg.clone().with_env("RTCAM_LOG", "trace")).await;
    let mut v = Viewer::connect(&viewer_options(agent.settings(), "turn-log", true))
        .await
        .expect("answered");
    assert!(v.wait_connected(WAIT).await);
    v.bye().await;
    let log = agent.log().clone();
    agent.shutdown().await;
    log.text().contains(needle)
}

const TURN_SECRET: &str = "coturn-static-auth-secret-5b2e7d";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_turn_credentials_relay_video_and_expire() {
    assert_private_netns();
    let turn = Coturn::start(Auth::Secret(TURN_SECRET));
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("turn.key");
    std::fs::write(&key, format!("{TURN_SECRET}\n")).expect("write the secret");
    let cfg = TestConfig::new("turn-minted")
        .with(
            "webrtc.ice_servers",
            inline(&format!(r#"[{{ urls = ["{}"] }}]"#, turn.url())),
        )
        .with("webrtc.turn_secret_file", key.display().to_string())
        .with("webrtc.turn_credential_ttl", "10m")
        .with("webrtc.disconnected_timeout_ms", 1000)
        .with_env("RTCAM_LOG", "debug");
    let agent = start(&cfg).await;
    let base = agent.stats().await;

    // What a browser is given: a credential minted for this page load.
    let before = unix_now();
    let (status, body) = http_get(agent.http_addr(), "/config.json").await;
    assert_eq!(status, 200);
    assert!(!body.contains(TURN_SECRET), "the secret itself: {body}");
    let c: Value = serde_json::from_str(&body).expect("JSON");
    let server = &c["ice_servers"][0];
    let username = server["username"].as_str().expect("a minted user name");
    let credential = server["credential"].as_str().expect("a minted credential");
    let expires = rtcam_proto::turn::expiry_of(username).expect("<expiry>:<id>");
    assert!(
        (before + 600..=unix_now() + 600).contains(&expires),
        "valid for turn_credential_ttl = 10m: {username}"
    );
    assert_eq!(c["ice_expires"], Value::from(expires));
    let id = username.split_once(':').expect("<expiry>:<id>").1;
    assert_eq!(
        rtcam_proto::turn::mint(TURN_SECRET.as_bytes(), expires, id).credential,
        credential,
        "base64(HMAC-SHA1(secret, username))"
    );
    let (_, again) = http_get(agent.http_addr(), "/config.json").await;
    assert!(!again.contains(username), "each page load gets its own");

    // A viewer that can only relay, with the page's credential.
    let relayed = |user: &str, cred: &str, cid: &str| {
        let mut opts = viewer_options(agent.settings(), cid, true);
        opts.peer.relay_only = true;
        opts.peer.turn_secret = None;
        opts.peer.ice_servers = vec![IceServer {
            urls: vec![turn.url()],
            username: Some(user.into()),
            credential: Some(cred.into()),
        }];
        opts
    };
    let mut v = Viewer::connect(&relayed(username, credential, "minted-viewer"))
        .await
        .expect("the offer is answered");
    assert!(
        v.wait_connected(WAIT).await,
        "ICE through coturn with the minted credential:\n{}",
        turn.log_text()
    );
    frames(&mut v, 30).await;
    let stats = v.stats().await;
    assert_eq!(stats.selected_local, Some(CandidateKind::Relay));
    let allocated = turn
        .wait_log_line(&["ALLOCATE", "success", &format!("<{username}>")])
        .await;
    eprintln!("coturn: {allocated}");
    // The agent's own ICE agent allocated with a credential of its own.
    let own = turn
        .wait_log_line(&["ALLOCATE", "success", ":rtcam-agent-"])
        .await;
    eprintln!("coturn: {own}");
    v.bye().await;
    agent.wait_idle(&base).await;

    // An expired credential (rightly computed from the secret) is refused.
    let past = unix_now() - 60;
    let stale = rtcam_proto::turn::mint(TURN_SECRET.as_bytes(), past, "rtcam-page-stale");
    let mut late = Viewer::connect(&relayed(&stale.username, &stale.credential, "stale-viewer"))
        .await
        .expect("the offer is answered");
    let refused = turn
        .wait_log_line(&[&format!("<{}>", stale.username), "401"])
        .await;
    eprintln!("coturn: {refused}");
    assert!(
        !late.wait_connected(Duration::from_secs(3)).await,
        "no relay, no connection"
    );
    assert!(
        !turn.log_text().lines().any(|l| l.contains(&stale.username)
            && l.contains("ALLOCATE")
            && l.contains("success")),
        "coturn granted nothing to the expired name"
    );
    late.bye().await;
    let log = agent.log().clone();
    agent.shutdown().await;
    assert!(
        !log.text().contains(TURN_SECRET),
        "the agent's debug log holds the TURN secret"
    );
}

// ---------------------------------------------------------- finding 13: logs

/// A viewer that asks again (after 4 s without an answer) for up to 20 s,
/// connected.
async fn admitted_during_flood(s: &rtcam::config::Settings, id: &str) -> Viewer {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut opts = viewer_options(s, id, true);
        opts.timeout = Duration::from_secs(4);
        match Viewer::connect(&opts).await {
            Ok(mut v) => {
                assert!(v.wait_connected(WAIT).await, "{id} connects");
                return v;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{id}'s offer is answered while the log is blocked: {e}"
                );
                eprintln!("{id}: {e}; asking again");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_output_nobody_reads_never_blocks_signaling() {
    assert_private_netns();
    // Debug level: every refused signaling message is a line.
    let cfg = TestConfig::new("log-blocked")
        .with_env("RTCAM_LOG", "debug")
        .with_log_gate();
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let gate = agent.log_gate().clone();
    let raw = Raw::connect(&s).await;
    gate.pause();
    // Malformed offers until the pipe is full, then as many again as the
    // agent's queue holds lines.
    let mut sent = 0usize;
    let deadline = Instant::now() + WAIT;
    while !gate.is_full() {
        assert!(
            Instant::now() < deadline,
            "the log pipe fills ({} of {} bytes after {sent} messages)",
            gate.queued(),
            gate.capacity()
        );
        for _ in 0..200 {
            raw.send_flood(
                "offer",
                &format!("junk-{sent}"),
                Bytes::from_static(b"{not json"),
            )
            .await;
            sent += 1;
        }
    }
    let full_after = sent;
    // Then more, until the agent has had to drop lines: its queue is full too.
    while agent.stats().await.log_lines_dropped == 0 {
        assert!(
            Instant::now() < deadline + WAIT,
            "the agent drops log lines ({sent} messages sent)"
        );
        for _ in 0..500 {
            raw.send_flood(
                "offer",
                &format!("junk-{sent}"),
                Bytes::from_static(b"{not json"),
            )
            .await;
            sent += 1;
        }
    }
    eprintln!(
        "log pipe full ({} of {} bytes) after {full_after} messages; lines dropped after {sent}",
        gate.queued(),
        gate.capacity(),
    );
    // Signaling goes on: a new viewer is answered and streams. (The
    // embedded broker may drop an offer sent while the flood still reaches
    // the agent, as a viewer behind a flood sees it: it asks again.)
    let mut v = admitted_during_flood(&s, "log-viewer").await;
    frames(&mut v, 30).await;
    let st = agent
        .wait_stats("log lines dropped", |st| st.log_lines_dropped > 0)
        .await;
    assert!(gate.is_full(), "nothing was read from the log meanwhile");
    eprintln!("{} log lines dropped while blocked", st.log_lines_dropped);
    // Once the pipe drains, the count is reported.
    let mark = agent.log().len();
    gate.resume();
    let line = agent
        .log()
        .wait_line_after("the dropped lines reported", mark, WAIT, |l| {
            l.contains("log lines dropped")
        })
        .await;
    eprintln!("{line}");
    let reported: u64 = line
        .split("dropped=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the line has the count: {line}"));
    assert!(reported > 0 && reported <= agent.stats().await.log_lines_dropped);
    frames(&mut v, 5).await;
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_gpio_commands_is_logged_a_few_times() {
    assert_private_netns();
    let cfg = TestConfig::new("log-gpio").with("gpio.mqtt", true);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let p = s.mqtt.topic_prefix.clone();
    let state = format!("{p}/gpio/relay1/state");
    let mut watch = Watch::start(&s, "gpio-watch", &state).await;
    let raw = Raw::connect(&s).await;
    const FLOOD: usize = 500;
    for _ in 0..FLOOD {
        raw.send_flood("gpio", "relay1/set", Bytes::from_static(b"sideways"))
            .await;
    }
    // The bridge handles its commands in order: once a good one takes
    // effect, the flood before it was handled (or dropped as backlog).
    let deadline = Instant::now() + WAIT;
    loop {
        raw.send("gpio", "relay1/set", "ON");
        if tokio::time::timeout(
            Duration::from_secs(1),
            watch.wait_for("ON", &state, |p| p == b"ON"),
        )
        .await
        .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "relay1 goes ON");
    }
    let logged = agent
        .log()
        .count(|l| l.contains("GPIO command over MQTT rejected"));
    eprintln!("{FLOOD} refused …/set commands: {logged} log lines");
    assert!(
        (1..=5).contains(&logged),
        "{logged} lines for {FLOOD} refusals:\n{}",
        agent.log().tail(20)
    );
    agent.shutdown().await;
}
