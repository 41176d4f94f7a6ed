//! The `test` source: a moving synthetic I420 picture at any size and rate,
//! with a visible clock and the machine-readable [`crate::blockcode`] in the
//! top-left corner. Rows are built from precomputed lines with `copy_from_slice`
//! so generating a 720p frame costs far less than encoding it.

use super::{ControlInfo, ControlKind, Source, SourceError, SourceFactory, SourceInfo};
use crate::blockcode::{self, BlockCode};
use crate::media::frame::{I420Image, PixelFormat, RawFrame};
use font8x8::{BASIC_FONTS, UnicodeFonts};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// BT.601 video-range YUV of the eight classic colour bars.
const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128), // white
    (210, 16, 146),  // yellow
    (170, 166, 16),  // cyan
    (145, 54, 34),   // green
    (106, 202, 222), // magenta
    (81, 90, 240),   // red
    (41, 240, 110),  // blue
    (16, 128, 128),  // black
];
/// Horizontal scroll per frame, in pixels (even, so chroma stays aligned).
const SCROLL_PX: usize = 4;

/// Control values shared by every source a factory opens, so they survive a reopen.
#[derive(Debug)]
pub struct TestControls {
    brightness: AtomicI64,
    contrast: AtomicI64,
}

impl Default for TestControls {
    fn default() -> Self {
        Self {
            brightness: AtomicI64::new(0),
            contrast: AtomicI64::new(100),
        }
    }
}

impl TestControls {
    fn describe(&self) -> Vec<ControlInfo> {
        vec![
            ControlInfo {
                name: "brightness".into(),
                kind: ControlKind::Integer {
                    min: -64,
                    max: 64,
                    step: 1,
                    default: 0,
                },
                value: self.brightness.load(Ordering::Relaxed),
            },
            ControlInfo {
                name: "contrast".into(),
                kind: ControlKind::Integer {
                    min: 0,
                    max: 200,
                    step: 1,
                    default: 100,
                },
                value: self.contrast.load(Ordering::Relaxed),
            },
        ]
    }

    fn set(&self, name: &str, value: i64) -> Result<i64, SourceError> {
        let (slot, min, max) = match name {
            "brightness" => (&self.brightness, -64, 64),
            "contrast" => (&self.contrast, 0, 200),
            _ => return Err(SourceError::UnknownControl(name.to_string())),
        };
        if !(min..=max).contains(&value) {
            return Err(SourceError::BadControl {
                name: name.to_string(),
                reason: format!("value {value} is outside {min}..={max}"),
            });
        }
        slot.store(value, Ordering::Relaxed);
        Ok(value)
    }
}

/// Opens [`TestPattern`] sources of one size and rate.
pub struct TestPatternFactory {
    width: usize,
    height: usize,
    fps: u32,
    controls: Arc<TestControls>,
    scene: Scene,
}

/// What the pattern shows besides the code and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scene {
    /// Scrolling bars and a bouncing box.
    #[default]
    Moving,
    /// Still bars and grain; the box appears from `object_after` (after the
    /// source opens), if set, moves for [`OBJECT_MOVES`], then stands still.
    Still {
        /// When the box starts moving.
        object_after: Option<Duration>,
    },
}

impl TestPatternFactory {
    /// A factory for `width`×`height` (even) at `fps`.
    pub fn new(width: usize, height: usize, fps: u32) -> Self {
        Self {
            width,
            height,
            fps,
            controls: Arc::default(),
            scene: Scene::Moving,
        }
    }

    /// The same, showing `scene`.
    pub fn with_scene(mut self, scene: Scene) -> Self {
        self.scene = scene;
        self
    }
}

impl SourceFactory for TestPatternFactory {
    fn open(&self) -> Result<Box<dyn Source>, SourceError> {
        let mut source =
            TestPattern::with_controls(self.width, self.height, self.fps, self.controls.clone());
        source.pattern.scene = match self.scene {
            Scene::Moving => PatternScene::default(),
            Scene::Still { object_after } => PatternScene {
                still: true,
                object_from: object_after
                    .map(|d| (d.as_millis() * u128::from(self.fps.max(1)) / 1000) as u32),
                object_frames: (OBJECT_MOVES.as_millis() * u128::from(self.fps.max(1)) / 1000)
                    as u32,
            },
        };
        Ok(Box::new(source))
    }
}

/// The synthetic pattern generator, paced to its frame rate.
pub struct TestPattern {
    pattern: PatternGenerator,
    fps: u32,
    interval: Duration,
    next_due: Option<Instant>,
    controls: Arc<TestControls>,
}

