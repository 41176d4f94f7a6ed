//! The V4L2 memory-to-memory encoder against the kernel's `vicodec` (a
//! stateful M2M encoder with the same queue, buffer, DMA-BUF, drain and
//! restart semantics as the Raspberry Pi's bcm2835-codec, producing FWHT
//! instead of H.264), fed by `vivid` cameras, inside the kernel lab's guest
//! (tests/lab). Ignored on a host; `.ci/test` runs it in the guest.
//!
//! - vivid → DMA-BUF → vicodec through the real pipeline on both capture
//!   APIs and in YUYV, NV12 and YU12, the encoder picked by `auto`: FWHT
//!   frames come out, keyframe first, each decodes (vicodec's decoder) to
//!   the camera's picture, and the pipeline counts **no** CPU copy; the
//!   pipeline stops (the encoder drains and is released), starts again,
//!   and survives the encoder's descriptor being closed underneath it
//!   (reopened with backoff, frames resume, still no copy);
//! - a source without DMA-BUF (the test pattern) takes the MMAP path with
//!   exactly one copy per picture;
//! - the shipped binary: `rtcam devices` lists vicodec's encoder and why it
//!   is not used for H.264; `rtcam record` with `encoder = "auto"` falls
//!   back to OpenH264 and says why, with `encoder = "v4l2m2m"` refuses
//!   naming the device; `rtcam bench encoder --encoder v4l2m2m --codec fwht`
//!   runs.

mod common;

