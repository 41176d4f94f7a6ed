//! Recording end to end through the `rtcam` binary and its config file:
//! segments that ffmpeg decodes strictly with every frame the recorder took
//! (the test pattern's block code numbers each frame, so a lost frame shows),
//! crash repair after `kill -9` and a torn last fragment, retention and
//! a full disk on a small tmpfs, and the microphone's test tone recorded
//! beside the video. Runs inside a private network namespace.

mod common;

use common::WAIT;
use common::agent::{AgentProcess, TestConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

const W: usize = 320;
const H: usize = 240;

fn config(prefix: &str, dir: &Path) -> TestConfig {
    TestConfig::new(prefix)
        .with("video.width", W as i64)
        .with("video.height", H as i64)
        .with("video.fps", 15)
        .with("record.mode", "continuous")
        .with("record.dir", dir.display().to_string())
        .with("record.segment_s", 2)
        .with("record.fragment_ms", 500)
        .with("record.min_free_mb", 0)
}

/// Every segment file under `dir`, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|day| {
            std::fs::read_dir(day.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    out.sort();
    out
}

/// Decodes `file` strictly (any error fails) and returns the block code
/// sequence number of every frame.
fn decode_strictly(file: &Path) -> Vec<u32> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-err_detect", "explode", "-i"])
        .arg(file)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg runs (installed by .ci/setup)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg reads {} strictly: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(W * H)
        .map(|y| {
            rtcam::blockcode::decode(y, W, W, H)
                .unwrap_or_else(|e| panic!("frame of {} has its block code: {e}", file.display()))
                .seq
        })
        .collect()
}

/// The `frames=N` of the log line that closed `name`.
fn logged_frames(agent: &AgentProcess, name: &str) -> usize {
    logged(agent, name, "frames")
}

/// The `key=N` of the log line that closed `name`.
fn logged(agent: &AgentProcess, name: &str, key: &str) -> usize {
    let line = agent
        .log()
        .text()
        .lines()
        .find(|l| l.contains("recording segment closed") && l.contains(name))
        .unwrap_or_else(|| panic!("a closing line for {name}"))
        .to_string();
    line.split(&format!(" {key}="))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key}= in {line}"))
}

fn name_of(file: &Path) -> String {
    let day = file.parent().and_then(Path::file_name).expect("day folder");
    format!(
        "{}/{}",
        day.to_string_lossy(),
        file.file_name().expect("file").to_string_lossy()
    )
}