impl TestPattern {
    /// A paced source of `width`×`height` (even) at `fps`, with its own controls.
    pub fn new(width: usize, height: usize, fps: u32) -> Self {
        Self::with_controls(width, height, fps, Arc::default())
    }

    fn with_controls(width: usize, height: usize, fps: u32, controls: Arc<TestControls>) -> Self {
        let fps = fps.max(1);
        Self {
            pattern: PatternGenerator::new(width, height),
            fps,
            interval: Duration::from_secs(1) / fps,
            next_due: None,
            controls,
        }
    }
}

impl Source for TestPattern {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            name: "test pattern".into(),
            format: PixelFormat::I420,
            width: self.pattern.image.width,
            height: self.pattern.image.height,
            fps: self.fps,
        }
    }

    fn next_frame(&mut self) -> Result<RawFrame<'_>, SourceError> {
        let now = Instant::now();
        let due = match self.next_due {
            // Late by more than a frame (machine busy): restart the schedule, no burst.
            Some(due) if due + self.interval < now => now,
            Some(due) => due,
            None => now,
        };
        if due > now {
            std::thread::sleep(due - now);
        }
        self.next_due = Some(due + self.interval);
        self.pattern.set_levels(
            self.controls.brightness.load(Ordering::Relaxed),
            self.controls.contrast.load(Ordering::Relaxed),
        );
        let captured = Instant::now();
        self.pattern.render(wall_clock_ms());
        let img = &self.pattern.image;
        Ok(RawFrame {
            format: PixelFormat::I420,
            width: img.width,
            height: img.height,
            stride: img.width,
            data: &img.data,
            captured,
            dmabuf: None,
        })
    }

    fn controls(&mut self) -> Result<Vec<ControlInfo>, SourceError> {
        Ok(self.controls.describe())
    }

    fn set_control(&mut self, name: &str, value: i64) -> Result<i64, SourceError> {
        self.controls.set(name, value)
    }
}

/// Milliseconds since the UNIX epoch, as carried by the block code.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Draws pattern frames into one reusable I420 buffer (unpaced; benchmarks use it directly).
pub struct PatternGenerator {
    image: I420Image,
    seq: u32,
    levels: (i64, i64),
    // One precomputed line per plane, `period` longer than the frame so any
    // scroll offset is a single slice copy.
    bar_y: Vec<u8>,
    bar_u: Vec<u8>,
    bar_v: Vec<u8>,
    period: usize,
    // GRAIN_ROWS rows of random luma, GRAIN_PAD wider than the frame.
    grain: Vec<u8>,
    scene: PatternScene,
}

/// The generator's scene: still bars, and the frame the box appears at.
#[derive(Debug, Clone, Copy, Default)]
struct PatternScene {
    still: bool,
    object_from: Option<u32>,
    object_frames: u32,
}

/// How long the still scene's box moves before it stands still: a motion
/// event with a known start and end.
pub const OBJECT_MOVES: Duration = Duration::from_secs(5);

/// Rows of precomputed grain (the band repeats them at shifting offsets).
const GRAIN_ROWS: usize = 256;
/// Extra grain columns, so any horizontal offset is one slice copy.
const GRAIN_PAD: usize = 256;
/// Grain amplitude around mid-grey.
const GRAIN_AMPLITUDE: u8 = 28;

/// A new (x, y) grain offset per frame, so the texture never repeats frame to frame.
fn grain_offsets(seq: u32) -> (usize, usize) {
    let h = u64::from(seq).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (
        (h >> 20) as usize % GRAIN_PAD,
        (h >> 40) as usize % GRAIN_ROWS,
    )
}

/// Deterministic grain (xorshift): the pattern is the same on every run.
fn make_grain(width: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..(width + GRAIN_PAD) * GRAIN_ROWS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            128 - GRAIN_AMPLITUDE + (state % (2 * u64::from(GRAIN_AMPLITUDE) + 1)) as u8
        })
        .collect()
}

impl PatternGenerator {
    /// A generator for `width`×`height`; both are rounded down to even.
    pub fn new(width: usize, height: usize) -> Self {
        let (width, height) = (width & !1, height & !1);
        let mut g = Self {
            image: I420Image::new(width, height),
            seq: 0,
            levels: (i64::MIN, 0),
            bar_y: Vec::new(),
            bar_u: Vec::new(),
            bar_v: Vec::new(),
            period: 0,
            grain: make_grain(width),
            scene: PatternScene::default(),
        };
        g.set_levels(0, 100);
        g
    }

    /// Sequence number the next frame will carry.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The last rendered frame.
    pub fn image(&self) -> &I420Image {
        &self.image
    }

