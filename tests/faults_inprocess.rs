//! Faults that can only be injected inside the agent, so these tests run it
//! in-process (`rtcam::agent::Agent` with `AgentOptions`) rather than as the
//! shipped binary: the binary has no public door to unplug a camera (a
//! custom frame `Source`), make a session panic (`Faults`), make GPIO
//! hardware refuse a write (the simulator's `fail_writes`), or plug in a
//! camera with its own H.264 encoder. Everything that
//! can be caused from outside is in `tests/faults_e2e.rs`, through the
//! binary. As there, each ends with sessions, hub subscriptions and tasks
//! back to idle and a clean shutdown. Runs inside a private network
//! namespace (see `.ci/test`).

mod common;

use bytes::Bytes;
use common::h264_camera::H264Camera;
use common::{
    WAIT, frames, gpio_settings, mqtt_for, settings, start, start_with, viewer, viewer_options,
};
use rtcam::agent::{Agent, AgentOptions, AgentStats};
use rtcam::config::Settings;
use rtcam::media::capture::test_pattern::TestPattern;
use rtcam::media::capture::{Source, SourceError, SourceFactory, SourceInfo};
use rtcam::media::frame::RawFrame;
use rtcam::peer::PeerState;
use rtcam::probe::{Signal, Viewer};
use rtcam::session::Faults;
use rtcam::signaling::mqtt::{Link, LinkEvent};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Waits for a condition that has no event to wait on (task counts).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sessions, hub subscriptions and the agent's tasks are back to idle.
async fn assert_idle(agent: &Agent, base: &AgentStats) {
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 0 && c.tasks == 0)
            .await,
        "sessions end: {:?}",
        agent.stats()
    );
    eventually("hub subscriptions and agent tasks back to idle", || {
        let st = agent.stats();
        st.subscribers == 0 && st.holds == 0 && st.tasks == base.tasks
    })
    .await;
}

/// Shutdown must finish by itself (it has its own deadline; this is a bound).
async fn shut_down(agent: Agent) {
    tokio::time::timeout(WAIT, agent.shutdown())
        .await
        .expect("the agent shuts down");
}

/// Waits for the agent's retained `P/status` `online`, as the web page does
/// before it offers.
async fn online(s: &Settings) {
    let (mut rx, task) =
        subscribe(s, "status-watch", format!("{}/status", s.mqtt.topic_prefix)).await;
    loop {
        let (_, payload) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the agent says it is online")
            .expect("subscribed");
        if &payload[..] == b"online" {
            break;
        }
    }
    task.abort();
}

/// What the pluggable camera reports to the test.
#[derive(Debug, PartialEq, Eq)]
enum Plug {
    Opened,
    OpenRefused,
    ReadFailed,
}

/// A test-pattern camera that can be unplugged: while unplugged, reading
/// and opening fail like a USB camera that went away. The pattern (and so
/// its sequence numbers) survives a reopen, as a real scene would.
struct Camera {
    unplugged: AtomicBool,
    pattern: Mutex<Option<TestPattern>>,
    events: mpsc::UnboundedSender<Plug>,
}

struct CameraFactory(Arc<Camera>);

struct CameraSource {
    camera: Arc<Camera>,
    pattern: Option<TestPattern>,
}

impl SourceFactory for CameraFactory {
    fn open(&self) -> Result<Box<dyn Source>, SourceError> {
        let camera = &self.0;
        if camera.unplugged.load(Ordering::SeqCst) {
            let _ = camera.events.send(Plug::OpenRefused);
            return Err(SourceError::Device {
                path: "/dev/video-test".into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such device"),
            });
        }
        let pattern = camera
            .pattern
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| TestPattern::new(640, 480, 30));
        let _ = camera.events.send(Plug::Opened);
        Ok(Box::new(CameraSource {
            camera: camera.clone(),
            pattern: Some(pattern),
        }))
    }
}

impl Source for CameraSource {
    fn info(&self) -> SourceInfo {
        self.pattern.as_ref().expect("kept until dropped").info()
    }

    fn next_frame(&mut self) -> Result<RawFrame<'_>, SourceError> {
        if self.camera.unplugged.load(Ordering::SeqCst) {
            let _ = self.camera.events.send(Plug::ReadFailed);
            return Err(SourceError::Read("device unplugged".into()));
        }
        self.pattern
            .as_mut()
            .expect("kept until dropped")
            .next_frame()
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        *self
            .camera
            .pattern
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.pattern.take();
    }
}

