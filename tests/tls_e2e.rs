//! The `rtcam` binary against a real Mosquitto that speaks only TLS and
//! wants a password, with a CA, server and client certificates made at test
//! time: `mqtts://` with the password from `RTCAM_MQTT_PASSWORD`, `wss://`
//! with `mqtt.password_file`, a listener that requires a client
//! certificate; each time a viewer (trusting the same CA) completes
//! signaling and decodes video. Then what goes wrong: an untrusted server
//! certificate, a wrong password, a missing client certificate. Each is
//! named in the agent's log, and the agent stays up and keeps retrying;
//! TLS files that cannot be read are named by `rtcam config --check`.
//! Runs inside a private network namespace (see `.ci/test`).

mod common;

use common::process::{RtcamProcess, all_output, rtcam};
use common::tls::{Pki, TlsBroker, local_url, wait_online};
use common::{WAIT, agent_toml, random_hex, settings, viewer_options};
use rtcam::config::Settings;
use rtcam::config::settings::MqttScheme;
use rtcam::probe::Viewer;
use std::path::Path;

/// The agent's MQTT user.
const CAMERA: &str = "camera";

/// Which of the broker's listeners the agent uses.
#[derive(Clone, Copy)]
enum Listener {
    /// `mqtts://`, password only.
    Mqtts,
    /// `wss://`, password only.
    Wss,
    /// `mqtts://`, password and a client certificate.
    ClientCert,
}

/// Where the agent's password comes from.
#[derive(Clone, Copy)]
enum Source {
    /// `RTCAM_MQTT_PASSWORD`.
    Env,
    /// `mqtt.password_file`.
    File,
}

