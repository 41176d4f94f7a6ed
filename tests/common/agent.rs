//! The shipped `rtcam` binary run as a user runs it: the test writes a
//! config file, starts `rtcam --config FILE run`, and then talks to it only
//! through its public doors: MQTT and WebRTC (viewers), HTTP (`/stats.json`,
//! the page), its log, signals.

use super::WAIT;
use super::lines::LineLog;
use super::process::{RtcamProcess, rtcam};
use rtcam::agent::AgentStats;
use rtcam::config::{self, Layers, Settings};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A config file under construction: TOML keys set by path, plus verbatim
/// TOML (arrays of tables such as `[[gpio.pins]]`) appended at the end.
#[derive(Debug, Clone)]
pub struct TestConfig {
    table: toml::Table,
    tail: String,
    env: Vec<(String, String)>,
    /// RLIMIT_NOFILE (soft and hard) for the agent process.
    nofile: Option<libc::rlim_t>,
    /// Whether the test may pause the reading of the agent's stderr.
    log_gate: bool,
}

impl TestConfig {
    /// What every test agent starts from: the 640x480@30 test pattern at
    /// 1000 kbit/s, the embedded broker on free loopback ports, ICE on `lo`
    /// only (loopback candidates; mDNS left at its default), the web viewer
    /// on a free port, and topics and client id unique to `prefix`.
    pub fn new(prefix: &str) -> TestConfig {
        let mut c = TestConfig {
            table: toml::Table::new(),
            tail: String::new(),
            env: Vec::new(),
            nofile: None,
            log_gate: false,
        };
        c.set("video.source", "test");
        c.set("video.width", 640);
        c.set("video.height", 480);
        c.set("video.fps", 30);
        c.set("video.bitrate_kbps", 1000);
        c.set("webrtc.interfaces", vec!["lo"]);
        c.set("webrtc.loopback", true);
        c.set("mqtt.topic_prefix", format!("rtcam-test/{prefix}"));
        c.set("mqtt.client_id", format!("rtcam-agent-{prefix}"));
        // Held together while chosen, so the three ports differ.
        let held: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("an ephemeral port is available"))
            .collect();
        for (key, l) in ["broker.listen", "broker.v5_listen", "broker.ws_listen"]
            .into_iter()
            .zip(&held)
        {
            let port = l.local_addr().expect("bound").port();
            c.set(key, format!("127.0.0.1:{port}"));
        }
        c.set("http.listen", "127.0.0.1:0");
        c
    }

    /// Sets `section.key` (replacing any earlier value).
    pub fn set(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut TestConfig {
        let (section, key) = path.split_once('.').expect("section.key");
        let entry = self
            .table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        entry
            .as_table_mut()
            .expect("sections are tables")
            .insert(key.to_string(), value.into());
        self
    }

    /// [`Self::set`], by value.
    pub fn with(mut self, path: &str, value: impl Into<toml::Value>) -> TestConfig {
        self.set(path, value);
        self
    }

    /// Removes `section.key`, so the binary's default applies.
    pub fn without(mut self, path: &str) -> TestConfig {
        let (section, key) = path.split_once('.').expect("section.key");
        if let Some(t) = self.table.get_mut(section).and_then(|s| s.as_table_mut()) {
            t.remove(key);
        }
        self
    }

    /// Appends TOML text as written (e.g. `[[gpio.pins]]` tables).
    pub fn with_toml(mut self, text: &str) -> TestConfig {
        self.tail.push('\n');
        self.tail.push_str(text);
        self.tail.push('\n');
        self
    }

    /// An environment variable for the agent process (e.g. `RTCAM_LOG`,
    /// `RTCAM_MQTT_PASSWORD`).
    pub fn with_env(mut self, name: &str, value: &str) -> TestConfig {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the agent with at most `n` open file descriptors (soft and hard
    /// RLIMIT_NOFILE, as systemd's `LimitNOFILE=` sets them).
    pub fn with_nofile(mut self, n: libc::rlim_t) -> TestConfig {
        self.nofile = Some(n);
        self
    }

    /// Lets the test pause the reading of the agent's stderr, its log
    /// ([`AgentProcess::log_gate`]).
    pub fn with_log_gate(mut self) -> TestConfig {
        self.log_gate = true;
        self
    }

    /// The value at `section.key`, if set.
    pub fn get(&self, path: &str) -> Option<&toml::Value> {
        let (section, key) = path.split_once('.')?;
        self.table.get(section)?.get(key)
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut text = toml::to_string(&self.table).expect("a TOML table serialises");
        text.push_str(&self.tail);
        text
    }

    /// Writes the file into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("rtcam.toml");
        std::fs::write(&path, self.text()).expect("the config file is written");
        path
    }

    /// The settings this file gives, loaded the way the binary loads them
    /// (for the viewers' side: topics, broker address, ICE options).
    pub fn settings(&self) -> Settings {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = self.write(dir.path());
        config::load(&Layers {
            file: Some(&path),
            env: self.env.clone(),
            flags: Vec::new(),
        })
        .unwrap_or_else(|e| panic!("the test config loads: {e}\n{}", self.text()))
        .settings
    }
}

/// A running `rtcam run` process started from a [`TestConfig`].
pub struct AgentProcess {
    process: RtcamProcess,
    settings: Settings,
    http: SocketAddr,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Echo the agent's log to stderr when `RTCAM_TEST_ECHO` is set (debugging).
fn echo_tag() -> Option<&'static str> {
    std::env::var_os("RTCAM_TEST_ECHO").map(|_| "agent")
}

impl AgentProcess {
    /// Starts the binary and waits until it serves HTTP and is connected to
    /// its broker (subscribed: offers sent from now on are heard).
    pub async fn start(cfg: &TestConfig) -> AgentProcess {
        let agent = Self::start_unconnected(cfg).await;
        agent.wait_mqtt(true).await;
        agent
    }

    /// Starts the binary and waits for its `rtcam ready` line only (the
    /// broker may be unreachable).
    pub async fn start_unconnected(cfg: &TestConfig) -> AgentProcess {
        super::assert_private_netns();
        let settings = cfg.settings();
        assert!(
            settings.http.listen.is_some(),
            "test agents serve HTTP: /stats.json is how tests see inside"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = cfg.write(dir.path());
        let mut command = rtcam();
        command.arg("--config").arg(&config_path).arg("run");
        for (k, v) in &cfg.env {
            command.env(k, v);
        }
        if let Some(n) = cfg.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit(2) is async-signal-safe; the closure only
            // calls it, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let process = RtcamProcess::spawn_with(command, echo_tag(), cfg.log_gate);
        let ready = process
            .log()
            .wait_line("the agent's ready line", WAIT, |l| {
                l.contains("rtcam ready: open http://") || l.contains("rtcam ready: open https://")
            })
            .await;
        let http = ready
            .split("open http://")
            .nth(1)
            .or_else(|| ready.split("open https://").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the ready line names the web address: {ready}"));
        if ready.contains("open https://") {
            super::tls_addrs()
                .lock()
                .expect("not poisoned")
                .insert(http);
        }
        AgentProcess {
            process,
            settings,
            http,
            config_path,
            _dir: dir,
        }
    }

    /// The settings it runs with (loaded from its file as it did).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Its config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Its web server.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Its output so far.
    pub fn log(&self) -> &LineLog {
        self.process.log()
    }

    /// Pauses and resumes the reading of its log (started
    /// [`TestConfig::with_log_gate`]).
    pub fn log_gate(&self) -> &super::lines::LogGate {
        self.process
            .log_gate()
            .expect("the agent was started with TestConfig::with_log_gate")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its current figures, from `/stats.json`.
    pub async fn stats(&self) -> AgentStats {
        let (status, body) = super::http_get(self.http, "/stats.json").await;
        assert_eq!(status, 200, "/stats.json: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/stats.json parses: {e}: {body}"))
    }

    /// Polls `/stats.json` until `pred` holds (a process boundary has no
    /// event to wait on); panics naming `what` after [`WAIT`].
    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&AgentStats) -> bool) -> AgentStats {
        self.wait_stats_within(WAIT, what, pred).await
    }

    /// [`Self::wait_stats`] with a bound of its own (emulated runs are slow).
    pub async fn wait_stats_within(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&AgentStats) -> bool,
    ) -> AgentStats {
        let deadline = Instant::now() + within;
        loop {
            let st = self.stats().await;
            if pred(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {st:?}\nagent log:\n{}",
                self.log().tail(40)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until it is (or is no longer) connected to its broker.
    pub async fn wait_mqtt(&self, connected: bool) {
        let what = if connected {
            "the agent to connect to its broker"
        } else {
            "the agent to lose its broker"
        };
        self.wait_stats(what, |s| s.mqtt_connected == connected)
            .await;
    }

    /// Waits until no session, subscription, hold or session task is left
    /// and the agent's task count is back to `base`'s.
    pub async fn wait_idle(&self, base: &AgentStats) -> AgentStats {
        self.wait_stats("sessions, subscriptions and tasks back to idle", |s| {
            s.sessions == 0 && s.subscribers == 0 && s.holds == 0 && s.tasks == base.tasks
        })
        .await
    }

    /// Stops it as systemd does (SIGTERM) and checks it exits cleanly.
    pub async fn shutdown(mut self) {
        let status = self.stop().await;
        assert!(
            status.success(),
            "rtcam exits 0 after SIGTERM ({status}); its log:\n{}",
            self.log().tail(40)
        );
    }

    /// SIGTERM, and the exit status (within [`WAIT`]).
    pub async fn stop(&mut self) -> ExitStatus {
        self.process.stop(WAIT).await
    }

    /// Its exit status, once its output has closed (it exited).
    pub fn reap(&mut self) -> ExitStatus {
        self.process.wait()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// Kills it with SIGKILL (a crash or a power cut) and reaps it.
    pub async fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.log().wait_closed("rtcam to die", WAIT).await;
        self.process.wait();
    }

    /// Panics (with its log) unless it is still running.
    pub fn assert_running(&mut self, context: &str) {
        self.process.assert_running(context);
    }
}

/// [`AgentProcess::start`].
pub async fn start(cfg: &TestConfig) -> AgentProcess {
    AgentProcess::start(cfg).await
}