async fn next_plug(rx: &mut mpsc::UnboundedReceiver<Plug>) -> Plug {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the media thread acts in time")
        .expect("the camera lives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_unplugged_mid_stream_resumes_for_the_same_viewer() {
    let s = settings("faults-unplug");
    let (tx, mut plug) = mpsc::unbounded_channel();
    let camera = Arc::new(Camera {
        unplugged: AtomicBool::new(false),
        pattern: Mutex::new(None),
        events: tx,
    });
    let agent = start_with(
        s.clone(),
        AgentOptions {
            source: Some(Arc::new(CameraFactory(camera.clone()))),
            ..AgentOptions::default()
        },
    )
    .await;
    online(&s).await;
    let base = agent.stats();
    let mut v = viewer(&s, "unplug", true).await;
    assert_eq!(next_plug(&mut plug).await, Plug::Opened);
    let run = frames(&mut v, 15).await;
    assert!(run.first_keyframe && run.in_order());
    let before = *run.seqs.last().expect("frames carry sequence numbers");
    assert!(agent.stats().camera.starts_with("running"));

    // Unplugged: reading fails, and reopening keeps failing (with backoff).
    camera.unplugged.store(true, Ordering::SeqCst);
    assert_eq!(next_plug(&mut plug).await, Plug::ReadFailed);
    assert_eq!(
        next_plug(&mut plug).await,
        Plug::OpenRefused,
        "the agent retries"
    );
    let st = agent.stats();
    assert!(
        st.camera.starts_with("failed"),
        "the camera state shows the failure: {}",
        st.camera
    );
    assert_eq!(
        (st.sessions, st.connected, st.subscribers),
        (1, 1, 1),
        "the session and its subscription stay"
    );
    assert_eq!(v.state(), Some(PeerState::Connected));
    v.drain_frames();

    // Plugged back in: the same viewer decodes again, without reconnecting.
    camera.unplugged.store(false, Ordering::SeqCst);
    loop {
        match next_plug(&mut plug).await {
            Plug::Opened => break,
            Plug::OpenRefused => {}
            Plug::ReadFailed => panic!("no read while unplugged"),
        }
    }
    let first = v.next_frame(WAIT).await.expect("frames again");
    assert!(first.keyframe, "the reopened camera starts with a keyframe");
    let mut last = first.seq.expect("a sequence number");
    assert!(
        last > before,
        "the stream continues ({last} after {before})"
    );
    for _ in 0..30 {
        let f = v.next_frame(WAIT).await.expect("frames keep coming");
        let seq = f.seq.expect("a sequence number");
        assert!(seq > last, "in order ({seq} after {last})");
        last = seq;
    }
    assert!(agent.stats().camera.starts_with("running"));
    assert!(
        v.next_signal(Duration::ZERO).await.is_none(),
        "no bye or error"
    );
    assert_eq!(v.state(), Some(PeerState::Connected));
    v.bye().await;
    assert_idle(&agent, &base).await;
    shut_down(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_ends_alone() {
    let s = settings("faults-panic");
    let agent = start_with(
        s.clone(),
        AgentOptions {
            faults: Faults {
                panic_client: Some("boom".into()),
            },
            ..AgentOptions::default()
        },
    )
    .await;
    online(&s).await;
    let base = agent.stats();
    let mut steady = viewer(&s, "steady", true).await;
    steady.drain_frames();
    let s0 = steady
        .next_frame(WAIT)
        .await
        .and_then(|f| f.seq)
        .expect("steady decodes");
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 1 && c.tasks == 1)
            .await
    );
    let steady_tasks = agent.stats().tasks;

    // "boom"'s session panics as soon as it is connected.
    let mut boom = Viewer::connect(&viewer_options(&s, "boom", true))
        .await
        .expect("boom's offer is answered");
    let mut told = None;
    while let Some(sig) = boom.next_signal(WAIT).await {
        told = Some(sig);
        if told == Some(Signal::Bye) {
            break;
        }
    }
    assert_eq!(told, Some(Signal::Bye), "boom is told its session ended");
    assert!(
        agent
            .wait_sessions(WAIT, |c| c.sessions == 1 && c.tasks == 1)
            .await,
        "only boom's session ended: {:?}",
        agent.stats()
    );
    let ended = Instant::now();
    eventually("agent tasks back to the steady value", || {
        agent.stats().tasks == steady_tasks
    })
    .await;
    let st = agent.stats();
    assert_eq!((st.connected, st.subscribers, st.holds), (1, 1, 0));
    assert!(st.mqtt_connected, "the agent is still up");
    boom.close().await;

    // Steady decoded throughout: every frame since before boom came, in order.
    let mut seqs = vec![s0];
    loop {
        let f = steady
            .next_frame(WAIT)
            .await
            .expect("steady keeps decoding");
        seqs.extend(f.seq);
        if f.decoded_at > ended {
            break;
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "in order");
    let span = seqs[seqs.len() - 1] - s0 + 1;
    assert!(
        seqs.len() as u32 * 10 >= span * 9,
        "steady decoded {} of {span} frames while boom came and went",
        seqs.len()
    );
    assert!(steady.next_signal(Duration::ZERO).await.is_none());

    // Someone else can still join.
    let mut after = viewer(&s, "after-boom", true).await;
    let f = after.next_frame(WAIT).await.expect("a new viewer decodes");
    assert!(f.keyframe);
    after.bye().await;
    steady.bye().await;
    assert_idle(&agent, &base).await;
    shut_down(agent).await;
}

/// An MQTT subscription collecting messages, returned once subscribed.
async fn subscribe(
    s: &Settings,
    client_id: &str,
    filter: String,
) -> (
    mpsc::UnboundedReceiver<(String, Bytes)>,
    tokio::task::JoinHandle<()>,
) {
    let mut link = Link::new(&mqtt_for(s, client_id), vec![filter]).expect("link");
    let (tx, rx) = mpsc::unbounded_channel();
    let (up_tx, mut up) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            match link.next().await {
                Ok(LinkEvent::Connected) => {
                    let _ = up_tx.send(true);
                }
                Ok(LinkEvent::Message(t, p)) => {
                    let _ = tx.send((t, p));
                }
                Err(_) => {}
            }
        }
    });
    tokio::time::timeout(WAIT, up.wait_for(|c| *c))
        .await
        .expect("subscribed in time")
        .expect("link alive");
    (rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpio_write_the_hardware_refuses_gets_the_hardware_code() {
    let s = gpio_settings("faults-hw");
    let agent = start(s.clone()).await;
    let sim = agent
        .gpio()
        .and_then(|g| g.simulator())
        .expect("sim backend")
        .clone();
    let v = viewer(&s, "faults-hw", false).await;
    let set = |value: bool| json!({"cmd": "gpio.set", "pin": "relay1", "value": value});
    sim.fail_writes(true);
    let reply = v.command(set(true), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], "hardware", "{reply}");
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(false), "not driven");
    // The hardware back: the same command works.
    sim.fail_writes(false);
    let reply = v.command(set(true), WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(sim.pin("relay1").map(|p| p.high), Some(true));
    v.bye().await;
    shut_down(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_status_says_a_passed_through_camera_has_no_bitrate_to_set() {
    let mut s = settings("faults-passthrough");
    (s.video.width, s.video.height, s.video.fps) = (320, 240, 15);
    s.video.passthrough = true;
    let agent = start_with(
        s.clone(),
        AgentOptions {
            source: Some(Arc::new(H264Camera::new(320, 240, 15))),
            ..AgentOptions::default()
        },
    )
    .await;
    let mut v = viewer(&s, "passthrough", true).await;
    let run = frames(&mut v, 10).await;
    assert!(
        run.first_keyframe && run.in_order(),
        "the camera's H.264 plays"
    );
    let bitrate = json!({"cmd": "video.bitrate", "kbps": 500});
    let reply = v.command(bitrate, WAIT).await.expect("a reply");
    assert_eq!(reply["ok"], true, "accepted, with no effect: {reply}");
    frames(&mut v, 5).await;
    let reply = v
        .command(json!({"cmd": "video.status"}), WAIT)
        .await
        .expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(
        reply["result"]["bitrate_kbps"].is_null(),
        "no bitrate applied: the camera sets its own: {reply}"
    );
    assert_eq!(reply["result"]["camera"], "running", "{reply}");
    assert_eq!(reply["result"]["encoder"], "passthrough", "{reply}");
    v.bye().await;
    shut_down(agent).await;
}