use common::lab::{Planes, diff, require_lab, set_ctrl, sh, unload_media, wait_nodes};
use common::process::{all_output, rtcam};
use rtcam::backoff::Backoff;
use rtcam::config::EncoderPref;
use rtcam::media::capture::format_choice::Choice;
use rtcam::media::capture::test_pattern::TestPatternFactory;
use rtcam::media::capture::v4l2::V4l2Source;
use rtcam::media::capture::{Source, SourceError, SourceFactory};
use rtcam::media::convert::Converter;
use rtcam::media::encode::{CodedFormat, EncoderControl, EncoderKind, EncoderSettings};
use rtcam::media::frame::{Codec, Packet, PixelFormat, RawFrame, TrackId, TrackInfo};
use rtcam::media::hub::policy::PolicyConfig;
use rtcam::media::hub::{Hub, Subscription};
use rtcam::media::pipeline::{CameraState, Pipeline, PipelineOptions, PipelineStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const W: u32 = 640;
const H: u32 = 480;
const WAIT: Duration = Duration::from_secs(30);
/// vicodec's FWHT frame header starts with this magic (`fwht_cframe_hdr.magic1`).
const FWHT_MAGIC: [u8; 4] = *b"OOOO";

/// vivid (instance 0 single-planar, 1 multiplanar) and vicodec (multiplanar);
/// returns the two capture nodes and vicodec's encoder node.
fn load_drivers() -> (PathBuf, PathBuf, PathBuf) {
    // The encoder's log (open, input path, failures) in each test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("rtcam=debug")
        .try_init();
    unload_media();
    sh("modprobe vivid n_devs=2 multiplanar=1,2 node_types=0x1,0x1");
    sh("modprobe vicodec multiplanar=1");
    let caps = wait_nodes("vivid's capture nodes", 2, |n| {
        n.starts_with("vivid-") && n.ends_with("-vid-cap")
    });
    let enc = wait_nodes("vicodec's encoder", 1, |n| n == "stateful-encoder");
    (caps[0].clone(), caps[1].clone(), enc[0].clone())
}

/// A camera opened in exactly one format.
struct Camera {
    path: PathBuf,
    format: PixelFormat,
}

impl SourceFactory for Camera {
    fn open(&self) -> Result<Box<dyn Source>, SourceError> {
        let choice = Choice {
            format: self.format,
            width: W,
            height: H,
            fps: 25,
        };
        Ok(Box::new(V4l2Source::open_path(&self.path, choice)?))
    }
}

/// The lab's encoder settings: FWHT wanted, so vicodec is the M2M encoder
/// `pref` may pick (under `Auto`, as the board's H.264 encoder would be).
fn settings(pref: EncoderPref, device: Option<PathBuf>) -> EncoderSettings {
    EncoderSettings {
        width: W,
        height: H,
        fps: 25,
        bitrate_kbps: 1000,
        keyframe_interval: Duration::from_secs(1),
        passthrough: false,
        threads: 1,
        pref,
        device,
        coded: CodedFormat::Fwht,
    }
}

struct Run {
    rt: tokio::runtime::Runtime,
    hub: Arc<Hub>,
    pipeline: Pipeline,
}

fn start(factory: Box<dyn SourceFactory>, encoder: EncoderSettings) -> Run {
    let control = EncoderControl::new(PolicyConfig::default().drop_keyframe_gap, 1000);
    let track = TrackInfo {
        id: TrackId::VIDEO,
        codec: Codec::Fwht,
        keyframe_gated: true,
    };
    let hub = Hub::with_tracks(PolicyConfig::default(), vec![track], control.clone());
    let pipeline = Pipeline::spawn(
        factory,
        hub.clone(),
        control,
        PipelineOptions {
            encoder,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
        },
    )
    .expect("media thread starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    Run { rt, hub, pipeline }
}

impl Run {
    fn next(&self, sub: &mut Subscription) -> Packet {
        self.rt
            .block_on(async { tokio::time::timeout(WAIT, sub.recv()).await })
            .unwrap_or_else(|_| {
                panic!(
                    "no packet within {WAIT:?}; camera {:?}",
                    self.pipeline.status().state()
                )
            })
            .expect("the hub is open")
    }

    /// Takes `n` packets: each an FWHT frame of W x H (its header says so),
    /// the first a keyframe.
    fn take_fwht(&self, sub: &mut Subscription, n: usize) -> Vec<Packet> {
        let packets: Vec<Packet> = (0..n).map(|_| self.next(sub)).collect();
        for (i, p) in packets.iter().enumerate() {
            // fwht_cframe_hdr: magic1, magic2, version, width, height (big-endian words).
            let word = |at: usize| {
                p.data
                    .get(at..at + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            assert!(
                p.data.len() > 44 && p.data[..4] == FWHT_MAGIC,
                "packet {i} is an FWHT frame ({} bytes, starts {:02x?})",
                p.data.len(),
                &p.data[..p.data.len().min(8)]
            );
            assert_eq!(
                (word(12), word(16)),
                (Some(W), Some(H)),
                "packet {i}'s size"
            );
        }
        assert!(packets[0].keyframe, "a subscriber starts at a keyframe");
        packets
    }

    fn status(&self) -> Arc<PipelineStatus> {
        self.pipeline.status()
    }
}

/// Decodes FWHT frames with vicodec's stateful decoder (`v4l2-ctl`, which
/// parses the FWHT stream) into `format` (the camera's: a 4:2:2 stream
/// decodes only to a 4:2:2 format), converted to I420. `None` in the arm64
/// guest, whose kernel runs the same drivers but cannot run the host's x86
/// `v4l2-ctl` (the amd64 guest, where it is required, decodes).
fn decode_fwht(packets: &[Packet], format: PixelFormat) -> Option<Vec<Planes>> {
    if std::env::var("LAB_ARCH").as_deref() == Ok("arm64") {
        eprintln!(
            "decode check not run: no v4l2-ctl for arm64 in the lab (the amd64 guest runs it)"
        );
        return None;
    }
    let decoder = wait_nodes("vicodec's decoder", 1, |n| n == "stateful-decoder");
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, output) = (dir.path().join("in.fwht"), dir.path().join("out.yuv"));
    let stream: Vec<u8> = packets
        .iter()
        .flat_map(|p| p.data.iter().copied())
        .collect();
    std::fs::write(&input, stream).expect("stream written");
    sh(&format!(
        "timeout 120 v4l2-ctl -d {} --set-fmt-video=pixelformat={format} --stream-from={} \
         --stream-out-mmap --stream-mmap --stream-to={} >/dev/null",
        decoder[0].display(),
        input.display(),
        output.display()
    ));
    let decoded = std::fs::read(&output).expect("decoded pictures");
    let (w, h) = (W as usize, H as usize);
    let (size, stride) = match format {
        PixelFormat::Yuyv => (w * h * 2, w * 2),
        _ => (w * h * 3 / 2, w),
    };
    let mut conv = Converter::new();
    Some(
        decoded
            .chunks_exact(size)
            .map(|data| {
                let frame = RawFrame {
                    format,
                    width: w,
                    height: h,
                    stride,
                    data,
                    captured: Instant::now(),
                    dmabuf: None,
                };
                Planes::of(&conv.to_i420(&frame).expect("a decoded picture converts"))
            })
            .collect(),
    )
}

/// One picture of `camera` in `format`, converted to I420 as the pipeline does.
fn reference(camera: &Path, format: PixelFormat) -> Planes {
    let mut src = Camera {
        path: camera.to_path_buf(),
        format,
    }
    .open()
    .expect("the camera opens");
    for _ in 0..3 {
        src.next_frame().expect("a frame");
    }
    let frame = src.next_frame().expect("a frame");
    let mut conv = Converter::new();
    let view = conv.to_i420(&frame).expect("converts");
    Planes::of(&view)
}

/// The descriptor this process holds on `node`.
fn fd_of(node: &Path) -> Option<i32> {
    std::fs::read_dir("/proc/self/fd").ok()?.find_map(|e| {
        let e = e.ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        (target == node).then(|| e.file_name().to_str()?.parse().ok())?
    })
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn vivid_feeds_vicodec_by_dmabuf_with_no_cpu_copy_on_both_apis() {
    require_lab();
    let (single, multi, encoder) = load_drivers();
    for camera in [&single, &multi] {
        // vivid's colour bars without the text overlay: the same picture in every frame.
        set_ctrl(camera, "osd_text_mode", 2);
    }
    for (camera, api) in [(&single, "single-planar"), (&multi, "multiplanar")] {
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::I420] {
            let what = format!("{api} {format}");
            let expected = reference(camera, format);
            let run = start(
                Box::new(Camera {
                    path: camera.clone(),
                    format,
                }),
                settings(EncoderPref::Auto, None),
            );
            let mut sub = run.hub.subscribe();
            let packets = run.take_fwht(&mut sub, 30);
            let keyframes = packets.iter().filter(|p| p.keyframe).count();
            let status = run.status();
            // encoder = "auto" took the M2M encoder (vicodec, the only one giving FWHT).
            assert_eq!(status.encoder(), Some(EncoderKind::V4l2M2m), "{what}");
            assert!(status.frames() >= 30, "{what}: {}", status.frames());
            assert_eq!(status.copies(), 0, "{what}: no CPU copy of a picture");
            // 30 frames at 25 fps with an IDR every second: the first and at least one more.
            assert!(keyframes >= 2, "{what}: {keyframes} keyframes in 30 frames");
            drop(sub);
            run.pipeline.shutdown();
            if let Some(pictures) = decode_fwht(&packets, format) {
                assert_eq!(pictures.len(), 30, "{what}: every frame decodes");
                for (i, p) in pictures.iter().enumerate() {
                    let d = diff(&expected, p);
                    assert!(
                        p.luma_levels() >= 6 && d.y_mean < 3.0 && d.uv_mean < 3.0 && d.far < 0.02,
                        "{what}: decoded picture {i} is not vivid's colour bars: {d:?}"
                    );
                }
                eprintln!(
                    "{what}: 30 frames decoded, first vs the camera: {:?}",
                    diff(&expected, &pictures[0])
                );
            }
            eprintln!(
                "{what}: {} frames, {keyframes} keyframes, 0 copies",
                status.frames()
            );
        }
    }
    // Everything was released: vicodec's node opens again and vicodec unloads.
    assert_eq!(
        fd_of(&encoder),
        None,
        "no descriptor left on {}",
        encoder.display()
    );
    unload_media();
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn the_encoder_stops_restarts_and_survives_being_closed_underneath() {
    require_lab();
    let (_, multi, encoder) = load_drivers();
    set_ctrl(&multi, "osd_text_mode", 0);
    let run = start(
        Box::new(Camera {
            path: multi.clone(),
            format: PixelFormat::Nv12,
        }),
        settings(EncoderPref::V4l2M2m, Some(encoder.clone())),
    );
    let status = run.status();
    let mut sub = run.hub.subscribe();
    run.take_fwht(&mut sub, 10);

    // Stop: the last subscriber leaves; the camera and the encoder close.
    drop(sub);
    let (state, idle) = status.wait_for(WAIT, |s| *s == CameraState::Idle);
    assert!(idle, "the camera stops with no subscriber: {state:?}");
    assert_eq!(fd_of(&encoder), None, "the drained encoder is closed");

    // Start again.
    let mut sub = run.hub.subscribe();
    run.take_fwht(&mut sub, 10);
    let restarts = status.restarts();

    // Closed underneath: its descriptor now points at /dev/null.
    let fd = fd_of(&encoder).expect("the running encoder holds its node open");
    let null = std::fs::File::open("/dev/null").expect("/dev/null");
    // SAFETY: replaces a descriptor of this process with another valid one;
    // the encoder's next ioctl on it fails, which is what is tested.
    let rc = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
    assert_eq!(rc, fd, "dup2: {}", std::io::Error::last_os_error());
    let deadline = Instant::now() + WAIT;
    while status.restarts() == restarts {
        assert!(
            Instant::now() < deadline,
            "the encoder's failure is noticed"
        );
        let _ = run
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_millis(200), sub.recv()).await });
    }
    // Reopened with backoff: frames resume from a keyframe, still with no copy.
    let mut late = run.hub.subscribe();
    run.take_fwht(&mut late, 10);
    assert_eq!(status.encoder(), Some(EncoderKind::V4l2M2m));
    assert_eq!(status.copies(), 0);
    assert!(
        fd_of(&encoder).is_some(),
        "the encoder was reopened on its node"
    );
    drop((sub, late));
    run.pipeline.shutdown();
    unload_media();
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn a_source_without_dmabuf_takes_the_mmap_path_with_one_copy_per_picture() {
    require_lab();
    let (_, _, encoder) = load_drivers();
    let run = start(
        Box::new(TestPatternFactory::new(W as usize, H as usize, 25)),
        settings(EncoderPref::V4l2M2m, Some(encoder)),
    );
    let mut sub = run.hub.subscribe();
    run.take_fwht(&mut sub, 20);
    drop(sub);
    let status = run.status();
    let (state, idle) = status.wait_for(WAIT, |s| *s == CameraState::Idle);
    assert!(idle, "{state:?}");
    assert_eq!(
        status.copies(),
        status.frames(),
        "the test pattern's I420 pictures are copied once each into the encoder's buffers"
    );
    run.pipeline.shutdown();
    unload_media();
}

fn config(dir: &Path, camera: &Path, extra: &str) -> PathBuf {
    let path = dir.join("rtcam.toml");
    std::fs::write(
        &path,
        format!(
            "[video]\nsource = \"{}\"\nwidth = {W}\nheight = {H}\nfps = 25\n{extra}",
            camera.display()
        ),
    )
    .expect("config written");
    path
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn the_binary_lists_chooses_and_refuses_encoders_by_name() {
    require_lab();
    let (single, _, encoder) = load_drivers();
    let dir = tempfile::tempdir().expect("tempdir");

    let out = rtcam().arg("devices").output().expect("rtcam devices");
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{}: vicodec (driver vicodec, multiplanar): not used:",
            encoder.display()
        )) && text.contains("gives FWHT, not H264"),
        "{text}"
    );

    // auto: vicodec gives no H.264, so OpenH264 encodes, and the log says why.
    let cfg = config(dir.path(), &single, "encoder = \"auto\"\n");
    let h264 = dir.path().join("auto.h264");
    let out = rtcam()
        .arg("--config")
        .arg(&cfg)
        .args(["record", "--frames", "10", "--timeout", "60", "--output"])
        .arg(&h264)
        .output()
        .expect("rtcam record");
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("encoder chosen") && text.contains("encoder=openh264"),
        "{text}"
    );
    assert!(text.contains("gives FWHT, not H264"), "{text}");
    let bytes = std::fs::read(&h264).expect("recording");
    assert!(
        rtcam::media::h264::is_keyframe(&bytes),
        "H.264 from OpenH264"
    );

    // v4l2m2m pinned to vicodec: refused, naming the device and what it gives.
    let cfg = config(
        dir.path(),
        &single,
        &format!(
            "encoder = \"v4l2m2m\"\nencoder_device = \"{}\"\n",
            encoder.display()
        ),
    );
    let out = rtcam()
        .arg("--config")
        .arg(&cfg)
        .args(["record", "--frames", "5", "--timeout", "5", "--output"])
        .arg(dir.path().join("refused.h264"))
        .output()
        .expect("rtcam record");
    let text = all_output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{} (vicodec) gives FWHT, not H264",
            encoder.display()
        )),
        "{text}"
    );

    // The benchmark the Pi checklist names, on vicodec.
    let out = rtcam()
        .args([
            "bench",
            "encoder",
            "--encoder",
            "v4l2m2m",
            "--codec",
            "fwht",
            "--width",
            "640",
            "--height",
            "480",
            "--frames",
            "60",
        ])
        .output()
        .expect("rtcam bench");
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("v4l2m2m FWHT") && text.contains("frames/s"),
        "{text}"
    );
    eprintln!("{text}");
    unload_media();
}
