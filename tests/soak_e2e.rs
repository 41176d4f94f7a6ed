//! Soak: many viewers connect, stream a few frames and leave, against one
//! agent (embedded broker, 320x240@15 test pattern). Viewers
//! leave three ways, in turn: with a `bye` (half of them), by closing their
//! peer connection without a bye (DTLS close_notify), or by vanishing
//! outright (a viewer process killed with SIGKILL: no bye, no DTLS close, no
//! MQTT disconnect; the agent must notice by itself). They come in rounds of
//! 20 at once, each round ending when the agent has ended every session.
//! (The vanished viewers' sessions end on the ICE consent timeout, about
//! 6 s: most of the soak's wall time.)
//! Afterwards sessions, hub subscribers and tasks are back to zero, open
//! file descriptors back to their count before the first cycle, and RSS
//! within 5 MB of its value after the first 20 cycles.
//!
//! The agent is the `rtcam` binary started from a config file, in the
//! environment the systemd unit gives it, seen through `/stats.json` and
//! `/proc/<pid>`. Its RSS is read as is: the agent gives freed memory back
//! to the kernel when its last session ends (glibc's `malloc_trim`).
//!
//! `RTCAM_SOAK_CYCLES` sets the number of cycles (default 300; rounds are
//! 1/15 of them when that is under 20). Runs inside a private network
//! namespace (see `.ci/test`).

mod common;

use common::agent::{AgentProcess, TestConfig};
use common::memory::{as_service, open_fds, rss_anon_kb, rss_kb, threads};
use common::{assert_private_netns, viewer_options};
use rtcam::agent::AgentStats;
use rtcam::config::{Layers, Settings};
use rtcam::probe::Viewer;
use std::path::Path;
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
/// Set in a viewer process started by the soak: its client id.
const CHILD_ENV: &str = "RTCAM_SOAK_CHILD";
/// Set in a viewer process started by the soak: the agent's config file.
const CHILD_CONFIG_ENV: &str = "RTCAM_SOAK_CHILD_CONFIG";
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

