//! The few V4L2 calls the `v4l` crate does not make, through its own ioctl
//! entry point and the kernel-header bindings it generates (`v4l::v4l_sys`):
//! `VIDIOC_QUERYCAP` that never panics on a driver's strings, format
//! enumeration on the multiplanar queue, and mmap streaming on either queue
//! type: `v4l` 0.14 streams single-planar queues only (many SoC camera
//! drivers offer only the multiplanar API), and its stream panics when it is
//! dropped after any error but ENODEV (what an unplugged camera's driver
//! may answer to STREAMOFF), which would end the media thread. Every
//! `unsafe` block of the capture code is in this file.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::raw::c_void;
use std::sync::Arc;
use std::time::Duration;
use v4l::v4l_sys::{
    v4l2_buffer, v4l2_capability, v4l2_exportbuffer, v4l2_fmtdesc, v4l2_format, v4l2_plane,
    v4l2_requestbuffers, v4l2_streamparm,
};
use v4l::v4l2::{self, vidioc};

/// `V4L2_BUF_TYPE_VIDEO_CAPTURE`.
pub const BUF_CAPTURE: u32 = 1;
/// `V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE`.
pub const BUF_CAPTURE_MPLANE: u32 = 9;
const MEMORY_MMAP: u32 = 1;
const FIELD_ANY: u32 = 0;
const BUF_FLAG_ERROR: u32 = 0x40;

/// Device capability bits (`V4L2_CAP_*`) used to tell cameras from the rest.
pub mod cap {
    /// Single-planar video capture.
    pub const VIDEO_CAPTURE: u32 = 0x0000_0001;
    /// Single-planar video output.
    pub const VIDEO_OUTPUT: u32 = 0x0000_0002;
    /// Multiplanar video capture.
    pub const VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
    /// Multiplanar video output.
    pub const VIDEO_OUTPUT_MPLANE: u32 = 0x0000_2000;
    /// Multiplanar memory-to-memory (codec, scaler, ISP).
    pub const VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
    /// Memory-to-memory (codec, scaler, ISP).
    pub const VIDEO_M2M: u32 = 0x0000_8000;
    /// Metadata capture (UVC and ISP statistics nodes).
    pub const META_CAPTURE: u32 = 0x0080_0000;
    /// `device_caps` is valid.
    pub const DEVICE_CAPS: u32 = 0x8000_0000;
}

/// What `VIDIOC_QUERYCAP` says about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// Driver name.
    pub driver: String,
    /// Card name.
    pub card: String,
    /// Bus info.
    pub bus: String,
    /// The node's own capabilities (`device_caps`, or `capabilities` from
    /// drivers too old to fill it).
    pub device_caps: u32,
}

/// A fixed-size string field from the kernel: up to its first NUL (drivers
/// leave bytes after it, e.g. vicodec's bus info "platform:vicodec\00"),
/// invalid UTF-8 replaced, control characters dropped.
pub fn kernel_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

fn call<T>(fd: i32, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    // SAFETY: every request passed here is the one whose argument type is
    // `T` (checked by the kernel through the size encoded in `request`), and
    // `arg` is a valid, exclusive reference for the call's duration.
    unsafe { v4l2::ioctl(fd, request, arg as *mut T as *mut c_void) }
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the kernel's plain-data structs (integers,
    // arrays, unions of them and raw pointers), for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// `VIDIOC_QUERYCAP`.
pub fn querycap(fd: i32) -> io::Result<Caps> {
    let mut c: v4l2_capability = zeroed();
    call(fd, vidioc::VIDIOC_QUERYCAP, &mut c)?;
    let device_caps = if c.capabilities & cap::DEVICE_CAPS != 0 {
        c.device_caps
    } else {
        c.capabilities
    };
    Ok(Caps {
        driver: kernel_text(&c.driver),
        card: kernel_text(&c.card),
        bus: kernel_text(&c.bus_info),
        device_caps,
    })
}

/// `VIDIOC_ENUM_FMT` on queue `buf_type`: `(fourcc, description)` pairs.
pub fn enum_formats(fd: i32, buf_type: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for index in 0..256 {
        let mut d: v4l2_fmtdesc = zeroed();
        d.index = index;
        d.type_ = buf_type;
        if call(fd, vidioc::VIDIOC_ENUM_FMT, &mut d).is_err() {
            break;
        }
        out.push((d.pixelformat, kernel_text(&d.description)));
    }
    out
}

/// What the driver agreed to on the multiplanar queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MplaneFormat {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// FourCC.
    pub fourcc: u32,
    /// Bytes per line of plane 0.
    pub stride: u32,
    /// Memory planes (rtcam's formats need exactly one).
    pub planes: u8,
}

