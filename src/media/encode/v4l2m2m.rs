//! A V4L2 memory-to-memory stateful encoder (the Raspberry Pi 4's
//! bcm2835-codec; vicodec in the kernel lab), driven synchronously from the
//! media thread through `v4l2r`'s typed ioctls, multiplanar API only.
//!
//! Each picture goes in on the OUTPUT queue and its bitstream comes back on
//! the CAPTURE queue before `encode` returns, so a camera buffer handed over
//! by DMA-BUF is never re-queued to the camera while the encoder reads it.
//! The OUTPUT queue is set up at the first picture: by DMA-BUF import of the
//! camera's buffer when the camera exported it and both agree on its layout
//! (no CPU copy), else MMAP with one copy per picture; the log says which
//! and why. Stopping drains the encoder (`V4L2_ENC_CMD_STOP`).

use super::m2m_params::{self, CodedFormat, OpenParams, cid};
use super::{EncodeError, EncodedAu, EncoderInput, EncoderKind, KeyframeBy, VideoEncoder};
use crate::media::frame::{PixelFormat, RawFrame};
use crate::media::h264;
use bytes::Bytes;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use v4l2r::ioctl::{self, BufferFlags, PlaneMapping, QBufPlane, QBuffer, V4l2Buffer};
use v4l2r::memory::{DmaBufHandle, MemoryType, MmapHandle};
use v4l2r::{Format, PlaneLayout, QueueType};

const CAPTURE: QueueType = QueueType::VideoCaptureMplane;
const OUTPUT: QueueType = QueueType::VideoOutputMplane;
/// Bitstream buffers: one being filled, others waiting to be read.
const CAPTURE_BUFFERS: u32 = 4;
/// Import slots: one per camera buffer index (cameras use 4).
const DMABUF_SLOTS: u32 = 8;
const MMAP_OUTPUT_BUFFERS: u32 = 2;
/// How long a picture may take to come back before the encoder counts as hung.
const PICTURE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long stopping waits for the drained encoder's last buffer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How pictures reach the encoder's OUTPUT queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPath {
    /// The camera's buffer imported by DMA-BUF: no CPU copy.
    DmaBuf,
    /// Copied into the encoder's own (MMAP) buffer: one CPU copy.
    Mmap,
}

enum OutputQueue {
    DmaBuf,
    Mmap(Vec<PlaneMapping>),
}

/// Where the encoder wants a picture's planes in its OUTPUT buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Raw format.
    pub format: PixelFormat,
    /// Picture width.
    pub width: usize,
    /// Picture height.
    pub height: usize,
    /// Bytes per luma (or packed) row.
    pub bytesperline: usize,
    /// Rows allocated per luma plane (the height, or more when the
    /// driver aligns it: chroma then starts further down).
    pub rows: usize,
    /// Buffer size the driver asks for.
    pub sizeimage: usize,
}

impl Layout {
    /// The layout of an OUTPUT format as the driver answered it.
    pub fn new(
        format: PixelFormat,
        width: usize,
        height: usize,
        bytesperline: usize,
        sizeimage: usize,
    ) -> Self {
        let rows = match format {
            PixelFormat::I420 | PixelFormat::Nv12 if bytesperline > 0 => {
                (sizeimage * 2 / 3 / bytesperline).max(height)
            }
            _ => height,
        };
        Self {
            format,
            width,
            height,
            bytesperline,
            rows,
            sizeimage,
        }
    }

    /// Whether a camera frame already lies in memory exactly as the encoder
    /// wants it (same stride, chroma where expected): then it can be
    /// imported as it is.
    pub fn matches(&self, frame: &RawFrame<'_>) -> bool {
        frame.format == self.format
            && frame.width == self.width
            && frame.height == self.height
            && frame.stride == self.bytesperline
            && self.rows == self.height
            && frame.data.len() >= self.payload()
    }

    /// Bytes of picture data in a buffer of this layout.
    pub fn payload(&self) -> usize {
        match self.format {
            PixelFormat::I420 | PixelFormat::Nv12 => self.bytesperline * self.rows * 3 / 2,
            _ => self.bytesperline * self.height,
        }
        .min(self.sizeimage.max(1))
    }

