//! Video through a TURN relay: a real coturn on loopback, the viewer forced
//! to relay-only ICE, the agent reachable on its loopback host candidate.
//! The only path the viewer has is its allocation on coturn, so every frame
//! it decodes crossed the relay; the test also reads that from the viewer's
//! selected candidate pair and from coturn's own accounting.
//! The agent is the `rtcam` binary started from a config file; what it did
//! is read from `/stats.json`.
//! Runs inside a private network namespace (see `.ci/test`); needs
//! `turnserver` (Debian package `coturn`, installed by `.ci/setup`).

mod common;

use common::agent::{TestConfig, start};
use common::coturn::{Auth, Coturn};
use common::{WAIT, assert_private_netns, frames, viewer_options};
use rtcam::config::settings::IceServer;
use rtcam::peer::CandidateKind;
use rtcam::probe::Viewer;
use std::time::{Duration, Instant};

const TURN_USER: &str = "rtcam";
const TURN_PASSWORD: &str = "relay-secret";

/// `key=value` (a number) from a coturn usage line.
fn usage(line: &str, key: &str) -> u64 {
    line.split([' ', ','])
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Tasks alive in the test's own runtime (the viewer's WebRTC stack).
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_flows_through_a_turn_relay() {
    assert_private_netns();
    let turn = Coturn::start(Auth::User {
        name: TURN_USER,
        password: TURN_PASSWORD,
    });
    // The agent keeps its plain loopback host candidate: the relay is the
    // viewer's only way in, as for a viewer behind a NAT that allows nothing else.
    let cfg = TestConfig::new("turn").with("webrtc.disconnected_timeout_ms", 1000);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    let base_tasks = alive_tasks();

    let mut opts = viewer_options(&s, "turn-viewer", true);
    opts.peer.relay_only = true;
    opts.peer.ice_servers = vec![IceServer {
        urls: vec![turn.url()],
        username: Some(TURN_USER.into()),
        credential: Some(TURN_PASSWORD.into()),
    }];
    let offered = Instant::now();
    let mut v = Viewer::connect(&opts)
        .await
        .expect("the viewer's offer is answered");
    assert!(
        v.wait_connected(WAIT).await,
        "ICE (through the relay) and DTLS complete:\n{}",
        turn.log_text()
    );
    let connected_after = offered.elapsed();
    // coturn granted the viewer an allocation.
    turn.wait_log_line(&["ALLOCATE", "success"]).await;

    // 30 decoded frames, starting at a keyframe, block codes strictly increasing.
    let run = frames(&mut v, 30).await;
    assert!(run.first_keyframe, "decoding starts at a keyframe");
    assert_eq!(run.seqs.len(), 30, "every picture carries its block code");
    assert!(run.in_order(), "frames arrive in order: {:?}", run.seqs);
    let during = agent.stats().await;
    assert_eq!(
        (during.sessions, during.connected, during.subscribers),
        (1, 1, 1),
        "one streaming session"
    );
    // Not asserted to be zero: webrtc 0.21.1 drops the RTP packets that
    // arrive through TURN in the same batch as the one opening the remote
    // track (its driver drains media from relayed reads before it handles the
    // track event), so the stream's first keyframe (or its SPS/PPS) is lost
    // and the probe, which sends no PLI on its own, decodes from the next
    // periodic keyframe.
    let decode_errors = v.decode_errors();

    // The pair ICE selected: the viewer's side is its relay candidate.
    let stats = v.stats().await;
    eprintln!(
        "viewer: connected {connected_after:?} after its offer, 30 frames decoded \
         ({} lost in between, {decode_errors} access units undecodable before the first keyframe), \
         {stats:?}",
        run.missing()
    );
    assert_eq!(
        stats.selected_local,
        Some(CandidateKind::Relay),
        "the viewer sends and receives through coturn"
    );
    assert_eq!(
        stats.selected_remote,
        Some(CandidateKind::Host),
        "to the agent's loopback host candidate"
    );
    assert!(stats.bytes_received > 0);

    // Leaving releases the allocation; coturn then reports what it relayed.
    v.bye().await;
    // Sessions, hub subscriptions and demand holds released, and the
    // agent's task count back to its baseline (waited for: a session's
    // tasks end shortly after the session does).
    agent.wait_idle(&base).await;
    agent
        .wait_stats(
            "the agent's runtime tasks (the WebRTC stack's included) back to the baseline",
            |st| st.runtime_tasks <= base.runtime_tasks,
        )
        .await;
    turn.wait_log_line(&["closed", &format!("user <{TURN_USER}>")])
        .await;
    let log = turn.log_text();
    let peer_usage = log
        .lines()
        .rfind(|l| l.contains("peer usage") && l.contains(&format!("username=<{TURN_USER}>")))
        .expect("coturn reports the allocation's peer traffic when it closes");
    eprintln!("coturn: {peer_usage}");
    // rb: bytes the relay received from its peer (the agent) for the viewer.
    let relayed = usage(peer_usage, "rb");
    assert!(
        relayed >= stats.bytes_received,
        "coturn relayed the video ({relayed} bytes from the agent; the viewer got {} RTP bytes)",
        stats.bytes_received
    );
    // The viewer's side (this process) let go of its tasks too.
    let deadline = Instant::now() + WAIT;
    while alive_tasks() > base_tasks {
        assert!(
            Instant::now() < deadline,
            "the viewer's runtime tasks return to the baseline: {} alive, {base_tasks} before",
            alive_tasks()
        );
        // The runtime's task count has no event to wait on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.shutdown().await;
}
