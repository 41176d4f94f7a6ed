//! Secrets never reach a log: the `rtcam` binary runs at the most verbose
//! level (`RTCAM_LOG=trace`, every crate) with an MQTT password (from
//! `RTCAM_MQTT_PASSWORD`, then from `mqtt.password_file`), a token-signing
//! secret (`auth.secret_file`) and static `[[auth.tokens]]`, connects over
//! TLS to a Mosquitto that wants the password, and serves viewers whose
//! offers carry a static token, a signed token (sent by `rtcam probe`, whose
//! log is checked too) and an expired signed token. `rtcam config --print`,
//! `config --check` and configuration errors are checked the same way. Every
//! secret is a fresh random string, so no check passes by accident, and the
//! logs must hold the lines that show each step happened.
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use common::process::{RtcamProcess, all_output, rtcam};
use common::tls::{TlsBroker, local_url, wait_online};
use common::{WAIT, agent_toml, random_hex, settings, viewer_options};
use rtcam::auth::{Role, mint};
use rtcam::config::Settings;
use rtcam::config::settings::MqttScheme;
use rtcam::probe::{ProbeError, Viewer, ViewerOptions};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The agent's MQTT user.
const CAMERA: &str = "camera";

/// Every secret of one run, each a fresh random string.
struct Secrets {
    mqtt_password: String,
    signing_secret: String,
    view_token: String,
    control_token: String,
    signed_token: String,
    expired_token: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

impl Secrets {
    /// Secrets for the camera whose topic prefix (tokens' audience) is `camera`.
    fn new(camera: &str) -> Secrets {
        let signing_secret = format!("sign-{}", random_hex(24));
        let now = unix_now();
        Secrets {
            mqtt_password: format!("mqttpw-{}", random_hex(16)),
            view_token: format!("view-{}", random_hex(16)),
            control_token: format!("control-{}", random_hex(16)),
            signed_token: mint(signing_secret.as_bytes(), Role::Control, camera, now + 3600),
            expired_token: mint(signing_secret.as_bytes(), Role::Control, camera, now - 60),
            signing_secret,
        }
    }

