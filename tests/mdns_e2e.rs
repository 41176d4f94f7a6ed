//! mDNS in its default mode (`webrtc.mdns = "query"`), through the binary:
//! where no interface can join the mDNS group (here: a namespace whose `lo`
//! has no multicast route) every viewer still connects and one warning
//! names `webrtc.mdns`; where it can (a multicast route on `lo`), a viewer
//! that hides its address behind a `.local` name, as browsers do, is
//! resolved over mDNS and reached at that address. Both phases change the
//! namespace's routes, so they run in one test, one after the other.
//!
//! The hiding viewer is rtcam's probe in mDNS gather mode, not Chromium:
//! in a namespace holding only `lo` (the test rule), Chromium with its
//! address hiding on gathers no candidate at all (its mDNS responder binds
//! only non-loopback interfaces), so it cannot connect there whatever the
//! camera does.

mod common;

use common::agent::{AgentProcess, TestConfig};
use common::channels::{ChannelViewer, Options};
use common::tap::Tap;
use common::{WAIT, frames, viewer};
use rtcam::config::settings::MdnsMode;
use rtcam::peer::PeerOptions;
use std::net::IpAddr;
use std::process::Command;

/// Adds or removes the multicast route on `lo` (mDNS needs one to join its group).
fn multicast_route(present: bool) {
    let verb = if present { "add" } else { "del" };
    let out = Command::new("ip")
        .args(["route", verb, "224.0.0.0/4", "dev", "lo"])
        .output()
        .expect("ip runs");
    let err = String::from_utf8_lossy(&out.stderr);
    // Already in the wanted state is fine.
    assert!(
        out.status.success() || err.contains("File exists") || err.contains("No such process"),
        "ip route {verb}: {err}"
    );
}

/// Takes the multicast route away again when the test ends, however it ends.
struct RouteGuard;

impl Drop for RouteGuard {
    fn drop(&mut self) {
        multicast_route(false);
    }
}

fn mdns_warnings(agent: &AgentProcess) -> usize {
    agent
        .log()
        .count(|l| l.contains(" WARN ") && l.contains("mDNS is unavailable"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_mdns_mode_never_costs_a_viewer_and_resolves_hidden_addresses_when_it_can() {
    common::assert_private_netns();
    let _guard = RouteGuard;

    // 1. No multicast route: the mDNS socket cannot open.
    multicast_route(false);
    let cfg = TestConfig::new("mdns-off");
    assert!(
        cfg.get("webrtc.mdns").is_none(),
        "the default mode is tested"
    );
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    for id in ["mdns-off-1", "mdns-off-2"] {
        let mut v = viewer(&s, id, true).await;
        let run = frames(&mut v, 10).await;
        assert!(run.first_keyframe, "{id} decodes");
        v.bye().await;
    }
    assert_eq!(mdns_warnings(&agent), 1, "{}", agent.log().text());
    let warning = agent
        .log()
        .text()
        .lines()
        .find(|l| l.contains("mDNS is unavailable"))
        .map(str::to_string)
        .expect("the warning");
    assert!(
        warning.contains("webrtc.mdns"),
        "it names the key: {warning}"
    );
    agent.shutdown().await;

    // 2. With the route, a viewer that hides its address behind a .local
    // name, as browsers do, is resolved and reached at that address.
    multicast_route(true);
    let agent = AgentProcess::start(&TestConfig::new("mdns-on")).await;
    let s = agent.settings().clone();
    let mut peer = PeerOptions::for_viewer(&s.webrtc);
    peer.mdns = MdnsMode::Gather;
    peer.mdns_ip = Some(IpAddr::from([127, 0, 0, 1]));
    // What the viewer publishes is seen on its way to the broker: no other
    // client may read its topics.
    let tap = Tap::start(s.broker.v5_listen).await;
    // The viewer ignores the camera's candidates, so it never starts a
    // check itself: the connection comes up only if the camera reaches the
    // address behind the viewer's .local name.
    let v = ChannelViewer::connect_with(
        &s,
        "mdns-hidden",
        &["control"],
        None,
        Options {
            peer,
            deaf: true,
            broker: Some(tap.url()),
        },
    )
    .await;
    let sent = tap.wait_sent("a .local candidate", b".local").await;
    let at = sent
        .windows(6)
        .position(|w| w == b".local")
        .expect("found above");
    eprintln!(
        "the viewer's candidate: …{}",
        String::from_utf8_lossy(&sent[at.saturating_sub(60)..at + 6])
    );
    let pong = v.command(1, serde_json::json!({"cmd": "ping"})).await;
    assert_eq!(pong["ok"], true, "{pong}");
    let connected = agent
        .log()
        .wait_line("the viewer to connect", WAIT, |l| {
            l.contains("viewer connected")
        })
        .await;
    assert!(
        connected.contains("remote=Some(Host)"),
        "the viewer was reached at the host address its .local name resolved to: {connected}"
    );
    assert_eq!(mdns_warnings(&agent), 0, "{}", agent.log().text());
    v.close().await;
    agent.shutdown().await;
}
