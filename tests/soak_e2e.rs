//! Soak: many viewers connect, stream a few frames and leave, against one
//! in-process agent (embedded broker, 320x240@15 test pattern). Viewers
//! leave three ways, in turn: with a `bye` (half of them), by closing their
//! peer connection without a bye (DTLS close_notify), or by vanishing
//! outright (a viewer process killed with SIGKILL: no bye, no DTLS close, no
//! MQTT disconnect; the agent must notice by itself). They come in rounds of
//! 20 at once, each round ending when the agent has ended every session.
//! (webrtc 0.21.1 keeps a connection `connected` after the peer's
//! close_notify, as the W3C rules say, so the agent ends those sessions on
//! the ICE consent timeout too: about 6 s, most of the soak's wall time.)
//! Afterwards sessions, hub subscribers and tasks are back to zero, open
//! file descriptors back to their count before the first cycle, and RSS at
//! rest within 5 MB of its value after the first 20 cycles.
//!
//! `RTCAM_SOAK_CYCLES` sets the number of cycles (default 300; rounds are
//! 1/15 of them when that is under 20). Runs inside a private network
//! namespace (see `.ci/test`).

mod common;

use common::memory::{heap_in_use_kb, pin_allocator_thresholds, rss_at_rest_kb};
use common::{assert_private_netns, settings, start, viewer_options};
use rtcam::agent::{Agent, AgentStats};
use rtcam::config::Settings;
use rtcam::probe::Viewer;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Frames each viewer decodes before leaving.
const FRAMES: usize = 3;
/// Upper bound on any wait: a round's 20 viewers start at once, and CI runs
/// fewer cycles under emulation, many times slower.
const SLOW: Duration = Duration::from_secs(120);
/// The allowed RSS growth after the warm-up cycles.
const RSS_SLACK_KB: u64 = 5 * 1024;
/// Set in a viewer process started by the soak: "port prefix client-id".
const CHILD_ENV: &str = "RTCAM_SOAK_CHILD";
/// What a viewer process prints once it has decoded its frames.
const CHILD_READY: &str = "rtcam-soak-viewer-ready";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    /// `bye` over MQTT, then close.
    Bye,
    /// Close the peer connection (DTLS close_notify) without a bye.
    Close,
    /// The viewer's process is killed: nothing more is sent at all.
    Vanish,
}

fn leave_for(cycle: usize) -> Leave {
    match cycle % 4 {
        0 | 2 => Leave::Bye,
        1 => Leave::Close,
        _ => Leave::Vanish,
    }
}

fn soak_settings(prefix: &str) -> Settings {
    let mut s = settings(prefix);
    s.video.width = 320;
    s.video.height = 240;
    s.video.fps = 15;
    s.video.bitrate_kbps = 300;
    // A whole round connects at once.
    s.webrtc.max_viewers = 64;
    s.webrtc.max_negotiating = 64;
    // No web viewer: axum spawns a task of its own on the server's first
    // poll, which may come after the idle task count is taken.
    s.http.listen = None;
    // The configuration's minimum: a vanished viewer's session ends 1 s
    // after ICE reports it disconnected (5 s without traffic).
    s.webrtc.disconnected_timeout = Duration::from_secs(1);
    // A round's 20 viewers negotiate at once on a small shared machine.
    s.webrtc.negotiation_timeout = Duration::from_secs(5);
    s
}

/// Decodes [`FRAMES`] frames: the first a keyframe, block codes increasing.
async fn take_frames(v: &mut Viewer, who: &str) {
    let first = v.next_frame(SLOW).await.expect("a first frame");
    assert!(first.keyframe, "{who}: decoding starts at a keyframe");
    let mut last = first
        .seq
        .unwrap_or_else(|| panic!("{who}: the block code reads back"));
    for _ in 1..FRAMES {
        let f = v
            .next_frame(SLOW)
            .await
            .unwrap_or_else(|| panic!("{who}: another frame"));
        let seq = f
            .seq
            .unwrap_or_else(|| panic!("{who}: the block code reads back"));
        assert!(seq > last, "{who}: frames in order ({seq} after {last})");
        last = seq;
    }
    assert_eq!(v.decode_errors(), 0, "{who}");
}

/// A viewer that has connected (ICE and DTLS done).
async fn connect(s: &Settings, who: &str) -> Viewer {
    let mut opts = viewer_options(s, who, true);
    opts.timeout = SLOW;
    let mut v = Viewer::connect(&opts)
        .await
        .unwrap_or_else(|e| panic!("{who}: the offer is answered: {e}"));
    assert!(v.wait_connected(SLOW).await, "{who} connects");
    v
}

/// One cycle: a viewer connects, decodes its frames and leaves.
async fn cycle(s: &Settings, i: usize) {
    // A new client id each time, as the web page makes one per page load.
    let who = format!("soak-{i}");
    match leave_for(i) {
        Leave::Vanish => vanishing_viewer(s, &who).await,
        leave => {
            let mut v = connect(s, &who).await;
            take_frames(&mut v, &who).await;
            if leave == Leave::Bye {
                v.bye().await;
            } else {
                v.close().await;
            }
        }
    }
}

/// Runs a viewer in a process of its own (this test binary, running
/// [`soak_child_viewer`]) and kills it once it has decoded its frames.
async fn vanishing_viewer(s: &Settings, who: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "soak_child_viewer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{} {} {who}",
                s.broker.v5_listen.port(),
                s.mqtt.topic_prefix
            ),
        )
        // Its stdin is a pipe this side holds: if the soak dies, the viewer ends too.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the viewer process starts");
    let out = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    loop {
        match tokio::time::timeout(SLOW, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.trim() == CHILD_READY => break,
            Ok(Ok(Some(_))) => {}
            other => panic!(
                "{who}: the viewer process did not stream ({other:?}, exit {:?})",
                child.try_wait()
            ),
        }
    }
    // SIGKILL: its sockets simply close, without a bye or a DTLS close_notify.
    child.kill().await.expect("the viewer process is killed");
}

