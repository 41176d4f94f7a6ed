//! Against a real Mosquitto broker started by the test: the signaling
//! protocol's error codes, and a broker killed and restarted mid-stream
//! while a viewer keeps decoding. Runs inside a private network namespace.

mod common;

use common::{
    WAIT, free_port, malformed_messages_get_codes, settings, start, use_broker, viewer, watch,
    watch_from_now,
};
use rtcam::config::settings::MqttProtocol;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Mosquitto process on a loopback port.
struct Mosquitto {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"),
        )
        .expect("write config");
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto is installed (the README's test command installs it)");
        // Mosquitto says when it is ready to accept connections.
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("mosquitto printed its start-up lines")
                .expect("readable stderr");
            assert!(!line.contains("Error"), "mosquitto failed: {line}");
            if line.contains("running") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Mosquitto { child, _dir: dir }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_message_gets_its_error_code_through_mosquitto() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let mut s = settings("mosq-malformed");
    use_broker(&mut s, port, MqttProtocol::V5);
    let agent = start(s.clone()).await;
    malformed_messages_get_codes(&s).await;
    agent.shutdown().await;
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_survives_a_broker_restart_and_new_viewers_join_after() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let mut s = settings("mosq-restart");
    use_broker(&mut s, port, MqttProtocol::V5);
    let agent = start(s.clone()).await;
    let mut v1 = viewer(&s, "restart-1", true).await;
    watch(&mut v1, Duration::from_millis(500)).await;

    broker.kill();
    // The agent notices the broker is gone...
    assert!(
        agent.wait_mqtt(false, WAIT).await,
        "the agent sees the broker go"
    );
    // ...and the connected viewer keeps decoding throughout.
    let (n, _, seqs) = watch_from_now(&mut v1, Duration::from_secs(3)).await;
    assert!(n >= 80, "decoded {n} frames in 3 s without a broker");
    assert!(seqs.windows(2).all(|w| w[1] > w[0]));

    let broker = Mosquitto::start(port);
    assert!(
        agent.wait_mqtt(true, WAIT).await,
        "the agent reconnects with backoff"
    );
    let mut v2 = viewer(&s, "restart-2", true).await;
    let (n2, first_key, _) = watch(&mut v2, Duration::from_secs(1)).await;
    assert!(
        first_key && n2 >= 25,
        "a new viewer joins after the restart ({n2} frames)"
    );
    let (n1, _, _) = watch_from_now(&mut v1, Duration::from_secs(1)).await;
    assert!(n1 >= 25, "the first viewer is still decoding ({n1} frames)");
    v1.bye().await;
    v2.bye().await;
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 0 && c.tasks == 0)
            .await
    );
    agent.shutdown().await;
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_through_mosquitto() {
    let port = free_port();
    let broker = Mosquitto::start(port);
    let mut s = settings("mosq-311");
    use_broker(&mut s, port, MqttProtocol::V311);
    let agent = start(s.clone()).await;
    let mut v = viewer(&s, "mosq-311-viewer", true).await;
    let (n, first_key, _) = watch(&mut v, Duration::from_secs(1)).await;
    assert!(first_key && n >= 25, "{n} frames");
    v.bye().await;
    agent.shutdown().await;
    broker.kill();
}
