//! The media half end to end: test pattern → encoder → hub → subscribers,
//! checked by decoding with OpenH264 and reading the block code back.

#[path = "common/h264_camera.rs"]
mod h264_camera;

use h264_camera::H264Camera;
use rtcam::backoff::Backoff;
use rtcam::blockcode;
use rtcam::media::capture::test_pattern::{TestPattern, TestPatternFactory};
use rtcam::media::capture::{Source, SourceError, SourceFactory, SourceInfo};
use rtcam::media::encode::{EncoderControl, EncoderSettings};
use rtcam::media::frame::{Packet, RawFrame, TrackId};
use rtcam::media::h264;
use rtcam::media::hub::policy::PolicyConfig;
use rtcam::media::hub::{Hub, Subscription};
use rtcam::media::pipeline::{CameraState, Pipeline, PipelineOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const W: u32 = 320;
const H: u32 = 240;
const WAIT: Duration = Duration::from_secs(20);

fn options() -> PipelineOptions {
    PipelineOptions {
        encoder: EncoderSettings {
            width: W,
            height: H,
            fps: 30,
            bitrate_kbps: 500,
            keyframe_interval: Duration::from_secs(2),
            // Only the H.264 camera below is affected: raw sources are encoded.
            passthrough: true,
            threads: 1,
            pref: rtcam::config::EncoderPref::OpenH264,
            device: None,
            coded: rtcam::media::encode::CodedFormat::H264,
        },
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
    }
}

fn start(factory: Box<dyn SourceFactory>) -> (Arc<Hub>, Pipeline) {
    let (hub, _, p) = start_with_control(factory);
    (hub, p)
}

fn start_with_control(
    factory: Box<dyn SourceFactory>,
) -> (Arc<Hub>, Arc<EncoderControl>, Pipeline) {
    let control = EncoderControl::new(PolicyConfig::default().drop_keyframe_gap, 500);
    let hub = Hub::new(PolicyConfig::default(), control.clone());
    let p = Pipeline::spawn(factory, hub.clone(), control.clone(), options())
        .expect("media thread starts");
    (hub, control, p)
}

fn test_factory() -> Box<dyn SourceFactory> {
    Box::new(TestPatternFactory::new(W as usize, H as usize, 30))
}

/// Receives one frame, failing the test instead of hanging.
fn next(rt: &tokio::runtime::Runtime, sub: &mut Subscription) -> Packet {
    let p = rt
        .block_on(async { tokio::time::timeout(WAIT, sub.recv()).await })
        .expect("a frame within the timeout")
        .expect("the hub is open");
    assert_eq!(
        p.track,
        TrackId::VIDEO,
        "the camera's packets are the video track's"
    );
    p
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Decodes access units and reads each picture's block code.
struct Viewer {
    decoder: openh264::decoder::Decoder,
}

impl Viewer {
    fn new() -> Self {
        Self {
            decoder: openh264::decoder::Decoder::new().expect("decoder"),
        }
    }

    /// (width, height, sequence number) of the decoded picture.
    fn decode(&mut self, au: &[u8]) -> (usize, usize, u32) {
        use openh264::formats::YUVSource;
        let pic = self
            .decoder
            .decode(au)
            .expect("a valid access unit")
            .expect("one picture per access unit");
        let (w, h) = pic.dimensions();
        let (ys, _, _) = pic.strides();
        let code = blockcode::decode(pic.y(), ys, w, h).expect("the block code survives encoding");
        (w, h, code.seq)
    }
}

#[test]
fn decoded_frames_have_size_and_increasing_codes_and_start_with_keyframes() {
    let rt = runtime();
    let (hub, pipeline) = start(test_factory());
    let mut first = hub.subscribe();
    let mut a = Viewer::new();
    let mut seqs = Vec::new();
    for i in 0..45 {
        let f = next(&rt, &mut first);
        if i == 0 {
            assert!(f.keyframe, "a new subscriber starts at a keyframe");
            assert_eq!(
                h264::nal_types(&f.data)[..2],
                [h264::NAL_SPS, h264::NAL_PPS],
                "SPS and PPS in-band before the IDR"
            );
            let sps = h264::nal_units(&f.data).next().expect("SPS");
            assert!(
                h264::profile_level_id(sps)
                    .expect("SPS")
                    .starts_with("42e0"),
                "Constrained Baseline"
            );
        }
        let (w, h, seq) = a.decode(&f.data);
        assert_eq!((w, h), (W as usize, H as usize));
        seqs.push(seq);
    }
    assert!(
        seqs.windows(2).all(|p| p[1] > p[0]),
        "strictly increasing: {seqs:?}"
    );

    // A second subscriber joining mid-stream also starts with a keyframe, at once.
    let mut second = hub.subscribe();
    let f = next(&rt, &mut second);
    assert!(f.keyframe);
    let mut b = Viewer::new();
    let (_, _, joined_at) = b.decode(&f.data);
    assert!(
        joined_at > *seqs.last().expect("frames"),
        "a fresh frame, not a replay"
    );
    assert!(
        joined_at < seqs.last().expect("frames") + 30,
        "requested at once, not at the 2 s periodic IDR"
    );
    drop((first, second));
    pipeline.shutdown();
}

#[test]
fn slow_subscriber_drops_without_stalling_a_fast_one() {
    let rt = runtime();
    let (hub, pipeline) = start(test_factory());
    let mut slow = hub.subscribe();
    let mut fast = hub.subscribe();
    let mut fast_viewer = Viewer::new();
    let mut last = None;
    // The slow one reads nothing while the fast one takes 40 frames.
    for _ in 0..40 {
        let f = next(&rt, &mut fast);
        let (_, _, seq) = fast_viewer.decode(&f.data);
        if let Some(prev) = last {
            assert_eq!(seq, prev + 1, "the fast subscriber misses nothing");
        }
        last = Some(seq);
    }
    let stats = slow.stats();
    assert!(
        stats.dropped >= 1,
        "the slow subscriber's frames were dropped: {stats:?}"
    );
    assert!(hub.stats().dropped >= 1);
    // Everything the slow one does get decodes: after its gap it resumes at a keyframe.
    let mut slow_viewer = Viewer::new();
    let mut gap_seen = false;
    let mut prev: Option<u32> = None;
    for _ in 0..(rtcam::media::hub::QUEUE_FRAMES + 2) {
        let f = next(&rt, &mut slow);
        let (_, _, seq) = slow_viewer.decode(&f.data);
        if let Some(p) = prev
            && seq != p + 1
        {
            assert!(f.keyframe, "after a gap the next frame is a keyframe");
            gap_seen = true;
        }
        prev = Some(seq);
    }
    assert!(gap_seen, "the slow subscriber skipped frames");
    drop((slow, fast));
    pipeline.shutdown();
}

#[test]
fn capture_stops_when_idle_and_restarts_on_demand() {
    let rt = runtime();
    let (hub, pipeline) = start(test_factory());
    let status = pipeline.status();
    assert_eq!(
        status.state(),
        CameraState::Idle,
        "nobody watches: the camera is off"
    );
    let mut sub = hub.subscribe();
    next(&rt, &mut sub);
    assert!(matches!(status.state(), CameraState::Running(_)));
    drop(sub);
    let (state, stopped) = status.wait_for(WAIT, |s| *s == CameraState::Idle);
    assert!(
        stopped,
        "the camera stops after the last subscriber leaves: {state:?}"
    );
    let published = hub.stats().published;
    let mut again = hub.subscribe();
    let f = next(&rt, &mut again);
    assert!(f.keyframe, "restarted on demand, starting with a keyframe");
    assert!(hub.stats().published > published);
    drop(again);
    pipeline.shutdown();
    assert_eq!(status.state(), CameraState::Stopped);
}

/// A source that fails to open once, then fails after a few frames each run.
struct Flaky {
    opens: Arc<AtomicU32>,
}

struct FlakySource {
    inner: TestPattern,
    left: u32,
}

impl Source for FlakySource {
    fn info(&self) -> SourceInfo {
        self.inner.info()
    }

    fn next_frame(&mut self) -> Result<RawFrame<'_>, SourceError> {
        if self.left == 0 {
            return Err(SourceError::Read("simulated unplug".into()));
        }
        self.left -= 1;
        self.inner.next_frame()
    }
}

impl SourceFactory for Flaky {
    fn open(&self) -> Result<Box<dyn Source>, SourceError> {
        let n = self.opens.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            return Err(SourceError::NoDevice);
        }
        Ok(Box::new(FlakySource {
            inner: TestPattern::new(W as usize, H as usize, 30),
            left: 10,
        }))
    }
}