async fn stop(agent: &mut AgentProcess) {
    let status = agent.stop().await;
    assert!(
        status.success(),
        "rtcam exits 0 after SIGTERM ({status}):\n{}",
        agent.log().tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_segments_decode_strictly_and_lose_no_frame_between_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("recordings");
    let mut agent = AgentProcess::start(&config("rec-cont", &rec)).await;
    agent
        .log()
        .wait_count("three closed segments", 3, WAIT, |l| {
            l.contains("recording segment closed")
        })
        .await;
    stop(&mut agent).await;
    let files = segments(&rec);
    assert!(files.len() >= 4, "{files:?}");
    let mut last: Option<u32> = None;
    let mut total = 0;
    for f in &files {
        let seqs = decode_strictly(f);
        assert_eq!(
            seqs.len(),
            logged_frames(&agent, &name_of(f)),
            "{}",
            f.display()
        );
        for s in &seqs {
            if let Some(prev) = last {
                assert_eq!(
                    *s,
                    prev + 1,
                    "frames follow each other across segments ({})",
                    f.display()
                );
            }
            last = Some(*s);
        }
        total += seqs.len();
    }
    // Three whole 2 s segments at 15 fps at least, plus the last one cut by the stop.
    assert!(total >= 3 * 30, "{total} frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_a_torn_fragment_every_segment_plays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("recordings");
    let cfg = config("rec-crash", &rec);
    let mut agent = AgentProcess::start(&cfg).await;
    agent
        .log()
        .wait_count("two closed segments", 2, WAIT, |l| {
            l.contains("recording segment closed")
        })
        .await;
    agent
        .log()
        .wait_count("a third segment started", 3, WAIT, |l| {
            l.contains("recording segment started")
        })
        .await;
    agent.kill().await;
    let files = segments(&rec);
    let cut = files.last().expect("the segment being written").clone();
    let kept = std::fs::metadata(&cut).expect("segment").len();
    // A power cut tears the fragment being written: half a box at the end.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&cut)
            .expect("open");
        let mut torn = Vec::new();
        torn.extend_from_slice(&100_000u32.to_be_bytes());
        torn.extend_from_slice(b"moof");
        torn.extend_from_slice(&[0x55; 3000]);
        f.write_all(&torn).expect("append");
    }
    // And a segment that died before its first fragment.
    let empty = cut.with_file_name("23-59-59.mp4");
    std::fs::write(&empty, b"\0\0\0\x18ftypisom").expect("write");

    let mut agent = AgentProcess::start(&cfg).await;
    let repaired = agent
        .log()
        .wait_line("the repair of the torn segment", WAIT, |l| {
            l.contains("torn last fragment removed")
        })
        .await;
    assert!(repaired.contains(&name_of(&cut)), "{repaired}");
    assert!(
        repaired.contains(&format!("kept_bytes={kept}")),
        "cut back to the last whole fragment ({kept} bytes): {repaired}"
    );
    agent
        .log()
        .wait_line("the empty segment removed", WAIT, |l| {
            l.contains("before its first fragment") && l.contains("23-59-59.mp4")
        })
        .await;
    assert!(!empty.exists());
    agent
        .log()
        .wait_line("recording again", WAIT, |l| {
            l.contains("recording segment closed")
        })
        .await;
    stop(&mut agent).await;
    for f in segments(&rec) {
        let n = decode_strictly(&f).len();
        assert!(n > 0, "{} has frames", f.display());
    }
    let n = decode_strictly(&cut).len();
    assert!(
        n >= 7,
        "the interrupted segment plays up to its last whole fragment: {n} frames"
    );
}

/// A tmpfs of `mb` MiB mounted on `dir` while this lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mb: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "rtcam-test"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Tmpfs {
    /// Remounts it `ro` or `rw`.
    fn remount(&self, how: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.0)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "remount {how}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_free_space_on_a_small_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("small");
    let _fs = Tmpfs::mount(&rec, 4);
    // About 250 KB a second: the 4 MiB disk fills in seconds.
    let cfg = config("rec-full", &rec)
        .with("video.width", 640)
        .with("video.height", 480)
        .with("video.bitrate_kbps", 2000)
        .with("record.min_free_mb", 2);
    let mut agent = AgentProcess::start(&cfg).await;
    agent
        .log()
        .wait_line("retention deleting for free space", WAIT, |l| {
            l.contains("old recording deleted") && l.contains("reason=free_space")
        })
        .await;
    agent
        .log()
        .wait_count("two more segments closed after that", 2, WAIT, |l| {
            l.contains("recording segment closed")
        })
        .await;
    stop(&mut agent).await;
    // 2 MiB kept free: what is left is at most 2 MiB and a segment.
    assert!(dir_bytes(&rec) < 3 << 20, "{} bytes kept", dir_bytes(&rec));
    for f in segments(&rec) {
        decode_strictly_any(&f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_recording_resumes_without_disturbing_viewers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("tiny");
    let _fs = Tmpfs::mount(&rec, 2);
    let cfg = config("rec-enospc", &rec)
        .with("video.width", 640)
        .with("video.height", 480)
        .with("video.bitrate_kbps", 2000);
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let prefix = &s.mqtt.topic_prefix;
    let mut watch = common::Watch::start(&s, "rec-watch", &format!("{prefix}/record/event")).await;
    let mut state = common::Watch::start(&s, "rec-state", &format!("{prefix}/record")).await;
    let mut v = common::viewer(&s, "rec-viewer", true).await;
    let before = common::frames(&mut v, 15).await;
    assert_eq!(before.missing(), 0);
    let error = watch
        .wait_for("record.error", &format!("{prefix}/record/event"), |p| {
            String::from_utf8_lossy(p).contains("record.error")
        })
        .await;
    let error = String::from_utf8_lossy(&error).into_owned();
    assert!(error.contains("No space left on device"), "{error}");
    state
        .wait_for(
            "the retained error state",
            &format!("{prefix}/record"),
            |p| {
                let v: serde_json::Value = serde_json::from_slice(p).unwrap_or_default();
                v["state"] == "error" && v["error"].as_str().is_some_and(|e| e.contains("No space"))
            },
        )
        .await;
    assert!(common::metric(&agent, "rtcam_record_failing").await == Some(1.0));
    // The viewer is not disturbed while the disk refuses.
    let during = common::frames(&mut v, 45).await;
    assert_eq!(
        during.missing(),
        0,
        "no frame lost by the viewer while the disk is full"
    );
    assert!(during.in_order());
    // Space comes back (the user deletes old recordings): recording resumes by itself.
    for f in segments(&rec) {
        std::fs::remove_file(f).expect("delete");
    }
    watch
        .wait_for(
            "record.started again",
            &format!("{prefix}/record/event"),
            |p| String::from_utf8_lossy(p).contains("record.started"),
        )
        .await;
    agent
        .log()
        .wait_line("the resume line", WAIT, |l| l.contains("recording resumed"))
        .await;
    assert!(common::metric(&agent, "rtcam_record_write_errors_total").await >= Some(1.0));
    let after = common::frames(&mut v, 15).await;
    assert_eq!(after.missing(), 0);
    drop(v);
    let mut agent = agent;
    stop(&mut agent).await;
    for f in segments(&rec) {
        decode_strictly_any(&f);
    }
}

/// The block code (sequence, capture time in Unix ms) of every frame of `file`.
fn codes(file: &Path) -> Vec<(u32, u64)> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-err_detect", "explode", "-i"])
        .arg(file)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(W * H)
        .map(|y| {
            let c = rtcam::blockcode::decode(y, W, W, H).expect("a block code");
            (c.seq, c.ts_ms)
        })
        .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

async fn reply(v: &rtcam::probe::Viewer, req: serde_json::Value) -> serde_json::Value {
    v.command(req.clone(), WAIT)
        .await
        .unwrap_or_else(|e| panic!("a reply to {req}: {e}"))
}

fn code(r: &serde_json::Value) -> &str {
    r["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error code in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_record_with_pre_roll_from_a_keyframe_on_mqtt_and_datachannel_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("events");
    let cfg = config("rec-events", &rec)
        .with("video.keyframe_interval_ms", 1000)
        .with("record.mode", "events")
        .with("record.segment_s", 60)
        .with("record.pre_s", 2)
        .with("record.post_s", 2);
    let mut agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let prefix = s.mqtt.topic_prefix.clone();
    let events_topic = format!("{prefix}/record/event");
    let mut events = common::Watch::start(&s, "rec-ev", &events_topic).await;
    // The camera runs for the pre-roll from the start: 3 s of frames.
    agent
        .wait_stats("3 s of frames", |st| st.frames >= 45)
        .await;
    assert!(
        segments(&rec).is_empty(),
        "events mode records nothing before a trigger"
    );

    let t = unix_ms();
    events
        .publish(&format!("{prefix}/record/set"), "trigger")
        .await;
    events
        .wait_for("record.started", &events_topic, |p| {
            String::from_utf8_lossy(p).contains("record.started")
        })
        .await;
    events
        .wait_for("record.stopped", &events_topic, |p| {
            String::from_utf8_lossy(p).contains("record.stopped")
        })
        .await;
    let files = segments(&rec);
    assert_eq!(files.len(), 1, "{files:?}");
    let c = codes(&files[0]);
    let (first, last) = (c[0].1, c[c.len() - 1].1);
    // Pre-roll: from a keyframe (1 s apart) at least 2 s before the trigger;
    // 300 ms allow for the trigger's way through the broker.
    assert!(
        first + 2000 <= t + 300 && first + 3000 + 300 >= t,
        "first frame {first}, trigger {t}"
    );
    assert!(
        last + 300 >= t + 2000,
        "post-roll: last frame {last}, trigger {t}"
    );
    assert!(c.windows(2).all(|w| w[1].0 == w[0].0 + 1), "no frame lost");

    // The DataChannel: start, list, refusals with their codes, stop, delete.
    let v = common::viewer(&s, "rec-dc", false).await;
    let r = reply(&v, serde_json::json!({"cmd": "record.start"})).await;
    assert_eq!(r["ok"], true, "{r}");
    let started = events
        .wait_for("record.started", &events_topic, |p| {
            String::from_utf8_lossy(p).contains("record.started")
        })
        .await;
    let started: serde_json::Value = serde_json::from_slice(&started).expect("JSON");
    let open = started["segment"]
        .as_str()
        .expect("the segment")
        .to_string();
    let r = reply(&v, serde_json::json!({"cmd": "record.list"})).await;
    let list = r["result"]["recordings"]
        .as_array()
        .expect("recordings")
        .clone();
    assert_eq!(list.len(), 2, "{r}");
    assert_eq!(list[1]["name"], open.as_str());
    assert_eq!(list[1]["open"], true);
    assert!(list[0]["frames"].as_u64() == Some(c.len() as u64), "{r}");
    assert_eq!(r["result"]["status"]["state"], "recording");
    let r = reply(
        &v,
        serde_json::json!({"cmd": "record.delete", "name": open}),
    )
    .await;
    assert_eq!(code(&r), "in_use");
    let r = reply(
        &v,
        serde_json::json!({"cmd": "record.delete", "name": "../../etc/passwd"}),
    )
    .await;
    assert_eq!(code(&r), "bad_params");
    let r = reply(&v, serde_json::json!({"cmd": "record.stop"})).await;
    assert_eq!(r["ok"], true, "{r}");
    events
        .wait_for("record.stopped", &events_topic, |p| {
            String::from_utf8_lossy(p).contains("record.stopped")
        })
        .await;
    let first_name = name_of(&files[0]);
    let r = reply(
        &v,
        serde_json::json!({"cmd": "record.delete", "name": first_name}),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(!files[0].exists());
    let r = reply(
        &v,
        serde_json::json!({"cmd": "record.delete", "name": first_name}),
    )
    .await;
    assert_eq!(code(&r), "not_found");

    // HTTP: the list, a download whole and by range, a delete.
    let http = agent.http_addr();
    let (status, _, body) = common::http_request(http, "GET", "/recordings", &[]).await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let entry = list["recordings"][0].clone();
    let name = entry["name"].as_str().expect("a name").to_string();
    assert_eq!(entry["open"], false, "{list}");
    let (status, headers, whole) =
        common::http_request_bytes(http, "GET", &format!("/recordings/{name}"), &[]).await;
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "video/mp4"),
        "{headers:?}"
    );
    assert_eq!(Some(whole.len() as u64), entry["bytes"].as_u64());
    let (status, _, part) = common::http_request_bytes(
        http,
        "GET",
        &format!("/recordings/{name}"),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!((status, &part[..]), (206, &whole[100..200]));
    // What came over HTTP plays, with the frames the list promised.
    let copy = dir.path().join("download.mp4");
    std::fs::write(&copy, &whole).expect("write");
    assert_eq!(Some(codes(&copy).len() as u64), entry["frames"].as_u64());
    let (status, _, body) =
        common::http_request(http, "GET", "/recordings/..%2f..%2fetc/passwd", &[]).await;
    assert!(status == 400 || status == 404, "{status} {body}");
    let (status, _, _) =
        common::http_request(http, "DELETE", &format!("/recordings/{name}"), &[]).await;
    assert_eq!(status, 204);
    let (_, _, body) = common::http_request(http, "GET", "/recordings", &[]).await;
    assert!(!body.contains(&name), "{body}");
    drop(v);
    stop(&mut agent).await;
    for f in segments(&rec) {
        decode_strictly_any(&f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_commands_answer_recording_off_when_it_is_off() {
    let agent = AgentProcess::start(&TestConfig::new("rec-off")).await;
    let v = common::viewer(agent.settings(), "rec-off-v", false).await;
    for cmd in ["record.list", "record.start", "record.stop"] {
        let r = reply(&v, serde_json::json!({"cmd": cmd})).await;
        assert_eq!(code(&r), "recording_off", "{cmd}: {r}");
    }
    drop(v);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_disk_is_reported_and_recording_resumes_when_it_is_writable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("ro");
    let fs = Tmpfs::mount(&rec, 16);
    let agent = AgentProcess::start(&config("rec-ro", &rec)).await;
    let s = agent.settings().clone();
    let prefix = &s.mqtt.topic_prefix;
    let topic = format!("{prefix}/record/event");
    let mut watch = common::Watch::start(&s, "ro-watch", &topic).await;
    agent
        .log()
        .wait_line("a closed segment", WAIT, |l| {
            l.contains("recording segment closed")
        })
        .await;
    fs.remount("ro");
    let error = watch
        .wait_for("record.error", &topic, |p| {
            String::from_utf8_lossy(p).contains("record.error")
        })
        .await;
    assert!(
        String::from_utf8_lossy(&error).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&error)
    );
    fs.remount("rw");
    watch
        .wait_for("record.started again", &topic, |p| {
            String::from_utf8_lossy(p).contains("record.started")
        })
        .await;
    let mut agent = agent;
    stop(&mut agent).await;
    // What was written before the disk turned read-only plays; so does what came after.
    for f in segments(&rec) {
        decode_strictly_any(&f);
    }
}

/// Strict decode of a segment of any size (no block codes read).
fn decode_strictly_any(file: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-err_detect", "explode", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg reads {} strictly: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ffprobe`'s description of `file`'s streams, one line each.
fn probe_streams(file: &Path) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .args([
            "stream=index,codec_type,codec_name,sample_rate,channels",
            "-of",
            "compact=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs (installed with ffmpeg)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe reads {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The packets of one stream (`v` or `a`) of `file`: their count, and the
/// time from the first one's start to the last one's end, in seconds (the
/// last one lasting as long as the one before it when ffprobe gives no
/// duration, as ffmpeg 5 does for fragmented files).
fn stream_span(file: &Path, stream: &str) -> (usize, f64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream, "-show_entries"])
        .args(["packet=pts_time,duration_time", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets: Vec<(f64, Option<f64>)> = text
        .lines()
        .map(|l| {
            let mut f = l.split(',');
            let pts = f.next().and_then(|p| p.parse().ok());
            let pts = pts.unwrap_or_else(|| panic!("a pts in {l:?}"));
            (pts, f.next().and_then(|d| d.parse().ok()))
        })
        .collect();
    let (first, last) = match packets[..] {
        [] => panic!("packets of {stream} in {}", file.display()),
        // One packet (the segment cut by the stop): its length unknown.
        [one] => (one.0, one.0 + one.1.unwrap_or(0.0)),
        [.., before, last] => (packets[0].0, last.0 + last.1.unwrap_or(last.0 - before.0)),
    };
    (packets.len(), first, last)
}

/// The audio of `file` decoded strictly to mono 48 kHz.
fn decoded_audio(file: &Path) -> Vec<i16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(file)
        .args([
            "-map", "0:a", "-f", "s16le", "-ac", "1", "-ar", "48000", "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg decodes the audio of {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The beeps in mono 48 kHz audio, timed from its first sample (ms).
fn beeps(pcm: &[i16]) -> Vec<rtcam::audio::tone::Beep> {
    let mut det = rtcam::audio::tone::ToneDetector::new();
    let mut end = 0usize;
    for chunk in pcm.chunks(960) {
        end += chunk.len();
        det.feed(chunk, (end - 1) as f64 * 1000.0 / 48_000.0);
    }
    // 10 ms of silence after the end finish a beep the end cut.
    det.feed(&[0; 480], (end + 479) as f64 * 1000.0 / 48_000.0);
    det.beeps().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_microphone_on_every_segment_records_the_test_tone_beside_the_video() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("recordings");
    let cfg = config("rec-audio", &rec).with("audio.input", "test");
    let mut agent = AgentProcess::start(&cfg).await;
    agent
        .log()
        .wait_count("four closed segments", 4, WAIT, |l| {
            l.contains("recording segment closed")
        })
        .await;
    stop(&mut agent).await;
    let files = segments(&rec);
    assert!(files.len() >= 5, "{files:?}");
    let mut all_audio = Vec::new();
    // Where one segment's audio ends and the next one's starts, ms.
    let mut cuts = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let name = name_of(f);
        let streams = probe_streams(f);
        eprintln!("{name}: {streams:?}");
        assert_eq!(
            streams,
            [
                "index=0|codec_name=h264|codec_type=video",
                "index=1|codec_name=opus|codec_type=audio|sample_rate=48000|channels=1",
            ],
            "{name}"
        );
        // Both streams decode strictly; every frame the recorder took is there.
        decode_strictly_any(f);
        let frames = decode_strictly(f).len();
        assert_eq!(frames, logged_frames(&agent, &name), "{name}");
        let pcm = decoded_audio(f);
        let (vn, v0, v1) = stream_span(f, "v");
        let (an, a0, a1) = stream_span(f, "a");
        assert_eq!(vn, frames);
        assert_eq!(an, logged(&agent, &name, "audio_packets"), "{name}");
        let found = beeps(&pcm);
        eprintln!(
            "{name}: video {vn} frames {v0:.3}..{v1:.3} s, audio {an} packets {a0:.3}..{a1:.3} s, \
             {} samples decoded, beeps {:?}",
            pcm.len(),
            found
                .iter()
                .map(|b| (b.arrived_ms.round(), b.hz.round()))
                .collect::<Vec<_>>()
        );
        // Decoded: 960 samples a packet, less the 312 of Opus's pre-skip.
        assert_eq!(pcm.len(), an * 960 - 312, "{name}");
        all_audio.extend_from_slice(&pcm);
        cuts.push(all_audio.len() as f64 * 1000.0 / 48_000.0);
        // The first segment may start before the microphone does; the
        // last one was cut by the stop.
        if i == 0 || i == files.len() - 1 {
            continue;
        }
        // The audio starts at the segment's keyframe (its first packet
        // within 20 ms of it) and ends with the video, within a frame (the
        // last frame's length is estimated: ffmpeg 5 gives no durations).
        assert!(
            (0.0..0.021).contains(&(a0 - v0)),
            "{name}: audio from {a0}, video from {v0}"
        );
        let (video_s, audio_s) = (v1 - v0, a1 - v0);
        assert!(
            (audio_s - video_s).abs() <= 1.0 / 15.0,
            "{name}: audio {audio_s:.3} s, video {video_s:.3} s"
        );
        // A beep at every whole second: as many as the segment has whole
        // seconds in it, less one cut short (under 50 ms) at either end.
        let n = found.len() as f64;
        assert!(
            n >= video_s.floor() - 1.0 && n <= video_s.ceil(),
            "{name}: {n} beeps in {video_s:.3} s"
        );
        assert!(
            found.iter().all(|b| (b.hz - 1000.0).abs() <= 20.0),
            "{name}: {found:?}"
        );
    }
    // The segments' audio one after the other is the tone without a hole:
    // a beep every second across every cut (each file's decoder drops its
    // 312-sample pre-skip, 6.5 ms).
    let all = beeps(&all_audio);
    let seconds = all_audio.len() as f64 / 48_000.0;
    // A beep lasts 100 ms: one the recording's start cut (it began in the
    // first 100 ms of the audio) tells neither when it began nor its
    // frequency, nor does one the end cut.
    let timed = &all[usize::from(all.first().is_some_and(|b| b.arrived_ms < 100.0))..];
    let whole: Vec<_> = timed
        .iter()
        .filter(|b| b.arrived_ms + 100.0 <= seconds * 1000.0)
        .collect();
    eprintln!(
        "all segments: {seconds:.3} s of audio, {} beeps ({} whole), {:.1}..{:.1} Hz, {:.1}..{:.1} ms apart",
        all.len(),
        whole.len(),
        whole.iter().map(|b| b.hz).fold(f64::MAX, f64::min),
        whole.iter().map(|b| b.hz).fold(0.0, f64::max),
        timed
            .windows(2)
            .map(|w| w[1].arrived_ms - w[0].arrived_ms)
            .fold(f64::MAX, f64::min),
        timed
            .windows(2)
            .map(|w| w[1].arrived_ms - w[0].arrived_ms)
            .fold(0.0, f64::max),
    );
    assert!(
        (all.len() as f64 - seconds).abs() <= 1.0,
        "{} beeps in {seconds:.3} s",
        all.len()
    );
    // A beep a cut falls in is two short halves, each decoded from a
    // fresh start: the detector may take neither for a beep. Every other
    // beep is 1 s after the one before.
    for w in timed.windows(2) {
        let gap = w[1].arrived_ms - w[0].arrived_ms;
        let missed = (gap / 1000.0).round() - 1.0;
        let cut_in_missed = |k: f64| {
            let at = w[0].arrived_ms + k * 1000.0;
            cuts.iter().any(|c| (at - 30.0..=at + 130.0).contains(c))
        };
        assert!(
            (gap - (missed + 1.0) * 1000.0).abs() <= 30.0
                && (1..=missed as usize).all(|k| cut_in_missed(k as f64)),
            "beeps {gap:.1} ms apart (cuts at {cuts:?}): {all:?}"
        );
    }
    assert!(
        whole.iter().all(|b| (b.hz - 1000.0).abs() <= 20.0),
        "{all:?}"
    );
}