    /// Applies brightness (-64..64 added to luma) and contrast (percent).
    pub fn set_levels(&mut self, brightness: i64, contrast: i64) {
        if self.levels == (brightness, contrast) {
            return;
        }
        self.levels = (brightness, contrast);
        let width = self.image.width;
        let bar_w = (width / BARS.len()).max(2) & !1;
        self.period = bar_w * BARS.len();
        let adjust = |y: u8| -> u8 {
            let v = (i64::from(y) - 128) * contrast / 100 + 128 + brightness;
            v.clamp(16, 235) as u8
        };
        let line = width + self.period;
        self.bar_y = (0..line)
            .map(|x| adjust(BARS[(x / bar_w) % BARS.len()].0))
            .collect();
        self.bar_u = (0..line / 2)
            .map(|x| BARS[(2 * x / bar_w) % BARS.len()].1)
            .collect();
        self.bar_v = (0..line / 2)
            .map(|x| BARS[(2 * x / bar_w) % BARS.len()].2)
            .collect();
    }

    /// Renders the next frame stamped with `ts_ms` and advances the sequence number.
    pub fn render(&mut self, ts_ms: u64) -> &I420Image {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let (w, h) = (self.image.width, self.image.height);
        let offset = if self.scene.still {
            0
        } else {
            (seq as usize * SCROLL_PX) % self.period
        };
        let ramp_top = (h * 2 / 3) & !1;
        {
            let (y, u, v) = self.image.planes_mut();
            let bars = &self.bar_y[offset..offset + w];
            for row in y[..ramp_top * w].chunks_exact_mut(w) {
                row.copy_from_slice(bars);
            }
            // Lower third: grey grain that changes every frame, like a camera's
            // sensor noise. It is what makes bitrate matter: fine quantisation
            // keeps the grain (many bits), coarse quantisation smooths it away.
            let (gx, gy) = grain_offsets(seq);
            let stride = w + GRAIN_PAD;
            for (i, row) in y[ramp_top * w..].chunks_exact_mut(w).enumerate() {
                let r = (gy + i) % GRAIN_ROWS;
                row.copy_from_slice(&self.grain[r * stride + gx..r * stride + gx + w]);
            }
            let (cw, coff) = (w / 2, offset / 2);
            for (i, (ru, rv)) in u
                .chunks_exact_mut(cw)
                .zip(v.chunks_exact_mut(cw))
                .enumerate()
            {
                if i * 2 < ramp_top {
                    ru.copy_from_slice(&self.bar_u[coff..coff + cw]);
                    rv.copy_from_slice(&self.bar_v[coff..coff + cw]);
                } else {
                    ru.fill(128);
                    rv.fill(128);
                }
            }
        }
        match (self.scene.still, self.scene.object_from) {
            (false, _) => self.draw_box(seq),
            (true, Some(from)) if seq >= from => {
                let moved = (seq - from).min(self.scene.object_frames);
                self.draw_box(from + moved);
            }
            (true, _) => {}
        }
        self.draw_clock(seq, ts_ms);
        let code = BlockCode { seq, ts_ms };
        let (aw, ah) = blockcode::area(w, h);
        fill_rect(&mut self.image, 0, 0, aw, ah, None);
        blockcode::draw(&mut self.image.data, w, w, h, code);
        &self.image
    }

    /// A grey square bouncing across the frame.
    fn draw_box(&mut self, seq: u32) {
        let (w, h) = (self.image.width, self.image.height);
        let size = (blockcode::block_size(w, h) * 4).min(w / 2).min(h / 2) & !1;
        let span_x = (w - size).max(1);
        let span_y = (h - size).max(1);
        let t = seq as usize * 6;
        let bounce = |t: usize, span: usize| {
            let p = t % (2 * span);
            if p < span { p } else { 2 * span - p }
        };
        let x = bounce(t, span_x) & !1;
        let y = bounce(t / 2, span_y) & !1;
        fill_rect(&mut self.image, x, y, size, size, Some(180));
    }

    /// "HH:MM:SS.mmm UTC", the sequence number and the size, below the code.
    fn draw_clock(&mut self, seq: u32, ts_ms: u64) {
        let (w, h) = (self.image.width, self.image.height);
        let b = blockcode::block_size(w, h);
        let scale = (b / 8).max(1);
        let secs = ts_ms / 1000;
        let lines = [
            format!(
                "{:02}:{:02}:{:02}.{:03} UTC",
                secs / 3600 % 24,
                secs / 60 % 60,
                secs % 60,
                ts_ms % 1000
            ),
            format!("#{seq} {w}x{h}"),
        ];
        let top = blockcode::ROWS * b + b / 2;
        for (i, text) in lines.iter().enumerate() {
            draw_text(&mut self.image, 0, top + i * 9 * scale, scale, text);
        }
    }
}

