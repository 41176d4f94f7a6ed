//! ICE restarts, end to end: the `rtcam` binary (started from a config
//! file) and viewers speaking the MQTT signaling protocol. A viewer that
//! restarts ICE keeps its session: same secret, same DataChannel, video
//! going on, no second "offer accepted"; bad restarts get their codes and
//! leave the session as it was; and when the media path goes away (every
//! UDP packet dropped by an nftables rule in the test's private network
//! namespace, while MQTT over TCP stays up) the shipped `rtcam probe`
//! brings its video back by an ICE restart of the same session, not a new
//! one; so does the built-in page in headless Chromium. Runs inside a
//! private network namespace (see `.ci/test`).

mod common;

use common::agent::{AgentProcess, TestConfig, start};
use common::browser::{Browser, Candidates};
use common::{WAIT, frames, metric, viewer, viewer_options};
use rtcam::peer::Peer;
use rtcam::probe::Signal;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

/// The cut drops UDP for the whole namespace, so for this binary's other
/// tests too: they hold this for reading, the cut for writing.
static NET: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Lines of the agent's log with all of `needles`.
fn log_count(agent: &AgentProcess, needles: &[&str]) -> usize {
    agent
        .log()
        .since(0)
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_keeps_the_session_its_channel_and_its_video() {
    let _net = NET.read().await;
    let cfg = TestConfig::new("ice-restart");
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let mut v = viewer(&s, "restarter", true).await;
    let before = frames(&mut v, 30).await;
    let pong = v.command(json!({"cmd": "ping"}), WAIT).await.expect("ping");
    assert_eq!(pong["ok"], true, "{pong}");
    let secret = v.session().expect("the answer's secret").to_string();

    v.restart_ice(WAIT)
        .await
        .expect("the camera answers the restart");
    assert!(v.wait_connected(WAIT).await, "connected after the restart");
    let after = frames(&mut v, 60).await;
    assert!(
        after.seqs[0] > *before.seqs.last().expect("frames"),
        "the same stream goes on"
    );
    assert!(after.in_order(), "in order across the restart");
    assert_eq!(v.decode_errors(), 0);
    assert_eq!(v.session(), Some(secret.as_str()), "the same session");
    let pong = v
        .command(json!({"cmd": "ping"}), WAIT)
        .await
        .expect("the DataChannel outlives the restart");
    assert_eq!(pong["ok"], true, "{pong}");
    let st = agent.stats().await;
    assert_eq!((st.sessions, st.connected, st.subscribers), (1, 1, 1));
    assert_eq!(metric(&agent, "rtcam_ice_restarts_total").await, Some(1.0));
    assert_eq!(
        log_count(&agent, &["offer accepted", "client=restarter"]),
        1,
        "no second session"
    );
    assert_eq!(
        log_count(&agent, &["ICE restarted by the viewer", "client=restarter"]),
        1
    );
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_restarts_get_their_codes_and_leave_the_session_alone() {
    let _net = NET.read().await;
    let cfg = TestConfig::new("ice-restart-bad");
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let mut v = viewer(&s, "restart-bad", true).await;
    frames(&mut v, 10).await;
    let secret = v.session().expect("secret").to_string();
    // A real offer from another peer: a well-formed SDP whose DTLS
    // certificate is not the session's.
    let (stranger, other_sdp, _, _) =
        Peer::offer(&viewer_options(&s, "stranger", true).peer, true, None)
            .await
            .expect("an offer");
    stranger.close().await;
    let restart = |sdp: &str, session: Option<&str>| {
        let mut m = json!({"type": "offer", "sdp": sdp, "restart": true});
        if let Some(sess) = session {
            m["session"] = Value::from(sess);
        }
        m.to_string()
    };
    for (payload, code) in [
        (restart(&other_sdp, None), "bad_message"),
        (
            restart(&other_sdp, Some("not-the-secret")),
            "unknown_session",
        ),
        (restart(&other_sdp, Some(&secret)), "bad_sdp"),
    ] {
        assert!(v.signal("offer", payload.clone()), "published");
        match v.next_signal(WAIT).await {
            Some(Signal::Error(got, message)) => {
                assert_eq!(got, code, "{payload}: {message}");
            }
            other => panic!("{payload}: expected {code}, got {other:?}"),
        }
        // The session streams on.
        frames(&mut v, 10).await;
    }
    let st = agent.stats().await;
    assert_eq!((st.sessions, st.connected), (1, 1));
    assert_eq!(metric(&agent, "rtcam_ice_restarts_total").await, Some(0.0));
    v.bye().await;
    agent.shutdown().await;
}

/// Drops every UDP packet in this network namespace (WebRTC's media and
/// ICE checks) while TCP (MQTT) flows; dropped again by [`restore_udp`].
fn cut_udp() {
    nft("add table inet rtcam_cut");
    nft("add chain inet rtcam_cut input { type filter hook input priority 0; }");
    nft("add rule inet rtcam_cut input meta l4proto udp drop");
}

fn restore_udp() {
    nft("delete table inet rtcam_cut");
}

fn nft(args: &str) {
    let out = Command::new("nft")
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| {
            panic!("nft (Debian package nftables, installed by .ci/setup) is needed: {e}")
        });
    assert!(
        out.status.success(),
        "nft {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_restarts_ice_when_the_media_path_goes_away() {
    let _net = NET.write().await;
    let cfg = TestConfig::new("ice-cut");
    let agent = start(&cfg).await;
    let mut probe = common::watching_probe(agent.config_path(), "cut-viewer", 30).await;
    cut_udp();
    // Until the probe notices and restarts ICE (its offer and the answer
    // go over MQTT, which the cut spares): checks over UDP fail meanwhile.
    probe
        .log()
        .wait_line("the probe's ICE restart", Duration::from_secs(20), |l| {
            l.contains("no video: restarting ICE")
        })
        .await;
    restore_udp();
    let (report, log) = common::probe_finished(&mut probe).await;
    eprintln!("probe report: {report}");
    assert!(report["ice_restarts"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["reconnects"].as_u64(), Some(0), "{report}\n{log}");
    assert!(
        report["freezes"].as_u64() >= Some(1),
        "the cut shows: {report}"
    );
    assert_eq!(
        log_count(&agent, &["offer accepted", "client=cut-viewer"]),
        1,
        "one session all along:\n{}",
        agent.log().tail(40)
    );
    assert!(metric(&agent, "rtcam_ice_restarts_total").await >= Some(1.0));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_restarts_ice_when_the_media_path_goes_away() {
    let _net = NET.write().await;
    let agent = start(&TestConfig::new("ice-page")).await;
    let browser = Browser::start(Candidates::PlainIps).await;
    browser
        .client
        .goto(&format!("http://{}/", agent.http_addr()))
        .await
        .expect("the page loads");
    let state = "window.rtcam ? [window.rtcam.link, window.rtcam.iceRestarts, \
                 window.rtcam.stats, document.getElementById('message').textContent] : null";
    let r = browser
        .wait_for(
            "window.rtcam && window.rtcam.link === 'connected' \
             && window.rtcam.stats.framesDecoded >= 10",
            "[window.rtcam.session, window.rtcam.clientId]",
        )
        .await;
    assert_eq!(r["ok"], true, "the page streams: {r}");
    let secret = r["value"][0].as_str().expect("a session").to_string();
    let client = r["value"][1].as_str().expect("a client id").to_string();
    cut_udp();
    // No frame for the page's stall time: it restarts ICE over MQTT.
    let r = browser
        .wait_for(
            "window.rtcam.iceRestarts >= 1 && window.rtcam.link === 'restarting ICE'",
            state,
        )
        .await;
    assert_eq!(r["ok"], true, "the page restarts ICE: {r}");
    let frozen_at = r["value"][2]["framesDecoded"].as_u64().unwrap_or(0);
    restore_udp();
    let r = browser
        .wait_for(
            &format!(
                "window.rtcam.link === 'connected' \
                 && window.rtcam.stats.framesDecoded >= {}",
                frozen_at + 30
            ),
            "[window.rtcam.session, window.rtcam.iceRestarts, window.rtcam.link]",
        )
        .await;
    assert_eq!(
        r["ok"],
        true,
        "video back after the restart: {r}\nagent log:\n{}",
        agent.log().tail(30)
    );
    assert_eq!(r["value"][0], secret.as_str(), "the same session: {r}");
    let client_field = format!("client={client}");
    assert_eq!(
        log_count(&agent, &["offer accepted", &client_field]),
        1,
        "one session all along:\n{}",
        agent.log().tail(40)
    );
    assert!(log_count(&agent, &["ICE restarted by the viewer", &client_field]) >= 1);
    let st = agent.stats().await;
    assert_eq!((st.sessions, st.connected, st.subscribers), (1, 1, 1));
    browser.close().await;
    agent.shutdown().await;
}