/// One test's broker, with the camera user and its password, and the
/// agent's settings and files.
struct Rig {
    broker: TlsBroker,
    password: String,
    s: Settings,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(prefix: &str) -> Rig {
        let password = format!("pw-{}", random_hex(12));
        Rig {
            broker: TlsBroker::start(&[(CAMERA, &password)]),
            password,
            s: settings(prefix),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn url(&self, listener: Listener) -> String {
        let b = &self.broker;
        match listener {
            Listener::Mqtts => local_url(MqttScheme::Mqtts, b.mqtts),
            Listener::Wss => local_url(MqttScheme::Wss, b.wss),
            Listener::ClientCert => local_url(MqttScheme::Mqtts, b.mqtts_client_cert),
        }
        .to_string()
    }

    /// Starts the agent binary on `listener`, trusting `ca`, as the camera
    /// user with `password` from `source`, with the client certificate or not.
    fn agent(
        &self,
        listener: Listener,
        ca: &Path,
        client_cert: bool,
        (source, password): (Source, &str),
    ) -> RtcamProcess {
        let path = |p: &Path| p.display().to_string();
        let mut mqtt = format!(
            "url = {:?}\nusername = {CAMERA:?}\nca_file = {:?}\n",
            self.url(listener),
            path(ca)
        );
        if client_cert {
            let pki = &self.broker.pki;
            mqtt.push_str(&format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                path(&pki.client_cert),
                path(&pki.client_key)
            ));
        }
        let mut command = rtcam();
        match source {
            Source::Env => {
                command.env("RTCAM_MQTT_PASSWORD", password);
            }
            Source::File => {
                let file = self.dir.path().join("mqtt-password");
                std::fs::write(&file, format!("{password}\n")).expect("write the password file");
                mqtt.push_str(&format!("password_file = {:?}\n", path(&file)));
            }
        }
        let config = self.dir.path().join("rtcam.toml");
        std::fs::write(&config, agent_toml(&self.s, &mqtt, "")).expect("write the config");
        command.arg("--config").arg(&config);
        RtcamProcess::spawn(command, None)
    }
}

/// Waits for the agent's "connected" line naming `url`.
async fn connected(agent: &RtcamProcess, url: &str) {
    let want = format!("broker={url}");
    agent
        .log()
        .wait_line("the agent's connected line", WAIT, move |l| {
            l.contains("connected to MQTT broker") && l.contains(&want)
        })
        .await;
}

/// A viewer on the broker's `mqtts://` listener completes signaling,
/// decodes a few frames of the test pattern and leaves.
async fn a_viewer_streams(broker: &TlsBroker, s: &Settings, agent: &RtcamProcess, who: &str) {
    wait_online(
        &broker.viewer_mqtt(&format!("{who}-status")),
        &s.mqtt.topic_prefix,
    )
    .await;
    let mut opts = viewer_options(s, who, true);
    opts.mqtt = broker.viewer_mqtt(who);
    let mut v = Viewer::connect(&opts)
        .await
        .unwrap_or_else(|e| panic!("{who}: the offer is answered: {e}"));
    assert!(v.wait_connected(WAIT).await, "{who}: ICE and DTLS complete");
    let first = v.next_frame(WAIT).await.expect("a first decoded frame");
    assert!(first.keyframe, "decoding starts at a keyframe");
    let mut last = first.seq.expect("the block code reads back");
    for _ in 0..4 {
        let seq = v
            .next_frame(WAIT)
            .await
            .and_then(|f| f.seq)
            .expect("another decoded frame");
        assert!(seq > last, "frames in order ({seq} after {last})");
        last = seq;
    }
    v.bye().await;
    let client = format!("client={who}");
    agent
        .log()
        .wait_line("the session's end", WAIT, move |l| {
            l.contains("session ended") && l.contains(&client)
        })
        .await;
}

/// SIGTERM: the agent stops cleanly.
async fn stops_cleanly(agent: &mut RtcamProcess) {
    let status = agent.stop(WAIT).await;
    assert!(
        status.success(),
        "rtcam exits 0 after SIGTERM ({status}); its log:\n{}",
        agent.log().tail(40)
    );
}

/// The agent connects through `listener` and a viewer streams from it.
async fn streams_through(prefix: &str, listener: Listener, client_cert: bool, source: Source) {
    let rig = Rig::new(prefix);
    let ca = &rig.broker.pki.ca;
    let mut agent = rig.agent(listener, ca, client_cert, (source, &rig.password));
    connected(&agent, &rig.url(listener)).await;
    // The viewer always comes in through the password-only mqtts:// listener.
    a_viewer_streams(&rig.broker, &rig.s, &agent, &format!("{prefix}-viewer")).await;
    stops_cleanly(&mut agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_the_password_from_the_environment() {
    streams_through("tls-env", Listener::Mqtts, false, Source::Env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_password_from_a_file() {
    streams_through("tls-wss", Listener::Wss, false, Source::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_where_the_broker_requires_one() {
    streams_through("tls-cert", Listener::ClientCert, true, Source::File).await;
}

/// The agent fails to connect: its warning satisfies `names`
/// (the cause, in words), it keeps retrying (Mosquitto sees three attempts),
/// it never claims to be connected and it is still running.
async fn refused_and_retried(
    broker: &TlsBroker,
    agent: &mut RtcamProcess,
    names: impl Fn(&str) -> bool,
) -> String {
    let warning = agent
        .log()
        .wait_line("the agent's connection warning", WAIT, |l| {
            l.contains("MQTT connection failed; retrying")
        })
        .await;
    assert!(
        names(&warning),
        "the warning names the cause: {warning}\nbroker log:\n{}",
        broker.log().tail(20)
    );
    eprintln!("as expected: {warning}");
    broker.wait_attempts(3).await;
    agent.assert_running("after three refused attempts");
    assert_eq!(
        agent
            .log()
            .count(|l| l.contains("connected to MQTT broker")),
        0,
        "never connected"
    );
    warning
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_is_named_and_retried() {
    let rig = Rig::new("tls-bad-ca");
    // Trusts a CA that did not sign the broker's certificate.
    let other_ca = &rig.broker.pki.other_ca;
    let mut agent = rig.agent(
        Listener::Mqtts,
        other_ca,
        false,
        (Source::Env, &rig.password),
    );
    let warning = refused_and_retried(&rig.broker, &mut agent, |l| {
        l.contains("invalid peer certificate") && l.contains("UnknownIssuer")
    })
    .await;
    assert!(
        warning.contains(&rig.url(Listener::Mqtts)),
        "names the broker: {warning}"
    );
    stops_cleanly(&mut agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_named_and_retried_until_it_is_fixed() {
    let rig = Rig::new("tls-bad-pw");
    let wrong = format!("pw-{}", random_hex(12));
    let ca = &rig.broker.pki.ca;
    let mut agent = rig.agent(Listener::Mqtts, ca, false, (Source::Env, &wrong));
    refused_and_retried(&rig.broker, &mut agent, |l| {
        l.contains("BadUserNamePassword") || l.contains("NotAuthorized")
    })
    .await;
    // The broker's administrator gives the camera the password it has:
    // the next retry gets in, without restarting the agent.
    rig.broker.set_password(CAMERA, &wrong);
    connected(&agent, &rig.url(Listener::Mqtts)).await;
    wait_online(
        &rig.broker.viewer_mqtt("bad-pw-status"),
        &rig.s.mqtt.topic_prefix,
    )
    .await;
    stops_cleanly(&mut agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_client_certificate_is_named_and_retried() {
    let rig = Rig::new("tls-no-cert");
    let ca = &rig.broker.pki.ca;
    let mut agent = rig.agent(
        Listener::ClientCert,
        ca,
        false,
        (Source::Env, &rig.password),
    );
    refused_and_retried(&rig.broker, &mut agent, |l| {
        l.contains("CertificateRequired")
    })
    .await;
    stops_cleanly(&mut agent).await;
}

#[test]
fn config_check_reads_the_tls_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path());
    let s = settings("tls-check");
    let path = |p: &Path| p.display().to_string();
    let missing = path(&dir.path().join("missing.pem"));
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let client = |key: &str| {
        format!(
            "client_cert = {:?}\nclient_key = {key:?}\n",
            path(&pki.client_cert)
        )
    };
    // (case, TLS lines, the key named in the error or None for valid)
    let cases = [
        (
            "the test PKI",
            format!(
                "ca_file = {:?}\n{}",
                path(&pki.ca),
                client(&path(&pki.client_key))
            ),
            None,
        ),
        (
            "a missing CA file",
            format!("ca_file = {missing:?}\n"),
            Some("mqtt.ca_file"),
        ),
        (
            "a CA file with no certificate in it",
            format!("ca_file = {:?}\n", path(&not_pem)),
            Some("mqtt.ca_file"),
        ),
        (
            "a missing client key",
            client(&missing),
            Some("mqtt.client_key"),
        ),
    ];
    let config = dir.path().join("rtcam.toml");
    for (case, tls, named) in cases {
        let mqtt = format!("url = \"mqtts://127.0.0.1:8883\"\n{tls}");
        std::fs::write(&config, agent_toml(&s, &mqtt, "")).expect("write the config");
        let out = rtcam()
            .arg("--config")
            .arg(&config)
            .args(["config", "--check"])
            .output()
            .expect("rtcam runs");
        let text = all_output(&out);
        match named {
            None => assert!(
                out.status.success() && text.contains("configuration OK"),
                "{case}: {text}"
            ),
            Some(key) => {
                assert_eq!(out.status.code(), Some(2), "{case}: {text}");
                assert!(
                    text.contains("configuration error") && text.contains(key),
                    "{case}: names {key}: {text}"
                );
            }
        }
    }
}
