//! `rtcam bench viewers`: the agent as users run it (a separate `rtcam run`
//! process, test pattern, embedded broker) measured with real WebRTC
//! viewers over loopback: offer to first decoded frame, end-to-end latency
//! from the block code, and the agent's CPU and RSS with 1, 5 and 10
//! viewers; then the sound with the test microphone: the tone's latency,
//! the microphone's CPU and the CPU of each extra listener. Must run inside
//! a private network namespace (only `lo`).

use crate::config::Settings;
use crate::config::settings::MdnsMode;
use crate::peer::PeerOptions;
use crate::probe::{Viewer, ViewerOptions};
use crate::signaling::topics::ClientId;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ViewersBenchError {
    /// Not isolated.
    #[error(
        "run this benchmark inside a private network namespace: unshare --net sh -c 'ip link set lo up; rtcam bench viewers'"
    )]
    NotIsolated,
    /// The agent process.
    #[error("agent process: {0}")]
    Agent(String),
    /// A viewer.
    #[error("viewer: {0}")]
    Viewer(#[from] crate::probe::ProbeError),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct ViewersBenchOptions {
    /// Offer-to-first-frame runs.
    pub runs: u32,
    /// Seconds of latency measurement.
    pub latency_seconds: u32,
    /// Seconds of each CPU/RSS window.
    pub load_seconds: u32,
}

fn only_loopback() -> bool {
    std::fs::read_to_string("/proc/self/net/dev").is_ok_and(|dev| {
        dev.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|i| i.trim() == "lo")
    })
}

fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU time (user + system) a process has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    cpu_time_of(&format!("/proc/{pid}/stat"))
}

/// CPU time from a `/proc/…/stat` file (a process's or a thread's).
fn cpu_time_of(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

fn http_get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    serde_json::from_str(body.split_once("\r\n\r\n")?.1).ok()
}

struct AgentProcess {
    child: Child,
    http: SocketAddr,
}

impl AgentProcess {
    fn stats(&self) -> Option<serde_json::Value> {
        http_get_json(self.http, "/stats.json")
    }