/// The viewer process of a vanishing cycle (a no-op unless the soak started it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process of the soak test, started by it"]
async fn soak_child_viewer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(' ');
    let (Some(port), Some(prefix), Some(who)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad {CHILD_ENV}: {spec:?}");
    };
    assert_private_netns();
    let mut s = settings("child");
    s.broker.v5_listen = SocketAddr::from(([127, 0, 0, 1], port.parse().expect("a port")));
    s.mqtt.topic_prefix = prefix.to_string();
    let mut v = connect(&s, who).await;
    take_frames(&mut v, who).await;
    println!("{CHILD_READY}");
    // Stream on until killed (or until the soak's end of the pipe closes).
    let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
    v.close().await;
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd is readable on Linux")
        .count()
}

/// Polls a figure that has no event to wait on (runtime tasks, descriptors
/// the broker closes after its clients left), bounded.
async fn eventually(what: &str, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + SLOW;
    while !cond() {
        if Instant::now() >= deadline {
            eprintln!("timed out waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Waits until every session has ended and freed what it held.
async fn quiesce(agent: &Agent, idle: &AgentStats, idle_tasks: usize) {
    assert!(
        agent
            .wait_sessions(SLOW, |c| c.sessions == 0 && c.tasks == 0)
            .await,
        "sessions end: {:?}",
        agent.stats()
    );
    assert!(
        eventually("the agent's tasks to return to idle", || agent
            .stats()
            .tasks
            == idle.tasks)
        .await,
        "agent tasks back to idle: {:?}",
        agent.stats()
    );
    let st = agent.stats();
    assert_eq!(
        (st.sessions, st.subscribers, st.holds),
        (0, 0, 0),
        "hub subscriptions released"
    );
    assert!(
        eventually("the runtime's tasks to return to idle", || alive_tasks()
            <= idle_tasks)
        .await,
        "runtime tasks: {} alive, {idle_tasks} when idle",
        alive_tasks()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_come_and_go_without_leaking() {
    let cycles: usize = std::env::var("RTCAM_SOAK_CYCLES")
        .ok()
        .map(|v| v.parse().expect("RTCAM_SOAK_CYCLES is a number"))
        .unwrap_or(300);
    assert!(cycles > 0, "at least one cycle");
    // Rounds of 20 cycles (1/15 of them when fewer): the RSS baseline is
    // taken after the first round.
    let round_size = (cycles / 15).clamp(1, 20);
    pin_allocator_thresholds();
    // Warnings show in a failure's output: a broker that drops messages
    // for a lagging subscriber says so ("… less than head, jumping to
    // head"). Its other targets log every ordinary disconnect as an error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("rumqttd::segments=warn,rtcam=warn")
        .try_init();
    let s = soak_settings("soak");
    let agent = start(s.clone()).await;
    let idle = agent.stats();
    let idle_tasks = alive_tasks();
    let fds_before = open_fds();
    let rss_start = rss_at_rest_kb();
    let heap_start = heap_in_use_kb();
    let started = Instant::now();
    let mut rss_rounds = Vec::new();
    let mut heap_rounds = Vec::new();
    let mut done = 0;
    while done < cycles {
        let round = done..(done + round_size).min(cycles);
        done = round.end;
        futures::future::join_all(round.map(|i| cycle(&s, i))).await;
        // A round ends when the agent has ended every session, the vanished
        // viewers' too: each round starts from rest and reaches the same
        // number of sessions, so RSS after any round compares with the first.
        quiesce(&agent, &idle, idle_tasks).await;
        rss_rounds.push(rss_at_rest_kb());
        heap_rounds.extend(heap_in_use_kb());
    }
    let elapsed = started.elapsed();
    // The broker closes its end of each viewer's MQTT connection on its own time.
    eventually("descriptors to return to the baseline", || {
        open_fds() <= fds_before
    })
    .await;
    let fds_after = open_fds();
    let rss_end = rss_at_rest_kb();
    let rss_warm = rss_rounds[0];
    let warm_cycles = round_size.min(cycles);
    let after = agent.stats();
    let count = |kind| (0..cycles).filter(|&i| leave_for(i) == kind).count();
    println!(
        "soak: {cycles} cycles ({} bye, {} close without bye, {} vanished) in rounds of {round_size}, \
         {:.1} s; RSS {rss_start} kB at start, {rss_warm} kB after {warm_cycles} cycles, {rss_end} kB \
         at the end ({:+} kB); fds {fds_before} before, {fds_after} after; agent tasks {} idle, {} \
         after; runtime tasks {idle_tasks} idle, {} after; frames encoded {}",
        count(Leave::Bye),
        count(Leave::Close),
        count(Leave::Vanish),
        elapsed.as_secs_f64(),
        rss_end as i64 - rss_warm as i64,
        idle.tasks,
        after.tasks,
        alive_tasks(),
        after.frames,
    );
    println!("soak: RSS at rest after each round (kB): {rss_rounds:?}");
    println!("soak: heap in use (kB) at start {heap_start:?}, after each round: {heap_rounds:?}");
    assert!(
        fds_after <= fds_before,
        "open descriptors back to the baseline ({fds_after} now, {fds_before} before)"
    );
    assert!(
        rss_end <= rss_warm + RSS_SLACK_KB,
        "RSS within 5 MB of its value after {warm_cycles} cycles ({rss_end} kB now, {rss_warm} kB then)"
    );
    agent.shutdown().await;
}
