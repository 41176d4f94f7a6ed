//! V4L2 capture against real kernel drivers, inside the kernel lab's guest
//! (tests/lab): vivid (single-planar and multiplanar instances), vicodec,
//! vimc and v4l2loopback fed by a writer. Every test is ignored on a host;
//! `.ci/test` runs this binary with `--ignored --test-threads=1` in the
//! guest (each test loads the drivers it needs and unloads them after).
//!
//! - every pixel format rtcam accepts decodes to the same picture: vivid's
//!   colour bars captured as YUYV, NV12 and YU12 on both instances, their
//!   I420 planes compared to the single-planar YU12 capture; MJPEG through
//!   v4l2loopback from JPEG frames a writer thread encodes from a known
//!   picture, compared to that picture;
//! - size and rate negotiation against vivid's discrete modes;
//! - `video.source = "auto"` passes over vicodec's memory-to-memory nodes,
//!   vivid's metadata and output nodes and vimc's raw Bayer node, and says
//!   why; `rtcam devices` prints no NUL byte (vicodec's bus info has one);
//! - `rtcam record` goes on across a camera unplugged (vivid's Disconnect
//!   control, then the driver unloaded) for 10 s, past its old 15 s limit.
//!
//! The binary-level tests with a viewer (controls, unplug during `run`)
//! are in lab_camera_e2e.rs.

mod common;

use common::lab::{Planes, diff, require_lab, set_ctrl, sh, unload_media, wait_nodes};
use common::process::{all_output, rtcam};
use rtcam::config::settings::SourceSpec;
use rtcam::media::capture::format_choice::Choice;
use rtcam::media::capture::v4l2::V4l2Source;
use rtcam::media::capture::{Source, SourceInfo};
use rtcam::media::convert::Converter;
use rtcam::media::frame::PixelFormat;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Captures one picture from `path` in `format` at `w`x`h` (after a few
/// frames, so the driver has settled) and converts it as the pipeline does.
fn capture(path: &Path, format: PixelFormat, w: u32, h: u32) -> (SourceInfo, Planes) {
    let choice = Choice {
        format,
        width: w,
        height: h,
        fps: 25,
    };
    let mut src = V4l2Source::open_path(path, choice)
        .unwrap_or_else(|e| panic!("{} opens as {format}: {e}", path.display()));
    let info = src.info();
    assert_eq!(
        info.format,
        format,
        "{}: the format asked for",
        path.display()
    );
    for _ in 0..3 {
        src.next_frame().expect("a frame");
    }
    let frame = src.next_frame().expect("a frame");
    let mut conv = Converter::new();
    let view = conv
        .to_i420(&frame)
        .unwrap_or_else(|e| panic!("{} {format} converts: {e}", path.display()));
    let planes = Planes::of(&view);
    (info, planes)
}

/// vivid with two instances: 0 single-planar, 1 multiplanar; both without
/// the text overlay (frame counter, time), so their pictures are the same.
fn load_vivid_both_apis() -> (PathBuf, PathBuf) {
    unload_media();
    sh("modprobe vivid n_devs=2 multiplanar=1,2 node_types=0x1,0x1");
    let caps = wait_nodes("vivid's capture nodes", 2, |n| {
        n.starts_with("vivid-") && n.ends_with("-vid-cap")
    });
    for c in &caps {
        set_ctrl(c, "osd_text_mode", 2);
    }
    (caps[0].clone(), caps[1].clone())
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn every_format_on_both_apis_decodes_to_vivids_colour_bars() {
    require_lab();
    let (single, multi) = load_vivid_both_apis();
    let (w, h) = (640, 480);
    let (info, reference) = capture(&single, PixelFormat::I420, w, h);
    assert_eq!((info.width, info.height), (640, 480));
    assert!(
        reference.luma_levels() >= 6,
        "vivid's 75% colour bars have at least six luma levels: {}",
        reference.luma_levels()
    );
    for (path, api) in [(&single, "single-planar"), (&multi, "multiplanar")] {
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::I420] {
            let (info, got) = capture(path, format, w, h);
            assert_eq!((info.width, info.height), (640, 480), "{api} {format}");
            let d = diff(&reference, &got);
            eprintln!("{api} {format}: {d:?}");
            assert!(
                d.y_mean < 1.0 && d.uv_mean < 1.5 && d.far < 0.005,
                "{api} {format} differs from the single-planar YU12 capture: {d:?}"
            );
        }
    }
    // The listing names the multiplanar device as such.
    let out = rtcam().arg("devices").output().expect("rtcam devices runs");
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{}: vivid", multi.display())) && text.contains("multiplanar)"),
        "{text}"
    );
    unload_media();
}