    /// Polls the agent's `/stats.json` until `pred` holds (a separate process: no event to wait on).
    fn wait(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<(), ViewersBenchError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.stats().is_some_and(|s| pred(&s)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ViewersBenchError::Agent(format!(
                    "timed out waiting for {what}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The 1280x720@30 stream the video figures are for.
const VIDEO_720P: &str = "[video]\nwidth = 1280\nheight = 720\nfps = 30\nbitrate_kbps = 2000\n";

/// A small stream and the test microphone: the audio figures, over a video
/// baseline small enough not to drown them.
const AUDIO_TEST: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 300\n\
     [audio]\ninput = \"test\"\n";

fn start_agent(dir: &Path, media: &str) -> Result<(AgentProcess, Settings), ViewersBenchError> {
    let http = free_addr()?;
    let (v4, v5, ws) = (free_addr()?, free_addr()?, free_addr()?);
    let toml = format!(
        "{media}\
         [webrtc]\ninterfaces = [\"lo\"]\nloopback = true\nmdns = \"disabled\"\nmax_viewers = 16\n\
         [mqtt]\ntopic_prefix = \"rtcam-bench\"\nclient_id = \"rtcam-bench-agent\"\n\
         [http]\nlisten = \"{http}\"\n[broker]\nlisten = \"{v4}\"\nv5_listen = \"{v5}\"\nws_listen = \"{ws}\"\n"
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, &toml)?;
    let settings = crate::config::load(&crate::config::Layers {
        file: Some(&path),
        ..Default::default()
    })
    .map_err(|e| ViewersBenchError::Agent(e.to_string()))?
    .settings;
    let child = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&path)
        .arg("run")
        .env("RTCAM_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let agent = AgentProcess { child, http };
    agent.wait("the agent to connect to its broker", |s| {
        s["mqtt_connected"] == true
    })?;
    Ok((agent, settings))
}

fn viewer_options(s: &Settings, n: u32, decode: bool) -> ViewerOptions {
    let cid = format!("bench-{n}");
    ViewerOptions {
        mqtt: crate::probe::mqtt_options_for(s, &cid),
        topic_prefix: s.mqtt.topic_prefix.clone(),
        client_id: ClientId::parse(&cid).expect("bench ids are valid"),
        video: true,
        control: false,
        token: None,
        peer: PeerOptions::for_viewer(&s.webrtc),
        timeout: Duration::from_secs(20),
        decode,
        replaces: None,
        audio: false,
    }
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Runs the whole benchmark and renders its figures.
pub async fn run(opts: &ViewersBenchOptions) -> Result<String, ViewersBenchError> {
    if !only_loopback() {
        return Err(ViewersBenchError::NotIsolated);
    }
    let dir = tempfile_dir()?;
    let (agent, settings) = start_agent(&dir, VIDEO_720P)?;
    let pid = agent.child.id();
    let mut out = String::new();
    debug_assert_eq!(settings.webrtc.mdns, MdnsMode::Disabled);

    // Idle: camera off, nobody watching.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid).unwrap_or(0);
    let _ = writeln!(
        out,
        "agent idle RSS: {:.1} MB (1280x720@30 test pattern, embedded broker)",
        idle_rss as f64 / 1024.0
    );

    // Offer to first decoded frame, camera cold each time.
    let mut ttff = Vec::new();
    for i in 0..opts.runs {
        agent.wait("the camera to stop", |s| {
            s["camera"] == "idle" && s["sessions"] == 0
        })?;
        let mut v = Viewer::connect(&viewer_options(&settings, i, true)).await?;
        let first = v
            .next_frame(Duration::from_secs(20))
            .await
            .ok_or(ViewersBenchError::Agent("no first frame".into()))?;
        ttff.push(
            first
                .decoded_at
                .duration_since(v.offer_sent())
                .as_secs_f64()
                * 1000.0,
        );
        v.bye().await;
    }
    let _ = writeln!(
        out,
        "offer to first decoded frame, camera cold: median {:.0} ms, p95 {:.0} ms, min {:.0} ms, \
         max {:.0} ms ({} runs; over 1 s: {})",
        quantile(ttff.clone(), 0.5),
        quantile(ttff.clone(), 0.95),
        quantile(ttff.clone(), 0.0),
        quantile(ttff.clone(), 1.0),
        opts.runs,
        // Over 1 s: typically a lost handshake packet, which DTLS resends after 1 s.
        ttff.iter().filter(|&&ms| ms > 1000.0).count()
    );

    // End-to-end latency from the block code, one decoding viewer.
    let mut v = Viewer::connect(&viewer_options(&settings, 100, true)).await?;
    let lat = latencies(&mut v, opts.latency_seconds).await;
    v.bye().await;
    let _ = writeln!(
        out,
        "end-to-end latency 1280x720@30 (capture to decoded, block code): median {:.0} ms, p95 {:.0} ms ({} frames)",
        quantile(lat.clone(), 0.5),
        quantile(lat.clone(), 0.95),
        lat.len()
    );

    // CPU and RSS of the agent with 1, 5 and 10 viewers (viewers only count
    // frames, so their decoding does not compete with the agent).
    let mut rows = Vec::new();
    for n in [1u32, 5, 10] {
        agent.wait("the previous viewers to leave", |s| s["sessions"] == 0)?;
        let mut viewers = Vec::new();
        for i in 0..n {
            let mut v = Viewer::connect(&viewer_options(&settings, 200 + i, false)).await?;
            v.wait_connected(Duration::from_secs(20)).await;
            viewers.push(v);
        }
        // Let every viewer settle into the stream first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for v in &mut viewers {
            v.drain_frames();
        }
        let load = cpu_window(pid, Duration::from_secs(u64::from(opts.load_seconds)), None).await;
        let rss = rss_kib(pid).unwrap_or(0);
        let mut min_fps = f64::MAX;
        for v in &mut viewers {
            let frames = v.drain_frames();
            min_fps = min_fps.min(frames as f64 / load.secs);
        }
        let core = load.process;
        let _ = writeln!(
            out,
            "{n:>2} viewer(s): agent CPU {core:.1} % of a core, RSS {:.1} MB, slowest viewer {min_fps:.1} fps",
            rss as f64 / 1024.0
        );
        rows.push((n, core, rss));
        for v in viewers {
            v.bye().await;
        }
    }
    if let (Some(&(_, c1, r1)), Some(&(_, c10, r10))) = (rows.first(), rows.last()) {
        let _ = writeln!(
            out,
            "each extra viewer (10 vs 1): {:.2} % of a core, {:.2} MB RSS",
            (c10 - c1) / 9.0,
            (r10 as f64 - r1 as f64) / 9.0 / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "camera-on baseline is the 1-viewer figure; idle RSS is with the camera off."
    );
    drop(agent);
    audio(opts, &dir, &mut out).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// CPU time of the agent's thread named `name` (its `comm`).
fn thread_cpu_time(pid: u32, name: &str) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if comm.trim_end() != name {
            return None;
        }
        let tid: u32 = t.file_name().to_str()?.parse().ok()?;
        cpu_time_of(&format!("/proc/{pid}/task/{tid}/stat"))
    })
}

/// Block-code latencies (ms) of the frames `v` decodes in `seconds`.
async fn latencies(v: &mut Viewer, seconds: u32) -> Vec<f64> {
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs(u64::from(seconds));
    while let Some(f) = v
        .next_frame(end.saturating_duration_since(Instant::now()))
        .await
    {
        lat.extend(f.latency_ms);
        if Instant::now() >= end {
            break;
        }
    }
    lat
}

/// What a process (and one of its threads) used over a window.
struct CpuWindow {
    /// The window's length, in seconds.
    secs: f64,
    /// The process, in % of a core.
    process: f64,
    /// The thread asked for, in % of a core (0 without one).
    thread: f64,
}

/// Samples `pid`'s CPU time (and its thread named `thread`) around a sleep
/// of `window`.
async fn cpu_window(pid: u32, window: Duration, thread: Option<&str>) -> CpuWindow {
    let sample = || {
        (
            cpu_time(pid).unwrap_or_default(),
            thread
                .and_then(|t| thread_cpu_time(pid, t))
                .unwrap_or_default(),
            Instant::now(),
        )
    };
    let (cpu0, th0, t0) = sample();
    tokio::time::sleep(window).await;
    let (cpu1, th1, t1) = sample();
    let secs = (t1 - t0).as_secs_f64();
    let pct = |d: Duration| d.as_secs_f64() / secs * 100.0;
    CpuWindow {
        secs,
        process: pct(cpu1.saturating_sub(cpu0)),
        thread: pct(th1.saturating_sub(th0)),
    }
}

/// The sound: the test tone's latency and offset from the picture, the
/// microphone thread's CPU, and the agent's CPU per extra listener.
async fn audio(
    opts: &ViewersBenchOptions,
    dir: &Path,
    out: &mut String,
) -> Result<(), ViewersBenchError> {
    let (agent, settings) = start_agent(dir, AUDIO_TEST)?;
    let pid = agent.child.id();
    let listener = |n: u32, video: bool| {
        let mut o = viewer_options(&settings, n, video);
        o.audio = true;
        o
    };
    // One decoding viewer: the tone's latency against the block code's.
    let mut v = Viewer::connect(&listener(400, true)).await?;
    let video_lat = latencies(&mut v, opts.latency_seconds.max(3)).await;
    let (audio_lat, packets) = {
        let h = v.heard();
        let lat: Vec<f64> = h.tone.beeps().iter().map(|b| b.latency_ms()).collect();
        (lat, h.packets)
    };
    let (a50, v50) = (quantile(audio_lat.clone(), 0.5), quantile(video_lat, 0.5));
    let _ = writeln!(
        out,
        "sound: test tone capture to decoded (Opus 48 kHz mono 32 kbit/s): median {a50:.1} ms, \
         p95 {:.1} ms ({} beeps, {packets} packets); offset from the picture {:+.1} ms",
        quantile(audio_lat.clone(), 0.95),
        audio_lat.len(),
        a50 - v50
    );

    // The microphone's own thread (capture, Opus encode, publish), and the
    // whole agent with 1 and then 10 listeners (9 of them sound only).
    v.drain_frames();
    let window = Duration::from_secs(u64::from(opts.load_seconds));
    let first = cpu_window(pid, window, Some("rtcam-audio-in")).await;
    let (mic, one) = (first.thread, first.process);
    let mut extra = Vec::new();
    for i in 0..9 {
        let mut l = Viewer::connect(&listener(410 + i, false)).await?;
        l.wait_connected(Duration::from_secs(20)).await;
        extra.push(l);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<u64> = extra.iter().map(|l| l.heard().packets).collect();
    let all = cpu_window(pid, window, None).await;
    let (secs, ten) = (all.secs, all.process);
    let slowest = extra
        .iter()
        .zip(before)
        .map(|(l, b)| (l.heard().packets - b) as f64 / secs)
        .fold(f64::MAX, f64::min);
    let _ = writeln!(
        out,
        "sound: microphone thread (capture, encode, fan-out) {mic:.2} % of a core; agent \
         320x240@15 with sound, 1 listener {one:.1} %, 10 listeners {ten:.1} % \
         (each extra listener {:.2} % of a core; slowest {slowest:.1} packets/s of 50)",
        (ten - one) / 9.0
    );
    for l in extra {
        l.bye().await;
    }
    v.bye().await;
    drop(agent);
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("rtcam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process_figures() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|k| k > 0));
        assert!(cpu_time(pid).is_some());
        let main = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
        assert!(thread_cpu_time(pid, main.trim_end()).is_some());
        assert_eq!(thread_cpu_time(pid, "no-such-thread"), None);
        assert_eq!(rss_kib(u32::MAX), None);
    }

    #[test]
    fn quantiles() {
        assert_eq!(quantile(vec![3.0, 1.0, 2.0], 0.5), 2.0);
        assert!(quantile(Vec::new(), 0.5).is_nan());
    }
}