#[test]
fn failing_source_is_reopened_and_subscribers_resume_at_a_keyframe() {
    let rt = runtime();
    let opens = Arc::new(AtomicU32::new(0));
    let (hub, pipeline) = start(Box::new(Flaky {
        opens: opens.clone(),
    }));
    let mut sub = hub.subscribe();
    let mut viewer = Viewer::new();
    let mut keyframes_after_restart = 0;
    let mut prev: Option<u32> = None;
    for _ in 0..35 {
        let f = next(&rt, &mut sub);
        let (_, _, seq) = viewer.decode(&f.data);
        // Each reopen starts a new pattern at sequence 0.
        if prev.is_some_and(|p| seq <= p) {
            assert!(f.keyframe, "first frame after a reopen is a keyframe");
            keyframes_after_restart += 1;
        }
        prev = Some(seq);
    }
    assert!(
        keyframes_after_restart >= 3,
        "the source was reopened several times"
    );
    assert!(pipeline.status().restarts() >= 3);
    assert!(
        opens.load(Ordering::SeqCst) >= 4,
        "the first open failed and was retried"
    );
    drop(sub);
    pipeline.shutdown();
}

#[test]
fn an_h264_camera_is_passed_through_with_its_parameter_sets_restored() {
    let rt = runtime();
    let camera = H264Camera::new(W as usize, H as usize, 30);
    let requests = camera.requests.clone();
    let (hub, control, pipeline) = start_with_control(Box::new(camera));
    let mut first = hub.subscribe();
    let mut viewer = Viewer::new();
    let f = next(&rt, &mut first);
    assert!(f.keyframe, "the stream starts at an IDR");
    let (w, h, mut last) = viewer.decode(&f.data);
    assert_eq!((w, h), (W as usize, H as usize));
    for _ in 0..20 {
        let f = next(&rt, &mut first);
        let (_, _, seq) = viewer.decode(&f.data);
        assert!(seq > last, "frames pass in order");
        last = seq;
    }
    // A viewer joining now needs an IDR: the hub asks the camera for one,
    // which comes without SPS/PPS; the pipeline puts them back in front.
    let asked_before = requests.load(Ordering::SeqCst);
    let mut late = hub.subscribe();
    let f = next(&rt, &mut late);
    assert!(f.keyframe, "a joining subscriber starts at an IDR");
    assert!(
        requests.load(Ordering::SeqCst) > asked_before,
        "the keyframe was asked of the camera itself"
    );
    let types = h264::nal_types(&f.data);
    assert_eq!(
        &types[..2],
        &[7, 8],
        "SPS and PPS restored before the IDR: {types:?}"
    );
    let mut fresh = Viewer::new();
    let (w, h, seq) = fresh.decode(&f.data);
    assert_eq!(
        (w, h),
        (W as usize, H as usize),
        "a fresh decoder starts here"
    );
    assert!(seq > last);
    // Passed through, not re-encoded: the hub's frames are the camera's.
    assert!(pipeline.status().frames() >= 22);
    // The camera sets its own bitrate: a change is not applied, and status says so.
    control.request_bitrate(200);
    next(&rt, &mut first);
    next(&rt, &mut first);
    assert_eq!(
        control.applied_kbps(),
        None,
        "passthrough has no bitrate to set"
    );
    drop((first, late));
    pipeline.shutdown();
}

