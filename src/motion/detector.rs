//! Motion from a small luma picture of every frame: frame differencing
//! with a per-pixel threshold, counted over the watched zones; motion starts
//! when enough of the picture changes two frames running and ends after a
//! quiet time. Pure: fed pictures and their times, returns events.

use crate::config::Zone;
use std::time::Duration;

/// Frames in a row over the area needed to start: one odd frame is not motion.
const START_FRAMES: u32 = 2;

/// The detector's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Luma change that counts a pixel as changed.
    pub threshold: u8,
    /// Share of the watched pixels that must change (0-1).
    pub min_area: f64,
    /// Quiet time that ends motion.
    pub end_after: Duration,
    /// Watched rectangles (empty: all).
    pub include: Vec<Zone>,
    /// Ignored rectangles.
    pub exclude: Vec<Zone>,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MotionEvent {
    /// Motion began; `area` is the share of the watched picture that changed.
    Start {
        /// Changed share, 0-1.
        area: f64,
    },
    /// Nothing moved for `end_after`.
    End,
}

/// The detector for pictures of one size.
#[derive(Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    width: usize,
    height: usize,
    mask: Vec<bool>,
    watched: usize,
    prev: Option<Vec<u8>>,
    over: u32,
    moving: bool,
    last_change: Duration,
    /// Share of the watched pixels that changed in the last frame.
    pub last_area: f64,
}

fn inside(z: &Zone, x: usize, y: usize, w: usize, h: usize) -> bool {
    // Pixel centres, relative.
    let (cx, cy) = ((x as f64 + 0.5) / w as f64, (y as f64 + 0.5) / h as f64);
    cx >= z.x && cx < z.x + z.w && cy >= z.y && cy < z.y + z.h
}

impl Detector {
    /// A detector for `width x height` pictures.
    pub fn new(cfg: DetectorConfig, width: usize, height: usize) -> Self {
        let mut mask = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let included = cfg.include.is_empty()
                    || cfg.include.iter().any(|z| inside(z, x, y, width, height));
                let excluded = cfg.exclude.iter().any(|z| inside(z, x, y, width, height));
                mask.push(included && !excluded);
            }
        }
        let watched = mask.iter().filter(|m| **m).count();
        Self {
            cfg,
            width,
            height,
            mask,
            watched,
            prev: None,
            over: 0,
            moving: false,
            last_change: Duration::ZERO,
            last_area: 0.0,
        }
    }

    /// Whether motion is on.
    pub fn moving(&self) -> bool {
        self.moving
    }

    /// Pixels watched (zones applied).
    pub fn watched(&self) -> usize {
        self.watched
    }

    /// The next picture (`width * height` luma samples) at time `t`.
    pub fn feed(&mut self, luma: &[u8], t: Duration) -> Option<MotionEvent> {
        if luma.len() != self.width * self.height || self.watched == 0 {
            return None;
        }
        let Some(prev) = self.prev.as_mut() else {
            self.prev = Some(luma.to_vec());
            return None;
        };
        let threshold = self.cfg.threshold;
        let changed = luma
            .iter()
            .zip(prev.iter())
            .zip(&self.mask)
            .filter(|((a, b), m)| **m && a.abs_diff(**b) > threshold)
            .count();
        prev.copy_from_slice(luma);
        let area = changed as f64 / self.watched as f64;
        self.last_area = area;
        if area >= self.cfg.min_area {
            self.over += 1;
            self.last_change = t;
            if !self.moving && self.over >= START_FRAMES {
                self.moving = true;
                return Some(MotionEvent::Start { area });
            }
        } else {
            self.over = 0;
            if self.moving && t.saturating_sub(self.last_change) >= self.cfg.end_after {
                self.moving = false;
                return Some(MotionEvent::End);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 80;
    const H: usize = 60;

    fn cfg() -> DetectorConfig {
        DetectorConfig {
            threshold: 25,
            min_area: 0.01,
            end_after: Duration::from_secs(2),
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// A grey picture with grain of ±`grain` and a bright square at `at`.
    fn picture(frame: u64, grain: u8, at: Option<(usize, usize)>) -> Vec<u8> {
        let mut state = frame.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut p: Vec<u8> = (0..W * H)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (100 - i32::from(grain) + (state % (2 * u64::from(grain) + 1)) as i32) as u8
            })
            .collect();
        if let Some((x0, y0)) = at {
            for y in y0..(y0 + 8).min(H) {
                for x in x0..(x0 + 8).min(W) {
                    p[y * W + x] = 220;
                }
            }
        }
        p
    }

    fn run(
        d: &mut Detector,
        frames: std::ops::Range<u64>,
        at: impl Fn(u64) -> Option<(usize, usize)>,
    ) -> Vec<(u64, MotionEvent)> {
        frames
            .filter_map(|f| {
                let t = Duration::from_millis(f * 100);
                d.feed(&picture(f, 10, at(f)), t).map(|e| (f, e))
            })
            .collect()
    }

    #[test]
    fn a_still_scene_with_grain_never_moves() {
        let mut d = Detector::new(cfg(), W, H);
        assert!(run(&mut d, 0..600, |_| None).is_empty());
    }

    #[test]
    fn a_moving_square_starts_motion_and_quiet_ends_it() {
        let mut d = Detector::new(cfg(), W, H);
        // Frames 50-99: the square moves 4 px a frame; then it stops.
        let at = |f: u64| (f >= 50).then(|| (((f.min(99) - 50) * 4 % 70) as usize, 20));
        let ev = run(&mut d, 0..200, at);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(
            matches!(ev[0], (51, MotionEvent::Start { area }) if area > 0.01),
            "{ev:?}"
        );
        // Still from frame 100 on: motion ends 2 s (20 frames) after the last change (99).
        assert_eq!(ev[1], (119, MotionEvent::End));
    }

    #[test]
    fn excluded_zones_are_ignored_and_included_ones_alone_count() {
        let at = |f: u64| (f >= 10).then(|| (((f - 10) * 4 % 30) as usize, 2));
        // The square moves in the top-left; excluding it leaves nothing.
        let mut d = Detector::new(
            DetectorConfig {
                exclude: vec![Zone {
                    x: 0.0,
                    y: 0.0,
                    w: 0.5,
                    h: 0.3,
                }],
                ..cfg()
            },
            W,
            H,
        );
        assert!(run(&mut d, 0..100, at).is_empty());
        // Watching only the top-left: the same square is a larger share of it.
        let mut d = Detector::new(
            DetectorConfig {
                include: vec![Zone {
                    x: 0.0,
                    y: 0.0,
                    w: 0.5,
                    h: 0.3,
                }],
                min_area: 0.08,
                ..cfg()
            },
            W,
            H,
        );
        assert_eq!(d.watched(), 40 * 18);
        assert!(matches!(
            run(&mut d, 0..100, at).first(),
            Some((11, MotionEvent::Start { .. }))
        ));
    }
}