    /// Copies a picture into `dst` in this layout; `None` when the source
    /// is too short for its size.
    pub fn copy_into(&self, input: &EncoderInput<'_>, dst: &mut [u8]) -> Option<()> {
        let (w, h, bpl) = (self.width, self.height, self.bytesperline);
        let luma = bpl * self.rows;
        let rows = |dst: &mut [u8], src: &[u8], src_stride: usize, dst_stride, len, n| {
            for r in 0..n {
                let s = src.get(r * src_stride..r * src_stride + len)?;
                dst.get_mut(r * dst_stride..r * dst_stride + len)?
                    .copy_from_slice(s);
            }
            Some(())
        };
        match (input, self.format) {
            (EncoderInput::I420(v), PixelFormat::I420) => {
                let (cw, ch) = (w / 2, h / 2);
                rows(dst, v.y, v.y_stride, bpl, w, h)?;
                let u_at = luma;
                let v_at = luma + (bpl / 2) * (self.rows / 2);
                rows(dst.get_mut(u_at..)?, v.u, v.uv_stride, bpl / 2, cw, ch)?;
                rows(dst.get_mut(v_at..)?, v.v, v.uv_stride, bpl / 2, cw, ch)
            }
            (EncoderInput::Frame(f), PixelFormat::I420) if f.format == PixelFormat::I420 => {
                let s = f.stride.max(w);
                let (sl, cs) = (s * h, s / 2);
                let (y, rest) = f.data.split_at_checked(sl)?;
                let (u, v) = rest.split_at_checked(cs * (h / 2))?;
                rows(dst, y, s, bpl, w, h)?;
                rows(dst.get_mut(luma..)?, u, cs, bpl / 2, w / 2, h / 2)?;
                let v_at = luma + (bpl / 2) * (self.rows / 2);
                rows(dst.get_mut(v_at..)?, v, cs, bpl / 2, w / 2, h / 2)
            }
            (EncoderInput::Frame(f), PixelFormat::Nv12) if f.format == PixelFormat::Nv12 => {
                let s = f.stride.max(w);
                let (y, uv) = f.data.split_at_checked(s * h)?;
                rows(dst, y, s, bpl, w, h)?;
                rows(dst.get_mut(luma..)?, uv, s, bpl, w, h / 2)
            }
            (EncoderInput::Frame(f), PixelFormat::Yuyv) if f.format == PixelFormat::Yuyv => {
                rows(dst, f.data, f.stride.max(w * 2), bpl, w * 2, h)
            }
            _ => None,
        }
    }
}

/// The hardware encoder.
pub struct V4l2M2mEncoder {
    /// Declared first: its mappings are released before the device closes.
    capture: Vec<PlaneMapping>,
    output: Option<OutputQueue>,
    file: File,
    path: PathBuf,
    params: OpenParams,
    layout: Layout,
    accepts: [PixelFormat; 1],
    bitrate_kbps: Option<u32>,
    can_force_key: bool,
    force_key: bool,
    copies: u64,
    /// Parameter sets that came in a buffer of their own, for the next picture.
    pending: Vec<u8>,
    ready: VecDeque<EncodedAu>,
    /// Pictures queued whose bitstream has not come out yet.
    in_flight: u32,
    /// It holds pictures back (returns a picture before its bitstream):
    /// stop waiting for the bitstream of the picture just queued.
    pipelined: bool,
    next_mmap: u32,
    input_path: Option<InputPath>,
    /// SPS/PPS to put back in front of IDRs that come without them.
    param_sets: h264::ParamSets,
}