/// Fills a rectangle: luma `Some(y)` with neutral chroma, or `None` for black.
fn fill_rect(img: &mut I420Image, x: usize, y: usize, rw: usize, rh: usize, luma: Option<u8>) {
    let (w, h) = (img.width, img.height);
    let (x1, y1) = ((x + rw).min(w), (y + rh).min(h));
    if x >= x1 || y >= y1 {
        return;
    }
    let (yp, up, vp) = img.planes_mut();
    for row in y..y1 {
        yp[row * w + x..row * w + x1].fill(luma.unwrap_or(blockcode::BLACK));
    }
    let cw = w / 2;
    for row in y / 2..y1.div_ceil(2).min(h / 2) {
        up[row * cw + x / 2..row * cw + x1.div_ceil(2).min(cw)].fill(128);
        vp[row * cw + x / 2..row * cw + x1.div_ceil(2).min(cw)].fill(128);
    }
}

/// White 8×8-font text on a black box, clipped to the frame.
fn draw_text(img: &mut I420Image, x: usize, y: usize, scale: usize, text: &str) {
    let glyph_px = 8 * scale;
    let chars = text.chars().count();
    fill_rect(
        img,
        x,
        y,
        chars * glyph_px + scale * 2,
        glyph_px + scale * 2,
        None,
    );
    let (w, h) = (img.width, img.height);
    let (yp, _, _) = img.planes_mut();
    for (i, c) in text.chars().enumerate() {
        let Some(glyph) = BASIC_FONTS.get(c) else {
            continue;
        };
        let gx = x + scale + i * glyph_px;
        for (gy, bits) in glyph.iter().enumerate() {
            for bit in 0..8 {
                if bits & (1 << bit) == 0 {
                    continue;
                }
                let px = gx + bit * scale;
                let py = y + scale + gy * scale;
                for dy in 0..scale {
                    let row = py + dy;
                    if row >= h || px >= w {
                        continue;
                    }
                    let end = (px + scale).min(w);
                    yp[row * w + px..row * w + end].fill(blockcode::WHITE);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_increasing_codes_and_move() {
        let mut g = PatternGenerator::new(320, 240);
        let first = g.render(1_000).clone();
        let second = g.render(1_033).clone();
        let (y1, _, _) = first.planes();
        let (y2, _, _) = second.planes();
        assert_eq!(
            blockcode::decode(y1, 320, 320, 240),
            Ok(BlockCode {
                seq: 0,
                ts_ms: 1_000
            })
        );
        assert_eq!(
            blockcode::decode(y2, 320, 320, 240),
            Ok(BlockCode {
                seq: 1,
                ts_ms: 1_033
            })
        );
        assert_ne!(y1, y2, "the pattern must move");
    }

    #[test]
    fn odd_and_tiny_sizes_do_not_panic() {
        for (w, h) in [(161, 121), (2, 2), (16, 16), (3840, 2160)] {
            let mut g = PatternGenerator::new(w, h);
            let img = g.render(5);
            assert_eq!(img.data.len(), I420Image::len_for(w & !1, h & !1));
        }
    }

    #[test]
    fn brightness_changes_luma_and_is_bounded() {
        let controls = TestControls::default();
        assert_eq!(controls.set("brightness", 40).ok(), Some(40));
        assert!(matches!(
            controls.set("brightness", 65),
            Err(SourceError::BadControl { .. })
        ));
        assert!(matches!(
            controls.set("zoom", 1),
            Err(SourceError::UnknownControl(_))
        ));
        let mut g = PatternGenerator::new(320, 240);
        let dark = g.render(0).data.clone();
        g.set_levels(40, 100);
        g.seq = 0;
        let bright = g.render(0).data.clone();
        let sum = |d: &[u8]| d[..320 * 240].iter().map(|&v| u64::from(v)).sum::<u64>();
        assert!(sum(&bright) > sum(&dark));
    }

    #[test]
    fn paced_source_reports_its_info() {
        let mut s = TestPattern::new(320, 240, 30);
        let info = s.info();
        assert_eq!((info.width, info.height, info.fps), (320, 240, 30));
        let f = s.next_frame().expect("test pattern never fails");
        assert_eq!(f.format, PixelFormat::I420);
        assert_eq!(f.data.len(), I420Image::len_for(320, 240));
    }
}
