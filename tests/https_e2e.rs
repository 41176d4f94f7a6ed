//! HTTPS end to end: the `rtcam` binary started from a config file with
//! `[http] tls = "self-signed"` or with a certificate and key of the
//! user's (a throw-away CA made here), checked by clients that share no
//! code with it: Python's `ssl` reads the certificate the server shows,
//! headless Chromium loads the page over HTTPS in a secure context and
//! plays the camera (its MQTT WebSocket through the server's `/mqtt`), and
//! the aiortc WHEP player watches over HTTPS, verifying the server against
//! the CA.

mod common;

use common::agent::{AgentProcess, TestConfig, start};
use common::browser::{Browser, Candidates};
use std::time::Duration;

/// The fingerprint the agent logged for its certificate.
async fn logged_fingerprint(agent: &AgentProcess) -> String {
    let line = agent
        .log()
        .wait_line(
            "the certificate's fingerprint",
            Duration::from_secs(10),
            |l| l.contains("certificate fingerprint SHA-256 "),
        )
        .await;
    line.split("certificate fingerprint SHA-256 ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// SHA-256 of the certificate the server shows, by Python's `ssl`.
fn served_fingerprint(agent: &AgentProcess) -> String {
    let a = agent.http_addr();
    let script = format!(
        "import ssl, hashlib\n\
         pem = ssl.get_server_certificate(('{}', {}), timeout=10)\n\
         d = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()\n\
         print(':'.join(d[i:i+2] for i in range(0, len(d), 2)))\n",
        a.ip(),
        a.port()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        common::process::all_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_serves_the_page_in_a_secure_context_and_is_kept() {
    let state = tempfile::tempdir().expect("temp dir");
    let cfg = TestConfig::new("https-self")
        .with("http.tls", "self-signed")
        .with_env("STATE_DIRECTORY", &state.path().display().to_string());
    let agent = start(&cfg).await;
    let fingerprint = logged_fingerprint(&agent).await;
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    assert_eq!(
        served_fingerprint(&agent),
        fingerprint,
        "the certificate served is the one logged"
    );
    assert!(state.path().join("https-cert.pem").exists());

    // A browser told to accept the certificate: the page is a secure
    // context, reaches the broker through wss://…/mqtt and plays.
    let browser = Browser::start_with(Candidates::PlainIps, &["--ignore-certificate-errors"]).await;
    browser
        .client
        .goto(&format!("https://{}/", agent.http_addr()))
        .await
        .expect("the page loads");
    let playing = browser
        .wait_for(
            "window.isSecureContext && window.rtcam && window.rtcam.stats.framesDecoded > 10",
            "({ secure: window.isSecureContext, frames: window.rtcam && window.rtcam.stats.framesDecoded, \
               message: document.getElementById('message').textContent })",
        )
        .await;
    assert_eq!(
        playing["ok"],
        true,
        "the page plays over HTTPS: {playing}\nagent log:\n{}",
        agent.log().tail(40)
    );
    let ws = browser
        .run("fetch('/config.json').then(r => r.json()).then(c => done(c.mqtt_ws_url));")
        .await;
    assert_eq!(
        ws.as_str().unwrap_or_default(),
        format!("wss://127.0.0.1:{}/mqtt", agent.http_addr().port())
    );
    browser.close().await;
    agent.shutdown().await;

    // Started again, it keeps its certificate.
    let agent = start(&cfg).await;
    assert_eq!(
        logged_fingerprint(&agent).await,
        fingerprint,
        "the same certificate after a restart"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_over_https_with_the_users_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = common::tls::Pki::generate(dir.path());
    let token = "https-whep-token-0123456789";
    let cfg = TestConfig::new("https-files")
        .with("http.tls_cert", pki.server_cert.display().to_string())
        .with("http.tls_key", pki.server_key.display().to_string())
        .with("auth.mode", "token")
        .with_toml(&format!(
            "[[auth.tokens]]\ntoken = {token:?}\nrole = \"view\"\n"
        ));
    let agent = start(&cfg).await;
    assert!(logged_fingerprint(&agent).await.contains(':'));
    let url = format!("https://localhost:{}/whep", agent.http_addr().port());
    let cafile = pki.ca.display().to_string();
    let report = common::whep::player(&agent, &url, token, &[], &["--cafile", &cafile]).await;
    assert_eq!(report["post"]["status"], 201, "{report:#}");
    let frames = report["frames_decoded"].as_u64().unwrap_or(0);
    assert!(
        frames >= 20,
        "{frames} frames over WHEP and HTTPS: {report:#}"
    );
    assert_eq!(report["delete"]["status"], 200);
    agent
        .wait_stats("the session ended", |s| s.sessions == 0)
        .await;

    // A client that trusts another CA is refused by its own TLS check: the
    // server shows the user's certificate, not one of its own making.
    let other = pki.other_ca.display().to_string();
    let python = common::players::aiortc_python();
    let out = tokio::process::Command::new(python)
        .arg("tests/aiortc/whep_client.py")
        .args([
            "--url",
            &url,
            "--token",
            token,
            "--cafile",
            &other,
            "--timeout",
            "20",
        ])
        .output()
        .await
        .expect("runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("CERTIFICATE_VERIFY_FAILED"),
        "{said}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_its_key_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = common::tls::Pki::generate(dir.path());
    let cfg =
        TestConfig::new("https-half").with("http.tls_cert", pki.server_cert.display().to_string());
    let file = cfg.write(dir.path());
    let out = common::process::rtcam()
        .arg("--config")
        .arg(&file)
        .args(["config", "--check"])
        .output()
        .expect("rtcam runs");
    assert!(!out.status.success());
    let said = common::process::all_output(&out);
    assert!(said.contains("http.tls_key"), "{said}");
}
