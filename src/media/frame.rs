//! Frame types passed along the pipeline: raw camera frames (borrowed from
//! the source's buffers), I420 pictures, and the encoded packets of a track.

use bytes::Bytes;
use std::fmt;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// Pixel formats a source can deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Planar 4:2:0, Y then U then V (`YU12`).
    I420,
    /// Y plane then interleaved UV, 4:2:0 (`NV12`).
    Nv12,
    /// Packed 4:2:2, Y0 U Y1 V (`YUYV`).
    Yuyv,
    /// Motion JPEG, one JPEG image per frame (`MJPG`).
    Mjpeg,
    /// H.264 Annex B access units, passed through without re-encoding.
    H264,
}

impl PixelFormat {
    /// Every format, in the order a camera's offer is preferred when all else is equal.
    pub const ALL: [PixelFormat; 5] = [
        PixelFormat::H264,
        PixelFormat::I420,
        PixelFormat::Nv12,
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
    ];

    /// The V4L2 FourCC code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::I420 => *b"YU12",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::H264 => *b"H264",
        }
    }

    /// The format for a V4L2 FourCC, if rtcam accepts it.
    pub fn from_fourcc(code: [u8; 4]) -> Option<Self> {
        match &code {
            b"YU12" | b"I420" => Some(PixelFormat::I420),
            b"NV12" => Some(PixelFormat::Nv12),
            b"YUYV" | b"YUY2" => Some(PixelFormat::Yuyv),
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"H264" => Some(PixelFormat::H264),
            _ => None,
        }
    }

    /// True for formats that are already compressed.
    pub fn is_compressed(self) -> bool {
        matches!(self, PixelFormat::Mjpeg | PixelFormat::H264)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.fourcc()))
    }
}

/// A frame as the source delivered it, borrowed from the source's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    /// Layout of `data`.
    pub format: PixelFormat,
    /// Picture width in pixels.
    pub width: usize,
    /// Picture height in pixels.
    pub height: usize,
    /// Bytes per line of the first plane (0 for compressed formats).
    pub stride: usize,
    /// The frame's bytes.
    pub data: &'a [u8],
    /// When the frame was captured, on the monotonic clock.
    pub captured: Instant,
    /// The source's buffer as a DMA-BUF, when the driver exports one: a
    /// hardware encoder can then read the picture without a CPU copy.
    pub dmabuf: Option<DmaBufRef<'a>>,
}

/// A frame's buffer exported as a DMA-BUF (`VIDIOC_EXPBUF`), valid while
/// the frame is borrowed.
#[derive(Debug, Clone, Copy)]
pub struct DmaBufRef<'a> {
    /// The exported buffer.
    pub fd: BorrowedFd<'a>,
    /// The source's index of the buffer (the same buffer always has the same
    /// index, so an importer can keep one slot per buffer).
    pub index: u32,
    /// Length of the whole buffer in bytes.
    pub length: u32,
    /// Where the picture's bytes start in the buffer.
    pub offset: u32,
}

/// An owned, tightly packed I420 picture (Y, then U, then V).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I420Image {
    /// Width in pixels (even).
    pub width: usize,
    /// Height in pixels (even).
    pub height: usize,
    /// `width*height*3/2` bytes.
    pub data: Vec<u8>,
}

impl I420Image {
    /// A black picture of the given (even) size.
    pub fn new(width: usize, height: usize) -> Self {
        let luma = width * height;
        let mut data = vec![16u8; luma + luma / 2];
        data[luma..].fill(128);
        Self {
            width,
            height,
            data,
        }
    }

    /// Byte length of an I420 picture of this size.
    pub fn len_for(width: usize, height: usize) -> usize {
        width * height * 3 / 2
    }

    /// The Y, U and V planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = self.width * self.height;
        let (y, uv) = self.data.split_at(luma);
        let (u, v) = uv.split_at(luma / 4);
        (y, u, v)
    }

    /// The Y, U and V planes, mutable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = self.width * self.height;
        let (y, uv) = self.data.split_at_mut(luma);
        let (u, v) = uv.split_at_mut(luma / 4);
        (y, u, v)
    }

    /// A borrowed view for the encoder.
    pub fn view(&self) -> I420View<'_> {
        let (y, u, v) = self.planes();
        I420View {
            width: self.width,
            height: self.height,
            y,
            u,
            v,
            y_stride: self.width,
            uv_stride: self.width / 2,
        }
    }
}

/// Borrowed I420 planes with strides: what the encoder consumes.
#[derive(Debug, Clone, Copy)]
pub struct I420View<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Luma plane.
    pub y: &'a [u8],
    /// Cb plane.
    pub u: &'a [u8],
    /// Cr plane.
    pub v: &'a [u8],
    /// Bytes per luma row.
    pub y_stride: usize,
    /// Bytes per chroma row.
    pub uv_stride: usize,
}

/// Identifies one track of the stream the hub carries (video, audio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackId(pub u8);

impl TrackId {
    /// The camera's video track.
    pub const VIDEO: TrackId = TrackId(0);
    /// The microphone's audio track.
    pub const AUDIO: TrackId = TrackId(1);
}

/// What a track's packets contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264 Annex B access units; keyframes carry SPS and PPS in front of the IDR.
    H264,
    /// FWHT frames from the kernel's `vicodec`: the lab's stand-in for a
    /// hardware H.264 encoder. Never negotiated with viewers.
    Fwht,
    /// Opus packets, one 20 ms frame each, 48 kHz.
    Opus,
}

/// A track as described once to subscribers, instead of on every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    /// The id its packets carry.
    pub id: TrackId,
    /// The codec of its packets.
    pub codec: Codec,
    /// Whether subscribers must start (and resume after a gap) at a keyframe.
    pub keyframe_gated: bool,
}

impl TrackInfo {
    /// The camera's H.264 video track.
    pub const VIDEO_H264: TrackInfo = TrackInfo {
        id: TrackId::VIDEO,
        codec: Codec::H264,
        keyframe_gated: true,
    };
    /// The microphone's Opus track: every packet decodes on its own.
    pub const AUDIO_OPUS: TrackInfo = TrackInfo {
        id: TrackId::AUDIO,
        codec: Codec::Opus,
        keyframe_gated: false,
    };
}

/// One encoded unit of a track as fanned out by the hub. Cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The track it belongs to (its codec is in the hub's [`TrackInfo`]).
    pub track: TrackId,
    /// The encoded bytes (for H.264: one Annex B access unit).
    pub data: Bytes,
    /// Presentation time since the hub was created (monotonic across camera restarts).
    pub pts: Duration,
    /// True when a decoder can start here (for H.264: an IDR).
    pub keyframe: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_round_trip() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
        }
        assert_eq!(PixelFormat::from_fourcc(*b"RGB3"), None);
        assert_eq!(PixelFormat::Yuyv.to_string(), "YUYV");
    }

    #[test]
    fn i420_planes_have_the_right_sizes() {
        let img = I420Image::new(64, 32);
        let (y, u, v) = img.planes();
        assert_eq!((y.len(), u.len(), v.len()), (2048, 512, 512));
        assert_eq!(img.data.len(), I420Image::len_for(64, 32));
    }
}
