//! The test pattern's machine-readable block code: a frame's sequence number
//! and capture time drawn as large black/white luma blocks in the top-left
//! corner, so a receiver can measure end-to-end latency from decoded pixels.
//!
//! Layout (documented for third parties in `docs/blockcode.md`):
//! a grid of [`COLS`] × [`ROWS`] square blocks of [`block_size`] pixels with its
//! origin at pixel (0, 0). Row 0 is a sync row alternating white, black, …
//! starting with white. Rows 1–8 carry 96 bits, most significant first,
//! row-major, white = 1: `seq` (u32 BE), `ts_ms` (48-bit BE, ms since the UNIX
//! epoch), CRC-16/CCITT-FALSE of those 10 bytes. Pure: no I/O.

use crc::{CRC_16_IBM_3740, Crc};

/// Blocks per row.
pub const COLS: usize = 12;
/// Block rows: one sync row plus eight data rows.
pub const ROWS: usize = 9;
/// Luma drawn for a 0 bit (video-range black).
pub const BLACK: u8 = 16;
/// Luma drawn for a 1 bit (video-range white).
pub const WHITE: u8 = 235;

const DATA_BITS: usize = COLS * (ROWS - 1);
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);
const TS_MASK: u64 = (1 << 48) - 1;
/// Sync and data cells must differ by at least this much luma to be trusted.
const MIN_CONTRAST: u32 = 60;

/// What the code carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCode {
    /// Frame sequence number at the source.
    pub seq: u32,
    /// Capture time in milliseconds since the UNIX epoch (48 bits kept).
    pub ts_ms: u64,
}

/// Why a frame carried no readable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockCodeError {
    /// The frame is smaller than the code area or the plane is too short.
    #[error("frame {width}x{height} (stride {stride}, {len} bytes) cannot hold a block code")]
    TooSmall {
        /// Frame width.
        width: usize,
        /// Frame height.
        height: usize,
        /// Luma stride.
        stride: usize,
        /// Length of the luma plane given.
        len: usize,
    },
    /// The sync row is missing or has too little contrast.
    #[error("no block code sync row found")]
    NoSync,
    /// The bits were read but the checksum does not match.
    #[error("block code checksum mismatch")]
    BadChecksum,
}

/// Block edge in pixels for a frame size: about 1/30 of the shorter side,
/// a multiple of 8 in 8..=32, so it survives H.264 at low bitrates.
pub fn block_size(width: usize, height: usize) -> usize {
    ((width.min(height) / 30) / 8 * 8).clamp(8, 32)
}

/// Pixel size (width, height) of the code area for a frame size.
pub fn area(width: usize, height: usize) -> (usize, usize) {
    let b = block_size(width, height);
    (COLS * b, ROWS * b)
}

fn payload_bytes(code: BlockCode) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&code.seq.to_be_bytes());
    out[4..10].copy_from_slice(&(code.ts_ms & TS_MASK).to_be_bytes()[2..]);
    let crc = CRC16.checksum(&out[..10]);
    out[10..].copy_from_slice(&crc.to_be_bytes());
    out
}

fn cell_is_white(row: usize, col: usize, payload: &[u8; 12]) -> bool {
    if row == 0 {
        return col.is_multiple_of(2);
    }
    let bit = (row - 1) * COLS + col;
    payload[bit / 8] & (0x80 >> (bit % 8)) != 0
}

/// Draws the code into a luma plane (`stride` bytes per row).
/// Chroma under the code is the caller's business (neutral grey is best).
///
/// Does nothing when the frame is too small to hold the code.
pub fn draw(y: &mut [u8], stride: usize, width: usize, height: usize, code: BlockCode) {
    let b = block_size(width, height);
    let (aw, ah) = area(width, height);
    if aw > width || ah > height || stride < width || y.len() < stride * (ah - 1) + aw {
        return;
    }
    let payload = payload_bytes(code);
    for row in 0..ROWS {
        for py in row * b..(row + 1) * b {
            let line = &mut y[py * stride..py * stride + aw];
            for (col, cell) in line.chunks_exact_mut(b).enumerate() {
                cell.fill(if cell_is_white(row, col, &payload) {
                    WHITE
                } else {
                    BLACK
                });
            }
        }
    }
}

/// Mean luma of the central half of a block: edges blur under H.264.
fn cell_mean(y: &[u8], stride: usize, b: usize, row: usize, col: usize) -> u32 {
    let q = b / 4;
    let (x0, y0) = (col * b + q, row * b + q);
    let n = b - 2 * q;
    let sum: u32 = (y0..y0 + n)
        .map(|py| {
            y[py * stride + x0..py * stride + x0 + n]
                .iter()
                .map(|&v| u32::from(v))
                .sum::<u32>()
        })
        .sum();
    sum / (n * n) as u32
}

