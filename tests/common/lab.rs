//! For the tests that drive real kernel drivers (vivid, vicodec, vimc,
//! v4l2loopback, gpio-sim) inside the kernel lab's guest (tests/lab). They
//! are `#[ignore = "needs the kernel lab: ..."]` on a host, and `.ci/test`
//! runs them with `--ignored` through `tests/lab/lab run`. Run anywhere
//! else with `--ignored`, they fail (never pass by skipping).

use rtcam::media::frame::I420View;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Panics unless this runs in the lab's guest (which sets `LAB_GUEST=1`).
pub fn require_lab() {
    assert!(
        std::env::var_os("LAB_GUEST").is_some(),
        "this test loads and unloads kernel drivers: run it inside the lab's guest, \
         e.g. tests/lab/lab run -- target/debug/deps/lab_capture-HASH --ignored --test-threads=1 \
         (.ci/test does)"
    );
}

/// Runs `cmd` with `sh -c`; its stdout. Panics (with its output) if it fails.
pub fn sh(cmd: &str) -> String {
    let (ok, out) = try_sh(cmd);
    assert!(ok, "`{cmd}` failed:\n{out}");
    out
}

/// Runs `cmd` with `sh -c`: whether it succeeded, and stdout then stderr.
pub fn try_sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Unloads `module` if loaded, retrying while something still holds it (a
/// process that has not closed its device yet), at most 20 s.
pub fn unload(module: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let loaded = std::path::Path::new("/sys/module")
            .join(module.replace('-', "_"))
            .exists();
        if !loaded {
            return;
        }
        let (ok, out) = try_sh(&format!("rmmod {module}"));
        if ok {
            return;
        }
        if Instant::now() >= deadline {
            let (_, holders) =
                try_sh("ls -l /proc/[0-9]*/fd 2>/dev/null | grep -E 'video|media|cec|v4l|gpio'");
            panic!("rmmod {module} kept failing: {out}\nopen device files:\n{holders}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Unloads every media test driver, so each test starts from no video node.
pub fn unload_media() {
    for m in ["vivid", "vicodec", "vimc", "v4l2loopback"] {
        unload(m);
    }
}

/// The video nodes whose sysfs name satisfies `pred`, in numeric order.
pub fn nodes_named(pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir("/sys/class/video4linux")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = std::fs::read_to_string(e.path().join("name")).ok()?;
                    let node = e.file_name().to_string_lossy().into_owned();
                    let n = node.strip_prefix("video")?.parse().ok()?;
                    pred(name.trim()).then(|| (n, PathBuf::from("/dev").join(node)))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Waits (at most 10 s: nodes appear as the driver probes) for `count`
/// nodes named by `pred`, and returns them.
pub fn wait_nodes(what: &str, count: usize, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = nodes_named(&pred);
        if found.len() >= count && found.iter().all(|p| p.exists()) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {count} video node(s) expected, found {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An I420 picture copied out of a view (strides removed).
#[derive(Debug, Clone)]
pub struct Planes {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Luma.
    pub y: Vec<u8>,
    /// Cb.
    pub u: Vec<u8>,
    /// Cr.
    pub v: Vec<u8>,
}

impl Planes {
    /// Copies `view`.
    pub fn of(view: &I420View<'_>) -> Planes {
        let copy = |plane: &[u8], stride: usize, w: usize, h: usize| {
            let mut out = Vec::with_capacity(w * h);
            for row in plane.chunks(stride).take(h) {
                out.extend_from_slice(&row[..w]);
            }
            out
        };
        let (w, h) = (view.width, view.height);
        Planes {
            width: w,
            height: h,
            y: copy(view.y, view.y_stride, w, h),
            u: copy(view.u, view.uv_stride, w / 2, h / 2),
            v: copy(view.v, view.uv_stride, w / 2, h / 2),
        }
    }

    /// Distinct luma levels (a flat or empty picture has one or two).
    pub fn luma_levels(&self) -> usize {
        let mut seen = [false; 256];
        for &p in &self.y {
            seen[p as usize] = true;
        }
        seen.iter().filter(|s| **s).count()
    }
}

/// How far two pictures are apart, plane by plane.
#[derive(Debug, Clone, Copy)]
pub struct Diff {
    /// Mean absolute difference of luma.
    pub y_mean: f64,
    /// Mean absolute difference of both chroma planes.
    pub uv_mean: f64,
    /// Share of samples (all planes) more than 16 apart.
    pub far: f64,
}

/// Compares two pictures of the same size.
pub fn diff(a: &Planes, b: &Planes) -> Diff {
    assert_eq!(
        (a.width, a.height),
        (b.width, b.height),
        "pictures of different sizes"
    );
    let mean = |x: &[u8], y: &[u8]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| f64::from(p.abs_diff(*q)))
            .sum::<f64>()
            / x.len().max(1) as f64
    };
    let far = [(&a.y, &b.y), (&a.u, &b.u), (&a.v, &b.v)]
        .iter()
        .flat_map(|(x, y)| x.iter().zip(y.iter()))
        .filter(|(p, q)| p.abs_diff(**q) > 16)
        .count() as f64
        / (a.y.len() + a.u.len() + a.v.len()) as f64;
    Diff {
        y_mean: mean(&a.y, &b.y),
        uv_mean: (mean(&a.u, &b.u) + mean(&a.v, &b.v)) / 2.0,
        far,
    }
}

/// Sets V4L2 control `name` (as `v4l2-ctl` spells it: `osd_text_mode`,
/// `disconnect`) on `node` through the `v4l` crate, so it works in the
/// arm64 guest too (which cannot run the host's x86 `v4l2-ctl`). A button
/// control is pressed whatever `value` is.
pub fn set_ctrl(node: &std::path::Path, name: &str, value: i64) {
    use v4l::control::{Control, Type, Value};
    let dev = v4l::Device::with_path(node).expect("the node opens");
    let snake = |label: &str| {
        label
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join("_")
    };
    let d = dev
        .query_controls()
        .expect("the controls list")
        .into_iter()
        .find(|d| snake(&d.name) == name)
        .unwrap_or_else(|| panic!("{} has no control {name}", node.display()));
    let v = match d.typ {
        Type::Button => Value::None,
        Type::Boolean => Value::Boolean(value != 0),
        _ => Value::Integer(value),
    };
    dev.set_control(Control { id: d.id, value: v })
        .unwrap_or_else(|e| panic!("{name} = {value} on {}: {e}", node.display()));
}

/// Unplugs vivid's camera at `node` as a USB camera is unplugged: its node
/// disappears from /dev (renamed aside, so nothing reopens it) and the
/// driver fails every open handle (vivid's Disconnect control). Then
/// [`unload`] the driver once the agent has let go, and
/// [`replug_cleanup`] before loading it again.
pub fn unplug(node: &std::path::Path) -> PathBuf {
    let aside = node.with_extension("unplugged");
    std::fs::rename(node, &aside).expect("the node is renamed aside");
    set_ctrl(&aside, "disconnect", 1);
    aside
}

/// Removes the node [`unplug`] put aside (the driver is gone by now).
pub fn replug_cleanup(aside: &std::path::Path) {
    let _ = std::fs::remove_file(aside);
}
