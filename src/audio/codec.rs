//! Opus, through libopus (the `opus` crate, libopus built in statically):
//! one encoder for the microphone, one decoder per talkback stream.

use super::{AudioError, FRAME_SAMPLES, SAMPLE_RATE};
use bytes::Bytes;

fn channels(n: u8) -> opus::Channels {
    if n >= 2 {
        opus::Channels::Stereo
    } else {
        opus::Channels::Mono
    }
}

fn err(what: &'static str) -> impl Fn(opus::Error) -> AudioError {
    move |e| AudioError::Opus(format!("{what}: {e}"))
}

/// Encodes 20 ms frames of 48 kHz audio.
pub struct OpusEncoder {
    enc: opus::Encoder,
    channels: usize,
    out: Vec<u8>,
}

impl OpusEncoder {
    /// An encoder for `channels` (1 or 2) at `bitrate_kbps`, tuned for
    /// speech with in-band error correction (viewers on Wi-Fi lose packets).
    pub fn new(channels_n: u8, bitrate_kbps: u32) -> Result<Self, AudioError> {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, channels(channels_n), opus::Application::Voip)
                .map_err(err("opus encoder"))?;
        enc.set_bitrate(opus::Bitrate::Bits(bitrate_kbps as i32 * 1000))
            .map_err(err("opus bitrate"))?;
        enc.set_inband_fec(true).map_err(err("opus fec"))?;
        enc.set_packet_loss_perc(5).map_err(err("opus loss"))?;
        Ok(Self {
            enc,
            channels: usize::from(channels_n.clamp(1, 2)),
            // RFC 6716's largest packet.
            out: vec![0; 1275],
        })
    }

    /// The samples of delay the encoder adds (`OPUS_GET_LOOKAHEAD`): what a
    /// decoder skips at the start of a stream (Opus's pre-skip).
    pub fn lookahead(&mut self) -> Result<u32, AudioError> {
        let n = self.enc.get_lookahead().map_err(err("opus lookahead"))?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// Encodes one 20 ms frame (interleaved, `FRAME_SAMPLES` per channel).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Bytes, AudioError> {
        if pcm.len() != FRAME_SAMPLES * self.channels {
            return Err(AudioError::Opus(format!(
                "a frame has {} samples per channel, not {}",
                pcm.len() / self.channels,
                FRAME_SAMPLES
            )));
        }
        let n = self
            .enc
            .encode(pcm, &mut self.out)
            .map_err(err("opus encode"))?;
        Ok(Bytes::copy_from_slice(&self.out[..n]))
    }
}

/// Decodes Opus packets into 48 kHz audio.
pub struct OpusDecoder {
    dec: opus::Decoder,
    channels: usize,
}

impl OpusDecoder {
    /// A decoder giving `channels` (1 or 2), whatever the packets carry.
    pub fn new(channels_n: u8) -> Result<Self, AudioError> {
        Ok(Self {
            dec: opus::Decoder::new(SAMPLE_RATE, channels(channels_n))
                .map_err(err("opus decoder"))?,
            channels: usize::from(channels_n.clamp(1, 2)),
        })
    }

    /// Decodes `packet` into `out` (interleaved); `None` conceals a lost
    /// packet. Returns the samples per channel written.
    pub fn decode(&mut self, packet: Option<&[u8]>, out: &mut [i16]) -> Result<usize, AudioError> {
        // Concealment fills as much as it is given: one frame's worth.
        let room = match packet {
            Some(_) => out.len(),
            None => out.len().min(FRAME_SAMPLES * self.channels),
        };
        let n = self
            .dec
            .decode(packet.unwrap_or(&[]), &mut out[..room], false)
            .map_err(err("opus decode"))?;
        Ok(n.min(out.len() / self.channels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::tone;

    #[test]
    fn the_test_tone_survives_a_round_trip() {
        let mut enc = OpusEncoder::new(1, 32).expect("encoder");
        let mut dec = OpusDecoder::new(1).expect("decoder");
        let mut det = tone::ToneDetector::new();
        let mut n = 1_000 * u64::from(SAMPLE_RATE);
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let mut out = vec![0i16; FRAME_SAMPLES * 6];
        let mut bytes = 0;
        for i in 0..100 {
            n = tone::fill(&mut pcm, 1, n);
            let pkt = enc.encode(&pcm).expect("encoded");
            bytes += pkt.len();
            let got = dec.decode(Some(&pkt), &mut out).expect("decoded");
            assert_eq!(got, FRAME_SAMPLES);
            det.feed(&out[..got], f64::from(i) * 20.0 + 1_000_000.0);
        }
        // 32 kbit/s over 2 s, give or take the silence's smaller packets.
        assert!(bytes < 10_000, "{bytes} bytes");
        let beeps = det.beeps();
        assert_eq!(beeps.len(), 2, "{beeps:?}");
        assert!(
            beeps.iter().all(|b| (b.hz - 1000.0).abs() < 20.0),
            "{beeps:?}"
        );
        // A lost packet is concealed, not an error.
        assert_eq!(
            dec.decode(None, &mut out).expect("concealed"),
            FRAME_SAMPLES
        );
        assert!(matches!(enc.encode(&pcm[..100]), Err(AudioError::Opus(_))));
    }
}
