//! The camera's own H.264, passed through unchanged except that SPS/PPS are
//! kept in front of every IDR (cameras that send them once would otherwise
//! break late joiners). The camera sets the bitrate; keyframes are the
//! camera's to make.

use super::{EncodeError, EncodedAu, EncoderInput, EncoderKind, KeyframeBy, VideoEncoder};
use crate::media::frame::PixelFormat;
use crate::media::h264::{self, ParamSets};
use bytes::Bytes;
use std::time::Duration;

/// Passes H.264 access units from the source through to the hub.
#[derive(Debug, Default)]
pub struct Passthrough {
    params: ParamSets,
}

impl Passthrough {
    /// A passthrough that has seen no parameter sets yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl VideoEncoder for Passthrough {
    fn kind(&self) -> EncoderKind {
        EncoderKind::Passthrough
    }

    fn accepts(&self) -> &[PixelFormat] {
        &[PixelFormat::H264]
    }

    fn encode(
        &mut self,
        input: EncoderInput<'_>,
        _pts: Duration,
    ) -> Result<Option<EncodedAu>, EncodeError> {
        let frame = match input {
            EncoderInput::Frame(f) if f.format == PixelFormat::H264 => f,
            other => {
                return Err(EncodeError::Unsupported {
                    format: other.format(),
                    encoder: EncoderKind::Passthrough,
                });
            }
        };
        let data = match self.params.fix_access_unit(frame.data) {
            Some(fixed) => Bytes::from(fixed),
            None => Bytes::copy_from_slice(frame.data),
        };
        let keyframe = h264::is_keyframe(&data);
        Ok(Some(EncodedAu { data, keyframe }))
    }

    fn request_keyframe(&mut self) -> KeyframeBy {
        KeyframeBy::Source
    }

    fn set_bitrate(&mut self, _kbps: u32) -> Result<Option<u32>, EncodeError> {
        Ok(None)
    }

    fn bitrate_kbps(&self) -> Option<u32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::RawFrame;
    use std::time::Instant;

    fn h264(data: &[u8]) -> EncoderInput<'_> {
        EncoderInput::Frame(RawFrame {
            format: PixelFormat::H264,
            width: 64,
            height: 48,
            stride: 0,
            data,
            captured: Instant::now(),
            dmabuf: None,
        })
    }

    fn pass(p: &mut Passthrough, data: &[u8]) -> EncodedAu {
        p.encode(h264(data), Duration::ZERO)
            .ok()
            .flatten()
            .expect("an access unit out for each in")
    }

    #[test]
    fn passes_access_units_through_keeping_param_sets_before_idrs() {
        let mut p = Passthrough::new();
        let first = [
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 1,
        ];
        let au = pass(&mut p, &first);
        assert!(au.keyframe);
        assert_eq!(&au.data[..], &first[..], "unchanged when complete");
        let p_frame = [0, 0, 0, 1, 0x41, 2];
        let au = pass(&mut p, &p_frame);
        assert!(!au.keyframe);
        let bare_idr = [0, 0, 0, 1, 0x65, 3];
        let au = pass(&mut p, &bare_idr);
        assert_eq!(h264::nal_types(&au.data), [7, 8, 5]);
    }

    #[test]
    fn keyframes_come_from_the_source_and_there_is_no_bitrate() {
        let mut p = Passthrough::new();
        assert_eq!(p.request_keyframe(), KeyframeBy::Source);
        assert_eq!(p.set_bitrate(500).ok(), Some(None));
        assert_eq!(p.bitrate_kbps(), None);
        let raw = RawFrame {
            format: PixelFormat::Yuyv,
            width: 2,
            height: 2,
            stride: 4,
            data: &[0; 8],
            captured: Instant::now(),
            dmabuf: None,
        };
        assert!(matches!(
            p.encode(EncoderInput::Frame(raw), Duration::ZERO),
            Err(EncodeError::Unsupported { .. })
        ));
    }
}
