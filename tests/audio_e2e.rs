//! Sound both ways through the `rtcam` binary, with ALSA's userspace
//! plugins standing in for a sound card (there is none here): the `file`
//! plugin over `null` reads a microphone from a file and writes the
//! speaker to a file, configured in the agent's `~/.asoundrc` as a user
//! would. The decoding viewer is `rtcam probe --audio`. Runs inside a
//! private network namespace.

mod common;

use common::agent::{AgentProcess, TestConfig};
use common::process::RtcamProcess;
use common::{WAIT, asoundrc, metric};
use rtcam::audio::{SAMPLE_RATE, tone};
use std::path::Path;
use std::time::Duration;

/// `seconds` of the test tone as raw S16LE mono, starting at a whole second.
fn tone_file(path: &Path, seconds: u64) {
    let mut pcm = vec![0i16; (u64::from(SAMPLE_RATE) * seconds) as usize];
    tone::fill(&mut pcm, 1, 1_000 * u64::from(SAMPLE_RATE));
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("tone file written");
}

/// `rtcam probe --audio --json` for `seconds`; its report.
async fn probe_audio(agent: &AgentProcess, client: &str, seconds: u32) -> serde_json::Value {
    let mut c = common::process::rtcam();
    c.arg("--config").arg(agent.config_path()).args([
        "probe",
        "--audio",
        "--client-id",
        client,
        "--seconds",
        &seconds.to_string(),
        "--timeout",
        "10",
        "--json",
    ]);
    let mut probe = RtcamProcess::spawn(c, None);
    let (report, _log) = common::probe_finished(&mut probe).await;
    report
}

/// Waits for the speaker to close, and checks it wrote its file.
async fn speaker_closed(agent: &AgentProcess, spk: &Path) {
    agent
        .log()
        .wait_line("the speaker to close", WAIT, |l| {
            l.contains("speaker closed")
        })
        .await;
    assert!(
        std::fs::metadata(spk).map(|m| m.len()).unwrap_or(0) > 0,
        "the speaker's file was written"
    );
}

