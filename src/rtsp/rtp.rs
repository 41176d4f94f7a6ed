//! RTP for the RTSP clients: H.264 access units cut into RFC 6184 payloads
//! by the WebRTC stack's own payloader (single NAL units, FU-A, SPS+PPS as a
//! STAP-A before each IDR), wrapped in RTP headers whose timestamps come
//! from the hub's presentation times; and the UDP port pairs of clients
//! playing over UDP.

use bytes::{BufMut, Bytes, BytesMut};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp::packetizer::Payloader;
use rtc::shared::marshal::Marshal;
use std::net::IpAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Largest RTP packet sent: fits a 1500-byte Ethernet MTU with IP/UDP
/// headers and a VPN's overhead to spare.
const MTU: usize = 1400;
/// Bytes of a fixed RTP header (no CSRC, no extension).
const RTP_HEADER: usize = 12;

/// One client's RTP stream of the H.264 track: its SSRC, sequence numbers
/// and timestamp offset (random, as RFC 3550 asks), and the payloader.
#[derive(Debug)]
pub struct RtpStream {
    payloader: H264Payloader,
    ssrc: u32,
    seq: u16,
    base: u32,
}

impl Default for RtpStream {
    fn default() -> Self {
        Self::new()
    }
}

impl RtpStream {
    /// A stream with random SSRC, first sequence number and timestamp base.
    pub fn new() -> Self {
        let mut b = [0u8; 10];
        // Without OS randomness the stream still works; the numbers are
        // only less unpredictable.
        let _ = getrandom::fill(&mut b);
        RtpStream {
            payloader: H264Payloader::default(),
            ssrc: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            seq: u16::from_be_bytes([b[4], b[5]]),
            base: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
        }
    }

    /// The SSRC, for the `Transport` header.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number the next packet gets (for `RTP-Info`).
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// The 90 kHz RTP timestamp of a presentation time.
    pub fn timestamp(&self, pts: Duration) -> u32 {
        let ticks = pts.as_nanos() * 9 / 100_000;
        // Wrapping is what RTP timestamps do.
        self.base.wrapping_add(ticks as u32)
    }

    /// The RTP packets of one Annex B access unit, ready to send.
    pub fn packetize(&mut self, au: &Bytes, pts: Duration) -> Vec<Bytes> {
        let payloads = match self.payloader.payload(MTU - RTP_HEADER, au) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("rtsp: an access unit could not be packetised: {e}");
                return Vec::new();
            }
        };
        let timestamp = self.timestamp(pts);
        let last = payloads.len().saturating_sub(1);
        let mut out = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.into_iter().enumerate() {
            let packet = Packet {
                header: Header {
                    version: 2,
                    // The marker ends the access unit (RFC 6184 5.1).
                    marker: i == last,
                    payload_type: rtcam_proto::rtsp::PAYLOAD_TYPE,
                    sequence_number: self.seq,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Header::default()
                },
                payload,
            };
            self.seq = self.seq.wrapping_add(1);
            match packet.marshal() {
                Ok(b) => out.push(b.freeze()),
                Err(e) => tracing::debug!("rtsp: an RTP packet could not be written: {e}"),
            }
        }
        out
    }
}

/// RTP packets framed for interleaving in the RTSP connection
/// (`$`, channel, 16-bit length, packet; RFC 2326 10.12), in one buffer.
pub fn interleave(channel: u8, packets: &[Bytes]) -> Bytes {
    let len = packets.iter().map(|p| p.len() + 4).sum();
    let mut out = BytesMut::with_capacity(len);
    for p in packets {
        out.put_u8(b'$');
        out.put_u8(channel);
        // Packets are at most MTU bytes, far below 64 KiB.
        out.put_u16(p.len() as u16);
        out.put_slice(p);
    }
    out.freeze()
}

/// Binds an RTP/RTCP socket pair on `ip`: an even port and the next one,
/// as RFC 3550 pairs them and clients expect.
pub async fn bind_pair(ip: IpAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let mut last_err = None;
    for _ in 0..16 {
        let rtp = UdpSocket::bind((ip, 0)).await?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        match UdpSocket::bind((ip, port + 1)).await {
            Ok(rtcp) => return Ok((rtp, rtcp)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no free even/odd UDP port pair")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idr_access_unit_becomes_stap_a_then_fu_a_with_one_marker() {
        let mut s = RtpStream::new();
        let first = s.next_seq();
        let mut au = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
        ];
        au.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        au.extend(std::iter::repeat_n(0xab, 3000));
        let packets = s.packetize(&Bytes::from(au), Duration::from_secs(1));
        assert!(
            packets.len() >= 4,
            "STAP-A and three FU-A: {}",
            packets.len()
        );
        let ts = s.timestamp(Duration::from_secs(1));
        for (i, p) in packets.iter().enumerate() {
            assert!(p.len() <= MTU);
            assert_eq!(p[0] >> 6, 2, "RTP version 2");
            let marker = p[1] & 0x80 != 0;
            assert_eq!(marker, i == packets.len() - 1);
            assert_eq!(p[1] & 0x7f, 96);
            let seq = u16::from_be_bytes([p[2], p[3]]);
            assert_eq!(seq, first.wrapping_add(i as u16));
            assert_eq!(u32::from_be_bytes([p[4], p[5], p[6], p[7]]), ts);
        }
        assert_eq!(packets[0][RTP_HEADER] & 0x1f, 24, "STAP-A first");
        assert_eq!(packets[1][RTP_HEADER] & 0x1f, 28, "then FU-A");
        assert_eq!(s.timestamp(Duration::from_secs(2)).wrapping_sub(ts), 90_000);
        let framed = interleave(0, &packets[..1]);
        assert_eq!(&framed[..2], b"$\x00");
        assert_eq!(
            usize::from(u16::from_be_bytes([framed[2], framed[3]])),
            packets[0].len()
        );
    }
}
