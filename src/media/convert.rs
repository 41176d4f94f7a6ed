//! Turns whatever the camera delivers into I420 for the encoder, with the
//! `yuv` crate's SIMD kernels (YUYV, RGB) and `zune-jpeg` (MJPEG). I420 input
//! is passed through as a borrowed view, without a copy.

use crate::media::frame::{I420Image, I420View, PixelFormat, RawFrame};
use yuv::{
    BufferStoreMut, YuvConversionMode, YuvPackedImage, YuvPlanarImageMut, YuvRange,
    YuvStandardMatrix,
};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Why a frame could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The frame is shorter than its size and format require.
    #[error("{format} frame {width}x{height} has {got} bytes, needs {need}")]
    ShortFrame {
        /// Frame format.
        format: PixelFormat,
        /// Frame width.
        width: usize,
        /// Frame height.
        height: usize,
        /// Bytes received.
        got: usize,
        /// Bytes required.
        need: usize,
    },
    /// Odd sizes cannot be 4:2:0 subsampled.
    #[error("frame size {width}x{height} is not even")]
    OddSize {
        /// Frame width.
        width: usize,
        /// Frame height.
        height: usize,
    },
    /// The JPEG decoder rejected a frame.
    #[error("bad MJPEG frame: {0}")]
    Jpeg(String),
    /// The YUV library rejected the buffers.
    #[error("conversion failed: {0}")]
    Yuv(String),
    /// H.264 is not converted; it bypasses the encoder.
    #[error("{0} frames are not converted to I420")]
    Unsupported(PixelFormat),
}

/// Reusable conversion buffers (one per pipeline run).
#[derive(Default)]
pub struct Converter {
    out: Option<I420Image>,
    rgb: Vec<u8>,
}

fn short(frame: &RawFrame<'_>, need: usize) -> ConvertError {
    ConvertError::ShortFrame {
        format: frame.format,
        width: frame.width,
        height: frame.height,
        got: frame.data.len(),
        need,
    }
}

impl Converter {
    /// An empty converter; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    fn out_image(&mut self, width: usize, height: usize) -> &mut I420Image {
        let out = self
            .out
            .get_or_insert_with(|| I420Image::new(width, height));
        if out.width != width || out.height != height {
            *out = I420Image::new(width, height);
        }
        out
    }

    /// Converts one frame; the view borrows either the frame or this converter.
    pub fn to_i420<'a>(&'a mut self, frame: &RawFrame<'a>) -> Result<I420View<'a>, ConvertError> {
        let (w, h) = (frame.width, frame.height);
        if frame.format != PixelFormat::Mjpeg {
            check_even(frame)?;
        }
        match frame.format {
            PixelFormat::I420 => i420_view(frame),
            PixelFormat::Nv12 => {
                let stride = frame.stride.max(w);
                let need = stride * h + stride * (h / 2);
                if frame.data.len() < need {
                    return Err(short(frame, need));
                }
                let out = self.out_image(w, h);
                let (y, u, v) = out.planes_mut();
                let (src_y, src_uv) = frame.data.split_at(stride * h);
                for (dst, src) in y.chunks_exact_mut(w).zip(src_y.chunks(stride)) {
                    dst.copy_from_slice(&src[..w]);
                }
                // Neither `yuv` nor dcv-color-primitives offers NV12 -> I420; this
                // is a chroma deinterleave that the compiler vectorises.
                for ((du, dv), src) in u
                    .chunks_exact_mut(w / 2)
                    .zip(v.chunks_exact_mut(w / 2))
                    .zip(src_uv.chunks(stride))
                {
                    for ((pu, pv), pair) in du
                        .iter_mut()
                        .zip(dv.iter_mut())
                        .zip(src[..w].chunks_exact(2))
                    {
                        *pu = pair[0];
                        *pv = pair[1];
                    }
                }
                Ok(self.out_view())
            }
            PixelFormat::Yuyv => {
                let stride = frame.stride.max(w * 2);
                let need = stride * (h - 1) + w * 2;
                if frame.data.len() < need {
                    return Err(short(frame, need));
                }
                let out = self.out_image(w, h);
                let mut planar = planar_mut(out);
                let packed = YuvPackedImage {
                    yuy: frame.data,
                    yuy_stride: stride as u32,
                    width: w as u32,
                    height: h as u32,
                };
                yuv::yuyv422_to_yuv420(&mut planar, &packed)
                    .map_err(|e| ConvertError::Yuv(e.to_string()))?;
                Ok(self.out_view())
            }
            PixelFormat::Mjpeg => {
                let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
                let mut dec = JpegDecoder::new_with_options(ZCursor::new(frame.data), opts);
                dec.decode_headers()
                    .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
                let info = dec
                    .info()
                    .ok_or_else(|| ConvertError::Jpeg("no image header".into()))?;
                let (jw, jh) = (usize::from(info.width), usize::from(info.height));
                if jw % 2 != 0 || jh % 2 != 0 {
                    return Err(ConvertError::OddSize {
                        width: jw,
                        height: jh,
                    });
                }
                self.rgb.resize(jw * jh * 3, 0);
                dec.decode_into(&mut self.rgb)
                    .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
                let rgb = std::mem::take(&mut self.rgb);
                let out = self.out_image(jw, jh);
                let mut planar = planar_mut(out);
                let res = yuv::rgb_to_yuv420(
                    &mut planar,
                    &rgb,
                    (jw * 3) as u32,
                    YuvRange::Limited,
                    YuvStandardMatrix::Bt601,
                    YuvConversionMode::Balanced,
                );
                self.rgb = rgb;
                res.map_err(|e| ConvertError::Yuv(e.to_string()))?;
                Ok(self.out_view())
            }
            PixelFormat::H264 => Err(ConvertError::Unsupported(PixelFormat::H264)),
        }
    }

    fn out_view(&self) -> I420View<'_> {
        self.out
            .as_ref()
            .expect("out_image() ran just before: the buffer exists")
            .view()
    }
}