fn errno_text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl V4l2M2mEncoder {
    /// Opens `path` to encode pictures in `input` format as `params` says.
    pub fn open(path: &Path, params: OpenParams, input: PixelFormat) -> Result<Self, EncodeError> {
        let init =
            |what: &str, e: String| EncodeError::Init(format!("{}: {what}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| init("cannot open", e.to_string()))?;
        let caps: v4l2r::ioctl::Capability =
            ioctl::querycap(&file).map_err(|e| init("VIDIOC_QUERYCAP", errno_text(e)))?;
        if !caps
            .device_caps()
            .contains(ioctl::Capabilities::VIDEO_M2M_MPLANE)
        {
            return Err(init(
                "not a multiplanar memory-to-memory device",
                format!("capabilities {:?}", caps.device_caps()),
            ));
        }
        let (w, h) = (params.width, params.height);
        // The stateful encoder interface: coded format on CAPTURE first.
        let coded: Format = ioctl::s_fmt(
            &mut file,
            (
                CAPTURE,
                &Format {
                    width: w,
                    height: h,
                    pixelformat: v4l2r::PixelFormat::from(&params.coded.fourcc()),
                    plane_fmt: vec![PlaneLayout {
                        sizeimage: (w * h * 3 / 2).max(1 << 20),
                        bytesperline: 0,
                    }],
                },
            ),
        )
        .map_err(|e| init("VIDIOC_S_FMT on the capture queue", errno_text(e)))?;
        if <[u8; 4]>::from(coded.pixelformat) != params.coded.fourcc() {
            return Err(init(
                "coded format",
                format!(
                    "asked for {}, the driver chose {}",
                    params.coded, coded.pixelformat
                ),
            ));
        }
        let raw: Format = ioctl::s_fmt(
            &mut file,
            (
                OUTPUT,
                &Format {
                    width: w,
                    height: h,
                    pixelformat: v4l2r::PixelFormat::from(&input.fourcc()),
                    plane_fmt: vec![PlaneLayout {
                        sizeimage: 0,
                        bytesperline: 0,
                    }],
                },
            ),
        )
        .map_err(|e| init("VIDIOC_S_FMT on the output queue", errno_text(e)))?;
        if <[u8; 4]>::from(raw.pixelformat) != input.fourcc() || raw.plane_fmt.len() != 1 {
            return Err(EncodeError::Unsupported {
                format: input,
                encoder: EncoderKind::V4l2M2m,
            });
        }
        if (raw.width, raw.height) != (w, h) {
            return Err(init(
                "picture size",
                format!(
                    "asked for {w}x{h}, the driver chose {}x{}",
                    raw.width, raw.height
                ),
            ));
        }
        let layout = Layout::new(
            input,
            w as usize,
            h as usize,
            raw.plane_fmt[0].bytesperline as usize,
            raw.plane_fmt[0].sizeimage as usize,
        );
        set_rate(&file, params.fps);

        let mut applied = Vec::new();
        let mut missing = Vec::new();
        for c in m2m_params::open_controls(&params) {
            match ioctl::s_ctrl(&file, c.id, c.value) {
                Ok(_) => applied.push(format!("{}={}", c.name, c.value)),
                Err(_) => missing.push(c.name),
            }
        }
        let can_force_key = has_control(&file, cid::FORCE_KEY_FRAME);
        let bitrate_kbps = ioctl::g_ctrl(&file, cid::BITRATE)
            .ok()
            .map(|bps| (bps.max(0) as u32) / 1000);
        let level = (params.coded == CodedFormat::H264)
            .then(|| m2m_params::h264_level(w, h, params.fps, params.bitrate_kbps).name);
        tracing::info!(
            device = %path.display(), card = %caps.card, driver = %caps.driver,
            coded = %params.coded, input = %input, width = w, height = h, fps = params.fps,
            level, applied = %applied.join(" "),
            not_offered = %missing.join(" "), force_key_frame = can_force_key,
            "hardware encoder open"
        );

        let mut enc = Self {
            capture: Vec::new(),
            output: None,
            file,
            path: path.to_path_buf(),
            params,
            layout,
            accepts: [input],
            bitrate_kbps,
            can_force_key,
            force_key: false,
            copies: 0,
            pending: Vec::new(),
            ready: VecDeque::new(),
            in_flight: 0,
            pipelined: false,
            next_mmap: 0,
            input_path: None,
            param_sets: h264::ParamSets::default(),
        };
        enc.capture = enc
            .map_buffers(CAPTURE, CAPTURE_BUFFERS)
            .map_err(|e| init("capture buffers", e))?;
        for i in 0..enc.capture.len() {
            enc.queue_capture(i as u32)
                .map_err(|e| init("VIDIOC_QBUF on the capture queue", e))?;
        }
        ioctl::streamon(&enc.file, CAPTURE)
            .map_err(|e| init("VIDIOC_STREAMON on the capture queue", errno_text(e)))?;
        Ok(enc)
    }

    /// How pictures reach it (known after the first picture).
    pub fn input_path(&self) -> Option<InputPath> {
        self.input_path
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> EncodeError {
        EncodeError::Encode(format!("{}: {what}: {e}", self.path.display()))
    }

    /// REQBUFS with MMAP memory on `queue`, then maps every buffer.
    fn map_buffers(&self, queue: QueueType, count: u32) -> Result<Vec<PlaneMapping>, String> {
        let got: usize =
            ioctl::reqbufs(&self.file, queue, MemoryType::Mmap, count).map_err(errno_text)?;
        (0..got)
            .map(|i| {
                let q: ioctl::QueryBuffer =
                    ioctl::querybuf(&self.file, queue, i).map_err(errno_text)?;
                let plane = q.planes.first().ok_or("a buffer without planes")?;
                ioctl::mmap(&self.file, plane.mem_offset, plane.length).map_err(errno_text)
            })
            .collect()
    }

    fn queue_capture(&self, index: u32) -> Result<(), String> {
        let mut b = QBuffer::<MmapHandle>::new(CAPTURE, index);
        b.planes.push(QBufPlane::new(0));
        ioctl::qbuf::<_, V4l2Buffer>(&self.file, b)
            .map(drop)
            .map_err(errno_text)
    }

    /// Sets up the OUTPUT queue for the first picture: DMA-BUF import when
    /// the camera exported its buffer and its layout is the encoder's.
    fn start_output(&mut self, input: &EncoderInput<'_>) -> Result<(), EncodeError> {
        let why_not = match input {
            EncoderInput::I420(_) => Some("the picture is converted on the CPU first".to_string()),
            EncoderInput::Frame(f) if f.dmabuf.is_none() => {
                Some("the camera's driver does not export its buffers (VIDIOC_EXPBUF)".into())
            }
            EncoderInput::Frame(f) if !self.layout.matches(f) => Some(format!(
                "the camera's layout (stride {}) is not the encoder's (bytes per line {}, {} rows)",
                f.stride, self.layout.bytesperline, self.layout.rows
            )),
            EncoderInput::Frame(_) => {
                match ioctl::reqbufs::<ioctl::RequestBuffers>(
                    &self.file,
                    OUTPUT,
                    MemoryType::DmaBuf,
                    DMABUF_SLOTS,
                ) {
                    Ok(r)
                        if r.capabilities
                            .contains(ioctl::BufferCapabilities::SUPPORTS_DMABUF) =>
                    {
                        None
                    }
                    Ok(_) => Some("the encoder cannot import DMA-BUF".into()),
                    Err(e) => Some(format!("the encoder refused DMA-BUF buffers: {e}")),
                }
            }
        };
        let path = match why_not {
            None => {
                self.output = Some(OutputQueue::DmaBuf);
                InputPath::DmaBuf
            }
            Some(why) => {
                let maps = self
                    .map_buffers(OUTPUT, MMAP_OUTPUT_BUFFERS)
                    .map_err(|e| self.err("output buffers", e))?;
                tracing::info!(device = %self.path.display(), reason = %why, "encoder input: MMAP, one CPU copy per picture");
                self.output = Some(OutputQueue::Mmap(maps));
                InputPath::Mmap
            }
        };
        if path == InputPath::DmaBuf {
            tracing::info!(device = %self.path.display(), "encoder input: the camera's buffers by DMA-BUF, no CPU copy");
        }
        self.input_path = Some(path);
        ioctl::streamon(&self.file, OUTPUT)
            .map_err(|e| self.err("VIDIOC_STREAMON on the output queue", e))
    }

    /// Queues one picture on the OUTPUT queue.
    fn queue_picture(
        &mut self,
        input: &EncoderInput<'_>,
        pts: Duration,
    ) -> Result<(), EncodeError> {
        let ts = (
            pts.as_secs() as libc::time_t,
            pts.subsec_micros() as libc::suseconds_t,
        );
        match self.output.as_mut() {
            Some(OutputQueue::DmaBuf) => {
                let EncoderInput::Frame(f) = input else {
                    return Err(self.err("DMA-BUF input", "a converted picture has no DMA-BUF"));
                };
                let Some(d) = f.dmabuf else {
                    return Err(self.err("DMA-BUF input", "this frame was not exported"));
                };
                let mut b = QBuffer::<DmaBufHandle<File>>::new(OUTPUT, d.index % DMABUF_SLOTS)
                    .set_timestamp(ts.0, ts.1);
                let mut plane = QBufPlane::new(d.offset as usize + self.layout.payload());
                plane.0.m.fd = d.fd.as_raw_fd();
                plane.0.length = d.length;
                plane.0.data_offset = d.offset;
                b.planes.push(plane);
                ioctl::qbuf::<_, V4l2Buffer>(&self.file, b)
                    .map_err(|e| self.err("VIDIOC_QBUF (DMA-BUF) on the output queue", e))?;
            }
            Some(OutputQueue::Mmap(maps)) => {
                let index = self.next_mmap % maps.len() as u32;
                self.next_mmap = self.next_mmap.wrapping_add(1);
                let map = &mut maps[index as usize];
                if self.layout.copy_into(input, map.as_mut()).is_none() {
                    return Err(EncodeError::Encode(format!(
                        "{}: a {} picture does not fit the encoder's {}x{} buffer",
                        self.path.display(),
                        input.format(),
                        self.layout.width,
                        self.layout.height
                    )));
                }
                self.copies += 1;
                let mut b = QBuffer::<MmapHandle>::new(OUTPUT, index).set_timestamp(ts.0, ts.1);
                b.planes.push(QBufPlane::new(self.layout.payload()));
                ioctl::qbuf::<_, V4l2Buffer>(&self.file, b)
                    .map_err(|e| self.err("VIDIOC_QBUF on the output queue", e))?;
            }
            None => return Err(self.err("output queue", "not set up")),
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for `events` on the device, up to `timeout`.
    fn poll(&self, events: libc::c_short, timeout: Duration) -> Result<libc::c_short, EncodeError> {
        let mut p = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        // SAFETY: one valid pollfd for the call's duration.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(self.err("poll", e));
        }
        Ok(p.revents)
    }

    /// Takes a finished picture back from the OUTPUT queue, if one is.
    fn reclaim_picture(&self) -> Result<bool, EncodeError> {
        match ioctl::dqbuf::<V4l2Buffer>(&self.file, OUTPUT) {
            Ok(_) => Ok(true),
            Err(ioctl::DqBufError::IoctlError(ioctl::DqBufIoctlError::NotReady)) => Ok(false),
            Err(e) => Err(self.err("VIDIOC_DQBUF on the output queue", e)),
        }
    }

    /// Reads every finished bitstream buffer into `ready`.
    fn collect_bitstream(&mut self) -> Result<(), EncodeError> {
        loop {
            let b = match ioctl::dqbuf::<V4l2Buffer>(&self.file, CAPTURE) {
                Ok(b) => b,
                Err(ioctl::DqBufError::IoctlError(ioctl::DqBufIoctlError::NotReady)) => {
                    return Ok(());
                }
                Err(e) => return Err(self.err("VIDIOC_DQBUF on the capture queue", e)),
            };
            let index = b.index();
            let flags = b.flags();
            let plane = b.get_first_plane();
            let (used, start) = (
                *plane.bytesused as usize,
                plane.data_offset.copied().unwrap_or(0) as usize,
            );
            let chunk = self
                .capture
                .get(index as usize)
                .and_then(|m| m.as_ref().get(start.min(used)..used))
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            if flags.contains(BufferFlags::LAST) {
                return Ok(());
            }
            self.queue_capture(index)
                .map_err(|e| self.err("VIDIOC_QBUF on the capture queue", e))?;
            tracing::trace!(index, ?flags, bytes = chunk.len(), "bitstream buffer");
            if flags.contains(BufferFlags::ERROR) || chunk.is_empty() {
                tracing::debug!(device = %self.path.display(), "encoder returned an empty or errored bitstream buffer");
                continue;
            }
            self.take_chunk(chunk, flags.contains(BufferFlags::KEYFRAME));
        }
    }

    fn take_chunk(&mut self, chunk: Vec<u8>, flagged_key: bool) {
        if self.params.coded == CodedFormat::H264 {
            let types = h264::nal_types(&chunk);
            if !types.iter().any(|t| (1..=5).contains(t)) {
                // SPS/PPS alone: they belong to the next picture.
                self.pending.extend_from_slice(&chunk);
                return;
            }
            let mut au = std::mem::take(&mut self.pending);
            au.extend_from_slice(&chunk);
            let au = self.param_sets.fix_access_unit(&au).unwrap_or(au);
            let keyframe = h264::is_keyframe(&au);
            self.push(au, keyframe);
        } else {
            let keyframe = flagged_key || fwht_is_intra(&chunk);
            self.push(chunk, keyframe);
        }
    }

    fn push(&mut self, data: Vec<u8>, keyframe: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.ready.push_back(EncodedAu {
            data: Bytes::from(data),
            keyframe,
        });
    }

    /// Lets the picture just queued go through: waits until it is back
    /// (the camera may reuse its buffer then) and, unless the encoder holds
    /// pictures back, until its bitstream is out.
    fn wait_picture(&mut self) -> Result<(), EncodeError> {
        let start = Instant::now();
        let mut returned_at: Option<Instant> = None;
        // A bitstream later than this after its picture came back means the
        // encoder pipelines: then it is collected on later calls.
        let grace = Duration::from_millis(3000 / u64::from(self.params.fps.max(1)))
            .max(Duration::from_millis(100));
        let before = self.ready.len();
        loop {
            if returned_at.is_none() && self.reclaim_picture()? {
                returned_at = Some(Instant::now());
            }
            self.collect_bitstream()?;
            let have_output = self.ready.len() > before;
            match returned_at {
                Some(_) if have_output || self.pipelined => return Ok(()),
                Some(t) if t.elapsed() >= grace => {
                    tracing::info!(device = %self.path.display(), "the encoder holds pictures back; its bitstream is collected one picture later");
                    self.pipelined = true;
                    return Ok(());
                }
                None if start.elapsed() >= PICTURE_TIMEOUT => {
                    return Err(self.err(
                        "encoding",
                        format!(
                            "the picture did not come back within {} s",
                            PICTURE_TIMEOUT.as_secs()
                        ),
                    ));
                }
                _ => {}
            }
            let left = PICTURE_TIMEOUT.saturating_sub(start.elapsed());
            let revents = self.poll(libc::POLLIN | libc::POLLOUT, left.min(grace))?;
            if revents & (libc::POLLERR | libc::POLLNVAL) != 0
                && revents & (libc::POLLIN | libc::POLLOUT) == 0
            {
                return Err(self.err(
                    "poll",
                    format!("the device reports an error (revents {revents:#x})"),
                ));
            }
        }
    }

    /// `V4L2_ENC_CMD_STOP`, then reads buffers until the last one (bounded).
    fn drain(&mut self) {
        if self.output.is_none() {
            return;
        }
        if ioctl::encoder_cmd::<_, ()>(&self.file, &ioctl::EncoderCommand::Stop(false)).is_err() {
            return;
        }
        let end = Instant::now() + DRAIN_TIMEOUT;
        while Instant::now() < end {
            let _ = self.reclaim_picture();
            match ioctl::dqbuf::<V4l2Buffer>(&self.file, CAPTURE) {
                Ok(b) if b.flags().contains(BufferFlags::LAST) => return,
                Ok(b) => {
                    let _ = self.queue_capture(b.index());
                }
                Err(ioctl::DqBufError::IoctlError(ioctl::DqBufIoctlError::Eos)) => return,
                Err(ioctl::DqBufError::IoctlError(ioctl::DqBufIoctlError::NotReady)) => {
                    if self.poll(libc::POLLIN, end - Instant::now()).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        tracing::debug!(device = %self.path.display(), "encoder did not finish draining in time");
    }
}

/// `FWHT_FL_I_FRAME` in an FWHT frame header (`fwht_cframe_hdr`: big-endian
/// words, flags the sixth): vicodec marks intra frames there, not in the
/// buffer flags.
fn fwht_is_intra(frame: &[u8]) -> bool {
    const I_FRAME: u32 = 1 << 10;
    frame
        .get(20..24)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .is_some_and(|b| u32::from_be_bytes(b) & I_FRAME != 0)
}

/// The frame rate the encoder's rate control assumes (`VIDIOC_S_PARM` on
/// the OUTPUT queue); drivers without it keep their own.
fn set_rate(file: &File, fps: u32) {
    let mut parm = v4l2r::bindings::v4l2_streamparm {
        type_: OUTPUT as u32,
        ..Default::default()
    };
    // The union's `output` member: the one OUTPUT queues use.
    parm.parm.output.timeperframe.numerator = 1;
    parm.parm.output.timeperframe.denominator = fps.max(1);
    if let Err(e) = ioctl::s_parm::<_, v4l2r::bindings::v4l2_streamparm>(file, parm) {
        tracing::debug!(error = %e, "encoder takes no frame rate");
    }
}

fn has_control(file: &File, id: u32) -> bool {
    ioctl::queryctrl::<v4l2r::bindings::v4l2_queryctrl>(
        file,
        ioctl::CtrlId::new(id).unwrap_or(ioctl::CtrlId::new(1).expect("1 is a valid id")),
        ioctl::QueryCtrlFlags::empty(),
    )
    .is_ok_and(|q| q.flags & v4l2r::bindings::V4L2_CTRL_FLAG_DISABLED == 0)
}

impl VideoEncoder for V4l2M2mEncoder {
    fn kind(&self) -> EncoderKind {
        EncoderKind::V4l2M2m
    }

    fn accepts(&self) -> &[PixelFormat] {
        &self.accepts
    }

    fn encode(
        &mut self,
        input: EncoderInput<'_>,
        pts: Duration,
    ) -> Result<Option<EncodedAu>, EncodeError> {
        if self.output.is_none() {
            self.start_output(&input)?;
        }
        if self.force_key {
            self.force_key = false;
            if let Err(e) = ioctl::s_ctrl(&self.file, cid::FORCE_KEY_FRAME, 1) {
                tracing::debug!(error = %e, "encoder refused FORCE_KEY_FRAME");
            }
        }
        self.queue_picture(&input, pts)?;
        self.wait_picture()?;
        Ok(self.ready.pop_front())
    }

    fn request_keyframe(&mut self) -> KeyframeBy {
        if self.can_force_key {
            self.force_key = true;
        } else {
            tracing::debug!(device = %self.path.display(), "encoder has no FORCE_KEY_FRAME: the next periodic keyframe answers");
        }
        KeyframeBy::Encoder
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<Option<u32>, EncodeError> {
        if self.bitrate_kbps.is_none() {
            return Ok(None);
        }
        let bps = i32::try_from(u64::from(kbps) * 1000).unwrap_or(i32::MAX);
        ioctl::s_ctrl(&self.file, cid::BITRATE, bps).map_err(|e| EncodeError::Bitrate {
            kbps,
            reason: e.to_string(),
        })?;
        let applied = ioctl::g_ctrl(&self.file, cid::BITRATE)
            .map(|b| (b.max(0) as u32) / 1000)
            .unwrap_or(kbps);
        self.bitrate_kbps = Some(applied);
        Ok(Some(applied))
    }

    fn bitrate_kbps(&self) -> Option<u32> {
        self.bitrate_kbps
    }

    fn input_copies(&self) -> u64 {
        self.copies
    }
}

impl Drop for V4l2M2mEncoder {
    fn drop(&mut self) {
        self.drain();
        let _ = ioctl::streamoff(&self.file, OUTPUT);
        let _ = ioctl::streamoff(&self.file, CAPTURE);
        let output_memory = match self.output.take() {
            Some(OutputQueue::DmaBuf) => Some(MemoryType::DmaBuf),
            Some(OutputQueue::Mmap(_)) => Some(MemoryType::Mmap),
            None => None,
        };
        self.capture.clear();
        if let Some(m) = output_memory {
            let _ = ioctl::reqbufs::<()>(&self.file, OUTPUT, m, 0);
        }
        let _ = ioctl::reqbufs::<()>(&self.file, CAPTURE, MemoryType::Mmap, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::I420View;
    use std::time::Instant;

    #[test]
    fn control_ids_are_the_kernel_headers() {
        use v4l2r::bindings as b;
        assert_eq!(cid::GOP_SIZE, b::V4L2_CID_MPEG_VIDEO_GOP_SIZE);
        assert_eq!(cid::BITRATE_MODE, b::V4L2_CID_MPEG_VIDEO_BITRATE_MODE);
        assert_eq!(cid::BITRATE, b::V4L2_CID_MPEG_VIDEO_BITRATE);
        assert_eq!(
            cid::REPEAT_SEQ_HEADER,
            b::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER
        );
        assert_eq!(cid::FORCE_KEY_FRAME, b::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME);
        assert_eq!(cid::H264_MIN_QP, b::V4L2_CID_MPEG_VIDEO_H264_MIN_QP);
        assert_eq!(cid::H264_MAX_QP, b::V4L2_CID_MPEG_VIDEO_H264_MAX_QP);
        assert_eq!(cid::H264_I_PERIOD, b::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD);
        assert_eq!(cid::H264_LEVEL, b::V4L2_CID_MPEG_VIDEO_H264_LEVEL);
        assert_eq!(cid::H264_PROFILE, b::V4L2_CID_MPEG_VIDEO_H264_PROFILE);
        assert_eq!(
            m2m_params::PROFILE_CONSTRAINED_BASELINE as u32,
            b::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE
        );
        assert_eq!(
            m2m_params::BITRATE_MODE_CBR as u32,
            b::v4l2_mpeg_video_bitrate_mode_V4L2_MPEG_VIDEO_BITRATE_MODE_CBR
        );
        assert_eq!(
            m2m_params::h264_level(1920, 1080, 30, 8000).menu as u32,
            b::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_0
        );
    }

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

    #[test]
    fn a_frame_is_imported_only_when_it_lies_as_the_encoder_wants() {
        let tight = Layout::new(PixelFormat::Yuyv, 64, 48, 128, 128 * 48);
        let data = vec![0u8; 128 * 48];
        assert!(tight.matches(&frame(PixelFormat::Yuyv, 64, 48, 128, &data)));
        assert!(
            !tight.matches(&frame(PixelFormat::Yuyv, 64, 48, 160, &data)),
            "stride"
        );
        assert!(
            !tight.matches(&frame(PixelFormat::Nv12, 64, 48, 128, &data)),
            "format"
        );
        assert!(
            !tight.matches(&frame(PixelFormat::Yuyv, 64, 48, 128, &data[..100])),
            "short"
        );
        // bcm2835-codec aligns the luma height of planar formats to 16 rows.
        let aligned = Layout::new(PixelFormat::I420, 64, 40, 64, 64 * 48 * 3 / 2);
        assert_eq!(aligned.rows, 48);
        let i420 = vec![0u8; 64 * 40 * 3 / 2];
        assert!(!aligned.matches(&frame(PixelFormat::I420, 64, 40, 64, &i420)));
    }

    #[test]
    fn copies_put_each_plane_where_the_encoder_wants_it() {
        // 4x2 I420 into a layout with 8 bytes per line and 4 allocated rows.
        let l = Layout::new(PixelFormat::I420, 4, 2, 8, 8 * 4 * 3 / 2);
        assert_eq!(l.rows, 4);
        let (y, u, v) = ([1u8, 2, 3, 4, 5, 6, 7, 8], [9u8, 10], [11u8, 12]);
        let view = I420View {
            width: 4,
            height: 2,
            y: &y,
            u: &u,
            v: &v,
            y_stride: 4,
            uv_stride: 2,
        };
        let mut dst = vec![0u8; l.sizeimage];
        l.copy_into(&EncoderInput::I420(view), &mut dst)
            .expect("fits");
        assert_eq!(&dst[0..4], &[1, 2, 3, 4]);
        assert_eq!(&dst[8..12], &[5, 6, 7, 8]);
        assert_eq!(&dst[32..34], &[9, 10], "U after 4 rows of 8");
        assert_eq!(
            &dst[32 + 8..32 + 10],
            &[11, 12],
            "V after 2 chroma rows of 4"
        );

        let yuyv = [7u8; 16];
        let l = Layout::new(PixelFormat::Yuyv, 4, 2, 12, 24);
        let mut dst = vec![0u8; 24];
        l.copy_into(
            &EncoderInput::Frame(frame(PixelFormat::Yuyv, 4, 2, 8, &yuyv)),
            &mut dst,
        )
        .expect("fits");
        assert_eq!(&dst[..12], &[7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0, 0]);
        assert!(
            l.copy_into(
                &EncoderInput::Frame(frame(PixelFormat::Yuyv, 4, 2, 8, &yuyv[..10])),
                &mut dst
            )
            .is_none(),
            "a short frame is refused, not read past"
        );
    }
}