#[test]
fn the_bitrate_applied_by_the_encoder_is_reported_back() {
    let rt = runtime();
    let (hub, control, pipeline) = start_with_control(test_factory());
    let mut sub = hub.subscribe();
    next(&rt, &mut sub);
    assert_eq!(control.applied_kbps(), Some(500), "the start bitrate");
    control.request_bitrate(200);
    // Applied before the next frame is encoded.
    next(&rt, &mut sub);
    next(&rt, &mut sub);
    assert_eq!(control.applied_kbps(), Some(200));
    drop(sub);
    pipeline.shutdown();
}

/// A snapshot's size and the sequence number its block code carries.
fn read_snapshot(jpeg: &[u8]) -> (usize, usize, u32) {
    use zune_jpeg::zune_core::{
        bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions,
    };
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(jpeg), opts);
    let luma = d.decode().expect("a JPEG");
    let info = d.info().expect("a header");
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    let code = blockcode::decode(&luma, w, w, h).expect("the block code survives");
    (w, h, code.seq)
}

#[test]
fn snapshots_come_from_the_raw_picture_or_from_a_passed_through_keyframe() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The test pattern (I420): the raw picture is tapped before encoding.
    let (hub, pipeline) = start(test_factory());
    let shots = rtcam::snapshot::Snapshots::new(hub.clone(), pipeline.taps(), 85);
    let shot = rt
        .block_on(shots.take())
        .expect("a snapshot of the test pattern");
    assert_eq!(read_snapshot(&shot.jpeg).0, W as usize);
    assert!(pipeline.taps().gives_raw());
    // The camera stops again once the snapshot is taken.
    let (state, ok) = pipeline
        .status()
        .wait_for(WAIT, |s| matches!(s, CameraState::Idle));
    assert!(ok, "the camera stops after the shot: {state:?}");
    pipeline.shutdown();

    // A camera's own H.264, passed through: no raw picture; the next
    // keyframe is decoded instead.
    let camera = H264Camera::new(W as usize, H as usize, 30);
    let (hub, pipeline) = start(Box::new(camera));
    let shots = rtcam::snapshot::Snapshots::new(hub.clone(), pipeline.taps(), 85);
    let shot = rt
        .block_on(shots.take())
        .expect("a snapshot of the camera's H.264");
    let (w, h, _) = read_snapshot(&shot.jpeg);
    assert_eq!((w, h), (W as usize, H as usize));
    assert!(
        !pipeline.taps().gives_raw(),
        "passthrough has no raw picture"
    );
    pipeline.shutdown();
}