    fn named(&self) -> [(&'static str, &str); 6] {
        [
            ("MQTT password", &self.mqtt_password),
            ("token-signing secret", &self.signing_secret),
            ("static view token", &self.view_token),
            ("static control token", &self.control_token),
            ("signed token", &self.signed_token),
            ("expired signed token", &self.expired_token),
        ]
    }

    /// Panics, naming the secret and the line, if `text` holds any secret.
    fn assert_absent(&self, what: &str, text: &str) {
        for (name, value) in self.named() {
            if let Some(line) = text.lines().find(|l| l.contains(value)) {
                panic!("{what} reveals the {name}: {line}");
            }
        }
    }
}

/// `rtcam --config FILE ARGS…` at trace level with `env`, run to the end
/// (bounded by the probe's own `--timeout` where it waits): exit success
/// and everything it wrote, stdout then stderr.
async fn run(config: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut c = rtcam();
    c.env("RTCAM_LOG", "trace").arg("--config").arg(config);
    c.args(args).envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("joined")
        .expect("rtcam runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stdout, all_output(&out))
}

/// A viewer through the broker's `mqtts://` listener whose offer carries `token`.
fn viewer(broker: &TlsBroker, s: &Settings, who: &str, token: &str) -> ViewerOptions {
    let mut opts = viewer_options(s, who, true);
    opts.mqtt = broker.viewer_mqtt(who);
    opts.token = Some(token.to_string());
    opts
}

/// The whole round: configuration output, an agent serving three offers,
/// a probe; nothing anyone wrote holds a secret.
async fn secrets_stay_out_of_every_log(prefix: &str, password_in_env: bool) {
    let s = settings(prefix);
    let secrets = Secrets::new(&s.mqtt.topic_prefix);
    let broker = TlsBroker::start(&[(CAMERA, &secrets.mqtt_password)]);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("token.key"), format!("{}\n", secrets.signing_secret))
        .expect("write the signing secret");
    let url = local_url(MqttScheme::Mqtts, broker.mqtts).to_string();
    let mut mqtt = format!(
        "url = {url:?}\nusername = {CAMERA:?}\nca_file = {:?}\n",
        broker.pki.ca.display().to_string()
    );
    let mut env = Vec::new();
    if password_in_env {
        env.push(("RTCAM_MQTT_PASSWORD", secrets.mqtt_password.as_str()));
    } else {
        std::fs::write(path("mqtt-password"), &secrets.mqtt_password).expect("write");
        mqtt.push_str(&format!("password_file = {:?}\n", path("mqtt-password")));
    }
    let auth = format!(
        "[auth]\nmode = \"token\"\nsecret_file = {:?}\n\n\
         [[auth.tokens]]\ntoken = {:?}\nrole = \"view\"\n\n\
         [[auth.tokens]]\ntoken = {:?}\nrole = \"control\"\n",
        path("token.key"),
        secrets.view_token,
        secrets.control_token
    );
    let config = dir.path().join("rtcam.toml");
    std::fs::write(&config, agent_toml(&s, &mqtt, &auth)).expect("write the config");

    // What the configuration commands show.
    let (ok, printed, print_all) = run(&config, &env, &["config", "--print"]).await;
    assert!(ok, "config --print succeeds:\n{print_all}");
    secrets.assert_absent("rtcam config --print", &print_all);
    for shown in [
        "# password is set",
        "# tokens holds 2 static token(s), roles view, control",
        "secret_file = ",
    ] {
        assert!(printed.contains(shown), "{shown:?} in:\n{printed}");
    }
    let (ok, checked, check_all) = run(&config, &env, &["config", "--check"]).await;
    assert!(ok && checked.contains("configuration OK"), "{check_all}");
    secrets.assert_absent("rtcam config --check", &check_all);

    // The agent, and three offers.
    let mut command = rtcam();
    command
        .env("RTCAM_LOG", "trace")
        .envs(env.iter().copied())
        .arg("--config")
        .arg(&config);
    let mut agent = RtcamProcess::spawn(command, None);
    agent
        .log()
        .wait_line("the agent's connected line", WAIT, |l| {
            l.contains("connected to MQTT broker")
        })
        .await;
    wait_online(&broker.viewer_mqtt("secrets-status"), &s.mqtt.topic_prefix).await;

    let mut v = Viewer::connect(&viewer(&broker, &s, "static-token", &secrets.control_token))
        .await
        .expect("the offer is answered");
    assert!(
        v.wait_connected(WAIT).await,
        "the static-token viewer connects"
    );
    assert!(v.next_frame(WAIT).await.is_some(), "and decodes a frame");
    v.bye().await;

    let (ok, report, probe_all) = run(
        &config,
        &env,
        &[
            "probe",
            "--client-id",
            "signed-token",
            "--seconds",
            "1",
            "--json",
            "--token",
            &secrets.signed_token,
        ],
    )
    .await;
    assert!(
        ok,
        "rtcam probe with the signed token streams:\n{probe_all}"
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("a JSON report");
    assert!(
        report["frames_decoded"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    secrets.assert_absent("rtcam probe's output", &probe_all);

    let opts = viewer(&broker, &s, "expired-token", &secrets.expired_token);
    match Viewer::connect(&opts).await {
        Err(ProbeError::Refused { code, .. }) => assert_eq!(code, "unauthorized"),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("an expired token was accepted"),
    }
    agent
        .log()
        .wait_count("both sessions to end", 2, WAIT, |l| {
            l.contains("session ended")
        })
        .await;
    let status = agent.stop(WAIT).await;
    assert!(status.success(), "rtcam exits 0 after SIGTERM ({status})");

    // The log shows every step, at every level, and no secret.
    let log = agent.log().text();
    for (step, pattern) in [
        ("connection", "connected to MQTT broker"),
        ("static-token offer", "offer accepted client=static-token"),
        ("signed-token offer", "offer accepted client=signed-token"),
        (
            "expired-token refusal",
            "offer refused: unauthorized client=expired-token",
        ),
        ("connected viewer", "viewer connected"),
        ("session end", "session ended"),
        ("shutdown", "shutting down"),
    ] {
        assert!(
            log.contains(pattern),
            "the log shows the {step} ({pattern:?})"
        );
    }
    for level in [" TRACE ", " DEBUG "] {
        assert!(
            log.lines().any(|l| l.contains(level)),
            "the log has{level}lines"
        );
    }
    secrets.assert_absent("the agent's log", &log);
    eprintln!(
        "{prefix}: checked {} agent log lines ({} KiB), {} KiB of probe output",
        log.lines().count(),
        log.len() / 1024,
        probe_all.len() / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_mqtt_password_from_the_environment() {
    secrets_stay_out_of_every_log("secrets-env", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_mqtt_password_from_a_file() {
    secrets_stay_out_of_every_log("secrets-file", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_key_not_the_secret() {
    let s = settings("secrets-errors");
    let secrets = Secrets::new(&s.mqtt.topic_prefix);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("rtcam.toml");
    let short = &secrets.signing_secret[..12];
    std::fs::write(dir.path().join("token.key"), short).expect("write");
    std::fs::write(dir.path().join("mqtt-password"), "x").expect("write");
    let in_file = "url = \"mqtt://127.0.0.1:1883\"\npassword_file = \"mqtt-password\"\n";
    let bad_token = format!(
        "[auth]\nmode = \"token\"\n[[auth.tokens]]\ntoken = \"{} x\"\nrole = \"view\"\n",
        secrets.view_token
    );
    let short_secret = "[auth]\nmode = \"token\"\nsecret_file = \"token.key\"\n";
    // (case, [mqtt] lines, more sections, RTCAM_MQTT_PASSWORD, the key named)
    let cases = [
        (
            "a static token with a space in it",
            "",
            bad_token.as_str(),
            None,
            "auth.tokens[0]",
        ),
        (
            "a password both in the environment and in a file",
            in_file,
            "",
            Some(&secrets.mqtt_password),
            "mqtt.password_file",
        ),
        (
            "a signing secret too short",
            "",
            short_secret,
            None,
            "auth.secret_file",
        ),
    ];
    for (case, mqtt, more, password, key) in cases {
        std::fs::write(&config, agent_toml(&s, mqtt, more)).expect("write the config");
        let mut c = rtcam();
        c.current_dir(dir.path())
            .env("RTCAM_LOG", "trace")
            .arg("--config")
            .arg(&config)
            .args(["config", "--check"]);
        if let Some(p) = password {
            c.env("RTCAM_MQTT_PASSWORD", p);
        }
        let out = c.output().expect("rtcam runs");
        let text = all_output(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{case}: a configuration error\n{text}"
        );
        assert!(text.contains(key), "{case}: names {key}:\n{text}");
        secrets.assert_absent(case, &text);
        assert!(
            !text.contains(short),
            "{case}: reveals the short secret:\n{text}"
        );
    }
}
