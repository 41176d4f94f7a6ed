//! A camera with its own H.264 encoder, as a UVC camera with one is: the
//! test pattern encoded inside the "camera", which sends SPS and PPS only
//! with its first IDR (later IDRs come without them) and makes an IDR when
//! asked, counting the requests.

use rtcam::media::capture::test_pattern::TestPattern;
use rtcam::media::capture::{Source, SourceError, SourceFactory, SourceInfo};
use rtcam::media::convert::Converter;
use rtcam::media::encode::EncoderSettings;
use rtcam::media::encode::openh264::OpenH264Encoder;
use rtcam::media::frame::{PixelFormat, RawFrame};
use rtcam::media::h264;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Opens [`H264CameraSource`]s of one size and rate.
pub struct H264Camera {
    /// Picture width.
    pub width: usize,
    /// Picture height.
    pub height: usize,
    /// Frames per second.
    pub fps: u32,
    /// Keyframe requests the camera received.
    pub requests: Arc<AtomicU32>,
}

impl H264Camera {
    /// A camera of this size and rate that has received no keyframe request.
    pub fn new(width: usize, height: usize, fps: u32) -> Self {
        Self {
            width,
            height,
            fps,
            requests: Arc::new(AtomicU32::new(0)),
        }
    }
}

/// The open camera.
pub struct H264CameraSource {
    pattern: TestPattern,
    converter: Converter,
    encoder: OpenH264Encoder,
    au: Vec<u8>,
    sent_params: bool,
    requests: Arc<AtomicU32>,
    epoch: Instant,
}

impl SourceFactory for H264Camera {
    fn open(&self) -> Result<Box<dyn Source>, SourceError> {
        let encoder = OpenH264Encoder::new(&EncoderSettings {
            width: self.width as u32,
            height: self.height as u32,
            fps: self.fps,
            bitrate_kbps: 500,
            // The camera's own schedule: no periodic IDR in a test's span.
            keyframe_interval: Duration::from_secs(60),
            passthrough: false,
            threads: 1,
            pref: rtcam::config::EncoderPref::OpenH264,
            device: None,
            coded: rtcam::media::encode::CodedFormat::H264,
        })
        .map_err(|e| SourceError::Read(e.to_string()))?;
        Ok(Box::new(H264CameraSource {
            pattern: TestPattern::new(self.width, self.height, self.fps),
            converter: Converter::new(),
            encoder,
            au: Vec::new(),
            sent_params: false,
            requests: self.requests.clone(),
            epoch: Instant::now(),
        }))
    }
}

impl Source for H264CameraSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            format: PixelFormat::H264,
            ..self.pattern.info()
        }
    }

    fn next_frame(&mut self) -> Result<RawFrame<'_>, SourceError> {
        loop {
            let raw = self.pattern.next_frame()?;
            let (captured, width, height) = (raw.captured, raw.width, raw.height);
            let pic = self
                .converter
                .to_i420(&raw)
                .map_err(|e| SourceError::Read(e.to_string()))?;
            let Some(au) = self
                .encoder
                .encode_i420(&pic, captured.saturating_duration_since(self.epoch))
                .map_err(|e| SourceError::Read(e.to_string()))?
            else {
                continue;
            };
            // Strip the parameter sets from every IDR but the first.
            self.au.clear();
            for nal in h264::nal_units(&au.data) {
                let t = h264::nal_type(nal);
                if (t == h264::NAL_SPS || t == h264::NAL_PPS) && self.sent_params {
                    continue;
                }
                self.au.extend_from_slice(&[0, 0, 0, 1]);
                self.au.extend_from_slice(nal);
            }
            if au.keyframe {
                self.sent_params = true;
            }
            return Ok(RawFrame {
                format: PixelFormat::H264,
                width,
                height,
                stride: 0,
                data: &self.au,
                captured,
                dmabuf: None,
            });
        }
    }

    fn request_keyframe(&mut self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.encoder.request_keyframe();
    }
}
