//! Raw pictures taken off the media thread before they are encoded: a full
//! picture for a snapshot when one is asked for, and a small luma plane of
//! every frame for the motion detector. Cheap when nobody asks (one atomic
//! load per frame); the media thread never waits on a taker.

use super::encode::EncoderInput;
use super::frame::{I420Image, PixelFormat};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A downscaled luma plane (`width * height` bytes, no padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luma {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major samples.
    pub data: Vec<u8>,
    /// Presentation time on the hub's clock.
    pub pts: Duration,
}

/// Where the motion detector's planes go, and their size.
struct LumaSink {
    width: usize,
    height: usize,
    tx: mpsc::Sender<Luma>,
}

/// The taps the media thread serves.
#[derive(Default)]
pub struct Taps {
    wanted: AtomicBool,
    /// Whether the running source gives raw pictures (false: compressed passthrough).
    raw: AtomicBool,
    snapshots: Mutex<Vec<oneshot::Sender<I420Image>>>,
    luma: Mutex<Option<LumaSink>>,
}

/// A borrowed luma plane with its stride.
struct Plane<'a> {
    y: &'a [u8],
    stride: usize,
    step: usize,
    width: usize,
    height: usize,
}

fn plane<'a>(input: &'a EncoderInput<'a>) -> Option<Plane<'a>> {
    match input {
        EncoderInput::I420(v) => Some(Plane {
            y: v.y,
            stride: v.y_stride,
            step: 1,
            width: v.width,
            height: v.height,
        }),
        EncoderInput::Frame(f) => match f.format {
            PixelFormat::I420 | PixelFormat::Nv12 => Some(Plane {
                y: f.data,
                stride: f.stride,
                step: 1,
                width: f.width,
                height: f.height,
            }),
            PixelFormat::Yuyv => Some(Plane {
                y: f.data,
                stride: f.stride,
                step: 2,
                width: f.width,
                height: f.height,
            }),
            PixelFormat::Mjpeg | PixelFormat::H264 => None,
        },
    }
}

/// Box-averages `p` down to `w x h`, from about 4x4 samples per block:
/// enough to average sensor grain away, a sixteenth of the reads of a
/// 16x16 block at 720p.
fn downscale(p: &Plane<'_>, w: usize, h: usize) -> Option<Vec<u8>> {
    if p.width < w || p.height < h || w == 0 || h == 0 {
        return None;
    }
    let (bw, bh) = (p.width / w, p.height / h);
    let row_len = p.width * p.step;
    if p.y.len() < p.stride * (p.height - 1) + row_len {
        return None;
    }
    let (sx, sy) = ((bw / 4).max(1), (bh / 4).max(1));
    let n = (bw.div_ceil(sx) * bh.div_ceil(sy)) as u32;
    let mut sums = vec![0u32; w];
    let mut out = Vec::with_capacity(w * h);
    for by in 0..h {
        sums.fill(0);
        for yy in (0..bh).step_by(sy) {
            let start = (by * bh + yy) * p.stride;
            let row = &p.y[start..start + row_len];
            for (bx, sum) in sums.iter_mut().enumerate() {
                let block = &row[bx * bw * p.step..(bx + 1) * bw * p.step];
                *sum += block
                    .iter()
                    .step_by(sx * p.step)
                    .map(|&v| u32::from(v))
                    .sum::<u32>();
            }
        }
        out.extend(sums.iter().map(|s| (s / n) as u8));
    }
    Some(out)
}

/// An owned I420 copy of the input, when it is one the tap can read.
fn picture(input: &EncoderInput<'_>) -> Option<I420Image> {
    let (w, h) = match input {
        EncoderInput::I420(v) => (v.width, v.height),
        EncoderInput::Frame(f) => (f.width, f.height),
    };
    let mut img = I420Image::new(w & !1, h & !1);
    let (w, h) = (img.width, img.height);
    let (y, u, v) = img.planes_mut();
    match input {
        EncoderInput::I420(s) => {
            for r in 0..h {
                y[r * w..][..w].copy_from_slice(s.y.get(r * s.y_stride..)?.get(..w)?);
            }
            for r in 0..h / 2 {
                u[r * w / 2..][..w / 2].copy_from_slice(s.u.get(r * s.uv_stride..)?.get(..w / 2)?);
                v[r * w / 2..][..w / 2].copy_from_slice(s.v.get(r * s.uv_stride..)?.get(..w / 2)?);
            }
        }
        EncoderInput::Frame(f) => match f.format {
            PixelFormat::I420 => {
                // Odd sizes round the chroma planes up.
                let (cs, luma) = (f.stride.div_ceil(2), f.stride * f.height);
                let chroma = cs * f.height.div_ceil(2);
                for r in 0..h {
                    y[r * w..][..w].copy_from_slice(f.data.get(r * f.stride..)?.get(..w)?);
                }
                for r in 0..h / 2 {
                    u[r * w / 2..][..w / 2]
                        .copy_from_slice(f.data.get(luma + r * cs..)?.get(..w / 2)?);
                    v[r * w / 2..][..w / 2]
                        .copy_from_slice(f.data.get(luma + chroma + r * cs..)?.get(..w / 2)?);
                }
            }
            PixelFormat::Nv12 => {
                let luma = f.stride * f.height;
                for r in 0..h {
                    y[r * w..][..w].copy_from_slice(f.data.get(r * f.stride..)?.get(..w)?);
                }
                for r in 0..h / 2 {
                    let row = f.data.get(luma + r * f.stride..)?.get(..w)?;
                    for c in 0..w / 2 {
                        u[r * w / 2 + c] = row[2 * c];
                        v[r * w / 2 + c] = row[2 * c + 1];
                    }
                }
            }
            PixelFormat::Yuyv => {
                for r in 0..h {
                    let row = f.data.get(r * f.stride..)?.get(..w * 2)?;
                    for c in 0..w {
                        y[r * w + c] = row[2 * c];
                    }
                    if r % 2 == 0 {
                        for c in 0..w / 2 {
                            u[r / 2 * w / 2 + c] = row[4 * c + 1];
                            v[r / 2 * w / 2 + c] = row[4 * c + 3];
                        }
                    }
                }
            }
            PixelFormat::Mjpeg | PixelFormat::H264 => return None,
        },
    }
    Some(img)
}