fn soak_config(prefix: &str) -> TestConfig {
    // The allocator tuned as the systemd unit tunes it, so the figures are
    // a deployed camera's.
    as_service(TestConfig::new(prefix))
        .with("video.width", 320)
        .with("video.height", 240)
        .with("video.fps", 15)
        .with("video.bitrate_kbps", 300)
        // A whole round connects at once.
        .with("webrtc.max_viewers", 64)
        .with("webrtc.max_negotiating", 64)
        // The configuration's minimum: a vanished viewer's session ends 1 s
        // after ICE reports it disconnected (5 s without traffic).
        .with("webrtc.disconnected_timeout_ms", 1000)
        // A round's 20 viewers negotiate at once on a small shared machine.
        .with("webrtc.negotiation_timeout_ms", 5000)
        // Warnings show in a failure's output: a broker that drops messages
        // for a lagging subscriber says so ("… less than head, jumping to
        // head"). Its other targets log every ordinary disconnect as an
        // error, and stay off as by default.
        .with_env("RTCAM_LOG", "info,rumqttd=off,rumqttd::segments=warn")
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
async fn cycle(s: &Settings, config: &Path, i: usize) {
    // A new client id each time, as the web page makes one per page load.
    let who = format!("soak-{i}");
    match leave_for(i) {
        Leave::Vanish => vanishing_viewer(config, &who).await,
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
async fn vanishing_viewer(config: &Path, who: &str) {
    // /proc/self/exe rather than the binary's path: a build running
    // meanwhile (cargo replaces test binaries in place) would leave that
    // path pointing at a new file or at none.
    let mut child = tokio::process::Command::new("/proc/self/exe")
        .args([
            "--exact",
            "soak_child_viewer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, who)
        .env(CHILD_CONFIG_ENV, config)
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
    let Ok(who) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config = std::env::var_os(CHILD_CONFIG_ENV).expect("the agent's config file");
    assert_private_netns();
    // The viewer's side of the agent's settings (broker, topics, ICE), from
    // its config file.
    let s = rtcam::config::load(&Layers {
        file: Some(Path::new(&config)),
        env: Vec::new(),
        flags: Vec::new(),
    })
    .expect("the agent's config loads")
    .settings;
    let mut v = connect(&s, &who).await;
    take_frames(&mut v, &who).await;
    println!("{CHILD_READY}");
    // Stream on until killed (or until the soak's end of the pipe closes).
    let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
    v.close().await;
}

/// Tasks alive in the test's own runtime (the viewers' WebRTC stacks).
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The test process's own open descriptors (the viewers' sockets).
fn own_fds() -> usize {
    open_fds(std::process::id())
}

/// Polls a figure that has no event to wait on (runtime tasks, descriptors
/// closed after their clients left), bounded by [`SLOW`].
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

/// Waits until every session has ended and freed what it held, in the
/// agent (its tracked tasks and its runtime's) and on the viewers' side.
async fn quiesce(agent: &AgentProcess, idle: &AgentStats, idle_tasks: usize) {
    let st = agent
        .wait_stats_within(
            SLOW,
            "sessions, hub subscriptions and the agent's tasks back to idle",
            |st| st.sessions == 0 && st.subscribers == 0 && st.holds == 0 && st.tasks == idle.tasks,
        )
        .await;
    assert_eq!((st.negotiating, st.connected), (0, 0), "{st:?}");
    agent
        .wait_stats_within(
            SLOW,
            "the agent's runtime tasks (the WebRTC stack's included) back to idle",
            |st| st.runtime_tasks <= idle.runtime_tasks,
        )
        .await;
    assert!(
        eventually("the viewers' runtime tasks to return to idle", || {
            alive_tasks() <= idle_tasks
        })
        .await,
        "the test's runtime tasks: {} alive, {idle_tasks} when idle",
        alive_tasks()
    );
}

/// `RTCAM_SOAK_CYCLES` (default 300), and the round size: 20 cycles (1/15
/// of them when fewer). The RSS baseline is taken after the first round.
fn cycles_and_rounds() -> (usize, usize) {
    let cycles: usize = std::env::var("RTCAM_SOAK_CYCLES")
        .ok()
        .map(|v| v.parse().expect("RTCAM_SOAK_CYCLES is a number"))
        .unwrap_or(300);
    assert!(cycles > 0, "at least one cycle");
    (cycles, (cycles / 15).clamp(1, 20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_lets_viewers_come_and_go_without_leaking() {
    let (cycles, round_size) = cycles_and_rounds();
    let agent = AgentProcess::start(&soak_config("soak")).await;
    let s = agent.settings().clone();
    let config = agent.config_path().to_path_buf();
    let pid = agent.pid();
    let idle = agent.stats().await;
    let idle_tasks = alive_tasks();
    let fds_before = open_fds(pid);
    let own_fds_before = own_fds();
    let rss_start = rss_kb(pid);
    let anon_start = rss_anon_kb(pid);
    let threads_start = threads(pid);
    let started = Instant::now();
    let mut rss_rounds = Vec::new();
    let mut anon_rounds = Vec::new();
    let mut done = 0;
    while done < cycles {
        let round = done..(done + round_size).min(cycles);
        done = round.end;
        futures::future::join_all(round.map(|i| cycle(&s, &config, i))).await;
        // A round ends when the agent has ended every session, the vanished
        // viewers' too: each round starts from rest and reaches the same
        // number of sessions, so RSS after any round compares with the first.
        quiesce(&agent, &idle, idle_tasks).await;
        rss_rounds.push(rss_kb(pid));
        anon_rounds.push(rss_anon_kb(pid));
    }
    let elapsed = started.elapsed();
    // The broker closes its end of each viewer's MQTT connection on its own time.
    eventually("the agent's descriptors to return to the baseline", || {
        open_fds(pid) <= fds_before
    })
    .await;
    eventually("the viewers' descriptors to return to the baseline", || {
        own_fds() <= own_fds_before
    })
    .await;
    let fds_after = open_fds(pid);
    let own_fds_after = own_fds();
    let rss_end = rss_kb(pid);
    let threads_end = threads(pid);
    let rss_warm = rss_rounds[0];
    let warm_cycles = round_size.min(cycles);
    let after = agent.stats().await;
    let count = |kind| (0..cycles).filter(|&i| leave_for(i) == kind).count();
    println!(
        "soak: {cycles} cycles ({} bye, {} close without bye, {} vanished) in rounds of {round_size}, \
         {:.1} s; agent RSS {rss_start} kB at start, {rss_warm} kB after {warm_cycles} cycles, {rss_end} kB \
         at the end ({:+} kB); agent fds {fds_before} before, {fds_after} after; the test's fds \
         {own_fds_before} before, {own_fds_after} after; agent threads {threads_start} before, \
         {threads_end} after; agent tasks {} idle, {} after; agent runtime tasks {} idle, {} after; \
         the test's runtime tasks {idle_tasks} idle, {} after; frames encoded {}",
        count(Leave::Bye),
        count(Leave::Close),
        count(Leave::Vanish),
        elapsed.as_secs_f64(),
        rss_end as i64 - rss_warm as i64,
        idle.tasks,
        after.tasks,
        idle.runtime_tasks,
        after.runtime_tasks,
        alive_tasks(),
        after.frames,
    );
    println!("soak: agent RSS after each round (kB): {rss_rounds:?}");
    println!(
        "soak: agent anonymous RSS (kB) at start {anon_start}, after each round: {anon_rounds:?}"
    );
    let warnings = agent
        .log()
        .count(|l| l.contains(" WARN ") || l.contains(" ERROR "));
    println!("soak: {warnings} WARN or ERROR lines in the agent's log");
    assert!(
        fds_after <= fds_before,
        "the agent's open descriptors back to the baseline ({fds_after} now, {fds_before} before)"
    );
    assert!(
        own_fds_after <= own_fds_before,
        "the viewers' descriptors back to the baseline ({own_fds_after} now, {own_fds_before} before)"
    );
    assert!(
        rss_end <= rss_warm + RSS_SLACK_KB,
        "the agent's RSS within 5 MB of its value after {warm_cycles} cycles ({rss_end} kB now, {rss_warm} kB then)"
    );
    agent.shutdown().await;
}

// The in-process soak, kept for its RSS bound until the agent process can
// be held to it (see the file's documentation).