/// `VIDIOC_S_FMT` on the multiplanar capture queue.
pub fn set_format_mplane(
    fd: i32,
    width: u32,
    height: u32,
    fourcc: u32,
) -> io::Result<MplaneFormat> {
    let mut f: v4l2_format = zeroed();
    f.type_ = BUF_CAPTURE_MPLANE;
    // `pix_mp` is the union member for the multiplanar type set above.
    f.fmt.pix_mp.width = width;
    f.fmt.pix_mp.height = height;
    f.fmt.pix_mp.pixelformat = fourcc;
    f.fmt.pix_mp.field = FIELD_ANY;
    f.fmt.pix_mp.num_planes = 1;
    call(fd, vidioc::VIDIOC_S_FMT, &mut f)?;
    // SAFETY: as above; the kernel filled the same member.
    let p = unsafe { f.fmt.pix_mp };
    Ok(MplaneFormat {
        width: p.width,
        height: p.height,
        fourcc: p.pixelformat,
        stride: p.plane_fmt[0].bytesperline,
        planes: p.num_planes,
    })
}

/// `VIDIOC_S_PARM` with a frame interval of `1/fps` on queue `buf_type`;
/// the rate the driver chose, if it supports the call.
pub fn set_fps(fd: i32, buf_type: u32, fps: u32) -> Option<u32> {
    let mut p: v4l2_streamparm = zeroed();
    p.type_ = buf_type;
    // `capture` is the member for capture queue types.
    p.parm.capture.timeperframe.numerator = 1;
    p.parm.capture.timeperframe.denominator = fps.max(1);
    call(fd, vidioc::VIDIOC_S_PARM, &mut p).ok()?;
    // SAFETY: as above.
    let t = unsafe { p.parm.capture.timeperframe };
    (t.numerator > 0).then(|| (t.denominator + t.numerator / 2) / t.numerator)
}

struct Mapping {
    ptr: *mut c_void,
    len: usize,
}

/// mmap streaming on a capture queue (`buf_type`: [`BUF_CAPTURE`] or
/// [`BUF_CAPTURE_MPLANE`], whose format must have one memory plane).
/// Buffers are mapped once and queued back one call later; dropping it
/// stops the queue and unmaps, ignoring errors (the device may be gone).
pub struct MmapStream {
    handle: Arc<v4l::device::Handle>,
    buf_type: u32,
    maps: Vec<Mapping>,
    /// Each buffer exported as a DMA-BUF (empty when the driver cannot):
    /// closed before the buffers are freed.
    exports: Vec<OwnedFd>,
    dequeued: Option<u32>,
    timeout: Duration,
}

/// One filled buffer of an [`MmapStream`].
#[derive(Debug, Clone, Copy)]
pub struct Filled<'a> {
    /// The payload.
    pub data: &'a [u8],
    /// The buffer's index.
    pub index: u32,
    /// The payload's offset in the buffer.
    pub offset: u32,
    /// The whole buffer's length.
    pub length: u32,
    /// The buffer as a DMA-BUF, when the driver exported it.
    pub dmabuf: Option<BorrowedFd<'a>>,
}

// SAFETY: the mappings are owned by this value alone and only read through
// `&mut self`; the kernel writes them only while they are queued.
unsafe impl Send for MmapStream {}

impl MmapStream {
    fn buffer(&self, index: u32, planes: &mut [v4l2_plane; 1]) -> v4l2_buffer {
        let mut b: v4l2_buffer = zeroed();
        b.index = index;
        b.type_ = self.buf_type;
        b.memory = MEMORY_MMAP;
        if self.buf_type == BUF_CAPTURE_MPLANE {
            b.m.planes = planes.as_mut_ptr();
            b.length = 1;
        }
        b
    }

    /// Requests `count` buffers, maps and queues them, starts streaming.
    pub fn start(
        handle: Arc<v4l::device::Handle>,
        buf_type: u32,
        count: u32,
        timeout: Duration,
    ) -> io::Result<Self> {
        let fd = handle.fd();
        let mut req: v4l2_requestbuffers = zeroed();
        req.count = count;
        req.type_ = buf_type;
        req.memory = MEMORY_MMAP;
        call(fd, vidioc::VIDIOC_REQBUFS, &mut req)?;
        if req.count == 0 {
            return Err(io::Error::other("the driver granted no buffers"));
        }
        let mut s = MmapStream {
            handle,
            buf_type,
            maps: Vec::new(),
            exports: Vec::new(),
            dequeued: None,
            timeout,
        };
        for index in 0..req.count {
            let mut planes: [v4l2_plane; 1] = zeroed();
            let mut b = s.buffer(index, &mut planes);
            call(fd, vidioc::VIDIOC_QUERYBUF, &mut b)?;
            // SAFETY: `mem_offset` / `offset` are the members the kernel
            // fills for MMAP buffers of each queue type.
            let (len, offset) = unsafe {
                if buf_type == BUF_CAPTURE_MPLANE {
                    (planes[0].length as usize, planes[0].m.mem_offset)
                } else {
                    (b.length as usize, b.m.offset)
                }
            };
            // SAFETY: maps the driver's buffer as the V4L2 API documents it;
            // the result is checked and unmapped in Drop.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    // V4L2's offsets are cookies below 2^31: they fit a
                    // 32-bit off_t too.
                    offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            s.maps.push(Mapping { ptr, len });
            s.queue(index)?;
        }
        s.exports = s.export_all().unwrap_or_else(|e| {
            tracing::debug!(error = %e, "camera buffers cannot be exported as DMA-BUF");
            Vec::new()
        });
        let mut t = buf_type as i32;
        call(fd, vidioc::VIDIOC_STREAMON, &mut t)?;
        Ok(s)
    }

