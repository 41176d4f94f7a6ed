//! A Mosquitto broker that speaks only TLS and wants a password: a
//! throw-away CA made at test time, a server certificate for 127.0.0.1 and
//! localhost, a client certificate, and a second CA that vouches for nothing
//! the broker shows.

use super::lines::LineLog;
use super::mosquitto::Mosquitto;
use super::{WAIT, free_port};
use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rtcam::config::settings::{MqttProtocol, MqttScheme, MqttUrl, Secret};
use rtcam::signaling::mqtt::{Link, LinkEvent, MqttOptions, TlsFiles};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// PEM files of a test PKI.
pub struct Pki {
    /// The CA that signed the broker's and the client's certificates.
    pub ca: PathBuf,
    /// Another CA, which signed nothing the broker shows.
    pub other_ca: PathBuf,
    /// The broker's certificate (127.0.0.1, localhost) and key.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate signed by `ca`.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("a CA key");
    let cert = params.self_signed(&key).expect("a CA certificate");
    (cert, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("valid names");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, issuer).expect("a certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Generates the certificates into `dir`.
    pub fn generate(dir: &Path) -> Pki {
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let (ca_cert, issuer) = ca("rtcam test CA");
        let (other_cert, _) = ca("rtcam test impostor CA");
        let (server_cert, server_key) = leaf(
            &issuer,
            "rtcam test broker",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &issuer,
            "rtcam test camera",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            other_ca: write("other-ca.pem", &other_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

/// The MQTT user test viewers connect as.
pub const VIEWER_USER: &str = "viewer";

/// A Mosquitto broker with TLS listeners only, all requiring a user name
/// and password (no anonymous access).
pub struct TlsBroker {
    /// The broker.
    pub broker: Mosquitto,
    /// The certificates.
    pub pki: Pki,
    /// `mqtts://` listener: server certificate and password.
    pub mqtts: u16,
    /// `mqtts://` listener that also requires a client certificate signed by the CA.
    pub mqtts_client_cert: u16,
    /// `wss://` listener (MQTT over TLS WebSocket, any path).
    pub wss: u16,
    passwd: PathBuf,
    viewer_password: String,
}

/// Adds or replaces `user` in a Mosquitto password file.
fn mosquitto_passwd(file: &Path, user: &str, password: &str) {
    let mut c = Command::new("mosquitto_passwd");
    if !file.exists() {
        c.arg("-c");
    }
    let status = c
        .arg("-b")
        .arg(file)
        .args([user, password])
        .status()
        .expect("mosquitto_passwd is installed with mosquitto");
    assert!(status.success(), "mosquitto_passwd {user}");
}

/// `scheme://127.0.0.1:port` (plus `/mqtt` for WebSockets).
pub fn local_url(scheme: MqttScheme, port: u16) -> MqttUrl {
    MqttUrl {
        scheme,
        host: "127.0.0.1".into(),
        port,
        path: if matches!(scheme, MqttScheme::Ws | MqttScheme::Wss) {
            "/mqtt".into()
        } else {
            String::new()
        },
    }
}

impl TlsBroker {
    /// Starts the broker with `users` (name, password) and a viewer user.
    /// Must run inside the tests' private network namespace: Mosquitto's
    /// WebSocket listener binds every interface, and there only `lo` exists.
    pub fn start(users: &[(&str, &str)]) -> TlsBroker {
        super::assert_private_netns();
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::generate(dir.path());
        let passwd = dir.path().join("passwd");
        let viewer_password = format!("viewer-{}", super::random_hex(8));
        for (user, password) in users {
            mosquitto_passwd(&passwd, user, password);
        }
        mosquitto_passwd(&passwd, VIEWER_USER, &viewer_password);
        let (mqtts, mqtts_client_cert, wss) = (free_port(), free_port(), free_port());
        let tls = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        );
        let config = format!(
            "allow_anonymous false\npassword_file {passwd}\n\
             listener {mqtts} 127.0.0.1\n{tls}\n\
             listener {mqtts_client_cert} 127.0.0.1\n{tls}require_certificate true\n\n\
             listener {wss} 127.0.0.1\nprotocol websockets\n{tls}",
            passwd = passwd.display()
        );
        let broker = Mosquitto::start_with(dir, &config);
        TlsBroker {
            broker,
            pki,
            mqtts,
            mqtts_client_cert,
            wss,
            passwd,
            viewer_password,
        }
    }

    /// Broker log.
    pub fn log(&self) -> &LineLog {
        self.broker.log()
    }

    /// Changes `user`'s password and makes the broker re-read the file.
    pub fn set_password(&self, user: &str, password: &str) {
        mosquitto_passwd(&self.passwd, user, password);
        self.broker.reload();
    }

    /// How a test's own MQTT client (a viewer) reaches the `mqtts://`
    /// listener: the test CA and the viewer's user.
    pub fn viewer_mqtt(&self, client_id: &str) -> MqttOptions {
        MqttOptions {
            url: local_url(MqttScheme::Mqtts, self.mqtts),
            protocol: MqttProtocol::V5,
            client_id: client_id.into(),
            username: Some(VIEWER_USER.into()),
            password: Some(Secret::new(self.viewer_password.clone())),
            tls: TlsFiles {
                ca_file: Some(self.pki.ca.clone()),
                client_cert: None,
                client_key: None,
            },
            keep_alive: Duration::from_secs(30),
        }
    }

    /// Waits until Mosquitto has seen `n` connection attempts, whether
    /// they failed in the TLS handshake or got as far as MQTT.
    pub async fn wait_attempts(&self, n: usize) {
        self.log()
            .wait_count(
                &format!("{n} connection attempts at the broker"),
                n,
                WAIT,
                |l: &str| l.contains("New connection from") || l.contains("Client connection from"),
            )
            .await;
    }
}

/// Waits until the retained `P/status` says `online`: the agent is
/// connected and its subscriptions are in place (it publishes the status
/// after subscribing, on the same connection).
pub async fn wait_online(mqtt: &MqttOptions, topic_prefix: &str) {
    let mut link = Link::new(mqtt, vec![format!("{topic_prefix}/status")]).expect("link");
    let online = tokio::time::timeout(WAIT, async {
        loop {
            match link.next().await {
                Ok(LinkEvent::Message(_, p)) if p == Bytes::from_static(b"online") => break,
                Ok(_) => {}
                Err(e) => eprintln!("status watcher: {e}"),
            }
        }
    })
    .await;
    assert!(online.is_ok(), "{topic_prefix}/status is online in time");
    link.publisher().disconnect();
}
