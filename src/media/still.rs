//! Still pictures: JPEG from an I420 picture (limited-range BT.601, as the
//! cameras and encoders here use, mapped to JPEG's full range), and an I420
//! picture decoded from an H.264 keyframe where no raw picture exists (a
//! camera's own H.264 passed through).

use super::frame::I420Image;
use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};

/// Why a still could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StillError {
    /// The picture is larger than JPEG allows (65535 pixels a side).
    #[error("a {0}x{1} picture is too large for JPEG")]
    TooLarge(usize, usize),
    /// JPEG encoding failed.
    #[error("JPEG encoding failed: {0}")]
    Jpeg(String),
    /// The keyframe did not decode.
    #[error("the keyframe did not decode: {0}")]
    Decode(String),
}

/// Limited (16-235 / 16-240) to full range, as JFIF expects.
struct Ranges {
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl Ranges {
    fn new() -> Self {
        let map = |v: usize, lo: f32, span: f32, centre: bool| {
            let f = if centre {
                (v as f32 - 128.0) * 255.0 / span + 128.0
            } else {
                (v as f32 - lo) * 255.0 / span
            };
            f.round().clamp(0.0, 255.0) as u8
        };
        let mut r = Self {
            luma: [0; 256],
            chroma: [0; 256],
        };
        for v in 0..256 {
            r.luma[v] = map(v, 16.0, 219.0, false);
            r.chroma[v] = map(v, 16.0, 224.0, true);
        }
        r
    }
}

struct I420Buffer<'a> {
    img: &'a I420Image,
    ranges: Ranges,
}

impl ImageBuffer for I420Buffer<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.img.width as u16
    }

    fn height(&self) -> u16 {
        self.img.height as u16
    }

    fn fill_buffers(&self, row: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, r) = (self.img.width, usize::from(row));
        let (y, u, v) = self.img.planes();
        let cr = (r / 2) * (w / 2);
        for x in 0..w {
            buffers[0].push(self.ranges.luma[usize::from(y[r * w + x])]);
            buffers[1].push(self.ranges.chroma[usize::from(u[cr + x / 2])]);
            buffers[2].push(self.ranges.chroma[usize::from(v[cr + x / 2])]);
        }
    }
}

/// Encodes `img` as a baseline JPEG of `quality` (1-100), chroma 4:2:0.
pub fn jpeg(img: &I420Image, quality: u8) -> Result<Vec<u8>, StillError> {
    if img.width > usize::from(u16::MAX) || img.height > usize::from(u16::MAX) {
        return Err(StillError::TooLarge(img.width, img.height));
    }
    let mut out = Vec::with_capacity(img.width * img.height / 4);
    let mut enc = Encoder::new(&mut out, quality);
    enc.set_sampling_factor(SamplingFactor::F_2_2);
    enc.encode_image(I420Buffer {
        img,
        ranges: Ranges::new(),
    })
    .map_err(|e| StillError::Jpeg(e.to_string()))?;
    Ok(out)
}

/// The picture of an H.264 keyframe (Annex B, SPS and PPS in front).
pub fn decode_keyframe(au: &[u8]) -> Result<I420Image, StillError> {
    use openh264::formats::YUVSource;
    let mut dec =
        openh264::decoder::Decoder::new().map_err(|e| StillError::Decode(e.to_string()))?;
    let pic = dec
        .decode(au)
        .map_err(|e| StillError::Decode(e.to_string()))?
        .ok_or_else(|| StillError::Decode("no picture came out".into()))?;
    let (w, h) = pic.dimensions();
    let (ys, us, vs) = pic.strides();
    let mut img = I420Image::new(w & !1, h & !1);
    let (iw, ih) = (img.width, img.height);
    let (y, u, v) = img.planes_mut();
    for r in 0..ih {
        y[r * iw..][..iw].copy_from_slice(&pic.y()[r * ys..][..iw]);
    }
    for r in 0..ih / 2 {
        u[r * iw / 2..][..iw / 2].copy_from_slice(&pic.u()[r * us..][..iw / 2]);
        v[r * iw / 2..][..iw / 2].copy_from_slice(&pic.v()[r * vs..][..iw / 2]);
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_survives_jpeg_with_its_levels() {
        let mut img = I420Image::new(64, 48);
        let (y, u, v) = img.planes_mut();
        // Left half black (16), right half white (235); neutral chroma.
        for (i, p) in y.iter_mut().enumerate() {
            *p = if i % 64 < 32 { 16 } else { 235 };
        }
        u.fill(128);
        v.fill(128);
        let jpg = jpeg(&img, 90).expect("encodes");
        assert_eq!(&jpg[..2], &[0xff, 0xd8], "a JPEG starts with SOI");
        let mut d =
            zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(&jpg));
        let px = d.decode().expect("decodes");
        let info = d.info().expect("header");
        assert_eq!((info.width, info.height), (64, 48));
        // RGB out: limited-range black and white became full-range 0 and 255.
        let at = |x: usize, y: usize| px[(y * 64 + x) * 3];
        assert!(
            at(4, 10) < 8 && at(60, 10) > 247,
            "{} {}",
            at(4, 10),
            at(60, 10)
        );
    }
}