/// Reads the code from a decoded frame's luma plane.
pub fn decode(
    y: &[u8],
    stride: usize,
    width: usize,
    height: usize,
) -> Result<BlockCode, BlockCodeError> {
    let b = block_size(width, height);
    let (aw, ah) = area(width, height);
    if aw > width || ah > height || stride < width || y.len() < stride * (ah - 1) + aw {
        return Err(BlockCodeError::TooSmall {
            width,
            height,
            stride,
            len: y.len(),
        });
    }
    let sync: Vec<u32> = (0..COLS).map(|c| cell_mean(y, stride, b, 0, c)).collect();
    let white_min = sync.iter().step_by(2).copied().min().unwrap_or(0);
    let black_max = sync.iter().skip(1).step_by(2).copied().max().unwrap_or(255);
    if white_min < black_max + MIN_CONTRAST {
        return Err(BlockCodeError::NoSync);
    }
    let threshold = (white_min + black_max) / 2;
    let mut payload = [0u8; 12];
    for bit in 0..DATA_BITS {
        let (row, col) = (1 + bit / COLS, bit % COLS);
        if cell_mean(y, stride, b, row, col) > threshold {
            payload[bit / 8] |= 0x80 >> (bit % 8);
        }
    }
    let crc = u16::from_be_bytes([payload[10], payload[11]]);
    if CRC16.checksum(&payload[..10]) != crc {
        return Err(BlockCodeError::BadChecksum);
    }
    let seq = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let mut ts = [0u8; 8];
    ts[2..].copy_from_slice(&payload[4..10]);
    Ok(BlockCode {
        seq,
        ts_ms: u64::from_be_bytes(ts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(w: usize, h: usize, fill: u8) -> Vec<u8> {
        vec![fill; w * h]
    }

    #[test]
    fn block_size_scales_with_frame() {
        assert_eq!(block_size(160, 120), 8);
        assert_eq!(block_size(640, 480), 16);
        assert_eq!(block_size(1280, 720), 24);
        assert_eq!(block_size(1920, 1080), 32);
        assert_eq!(block_size(3840, 2160), 32);
    }

    #[test]
    fn round_trip_at_many_sizes() {
        for &(w, h) in &[
            (160, 120),
            (320, 240),
            (640, 480),
            (1280, 720),
            (1920, 1080),
        ] {
            for &(seq, ts) in &[(0u32, 0u64), (1, 1_763_700_000_123), (u32::MAX, TS_MASK)] {
                let mut y = plane(w, h, 128);
                let code = BlockCode { seq, ts_ms: ts };
                draw(&mut y, w, w, h, code);
                assert_eq!(decode(&y, w, w, h), Ok(code), "{w}x{h}");
            }
        }
    }

    #[test]
    fn survives_noise_and_stride() {
        let (w, h, stride) = (640, 480, 704);
        let mut y = plane(stride, h, 100);
        let code = BlockCode {
            seq: 4242,
            ts_ms: 1_800_000_000_000,
        };
        draw(&mut y, stride, w, h, code);
        // Deterministic +-40 noise, as a lossy codec might leave.
        for (i, v) in y.iter_mut().enumerate() {
            let n = ((i * 2_654_435_761) >> 7) % 81;
            *v = (i32::from(*v) + n as i32 - 40).clamp(0, 255) as u8;
        }
        assert_eq!(decode(&y, stride, w, h), Ok(code));
    }

    #[test]
    fn flat_frame_has_no_sync() {
        let y = plane(640, 480, 128);
        assert_eq!(decode(&y, 640, 640, 480), Err(BlockCodeError::NoSync));
    }

    #[test]
    fn flipped_bit_fails_checksum() {
        let (w, h) = (640, 480);
        let mut y = plane(w, h, 0);
        draw(&mut y, w, w, h, BlockCode { seq: 7, ts_ms: 99 });
        let b = block_size(w, h);
        // Invert the first data cell (row 1, col 0).
        for py in b..2 * b {
            for v in &mut y[py * w..py * w + b] {
                *v = if *v == WHITE { BLACK } else { WHITE };
            }
        }
        assert_eq!(decode(&y, w, w, h), Err(BlockCodeError::BadChecksum));
    }

    #[test]
    fn too_small_is_an_error_not_a_panic() {
        let y = plane(64, 48, 0);
        assert!(matches!(
            decode(&y, 64, 64, 48),
            Err(BlockCodeError::TooSmall { .. })
        ));
        assert!(matches!(
            decode(&[], 640, 640, 480),
            Err(BlockCodeError::TooSmall { .. })
        ));
        let mut small = plane(64, 48, 0);
        draw(&mut small, 64, 64, 48, BlockCode { seq: 1, ts_ms: 1 });
        assert!(small.iter().all(|&v| v == 0));
    }
}