fn planar_mut(out: &mut I420Image) -> YuvPlanarImageMut<'_, u8> {
    let (w, h) = (out.width as u32, out.height as u32);
    let (y, u, v) = out.planes_mut();
    YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y),
        y_stride: w,
        u_plane: BufferStoreMut::Borrowed(u),
        u_stride: w / 2,
        v_plane: BufferStoreMut::Borrowed(v),
        v_stride: w / 2,
        width: w,
        height: h,
    }
}

/// 4:2:0 chroma needs an even size (a JPEG's own size is checked when decoded).
fn check_even(frame: &RawFrame<'_>) -> Result<(), ConvertError> {
    if !frame.width.is_multiple_of(2) || !frame.height.is_multiple_of(2) {
        return Err(ConvertError::OddSize {
            width: frame.width,
            height: frame.height,
        });
    }
    Ok(())
}

/// Views an I420 frame's planes in place, without a copy.
pub fn i420_view<'a>(frame: &RawFrame<'a>) -> Result<I420View<'a>, ConvertError> {
    let (w, h) = (frame.width, frame.height);
    check_even(frame)?;
    let ys = frame.stride.max(w);
    let cs = ys / 2;
    let (luma, chroma) = (ys * h, cs * (h / 2));
    let need = luma + 2 * chroma;
    if frame.data.len() < need {
        return Err(short(frame, need));
    }
    let (y, rest) = frame.data.split_at(luma);
    let (u, v) = rest.split_at(chroma);
    Ok(I420View {
        width: w,
        height: h,
        y,
        u,
        v: &v[..chroma],
        y_stride: ys,
        uv_stride: cs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::capture::test_pattern::PatternGenerator;
    use std::time::Instant;

    fn frame(format: PixelFormat, w: usize, h: usize, stride: usize, data: &[u8]) -> RawFrame<'_> {
        RawFrame {
            format,
            width: w,
            height: h,
            stride,
            data,
            captured: Instant::now(),
            dmabuf: None,
        }
    }

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        let sum: u64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.len() as f64
    }

    fn reference() -> I420Image {
        PatternGenerator::new(320, 240).render(1234).clone()
    }

    #[test]
    fn i420_is_a_borrowed_view() {
        let img = reference();
        let f = frame(PixelFormat::I420, 320, 240, 320, &img.data);
        let mut c = Converter::new();
        let v = c.to_i420(&f).expect("valid frame");
        assert_eq!(v.y.as_ptr(), img.data.as_ptr());
        assert_eq!((v.y_stride, v.uv_stride), (320, 160));
    }

    #[test]
    fn nv12_with_padding_matches_the_original() {
        let img = reference();
        let (w, h, stride) = (320, 240, 384);
        let (y, u, v) = img.planes();
        let mut nv12 = vec![0u8; stride * h * 3 / 2];
        for r in 0..h {
            nv12[r * stride..r * stride + w].copy_from_slice(&y[r * w..(r + 1) * w]);
        }
        for r in 0..h / 2 {
            for c in 0..w / 2 {
                nv12[stride * h + r * stride + 2 * c] = u[r * w / 2 + c];
                nv12[stride * h + r * stride + 2 * c + 1] = v[r * w / 2 + c];
            }
        }
        let mut conv = Converter::new();
        let out = conv
            .to_i420(&frame(PixelFormat::Nv12, w, h, stride, &nv12))
            .expect("valid");
        assert_eq!((out.y, out.u, out.v), img.planes());
    }

    #[test]
    fn yuyv_round_trips_closely() {
        let img = reference();
        let (w, h) = (320, 240);
        let (y, u, v) = img.planes();
        let mut packed = vec![0u8; w * 2 * h];
        let mut pk = yuv::YuvPackedImageMut {
            yuy: BufferStoreMut::Borrowed(&mut packed),
            yuy_stride: (w * 2) as u32,
            width: w as u32,
            height: h as u32,
        };
        let planar = yuv::YuvPlanarImage {
            y_plane: y,
            y_stride: w as u32,
            u_plane: u,
            u_stride: (w / 2) as u32,
            v_plane: v,
            v_stride: (w / 2) as u32,
            width: w as u32,
            height: h as u32,
        };
        yuv::yuv420_to_yuyv422(&mut pk, &planar).expect("valid buffers");
        let mut conv = Converter::new();
        let out = conv
            .to_i420(&frame(PixelFormat::Yuyv, w, h, w * 2, &packed))
            .expect("valid");
        assert_eq!(out.y, y, "luma is copied exactly");
        assert!(mean_abs_diff(out.u, u) < 2.0);
    }

    #[test]
    fn mjpeg_decodes_to_the_right_picture() {
        let img = reference();
        let (w, h) = (320, 240);
        let mut rgb = vec![0u8; w * h * 3];
        let (y, u, v) = img.planes();
        let planar = yuv::YuvPlanarImage {
            y_plane: y,
            y_stride: w as u32,
            u_plane: u,
            u_stride: (w / 2) as u32,
            v_plane: v,
            v_stride: (w / 2) as u32,
            width: w as u32,
            height: h as u32,
        };
        yuv::yuv420_to_rgb(
            &planar,
            &mut rgb,
            (w * 3) as u32,
            YuvRange::Limited,
            YuvStandardMatrix::Bt601,
        )
        .expect("valid buffers");
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 90)
            .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .expect("encodes");
        let mut conv = Converter::new();
        let out = conv
            .to_i420(&frame(PixelFormat::Mjpeg, w, h, 0, &jpeg))
            .expect("valid JPEG");
        assert_eq!((out.width, out.height), (w, h));
        // JPEG's DCT and RGB clipping at sharp coloured edges (text on bars)
        // leave some error; there must be no systematic shift.
        let d = mean_abs_diff(out.y, y);
        assert!(d < 12.0, "luma close to the original: mean diff {d}");
        let shift: f64 = out
            .y
            .iter()
            .zip(y)
            .map(|(a, b)| f64::from(*a) - f64::from(*b))
            .sum::<f64>()
            / y.len() as f64;
        assert!(shift.abs() < 1.0, "no level shift: {shift}");
        assert_eq!(
            crate::blockcode::decode(out.y, w, w, h).map(|c| c.seq),
            Ok(0),
            "block code survives MJPEG"
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut conv = Converter::new();
        assert!(matches!(
            conv.to_i420(&frame(PixelFormat::I420, 320, 240, 320, &[0; 100])),
            Err(ConvertError::ShortFrame { need: 115200, .. })
        ));
        assert!(matches!(
            conv.to_i420(&frame(PixelFormat::Yuyv, 321, 240, 642, &[0; 200_000])),
            Err(ConvertError::OddSize { .. })
        ));
        assert!(matches!(
            conv.to_i420(&frame(PixelFormat::Mjpeg, 320, 240, 0, b"not a jpeg")),
            Err(ConvertError::Jpeg(_))
        ));
        assert!(matches!(
            conv.to_i420(&frame(PixelFormat::H264, 320, 240, 0, &[0, 0, 1, 0x65])),
            Err(ConvertError::Unsupported(PixelFormat::H264))
        ));
    }
}