impl Taps {
    /// Taps with nothing asked for.
    pub fn new() -> Self {
        Self::default()
    }

    fn rearm(&self) {
        let snap = !self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        let luma = self
            .luma
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        self.wanted.store(snap || luma, Ordering::Release);
    }

    /// The next raw picture, as I420. Dropped unanswered while the camera
    /// delivers only compressed frames (see [`Taps::gives_raw`]).
    pub fn request_picture(&self) -> oneshot::Receiver<I420Image> {
        let (tx, rx) = oneshot::channel();
        self.snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        self.wanted.store(true, Ordering::Release);
        rx
    }

    /// Sends a `width x height` luma plane of every frame to `tx` from now
    /// on (frames it has no room for are skipped).
    pub fn feed_luma(&self, width: usize, height: usize, tx: mpsc::Sender<Luma>) {
        *self.luma.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(LumaSink { width, height, tx });
        self.wanted.store(true, Ordering::Release);
    }

    /// Whether the running source's frames can be tapped (false for a
    /// camera's own H.264 or JPEG passed through).
    pub fn gives_raw(&self) -> bool {
        self.raw.load(Ordering::Acquire)
    }

    /// Called by the media thread with each frame about to be encoded.
    pub fn offer(&self, input: &EncoderInput<'_>, pts: Duration) {
        let raw = plane(input).is_some();
        self.raw.store(raw, Ordering::Release);
        if !self.wanted.load(Ordering::Acquire) || !raw {
            if !raw {
                // Compressed frames: nobody can be served; waiting requests are dropped.
                self.snapshots
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            }
            return;
        }
        let waiting = std::mem::take(
            &mut *self
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if !waiting.is_empty()
            && let Some(img) = picture(input)
        {
            for tx in waiting {
                let _ = tx.send(img.clone());
            }
        }
        let mut luma = self.luma.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = luma.as_ref() {
            if sink.tx.is_closed() {
                *luma = None;
            } else if let Some(p) = plane(input)
                && let Some(data) = downscale(&p, sink.width, sink.height)
            {
                let _ = sink.tx.try_send(Luma {
                    width: sink.width,
                    height: sink.height,
                    data,
                    pts,
                });
            }
        }
        drop(luma);
        self.rearm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::RawFrame;
    use std::time::Instant;

    #[test]
    fn pictures_and_luma_come_from_raw_frames_only() {
        let taps = Taps::new();
        let mut img = I420Image::new(64, 32);
        img.data[..64 * 32]
            .iter_mut()
            .enumerate()
            .for_each(|(i, y)| *y = (i % 64) as u8 * 2);
        let mut rx = taps.request_picture();
        let (tx, mut luma) = mpsc::channel(4);
        taps.feed_luma(8, 4, tx);
        taps.offer(&EncoderInput::I420(img.view()), Duration::from_millis(5));
        assert_eq!(rx.try_recv().expect("a picture"), img);
        let l = luma.try_recv().expect("a luma plane");
        assert_eq!((l.width, l.height, l.data.len()), (8, 4, 32));
        // Columns 0-7 average (0, 4, 8, 12 of every second column) * ... : rising left to right.
        assert!(l.data[..8].windows(2).all(|w| w[0] < w[1]), "{:?}", l.data);
        assert!(taps.gives_raw());
        // A camera's own H.264: no picture, and the request is dropped.
        let rx = taps.request_picture();
        let au = [0u8, 0, 0, 1, 0x65];
        let frame = RawFrame {
            format: PixelFormat::H264,
            width: 64,
            height: 32,
            stride: 0,
            data: &au,
            captured: Instant::now(),
            dmabuf: None,
        };
        taps.offer(&EncoderInput::Frame(frame), Duration::ZERO);
        assert!(!taps.gives_raw());
        assert!(rx.blocking_recv().is_err());
    }

    #[test]
    fn yuyv_and_nv12_frames_give_the_same_picture_as_i420() {
        let (w, h) = (16, 8);
        let mut i420 = I420Image::new(w, h);
        for (i, b) in i420.data.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        let (y, u, v) = i420.planes();
        let mut nv12 = y.to_vec();
        for i in 0..u.len() {
            nv12.extend([u[i], v[i]]);
        }
        let frame = RawFrame {
            format: PixelFormat::Nv12,
            width: w,
            height: h,
            stride: w,
            data: &nv12,
            captured: Instant::now(),
            dmabuf: None,
        };
        assert_eq!(picture(&EncoderInput::Frame(frame)), Some(i420.clone()));
        let mut yuyv = Vec::new();
        for r in 0..h {
            for c in 0..w / 2 {
                let ci = (r / 2) * w / 2 + c;
                yuyv.extend([y[r * w + 2 * c], u[ci], y[r * w + 2 * c + 1], v[ci]]);
            }
        }
        let frame = RawFrame {
            format: PixelFormat::Yuyv,
            stride: w * 2,
            data: &yuyv,
            ..frame
        };
        assert_eq!(picture(&EncoderInput::Frame(frame)), Some(i420));
    }
}