    /// `VIDIOC_EXPBUF` for every buffer (plane 0), read-only: what lets a
    /// hardware encoder read a frame where the camera wrote it.
    fn export_all(&self) -> io::Result<Vec<OwnedFd>> {
        (0..self.maps.len() as u32)
            .map(|index| {
                let mut e: v4l2_exportbuffer = zeroed();
                e.type_ = self.buf_type;
                e.index = index;
                e.plane = 0;
                e.flags = (libc::O_CLOEXEC | libc::O_RDONLY) as u32;
                call(self.handle.fd(), vidioc::VIDIOC_EXPBUF, &mut e)?;
                // SAFETY: on success the kernel returned a new descriptor
                // that nothing else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(e.fd) })
            })
            .collect()
    }

    fn queue(&mut self, index: u32) -> io::Result<()> {
        let mut planes: [v4l2_plane; 1] = zeroed();
        let mut b = self.buffer(index, &mut planes);
        call(self.handle.fd(), vidioc::VIDIOC_QBUF, &mut b)
    }

    /// The next filled buffer's payload (for multiplanar queues, plane 0
    /// from its data offset), valid until the next call. Buffers the driver
    /// marks as errored are queued back and skipped; none within the
    /// timeout is `TimedOut`.
    pub fn next_frame(&mut self) -> io::Result<Filled<'_>> {
        if let Some(i) = self.dequeued.take() {
            self.queue(i)?;
        }
        let ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        for _ in 0..8 {
            if self.handle.poll(libc::POLLIN, ms)? == 0 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame in time"));
            }
            let mut planes: [v4l2_plane; 1] = zeroed();
            let mut b = self.buffer(0, &mut planes);
            call(self.handle.fd(), vidioc::VIDIOC_DQBUF, &mut b)?;
            if b.flags & BUF_FLAG_ERROR != 0 {
                self.queue(b.index)?;
                continue;
            }
            let (used, start) = if self.buf_type == BUF_CAPTURE_MPLANE {
                (planes[0].bytesused as usize, planes[0].data_offset as usize)
            } else {
                (b.bytesused as usize, 0)
            };
            let map = self
                .maps
                .get(b.index as usize)
                .ok_or_else(|| io::Error::other("the driver returned an unknown buffer"))?;
            self.dequeued = Some(b.index);
            let used = used.min(map.len);
            let start = start.min(used);
            // SAFETY: the mapping is `map.len` bytes long and stays mapped
            // until Drop; the buffer stays dequeued (not written by the
            // driver) until the next call, which the borrow of `self` orders.
            let all = unsafe { std::slice::from_raw_parts(map.ptr as *const u8, map.len) };
            return Ok(Filled {
                data: &all[start..used],
                index: b.index,
                offset: start as u32,
                length: map.len as u32,
                dmabuf: self.exports.get(b.index as usize).map(AsFd::as_fd),
            });
        }
        Err(io::Error::other("the driver returned only errored buffers"))
    }
}

impl Drop for MmapStream {
    fn drop(&mut self) {
        let fd = self.handle.fd();
        let mut t = self.buf_type as i32;
        let _ = call(fd, vidioc::VIDIOC_STREAMOFF, &mut t);
        self.exports.clear();
        for m in self.maps.drain(..) {
            // SAFETY: each mapping came from mmap with this length.
            unsafe { libc::munmap(m.ptr, m.len) };
        }
        let mut req: v4l2_requestbuffers = zeroed();
        req.type_ = self.buf_type;
        req.memory = MEMORY_MMAP;
        let _ = call(fd, vidioc::VIDIOC_REQBUFS, &mut req);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_strings_end_at_the_first_nul() {
        assert_eq!(
            kernel_text(b"platform:vicodec\x000\0\0"),
            "platform:vicodec"
        );
        assert_eq!(kernel_text(b"usb-0000:00:14.0-1"), "usb-0000:00:14.0-1");
        assert_eq!(kernel_text(b"\xffcam\x07era\0"), "\u{fffd}camera");
        assert_eq!(kernel_text(b"\0garbage"), "");
    }
}