fn open_factory(path: &Path, w: u32, h: u32, fps: u32) -> SourceInfo {
    let mut video = rtcam::config::Settings::default().video;
    video.source = SourceSpec::Device(path.to_path_buf());
    video.width = w;
    video.height = h;
    video.fps = fps;
    let mut src = rtcam::media::capture::factory_for(&video)
        .open()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let info = src.info();
    let f = src.next_frame().expect("a frame");
    assert_eq!((f.width, f.height), (info.width, info.height));
    info
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn size_and_rate_are_negotiated_to_the_nearest_mode_on_both_apis() {
    require_lab();
    let (single, multi) = load_vivid_both_apis();
    for path in [&single, &multi] {
        // vivid's webcam input: 320x180, 640x360, 640x480, 1280x720, ...;
        // 640x360 runs at up to 40 fps, 1280x720 at up to 13.
        let i = open_factory(path, 600, 350, 30);
        assert_eq!((i.width, i.height, i.fps), (640, 360, 30), "{i:?}");
        let i = open_factory(path, 1280, 720, 30);
        assert_eq!((i.width, i.height, i.fps), (1280, 720, 13), "{i:?}");
        let i = open_factory(path, 300, 200, 15);
        assert_eq!((i.width, i.height, i.fps), (320, 180, 15), "{i:?}");
        // The format is the cheapest to convert: YU12 (I420) itself.
        assert_eq!(i.format, PixelFormat::I420);
    }
    unload_media();
}

/// The synthetic picture the MJPEG writer sends: eight vertical bars, each
/// with its own luma and chroma, and a luma ramp in the bottom quarter.
fn bars(w: usize, h: usize) -> Planes {
    const BARS: [(u8, u8, u8); 8] = [
        (235, 128, 128),
        (210, 16, 146),
        (170, 166, 16),
        (145, 54, 34),
        (106, 202, 222),
        (81, 90, 240),
        (41, 240, 110),
        (16, 128, 128),
    ];
    let bar = |x: usize| BARS[x * 8 / w];
    let mut p = Planes {
        width: w,
        height: h,
        y: vec![0; w * h],
        u: vec![0; w * h / 4],
        v: vec![0; w * h / 4],
    };
    for row in 0..h {
        for x in 0..w {
            p.y[row * w + x] = if row >= h * 3 / 4 {
                (16 + x * 219 / w) as u8
            } else {
                bar(x).0
            };
        }
    }
    for row in 0..h / 2 {
        for x in 0..w / 2 {
            let (_, u, v) = if row >= h * 3 / 8 {
                (0, 128, 128)
            } else {
                bar(x * 2)
            };
            p.u[row * w / 2 + x] = u;
            p.v[row * w / 2 + x] = v;
        }
    }
    p
}

/// A full-range sample mapped to video range (`16 + v * span / 255`).
fn video_range(v: u8, base: u32, span: u32) -> u8 {
    (base + (u32::from(v) * span + 127) / 255) as u8
}

/// A full-range chroma sample mapped to video range (around 128).
fn video_chroma(c: u8) -> u8 {
    (128.0 + (f64::from(c) - 128.0) * 224.0 / 255.0).round() as u8
}

/// The picture as a baseline 4:2:0 JPEG (quality 95).
fn jpeg_of(p: &Planes) -> Vec<u8> {
    let (w, h) = (p.width, p.height);
    let mut ycbcr = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for x in 0..w {
            let c = (row / 2) * (w / 2) + x / 2;
            ycbcr.extend_from_slice(&[p.y[row * w + x], p.u[c], p.v[c]]);
        }
    }
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 95);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    enc.encode(&ycbcr, w as u16, h as u16, jpeg_encoder::ColorType::Ycbcr)
        .expect("the JPEG encodes");
    out
}

