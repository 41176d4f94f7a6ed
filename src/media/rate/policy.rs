//! One encoder serves every viewer, so its bitrate is a choice among their
//! estimates: follow the weakest viewer, or keep the quality and let a
//! viewer that cannot keep up drop to keyframes only. When the bitrate is
//! too low for the picture, the frame rate goes down first (the resolution
//! is the camera's and stays). Pure: estimates in, a plan out.

/// How the viewers' estimates become the encoder's bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The encoder follows the weakest viewer that still reports.
    FollowWeakest,
    /// The encoder stays at the ceiling; a viewer well below it gets keyframes only.
    KeepQuality,
    /// Viewers' feedback is ignored: the encoder stays at the ceiling.
    Off,
}

impl Mode {
    /// The config text of this policy (`[video] congestion`).
    pub fn as_config(&self) -> &'static str {
        match self {
            Mode::FollowWeakest => "follow-weakest",
            Mode::KeepQuality => "keep-quality",
            Mode::Off => "off",
        }
    }
}

/// Bits per pixel per frame below which pictures get blocky enough that
/// fewer, better frames read better (720p30 at about 830 kbit/s).
pub const MIN_BITS_PER_PIXEL: f64 = 0.03;
/// The frame rate is never lowered below this.
pub const MIN_FPS: u32 = 5;
/// Under [`Mode::KeepQuality`], a viewer whose estimate falls below this
/// share of the bitrate gets keyframes only...
pub const KEYFRAMES_ONLY_BELOW: f64 = 0.75;
/// ...until it is back above this share (a gap, so it does not flap).
pub const ALL_FRAMES_ABOVE: f64 = 0.9;

/// The camera's picture, for the frame-rate decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second the camera gives.
    pub fps: u32,
}

/// One viewer's estimate, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewerEstimate {
    /// Its estimate in kbit/s.
    pub kbps: u32,
    /// Whether it has stopped reporting (its link may be gone).
    pub silent: bool,
}

/// What the encoder should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Its bitrate in kbit/s.
    pub target_kbps: u32,
    /// Encode one frame in this many (1: every frame).
    pub frame_divisor: u32,
}

/// The bitrate for `estimates` under `mode`, never above `ceiling_kbps`
/// (the user's) nor below `min_kbps`.
pub fn target_kbps(
    mode: Mode,
    ceiling_kbps: u32,
    min_kbps: u32,
    estimates: &[ViewerEstimate],
) -> u32 {
    let ceiling = ceiling_kbps.max(min_kbps);
    match mode {
        Mode::Off | Mode::KeepQuality => ceiling,
        Mode::FollowWeakest => {
            // A viewer that went quiet (its link cut) must not hold every
            // other viewer down; if all are quiet, they all count.
            let reporting = estimates.iter().filter(|e| !e.silent).map(|e| e.kbps).min();
            let any = estimates.iter().map(|e| e.kbps).min();
            reporting
                .or(any)
                .map_or(ceiling, |weakest| weakest.clamp(min_kbps, ceiling))
        }
    }
}

/// Frames to skip per kept one, plus one: the smallest divisor that gives
/// each encoded frame at least [`MIN_BITS_PER_PIXEL`], without going below
/// [`MIN_FPS`].
pub fn frame_divisor(target_kbps: u32, picture: Picture) -> u32 {
    let pixels = f64::from(picture.width) * f64::from(picture.height);
    if pixels == 0.0 || picture.fps == 0 {
        return 1;
    }
    let max = (picture.fps / MIN_FPS).max(1);
    (1..=max)
        .find(|d| {
            let fps = f64::from(picture.fps) / f64::from(*d);
            f64::from(target_kbps) * 1000.0 / (pixels * fps) >= MIN_BITS_PER_PIXEL
        })
        .unwrap_or(max)
}

