//! Who may watch and control, the limits, and an attack: tokens decide
//! roles, every limit answers with its code, and a flood of bad input over
//! MQTT and the DataChannel never disturbs a streaming viewer or leaks
//! memory. The agent is the `rtcam` binary started from a config file; the
//! pins' levels are read from its log (the simulator logs every electrical
//! change at DEBUG), its memory and descriptors from `/proc/<pid>`.
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use bytes::Bytes;
use common::agent::{AgentProcess, TestConfig, start};
use common::memory::{as_service, open_fds, rss_anon_kb, rss_kb};
use common::process::{all_output, rtcam};
use common::{Raw, Run, WAIT, frames, viewer_options};
use rtcam::auth::{Role, mint};
use rtcam::config::Settings;
use rtcam::probe::{ProbeError, Viewer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// How far above its value before the attack the agent's RSS may stay
/// after it (the soak test's bound too).
const ATTACK_RSS_SLACK_KB: u64 = 5 * 1024;
const VIEW_TOKEN: &str = "view-token-0123456789";
const SECRET: &str = "a-signing-secret-of-32-characters";

/// The simulator's electrical changes at DEBUG, rtcam at INFO, the broker
/// quiet (as by default).
const SIM_LOG: &str = "info,rumqttd=off,rtcam::gpio::sim=debug";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// [`common::SIM_PINS`] on the simulator, the pins' levels logged.
fn gpio_config(prefix: &str) -> TestConfig {
    TestConfig::new(prefix)
        .with("gpio.backend", "sim")
        .with_toml(common::SIM_PINS)
        .with_env("RTCAM_LOG", SIM_LOG)
}

/// [`gpio_config`] with token authentication: one static view token, and
/// [`SECRET`] (written into `dir`) signing expiring tokens.
fn token_config(prefix: &str, dir: &Path) -> TestConfig {
    let secret_file = dir.join("token.key");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("the secret file is written");
    let mut view = toml::Table::new();
    view.insert("token".into(), VIEW_TOKEN.into());
    view.insert("role".into(), "view".into());
    gpio_config(prefix)
        .with("auth.mode", "token")
        .with("auth.secret_file", secret_file.display().to_string())
        .with("auth.tokens", toml::Value::Array(vec![view.into()]))
}

/// Mints a signed token with the agent's own config, as an operator does
/// (`rtcam --config FILE token --role ROLE --ttl 1h`).
async fn mint_cli(agent: &AgentProcess, role: &str) -> String {
    let mut command = rtcam();
    command
        .arg("--config")
        .arg(agent.config_path())
        .args(["token", "--role", role, "--ttl", "1h"]);
    let out = tokio::process::Command::from(command)
        .output()
        .await
        .expect("rtcam token runs");
    assert!(out.status.success(), "rtcam token: {}", all_output(&out));
    let token = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_string();
    assert!(token.starts_with(&format!("rtcam2.{role}.")), "{token}");
    token
}

async fn connect(s: &Settings, client: &str, video: bool, token: Option<&str>) -> Viewer {
    let mut opts = viewer_options(s, client, video);
    opts.token = token.map(str::to_string);
    let mut v = Viewer::connect(&opts).await.expect("the offer is answered");
    assert!(v.wait_connected(WAIT).await, "{client} connects");
    v
}

async fn refused(s: &Settings, client: &str, token: Option<&str>) -> String {
    let mut opts = viewer_options(s, client, false);
    opts.token = token.map(str::to_string);
    match Viewer::connect(&opts).await {
        Err(ProbeError::Refused { code, .. }) => code,
        Err(e) => panic!("{client}: expected a refusal, got {e}"),
        Ok(_) => panic!("{client}: expected a refusal, got an answer"),
    }
}

async fn reply(v: &Viewer, req: Value) -> Value {
    v.command(req.clone(), WAIT).await.expect("a reply")
}

fn code(r: &Value) -> &str {
    r["error"]["code"].as_str().unwrap_or("")
}

/// `n` frames decoded from now on (older ones dropped), in order and after
/// the frame numbered `after`: the stream carries on. A count, not a rate.
async fn still_streaming(v: &mut Viewer, n: usize, after: Option<u32>) -> Run {
    v.drain_frames();
    let run = frames(v, n).await;
    assert_eq!(run.seqs.len(), n, "every picture carries its block code");
    assert!(run.in_order(), "frames in order: {:?}", run.seqs);
    if let (Some(before), Some(first)) = (after, run.seqs.first()) {
        assert!(
            *first > before,
            "new frames ({first}) after the last check's ({before})"
        );
    }
    run
}

/// Lines saying the simulated `pin` went to `level`.
fn level_lines(agent: &AgentProcess, pin: &str, level: &str) -> usize {
    let needle = format!("simulated line {pin}: {level}");
    agent.log().count(|l| l.contains(&needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_may_watch_and_who_may_control() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let agent = start(&token_config("sec-auth", secrets.path())).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;

    // Missing, wrong and expired tokens: unauthorized, and no session.
    assert_eq!(refused(&s, "no-token", None).await, "unauthorized");
    assert_eq!(
        refused(&s, "wrong-token", Some("view-token-0123456780")).await,
        "unauthorized"
    );
    let expired = mint(
        SECRET.as_bytes(),
        Role::Control,
        &s.mqtt.topic_prefix,
        now_unix() - 1,
    );
    assert_eq!(refused(&s, "expired", Some(&expired)).await, "unauthorized");
    let forged = mint(
        b"not the camera's secret at all!!",
        Role::Control,
        &s.mqtt.topic_prefix,
        now_unix() + 60,
    );
    assert_eq!(refused(&s, "forged", Some(&forged)).await, "unauthorized");
    let st = agent.stats().await;
    assert_eq!(
        (st.sessions, st.negotiating),
        (0, 0),
        "refused offers get no session"
    );

    // A view token watches and reads, and may not drive anything.
    let mut watcher = connect(&s, "viewer", true, Some(VIEW_TOKEN)).await;
    still_streaming(&mut watcher, 10, None).await;
    for allowed in [
        json!({"cmd": "ping"}),
        json!({"cmd": "gpio.list"}),
        json!({"cmd": "video.status"}),
    ] {
        let r = reply(&watcher, allowed.clone()).await;
        assert_eq!(r["ok"], true, "{allowed} -> {r}");
    }
    for denied in [
        json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
        json!({"cmd": "video.keyframe"}),
        json!({"cmd": "video.bitrate", "kbps": 500}),
    ] {
        let r = reply(&watcher, denied.clone()).await;
        assert_eq!(code(&r), "not_allowed", "{denied} -> {r}");
    }
    let r = reply(&watcher, json!({"cmd": "gpio.get", "pin": "relay1"})).await;
    assert_eq!(r["result"]["value"], false, "relay1 is still off: {r}");
    assert_eq!(
        level_lines(&agent, "relay1", "high"),
        0,
        "nothing drove relay1"
    );

    // A signed control token (minted by `rtcam token`) may.
    let control = mint_cli(&agent, "control").await;
    let operator = connect(&s, "operator", false, Some(&control)).await;
    let r = reply(
        &operator,
        json!({"cmd": "gpio.set", "pin": "relay1", "value": true}),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    agent
        .log()
        .wait_line("the control session to drive relay1 high", WAIT, |l| {
            l.contains("simulated line relay1: high")
        })
        .await;
    let r = reply(&watcher, json!({"cmd": "gpio.get", "pin": "relay1"})).await;
    assert_eq!(r["result"]["value"], true, "the viewer reads it on: {r}");

    operator.bye().await;
    watcher.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_their_codes_and_spare_the_streaming_viewer() {
    let cfg = gpio_config("sec-limits")
        .with("mqtt.offers_per_minute", 3)
        .with("mqtt.max_payload_bytes", 2048)
        .with("control.max_message_bytes", 256)
        .with("webrtc.early_ice_candidates", 2);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let mut watcher = connect(&s, "steady", true, None).await;
    let before = still_streaming(&mut watcher, 5, None).await;
    let mut raw = Raw::connect(&s).await;

    // Offers per viewer per minute (counted once the offer is read: junk
    // costs its sender a reply, not anyone's budget).
    let junk = json!({"type": "offer", "sdp": "hello"}).to_string();
    for _ in 0..5 {
        assert_eq!(raw.code("offer", "eager", junk.clone()).await, "bad_sdp");
    }
    for _ in 0..3 {
        connect(&s, "eager", false, None).await.bye().await;
        // The next offer reuses the client id: until the agent has handled
        // the bye, that is someone else's live session (client_id_in_use).
        agent
            .wait_stats("eager's session to end", |st| st.sessions == 1)
            .await;
    }
    assert_eq!(refused(&s, "eager", None).await, "rate_limited");
    // Payload size.
    let big = json!({"type": "offer", "sdp": "a".repeat(3000)}).to_string();
    assert_eq!(raw.code("offer", "big", big).await, "too_large");
    // Early ICE candidates per client.
    let cand = |n: u32| {
        json!({"candidate": format!("candidate:{n} 1 udp 1 127.0.0.1 {} typ host", 4000 + n), "sdpMid": "0", "sdpMLineIndex": 0})
            .to_string()
    };
    for n in 0..2 {
        raw.send("ice", "early", cand(n));
    }
    assert_eq!(
        raw.code("ice", "early", cand(2)).await,
        "too_many_candidates"
    );
    // DataChannel message size.
    watcher
        .send_raw(&format!(r#"{{"cmd":"ping","pad":"{}"}}"#, "x".repeat(300)))
        .await
        .expect("sent");
    let r = loop {
        let ev = watcher.next_event(WAIT).await.expect("a reply");
        if ev.get("event").is_none() {
            break ev;
        }
    };
    assert_eq!(code(&r), "bad_json", "{r}");

    still_streaming(&mut watcher, 10, before.seqs.last().copied()).await;
    let st = agent.stats().await;
    assert_eq!(
        (st.sessions, st.connected),
        (1, 1),
        "only the steady viewer has a session"
    );
    watcher.bye().await;
    agent.shutdown().await;
}

/// The DataChannel attack: `rounds` times each kind of bad message; the
/// replies that came back, by code (one per message, each with a code the
/// kind allows).
async fn dc_attack(v: &mut Viewer, rounds: usize) -> BTreeMap<String, usize> {
    let pad = "x".repeat(20 * 1024);
    let kinds: [(String, &[&str]); 5] = [
        ("not json".into(), &["bad_json"]),
        (
            format!(r#"{{"id":"big","cmd":"ping","pad":"{pad}"}}"#),
            &["bad_json"],
        ),
        (
            r#"{"id":"x","cmd":"gpio.fly"}"#.into(),
            &["unknown_cmd", "rate_limited"],
        ),
        // The attacker only has a view token.
        (
            r#"{"id":"x","cmd":"gpio.set","pin":"relay1","value":true}"#.into(),
            &["not_allowed", "rate_limited"],
        ),
        (
            r#"{"id":"x","cmd":"gpio.set","pin":"relay1"}"#.into(),
            &["bad_params", "not_allowed", "rate_limited"],
        ),
    ];
    let mut codes = BTreeMap::<String, usize>::new();
    for _ in 0..rounds {
        for (text, want) in &kinds {
            v.send_raw(text).await.expect("sent");
            let r = loop {
                let ev = v.next_event(WAIT).await.expect("one reply per message");
                if ev.get("event").is_none() {
                    break ev;
                }
            };
            assert_eq!(r["ok"], false, "{text:.60} -> {r}");
            let c = code(&r).to_string();
            assert!(want.contains(&c.as_str()), "{text:.60} -> {r}");
            *codes.entry(c).or_default() += 1;
        }
    }
    codes
}

/// The agent's memory now: (RSS, of which anonymous), in kB.
fn agent_memory(agent: &AgentProcess) -> (u64, u64) {
    (rss_kb(agent.pid()), rss_anon_kb(agent.pid()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attack_gets_error_codes_while_video_flows() {
    let secrets = tempfile::tempdir().expect("temp dir");
    // The allocator tuned as the systemd unit tunes it, so the figures are
    // a deployed camera's.
    let cfg = as_service(token_config("sec-attack", secrets.path()))
        .with("mqtt.offers_per_minute", 5)
        .with_env("RTCAM_LOG", SIM_LOG);
    let agent = start(&cfg).await;
    let s = agent.settings().clone();
    let base = agent.stats().await;
    let mut watcher = connect(&s, "watcher", true, Some(VIEW_TOKEN)).await;
    let mut last_seq = still_streaming(&mut watcher, 5, None)
        .await
        .seqs
        .last()
        .copied();
    let mut attacker = connect(&s, "attacker", false, Some(VIEW_TOKEN)).await;
    let mut raw = Raw::connect(&s).await;
    // Warm up every path once, then take the baseline.
    dc_attack(&mut attacker, 1).await;
    assert_eq!(
        raw.code("offer", "warm", Bytes::from_static(b"{")).await,
        "bad_json"
    );
    let (rss_before, anon_before) = agent_memory(&agent);
    let fds_before = open_fds(agent.pid());

    let wrong = json!({
        "type": "offer",
        "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\na=fingerprint:sha-256 AA\r\n\
                m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
        "auth": {"token_id": "s.0000000000000000", "ts": 0, "proof": "AAAA"},
    })
    .to_string();
    let oversized = Bytes::from(vec![b'{'; 70 * 1024]);
    // What came back: MQTT error replies by code, DataChannel replies by code.
    let mut mqtt_codes = BTreeMap::<String, usize>::new();
    let mut dc_codes = BTreeMap::<String, usize>::new();
    let mut frames_seen = 0usize;
    // Five rounds make a few thousand messages; emulated CI runs (.ci/cross) use fewer.
    let rounds: usize = std::env::var("RTCAM_ATTACK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    assert!(rounds > 0, "RTCAM_ATTACK_ROUNDS is at least 1");
    for round in 0..rounds {
        for i in 0..100 {
            let id = format!("a{round}-{i}");
            let cases: [(&str, Bytes, &str); 4] = [
                ("offer", Bytes::from_static(b"{not json"), "bad_json"),
                ("offer", oversized.clone(), "too_large"),
                ("offer", Bytes::from(wrong.clone()), "unauthorized"),
                (
                    "ice",
                    Bytes::from_static(br#"{"candidate":"nope"}"#),
                    "bad_candidate",
                ),
            ];
            for (kind, payload, want) in cases {
                let got = raw
                    .code(kind, &format!("{id}-{kind}-{want}"), payload)
                    .await;
                assert_eq!(got, want, "{kind} {want}");
                *mqtt_codes.entry(got).or_default() += 1;
            }
        }
        // One client id offering bad proofs over and over: each is
        // refused on its own (checking a proof is cheap), and none counts
        // against any viewer's offer budget, so nobody is locked out.
        for k in 0..10 {
            let got = raw
                .code("offer", &format!("buster{round}"), wrong.clone())
                .await;
            assert_eq!(got, "unauthorized", "offer {k} of buster{round}");
            *mqtt_codes.entry(got).or_default() += 1;
        }
        for (c, k) in dc_attack(&mut attacker, 40).await {
            *dc_codes.entry(c).or_default() += k;
        }
        // The streaming viewer keeps decoding new frames, round after round.
        let run = still_streaming(&mut watcher, 5, last_seq).await;
        last_seq = run.seqs.last().copied();
        frames_seen += run.seqs.len();
        let (rss, anon) = agent_memory(&agent);
        eprintln!(
            "round {round}: agent RSS {rss} kB (anonymous {anon} kB), {} fds",
            open_fds(agent.pid())
        );
    }
    let (rss_after, anon_after) = agent_memory(&agent);
    let fds_after = open_fds(agent.pid());
    let mqtt_replies: usize = mqtt_codes.values().sum();
    let dc_replies: usize = dc_codes.values().sum();
    eprintln!(
        "attack: {mqtt_replies} MQTT error replies {mqtt_codes:?}, {dc_replies} DataChannel replies \
         {dc_codes:?}; the watcher decoded {frames_seen} frames in the checks; agent RSS \
         {rss_before} kB before, {rss_after} kB after ({:+} kB), anonymous {anon_before} kB before, \
         {anon_after} kB after ({:+} kB); fds {fds_before} before, {fds_after} after",
        rss_after as i64 - rss_before as i64,
        anon_after as i64 - anon_before as i64,
    );
    // Every message got its reply with its documented code: counted from
    // the replies, by code.
    let expected_mqtt: BTreeMap<String, usize> = [
        ("bad_json", rounds * 100),
        ("too_large", rounds * 100),
        ("unauthorized", rounds * (100 + 10)),
        ("bad_candidate", rounds * 100),
    ]
    .into_iter()
    .map(|(c, n)| (c.to_string(), n))
    .collect();
    assert_eq!(mqtt_codes, expected_mqtt, "MQTT error replies by code");
    assert_eq!(
        dc_replies,
        rounds * 40 * 5,
        "one DataChannel reply per message: {dc_codes:?}"
    );
    assert_eq!(
        dc_codes.get("bad_json").copied().unwrap_or(0),
        rounds * 40 * 2,
        "malformed and oversized commands: bad_json, never rate-limited: {dc_codes:?}"
    );
    assert!(
        dc_codes.get("rate_limited").is_some_and(|&n| n > 0),
        "the DataChannel rate limit kicked in: {dc_codes:?}"
    );
    assert_eq!(
        level_lines(&agent, "relay1", "high"),
        0,
        "no attack message drove relay1"
    );
    // What stays is bounded: the embedded broker's logs of the three flooded
    // filters (two 128 KB segments each, counting each entry's own size),
    // its topic cache and the offer log's last minute.
    assert!(
        rss_after <= rss_before + ATTACK_RSS_SLACK_KB,
        "the agent's memory returns near where it was: RSS {rss_after} kB after, {rss_before} kB before"
    );
    assert!(
        fds_after <= fds_before,
        "no descriptor left open by the attack: {fds_after} after, {fds_before} before"
    );
    let st = agent.stats().await;
    assert_eq!(
        (st.sessions, st.connected),
        (2, 2),
        "only the two real viewers have sessions"
    );
    attacker.bye().await;
    watcher.bye().await;
    agent.wait_idle(&base).await;
    agent.shutdown().await;
}