/// Waits (10 s at most) until the agent has counted `errors` audio device
/// failures, while `v` goes on decoding the video in order.
async fn retried(agent: &AgentProcess, v: &mut rtcam::probe::Viewer, errors: f64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(agent, "rtcam_audio_errors_total")
        .await
        .unwrap_or(0.0)
        < errors
    {
        assert!(tokio::time::Instant::now() < deadline, "{what} is retried");
        assert!(common::frames(v, 15).await.in_order(), "the video goes on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_microphone_reaches_a_viewer_in_sync_with_the_video() {
    let cfg = TestConfig::new("audio-tone").with("audio.input", "test");
    let agent = AgentProcess::start(&cfg).await;
    let r = probe_audio(&agent, "audio-probe", 5).await;
    eprintln!("probe: {r}");
    assert!(r["frames_decoded"].as_u64().unwrap_or(0) > 100, "{r}");
    // 5 s of 20 ms packets (the microphone started with the camera).
    let packets = r["audio_packets"].as_u64().unwrap_or(0);
    assert!(packets >= 240, "{packets} Opus packets: {r}");
    assert_eq!(r["audio_decode_errors"], 0, "{r}");
    let beeps = r["tone_beeps"].as_u64().unwrap_or(0);
    assert!(beeps >= 4, "a beep each second: {r}");
    let hz = r["tone_hz"].as_f64().expect("the tone's frequency");
    assert!((hz - 1000.0).abs() <= 20.0, "{hz} Hz: {r}");
    let offset = r["av_offset_ms"].as_f64().expect("an audio-video offset");
    assert!(offset.abs() <= 80.0, "sound and picture within 80 ms: {r}");
    assert!(
        metric(&agent, "rtcam_audio_frames_total")
            .await
            .unwrap_or(0.0)
            >= 240.0,
        "the microphone's frames are counted"
    );
    // Nobody listens any more: the microphone stops with the camera.
    agent
        .log()
        .wait_line("the microphone to stop", WAIT, |l| {
            l.contains("microphone stopped")
        })
        .await;
    // A viewer that does not offer audio gets none, and talkback is off.
    let mut v = common::viewer(agent.settings(), "audio-mute", true).await;
    let r = v
        .command(serde_json::json!({"cmd": "audio.talk", "on": true}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(r["error"]["code"], "talk_off", "{r}");
    common::frames(&mut v, 10).await;
    assert_eq!(v.heard().packets, 0, "no audio section, no sound");
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alsa_microphone_is_captured_encoded_and_heard() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mic, spk) = (dir.path().join("mic.raw"), dir.path().join("spk.raw"));
    tone_file(&mic, 30);
    asoundrc(dir.path(), &mic, &spk);
    let cfg = TestConfig::new("audio-alsa")
        .with("audio.input", "rtcam_mic")
        .with_env("HOME", &dir.path().display().to_string());
    let agent = AgentProcess::start(&cfg).await;
    let r = probe_audio(&agent, "alsa-probe", 4).await;
    eprintln!("probe: {r}");
    assert_eq!(r["audio_decode_errors"], 0, "{r}");
    // The file plugin has no clock of its own: the agent holds it to real
    // time, so 4 s give about 200 packets, not thousands.
    let packets = r["audio_packets"].as_u64().unwrap_or(0);
    assert!((150..=300).contains(&packets), "{packets} packets: {r}");
    let beeps = r["tone_beeps"].as_u64().unwrap_or(0);
    assert!(beeps >= 3, "the file's beeps are heard: {r}");
    let hz = r["tone_hz"].as_f64().expect("the tone's frequency");
    assert!((hz - 1000.0).abs() <= 20.0, "{hz} Hz: {r}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_microphone_is_retried_and_never_stops_the_video() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = TestConfig::new("audio-gone")
        .with("audio.input", "hw:9,9")
        .with_env("HOME", &dir.path().display().to_string());
    let agent = AgentProcess::start(&cfg).await;
    let mut v = common::viewer(agent.settings(), "gone-viewer", true).await;
    let run = common::frames(&mut v, 60).await;
    assert!(run.in_order(), "the video goes on");
    agent
        .log()
        .wait_line("the microphone's failure", WAIT, |l| {
            l.contains("microphone failed") && l.contains("hw:9,9")
        })
        .await;
    // Retried with backoff (0.5 s, 1 s, …) while someone watches.
    retried(&agent, &mut v, 3.0, "the microphone").await;
    v.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talkback_has_one_talker_at_a_time_and_plays_on_the_speaker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mic, spk) = (dir.path().join("mic.raw"), dir.path().join("spk.raw"));
    tone_file(&mic, 5);
    asoundrc(dir.path(), &mic, &spk);
    let cfg = TestConfig::new("audio-talk")
        .with("audio.output", "rtcam_spk")
        .with_env("HOME", &dir.path().display().to_string());
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let a = common::viewer(&s, "talker-a", false).await;
    let mut b = common::viewer(&s, "talker-b", false).await;
    let talk = |on: bool| serde_json::json!({"cmd": "audio.talk", "on": on});
    let r = a.command(talk(true), WAIT).await.expect("a reply");
    assert_eq!(r["result"]["talking"], true, "{r}");
    let busy = common::event(&mut b, "audio.floor", WAIT)
        .await
        .expect("told");
    assert_eq!(busy["busy"], true, "{busy}");
    let r = b.command(talk(true), WAIT).await.expect("a reply");
    assert_eq!(
        r["error"]["code"], "floor_taken",
        "the second talker is refused: {r}"
    );
    // The speaker opens for the talker and plays (silence until its packets
    // come): 100 ms of it, then the floor is given up and the speaker closes.
    agent
        .log()
        .wait_line("the speaker to open", WAIT, |l| l.contains("speaker open"))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&agent, "rtcam_audio_played_frames_total")
        .await
        .unwrap_or(0.0)
        < 5.0
    {
        assert!(tokio::time::Instant::now() < deadline, "the speaker plays");
    }
    let r = a.command(talk(false), WAIT).await.expect("a reply");
    assert_eq!(r["result"]["talking"], false, "{r}");
    speaker_closed(&agent, &spk).await;
    let free = common::event(&mut b, "audio.floor", WAIT)
        .await
        .expect("told");
    assert_eq!(free["busy"], false, "{free}");
    let r = b.command(talk(true), WAIT).await.expect("a reply");
    assert_eq!(r["result"]["talking"], true, "now b may: {r}");
    // A talker that leaves gives the floor up.
    let mark = agent.log().len();
    b.bye().await;
    agent
        .log()
        .wait_line_after("b's floor released", mark, WAIT, |l| {
            l.contains("talkback: floor released")
        })
        .await;
    let r = a.command(talk(true), WAIT).await.expect("a reply");
    assert_eq!(r["result"]["talking"], true, "b's floor was released: {r}");
    a.bye().await;
    // The last talker gone, the speaker closes (each open has its close).
    agent
        .log()
        .wait_lines("the speaker to close", WAIT, |lines| {
            let n = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
            n("speaker closed") == n("speaker open")
        })
        .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stereo_microphone_is_sent_in_stereo() {
    let cfg = TestConfig::new("audio-stereo")
        .with("audio.input", "test")
        .with("audio.channels", 2);
    let agent = AgentProcess::start(&cfg).await;
    let r = probe_audio(&agent, "stereo-probe", 3).await;
    eprintln!("probe: {r}");
    let packets = r["audio_packets"].as_u64().unwrap_or(0);
    assert!(packets >= 100, "{packets} Opus packets: {r}");
    assert_eq!(r["audio_decode_errors"], 0, "{r}");
    assert_eq!(
        r["audio_stereo_packets"], packets,
        "every packet is coded in stereo: {r}"
    );
    let hz = r["tone_hz"].as_f64().expect("the tone's frequency");
    assert!((hz - 1000.0).abs() <= 20.0, "{hz} Hz: {r}");
    agent.shutdown().await;
}

/// A static view token and a static control token.
const VIEW: &str = "audio-view-token-0123456789";
const CONTROL: &str = "audio-control-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_token_listens_but_may_not_talk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mic, spk) = (dir.path().join("mic.raw"), dir.path().join("spk.raw"));
    tone_file(&mic, 5);
    asoundrc(dir.path(), &mic, &spk);
    let token = |t: &str, role: &str| {
        let mut e = toml::Table::new();
        e.insert("token".into(), t.into());
        e.insert("role".into(), role.into());
        toml::Value::Table(e)
    };
    let cfg = TestConfig::new("audio-roles")
        .with("audio.input", "test")
        .with("audio.output", "rtcam_spk")
        .with("auth.mode", "token")
        .with(
            "auth.tokens",
            toml::Value::Array(vec![token(VIEW, "view"), token(CONTROL, "control")]),
        )
        .with_env("HOME", &dir.path().display().to_string());
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let connect = |id: &'static str, t: &'static str| {
        let mut o = common::viewer_options(&s, id, true);
        o.audio = true;
        o.token = Some(t.to_string());
        async move {
            let mut v = rtcam::probe::Viewer::connect(&o)
                .await
                .expect("the offer is answered");
            assert!(v.wait_connected(WAIT).await, "{id} connects");
            v
        }
    };
    let mut watcher = connect("audio-watcher", VIEW).await;
    let talk = serde_json::json!({"cmd": "audio.talk", "on": true});
    let r = watcher.command(talk.clone(), WAIT).await.expect("a reply");
    assert_eq!(r["error"]["code"], "not_allowed", "a view token: {r}");
    // It still hears the camera.
    common::frames(&mut watcher, 60).await;
    let heard = watcher.heard().packets;
    assert!(heard >= 25, "{heard} Opus packets in 2 s of video");
    // A control token may take the floor the watcher was refused.
    let operator = connect("audio-operator", CONTROL).await;
    let r = operator.command(talk, WAIT).await.expect("a reply");
    assert_eq!(r["result"]["talking"], true, "{r}");
    operator.bye().await;
    watcher.bye().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_speaker_is_retried_while_the_floor_is_held() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The speaker's file is in a folder that does not exist yet: playing
    // on the ALSA device fails (an I/O error) until it does.
    let later = dir.path().join("later");
    let (mic, spk) = (dir.path().join("mic.raw"), later.join("spk.raw"));
    tone_file(&mic, 5);
    asoundrc(dir.path(), &mic, &spk);
    let cfg = TestConfig::new("audio-spk-retry")
        .with("audio.output", "rtcam_spk")
        .with_env("HOME", &dir.path().display().to_string());
    let agent = AgentProcess::start(&cfg).await;
    let mut a = common::viewer(agent.settings(), "retry-talker", true).await;
    let talk = |on: bool| serde_json::json!({"cmd": "audio.talk", "on": on});
    let r = a.command(talk(true), WAIT).await.expect("a reply");
    assert_eq!(r["result"]["talking"], true, "{r}");
    agent
        .log()
        .wait_line("the speaker's failure", WAIT, |l| {
            l.contains("speaker failed") && l.contains("rtcam_spk")
        })
        .await;
    // Retried with backoff while the floor is held.
    retried(&agent, &mut a, 2.0, "the speaker").await;
    // The device comes back: the next retry plays on it (the file plugin
    // makes its file when it first writes).
    std::fs::create_dir(&later).expect("the folder is made");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !spk.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the speaker is reopened:\n{}",
            agent.log().tail(20)
        );
        assert!(common::frames(&mut a, 5).await.in_order());
    }
    let r = a.command(talk(false), WAIT).await.expect("a reply");
    assert_eq!(r["result"]["talking"], false, "{r}");
    speaker_closed(&agent, &spk).await;
    a.bye().await;
    agent.shutdown().await;
}