/// A writer thread that makes a v4l2loopback node a 640x480 camera
/// sending one frame in one format every 40 ms, until finished or dropped
/// (a failing test must not leave the node held, or later tests could not
/// unload the driver).
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl Feeder {
    fn start(node: &Path, fourcc: &[u8; 4], frame: Vec<u8>) -> Feeder {
        use v4l::video::Output;
        let writer = v4l::Device::with_path(node).expect("the writer opens the loopback node");
        Output::set_format(
            &writer,
            &v4l::Format::new(640, 480, v4l::FourCC::new(fourcc)),
        )
        .expect("the loopback takes the format on its output");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let fd = writer.handle().fd();
            let mut written = 0u32;
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: a plain write(2) of an owned buffer to an open fd.
                let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
                assert_eq!(n, frame.len() as isize, "the loopback takes a whole frame");
                written += 1;
                std::thread::sleep(Duration::from_millis(40));
            }
            written
        });
        Feeder {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the writer; the frames it wrote.
    fn finish(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("the writer ends"))
            .unwrap_or(0)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn mjpeg_from_a_v4l2loopback_writer_decodes_to_its_picture() {
    require_lab();
    unload_media();
    // exclusive_caps: an output node until a writer streams, then a
    // capture node, as a camera looks to its readers.
    sh("modprobe v4l2loopback devices=1 video_nr=40 exclusive_caps=1 card_label=rtcam-mjpeg");
    let node = wait_nodes("v4l2loopback's node", 1, |n| n == "rtcam-mjpeg").remove(0);
    let (w, h) = (640, 480);
    let picture = bars(w, h);
    let jpeg = jpeg_of(&picture);
    let feeder = Feeder::start(&node, b"MJPG", jpeg);
    // The reader sees a capture device offering MJPG once frames flow.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (info, got) = loop {
        match V4l2Source::open_path(
            &node,
            Choice {
                format: PixelFormat::Mjpeg,
                width: w as u32,
                height: h as u32,
                fps: 25,
            },
        ) {
            Ok(mut src) => {
                let info = src.info();
                for _ in 0..2 {
                    src.next_frame().expect("a frame");
                }
                let frame = src.next_frame().expect("a frame");
                let mut conv = Converter::new();
                let view = conv.to_i420(&frame).expect("the MJPEG frame decodes");
                break (info, Planes::of(&view));
            }
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the loopback never became an MJPEG camera: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let written = feeder.finish();
    assert_eq!(info.format, PixelFormat::Mjpeg);
    assert_eq!((info.width, info.height), (w, h));
    // JPEG's YCbCr is full range; the pipeline's I420 is video range
    // (what the H.264 stream signals): the picture as the encoder must see it.
    let want = Planes {
        y: picture.y.iter().map(|&y| video_range(y, 16, 219)).collect(),
        u: picture.u.iter().map(|&c| video_chroma(c)).collect(),
        v: picture.v.iter().map(|&c| video_chroma(c)).collect(),
        ..picture.clone()
    };
    let d = diff(&want, &got);
    eprintln!("MJPEG through v4l2loopback ({written} frames written): {d:?}");
    assert!(
        d.y_mean < 2.0 && d.uv_mean < 3.0 && d.far < 0.01,
        "the decoded MJPEG frame differs from the picture written: {d:?}"
    );
    unload_media();
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn auto_passes_over_codec_metadata_and_raw_bayer_nodes_and_devices_prints_no_nul() {
    require_lab();
    unload_media();
    // Loaded first, so they take the lowest node numbers: vicodec's
    // encoder and decoders (M2M; its decoder's capture queue offers YU12),
    // vimc's sensor nodes (RGB and Bayer, nothing rtcam reads), a Bayer-only
    // node, then vivid (a metadata-only instance, then the camera).
    sh("modprobe vicodec && modprobe vimc");
    wait_nodes("vicodec", 3, |n| {
        n.starts_with("stateful-") || n.starts_with("stateless-")
    });
    wait_nodes("vimc", 1, |n| n == "Raw Capture 0");
    // A CSI receiver such as the Pi's unicam offers raw Bayer only: a
    // loopback node fed RGGB frames by a writer is one.
    sh("modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=rtcam-bayer");
    let bayer = wait_nodes("the Bayer loopback node", 1, |n| n == "rtcam-bayer").remove(0);
    let feeder = Feeder::start(&bayer, b"RGGB", vec![0x40; 640 * 480]);
    // vivid: a first instance with only a metadata node (as UVC cameras
    // have beside their picture node), then the camera.
    sh("modprobe vivid n_devs=2 node_types=0x20000,0x1");
    wait_nodes("vivid's metadata node", 1, |n| n.ends_with("-meta-cap"));
    let cap = wait_nodes("vivid's capture node", 1, |n| n.ends_with("-vid-cap")).remove(0);

    let out = rtcam().arg("devices").output().expect("rtcam devices runs");
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        !out.stdout.contains(&0),
        "rtcam devices prints NUL bytes:\n{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{listing}");
    for want in [
        "not used: memory-to-memory",
        "not used: metadata node",
        "not used: raw Bayer formats only",
    ] {
        assert!(listing.contains(want), "`{want}` missing:\n{listing}");
    }

    // `auto` records from vivid and logs why it passed over the others.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("auto.h264");
    let out = rtcam()
        .args([
            "--video-source",
            "auto",
            "--video-width",
            "320",
            "--video-height",
            "180",
            "--video-fps",
            "15",
            "record",
            "--frames",
            "10",
            "--timeout",
            "20",
            "-o",
        ])
        .arg(&file)
        .output()
        .expect("rtcam record runs");
    let log = all_output(&out);
    assert!(out.status.success(), "record with auto:\n{log}");
    assert!(
        log.contains(&format!("device={} card=vivid", cap.display()))
            && log.contains("video.source = auto: using this camera"),
        "auto took vivid's capture node {}:\n{log}",
        cap.display()
    );
    let skips = log
        .lines()
        .filter(|l| l.contains("video.source = auto: skipping this node"))
        .collect::<Vec<_>>();
    for reason in ["memory-to-memory", "raw Bayer", "metadata"] {
        assert!(
            skips.iter().any(|l| l.contains(reason)),
            "no skip logged for a {reason} node:\n{log}"
        );
    }
    assert!(
        std::fs::metadata(&file).expect("the file").len() > 1000,
        "frames written"
    );
    feeder.finish();
    unload_media();
}

#[test]
#[ignore = "needs the kernel lab: run by tests/lab (.ci/test)"]
fn record_goes_on_across_a_camera_unplugged_for_ten_seconds() {
    use std::io::{BufRead, BufReader};
    require_lab();
    unload_media();
    sh("modprobe vivid n_devs=1 node_types=0x1");
    let cap = wait_nodes("vivid's capture node", 1, |n| n.ends_with("-vid-cap")).remove(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("unplug.h264");
    let mut child = rtcam()
        .arg("--video-source")
        .arg(&cap)
        .args([
            "--video-width",
            "320",
            "--video-height",
            "180",
            "--video-fps",
            "15",
            "record",
            "--frames",
            "90",
            "-o",
        ])
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rtcam record starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let wait_for = |what: &str, log: &mut Vec<String>| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no `{what}` in record's log:\n{}", log.join("\n")));
        log.push(line.clone());
        if line.contains(what) {
            return;
        }
    };
    wait_for("camera running", &mut log);
    std::thread::sleep(Duration::from_secs(2));
    // Unplugged: the node disappears, the driver fails the open handle,
    // then goes away.
    let aside = common::lab::unplug(&cap);
    wait_for("camera failed; reopening", &mut log);
    common::lab::unload("vivid");
    common::lab::replug_cleanup(&aside);
    std::thread::sleep(Duration::from_secs(10));
    sh("modprobe vivid n_devs=1 node_types=0x1");
    let status = child.wait().expect("record ends");
    log.extend(rx.try_iter());
    let log = log.join("\n");
    assert!(status.success(), "record survives the unplug:\n{log}");
    let summary = log
        .lines()
        .find(|l| l.starts_with("wrote 90 frames"))
        .unwrap_or_else(|| panic!("the summary line:\n{log}"));
    let keyframes: u32 = summary
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a keyframe count");
    assert!(
        keyframes >= 2,
        "the recording restarts at a keyframe after the camera returns: {summary}"
    );
    unload_media();
}
