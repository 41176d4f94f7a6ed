//! The test microphone's signal, and the detector a receiver uses to find
//! it again: a 1 kHz beep during the first 100 ms of every whole second of
//! the wall clock (the clock the test pattern's block code carries), so a
//! viewer can measure audio latency and its offset from the video's. Pure.

use super::SAMPLE_RATE;

/// The beep's frequency.
pub const TONE_HZ: u32 = 1000;
/// How long each beep lasts, from the start of each whole second.
pub const BEEP_MS: u64 = 100;
/// Peak amplitude (-12 dBFS): loud enough to find, far from clipping.
pub const AMPLITUDE: f64 = 0.25 * i16::MAX as f64;

const BEEP_SAMPLES: u64 = SAMPLE_RATE as u64 * BEEP_MS / 1000;

/// Fills `out` (interleaved, `channels` per frame) with the signal, its
/// first frame being sample number `first` counted at 48 kHz from the UNIX
/// epoch; returns the next sample number.
pub fn fill(out: &mut [i16], channels: usize, first: u64) -> u64 {
    let channels = channels.max(1);
    let mut n = first;
    for frame in out.chunks_mut(channels) {
        let in_beep = n % u64::from(SAMPLE_RATE) < BEEP_SAMPLES;
        let v = if in_beep {
            // 1 kHz at 48 kHz repeats every 48 samples: the phase is exact.
            let phase = (n % 48) as f64 / 48.0;
            (AMPLITUDE * (2.0 * std::f64::consts::PI * phase).sin()).round() as i16
        } else {
            0
        };
        frame.fill(v);
        n += 1;
    }
    n
}

/// One beep found by [`ToneDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beep {
    /// The whole second (ms since the UNIX epoch) whose beep this is.
    pub second_ms: u64,
    /// When its first loud sample arrived (ms since the UNIX epoch, the
    /// arrival of the packet that held it, less the samples after it).
    pub arrived_ms: f64,
    /// Its frequency, from zero crossings over the beep.
    pub hz: f64,
}

impl Beep {
    /// From capture (the whole second) to arrival.
    pub fn latency_ms(&self) -> f64 {
        self.arrived_ms - self.second_ms as f64
    }
}

/// Finds the beeps in decoded mono audio at 48 kHz, fed packet by packet
/// with the time each arrived.
#[derive(Debug, Default)]
pub struct ToneDetector {
    /// The beep being measured: its onset, and its zero crossings and
    /// samples up to its last loud sample (a quiet tail is not the beep).
    current: Option<Measure>,
    quiet_run: u32,
    last: i16,
    beeps: Vec<Beep>,
}

#[derive(Debug, Clone, Copy)]
struct Measure {
    onset_ms: f64,
    crossings: u32,
    samples: u32,
    crossings_loud: u32,
    samples_loud: u32,
}

/// A sample this loud (about a quarter of the beep's peak) is the beep.
const LOUD: i32 = (AMPLITUDE as i32) / 4;

impl ToneDetector {
    /// A detector that has heard nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one decoded packet (mono samples) that arrived at `arrived_ms`
    /// (ms since the UNIX epoch).
    pub fn feed(&mut self, samples: &[i16], arrived_ms: f64) {
        let len = samples.len();
        for (i, &s) in samples.iter().enumerate() {
            let loud = i32::from(s).abs() >= LOUD;
            match &mut self.current {
                None if loud => {
                    // The packet's last sample arrived at `arrived_ms`.
                    let at = arrived_ms - (len - 1 - i) as f64 * 1000.0 / f64::from(SAMPLE_RATE);
                    self.current = Some(Measure {
                        onset_ms: at,
                        crossings: 0,
                        samples: 1,
                        crossings_loud: 0,
                        samples_loud: 1,
                    });
                    self.quiet_run = 0;
                }
                None => {}
                Some(m) => {
                    m.samples += 1;
                    if (self.last < 0) != (s < 0) {
                        m.crossings += 1;
                    }
                    if loud {
                        m.crossings_loud = m.crossings;
                        m.samples_loud = m.samples;
                        self.quiet_run = 0;
                    } else {
                        self.quiet_run += 1;
                        // 5 ms without a loud sample: the beep ended.
                        if self.quiet_run > SAMPLE_RATE / 200 {
                            self.finish();
                        }
                    }
                }
            }
            self.last = s;
        }
    }

    fn finish(&mut self) {
        if let Some(m) = self.current.take() {
            let at = m.onset_ms;
            let crossings = m.crossings_loud;
            let secs = f64::from(m.samples_loud.max(1)) / f64::from(SAMPLE_RATE);
            // Beeps shorter than half the real one are clicks or noise.
            if secs * 1000.0 >= BEEP_MS as f64 / 2.0 {
                self.beeps.push(Beep {
                    second_ms: (at.max(0.0) as u64) / 1000 * 1000,
                    arrived_ms: at,
                    hz: f64::from(crossings) / 2.0 / secs,
                });
            }
        }
        self.quiet_run = 0;
    }

    /// The beeps found so far.
    pub fn beeps(&self) -> &[Beep] {
        &self.beeps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_beeps_at_each_whole_second_only() {
        let rate = u64::from(SAMPLE_RATE);
        let mut out = vec![0i16; SAMPLE_RATE as usize];
        let next = fill(&mut out, 1, 7 * rate);
        assert_eq!(next, 8 * rate);
        let loud = |s: &[i16]| s.iter().any(|v| v.unsigned_abs() > 1000);
        assert!(loud(&out[..4800]), "the first 100 ms beep");
        assert!(!loud(&out[4800..]), "then silence");
        let peak = out.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
        assert!((8000..=8200).contains(&peak), "-12 dBFS: {peak}");
        // Stereo gets the same sample in both channels.
        let mut st = vec![0i16; 96];
        fill(&mut st, 2, 7 * rate + 5);
        assert!(st.chunks(2).all(|f| f[0] == f[1]));
    }

    #[test]
    fn the_detector_finds_each_beep_its_second_and_frequency() {
        let rate = u64::from(SAMPLE_RATE);
        let mut det = ToneDetector::new();
        // 3 s of 20 ms packets, each arriving 35 ms after its last sample.
        let start = 1_700_000_000 * rate;
        let mut n = start;
        let mut pkt = vec![0i16; 960];
        for _ in 0..150 {
            n = fill(&mut pkt, 1, n);
            let last_ms = (n - 1) as f64 * 1000.0 / rate as f64;
            det.feed(&pkt, last_ms + 35.0);
        }
        let beeps = det.beeps();
        assert_eq!(beeps.len(), 3, "{beeps:?}");
        for (i, b) in beeps.iter().enumerate() {
            assert_eq!(b.second_ms, (1_700_000_000 + i as u64) * 1000);
            assert!((b.latency_ms() - 35.0).abs() < 1.0, "{b:?}");
            assert!((b.hz - 1000.0).abs() < 15.0, "{b:?}");
        }
    }

    #[test]
    fn silence_and_short_clicks_are_no_beeps() {
        let mut det = ToneDetector::new();
        det.feed(&[0; 960], 1000.0);
        let mut click = vec![0i16; 960];
        click[100..140].fill(9000);
        det.feed(&click, 1020.0);
        det.feed(&[0; 960], 1040.0);
        assert!(det.beeps().is_empty());
    }
}