/// The whole decision: the bitrate, then the frame rate for it.
pub fn plan(
    mode: Mode,
    ceiling_kbps: u32,
    min_kbps: u32,
    picture: Option<Picture>,
    estimates: &[ViewerEstimate],
) -> Plan {
    let target_kbps = target_kbps(mode, ceiling_kbps, min_kbps, estimates);
    let frame_divisor = match (mode, picture) {
        (Mode::FollowWeakest, Some(p)) => frame_divisor(target_kbps, p),
        _ => 1,
    };
    Plan {
        target_kbps,
        frame_divisor,
    }
}

/// Under [`Mode::KeepQuality`], whether a viewer gets keyframes only, given
/// whether it did until now (a gap between entering and leaving).
pub fn keyframes_only(mode: Mode, was: bool, estimate: ViewerEstimate, target_kbps: u32) -> bool {
    if mode != Mode::KeepQuality {
        return false;
    }
    let share = f64::from(estimate.kbps) / f64::from(target_kbps.max(1));
    if was {
        share < ALL_FRAMES_ABOVE
    } else {
        share < KEYFRAMES_ONLY_BELOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(kbps: u32) -> ViewerEstimate {
        ViewerEstimate {
            kbps,
            silent: false,
        }
    }

    const HD: Picture = Picture {
        width: 1280,
        height: 720,
        fps: 30,
    };

    #[test]
    fn follow_weakest_takes_the_lowest_reporting_viewer_within_bounds() {
        let m = Mode::FollowWeakest;
        assert_eq!(
            target_kbps(m, 2000, 100, &[]),
            2000,
            "no viewers: the ceiling"
        );
        assert_eq!(target_kbps(m, 2000, 100, &[est(1500), est(800)]), 800);
        assert_eq!(
            target_kbps(m, 2000, 100, &[est(5000)]),
            2000,
            "never above the ceiling"
        );
        assert_eq!(
            target_kbps(m, 2000, 300, &[est(120)]),
            300,
            "never below the floor"
        );
        let quiet = ViewerEstimate {
            kbps: 100,
            silent: true,
        };
        assert_eq!(
            target_kbps(m, 2000, 100, &[quiet, est(1200)]),
            1200,
            "a quiet viewer does not hold the others down"
        );
        assert_eq!(target_kbps(m, 2000, 100, &[quiet]), 100, "alone, it counts");
    }

    #[test]
    fn keep_quality_and_off_stay_at_the_ceiling() {
        for m in [Mode::KeepQuality, Mode::Off] {
            assert_eq!(target_kbps(m, 2000, 100, &[est(300)]), 2000);
        }
    }

    #[test]
    fn the_frame_rate_goes_down_before_pictures_starve() {
        assert_eq!(frame_divisor(2000, HD), 1, "0.072 bit/px");
        assert_eq!(frame_divisor(830, HD), 1, "0.030 bit/px");
        assert_eq!(frame_divisor(800, HD), 2, "0.029 at 30 fps, 0.058 at 15");
        assert_eq!(frame_divisor(400, HD), 3, "10 fps");
        assert_eq!(frame_divisor(100, HD), 6, "never below 5 fps");
        let small = Picture {
            width: 320,
            height: 180,
            fps: 15,
        };
        assert_eq!(frame_divisor(100, small), 1);
        assert_eq!(
            frame_divisor(1, Picture { fps: 0, ..small }),
            1,
            "no rate known"
        );
        assert_eq!(
            plan(Mode::KeepQuality, 400, 100, Some(HD), &[]).frame_divisor,
            1,
            "only when following viewers"
        );
        assert_eq!(
            plan(Mode::FollowWeakest, 2000, 100, Some(HD), &[est(400)]),
            Plan {
                target_kbps: 400,
                frame_divisor: 3
            }
        );
    }

    #[test]
    fn keyframes_only_has_a_gap_between_entering_and_leaving() {
        let m = Mode::KeepQuality;
        assert!(!keyframes_only(m, false, est(1600), 2000), "80 %");
        assert!(keyframes_only(m, false, est(1400), 2000), "70 %");
        assert!(keyframes_only(m, true, est(1600), 2000), "80 %: stays");
        assert!(!keyframes_only(m, true, est(1800), 2000), "90 %: leaves");
        assert!(!keyframes_only(Mode::FollowWeakest, false, est(10), 2000));
    }
}
