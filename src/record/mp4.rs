//! Fragmented MP4 (ISO BMFF) for recorded H.264 and, with the microphone
//! on, its Opus audio: the init segment (`ftyp` and `moov`, with the
//! stream's SPS/PPS in `avcC` and the audio's `dOps`) and one `moof` and
//! `mdat` per fragment, the `moof` holding a `traf` per track with its
//! samples of that fragment (video's data first in the `mdat`, then
//! audio's). The boxes are `mp4-atom`'s; this module only fills them. Pure.

use super::policy::{AUDIO_TIMESCALE, TIMESCALE, Timed};
use crate::media::h264::{NAL_PPS, NAL_SPS, nal_type, nal_units};
use mp4_atom::{
    Audio, Avc1, Avcc, Codec, Dinf, Dops, Dref, Encode, FourCC, Ftyp, Hdlr, Header, Mdhd, Mdia,
    Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd,
    Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

/// Track id of the video track.
pub const VIDEO_TRACK: u32 = 1;
/// Track id of the audio track, when there is one.
pub const AUDIO_TRACK: u32 = 2;
/// The Opus pre-skip written in `dOps`: the samples a decoder drops at the
/// start of a segment. It is libopus's encoder delay (`OPUS_GET_LOOKAHEAD`:
/// 2.5 ms plus the 4 ms delay compensation of the VoIP and audio
/// applications = 312 samples at 48 kHz; the microphone's encoder is
/// checked against it in the tests). Every segment starts mid-stream, so
/// the same delay applies to its first packet: skipping it lines the sound
/// up with the video, and drops the samples a fresh decoder makes while it
/// converges. No edit list: players apply `dOps`'s pre-skip themselves.
pub const PRE_SKIP: u16 = 312;
/// AUD, SPS, PPS and SEI-free samples: SPS and PPS live in `avcC`.
const NAL_AUD: u8 = 9;
/// `sample_depends_on` = 2 (an I picture): the sample flags of a keyframe.
const SYNC_FLAGS: u32 = 0x0200_0000;
/// `sample_is_non_sync_sample` and depends on others: every other frame.
const NON_SYNC_FLAGS: u32 = 0x0101_0000;

/// Why MP4 boxes could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Mp4Error {
    /// The keyframe had no SPS or PPS to describe the stream with.
    #[error("the keyframe carries no {0} (needed for the MP4 sample description)")]
    MissingParameterSet(&'static str),
    /// The SPS could not be read.
    #[error("the SPS could not be read: {0}")]
    BadSps(String),
    /// A box could not be encoded.
    #[error("MP4 box encoding failed: {0}")]
    Encode(String),
}

/// The stream's parameter sets, from a keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Sequence parameter set (NAL unit without start code).
    pub sps: Vec<u8>,
    /// Picture parameter set.
    pub pps: Vec<u8>,
}

impl StreamConfig {
    /// The SPS and PPS in front of a keyframe's Annex B access unit.
    pub fn from_keyframe(au: &[u8]) -> Result<Self, Mp4Error> {
        let find = |t| nal_units(au).find(|n| nal_type(n) == t).map(<[u8]>::to_vec);
        Ok(Self {
            sps: find(NAL_SPS).ok_or(Mp4Error::MissingParameterSet("SPS"))?,
            pps: find(NAL_PPS).ok_or(Mp4Error::MissingParameterSet("PPS"))?,
        })
    }

    /// The picture size the SPS describes (after cropping).
    pub fn dimensions(&self) -> Result<(u32, u32), Mp4Error> {
        use h264_reader::nal::{Nal, RefNal, sps::SeqParameterSet};
        let nal = RefNal::new(&self.sps, &[], true);
        let sps = SeqParameterSet::from_bits(nal.rbsp_bits())
            .map_err(|e| Mp4Error::BadSps(format!("{e:?}")))?;
        sps.pixel_dimensions()
            .map_err(|e| Mp4Error::BadSps(format!("{e:?}")))
    }
}

fn enc(e: mp4_atom::Error) -> Mp4Error {
    Mp4Error::Encode(e.to_string())
}

/// The recorded audio track's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioConfig {
    /// Channels the Opus packets decode to (1 or 2).
    pub channels: u8,
}

/// The `trak` of the Opus audio track.
fn audio_trak(audio: AudioConfig) -> Trak {
    let channels = audio.channels.clamp(1, 2);
    let opus = Opus {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(channels),
            sample_size: 16,
            sample_rate: 48000u16.into(),
        },
        dops: Dops {
            output_channel_count: channels,
            pre_skip: PRE_SKIP,
            input_sample_rate: AUDIO_TIMESCALE,
            output_gain: 0,
            // Family 0: mono or stereo, no table.
            channel_mapping: None,
        },
        btrt: None,
    };
    trak(
        Tkhd {
            track_id: AUDIO_TRACK,
            enabled: true,
            in_movie: true,
            alternate_group: 1,
            volume: 1.into(),
            ..Tkhd::default()
        },
        (AUDIO_TIMESCALE, b"soun", "rtcam audio"),
        Minf {
            smhd: Some(Smhd::default()),
            ..Minf::default()
        },
        opus.into(),
    )
}

/// A track's `trak`: its header, its media's time scale, handler and name,
/// `minf` with its media header (`vmhd` or `smhd`), and its one sample
/// entry. The sample tables stay empty: each fragment's `moof` has them.
fn trak(
    tkhd: Tkhd,
    (timescale, handler, name): (u32, &[u8; 4], &str),
    minf: Minf,
    codec: Codec,
) -> Trak {
    Trak {
        tkhd,
        mdia: Mdia {
            mdhd: Mdhd {
                timescale,
                language: "und".into(),
                ..Mdhd::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(handler),
                name: name.into(),
            },
            minf: Minf {
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![Url::default().into()],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![codec],
                    },
                    stts: Stts::default(),
                    stsc: Stsc::default(),
                    stsz: Stsz::default(),
                    stco: Some(Stco::default()),
                    ..Stbl::default()
                },
                ..minf
            },
        },
        ..Trak::default()
    }
}

/// `ftyp` + `moov` of a segment whose video is described by `config`, with
/// an Opus audio track when `audio` is given.
pub fn init_segment(
    config: &StreamConfig,
    audio: Option<AudioConfig>,
) -> Result<Vec<u8>, Mp4Error> {
    let (width, height) = config.dimensions()?;
    let (w16, h16) = (
        u16::try_from(width).unwrap_or(u16::MAX),
        u16::try_from(height).unwrap_or(u16::MAX),
    );
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"isom"),
        minor_version: 0x200,
        compatible_brands: vec![
            FourCC::new(b"isom"),
            FourCC::new(b"iso6"),
            FourCC::new(b"avc1"),
            FourCC::new(b"mp41"),
        ]
        .into_iter()
        .chain(audio.map(|_| FourCC::new(b"Opus")))
        .collect(),
    };
    let avc1 = Avc1 {
        visual: Visual {
            // The first (only) data reference: the file itself.
            data_reference_index: 1,
            width: w16,
            height: h16,
            ..Visual::default()
        },
        avcc: Avcc::new(&config.sps, &config.pps).map_err(enc)?,
        ..Avc1::default()
    };
    let trex = |track_id| Trex {
        track_id,
        default_sample_description_index: 1,
        ..Trex::default()
    };
    let mut moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: if audio.is_some() {
                AUDIO_TRACK + 1
            } else {
                VIDEO_TRACK + 1
            },
            ..Mvhd::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![trex(VIDEO_TRACK)],
        }),
        trak: vec![trak(
            Tkhd {
                track_id: VIDEO_TRACK,
                enabled: true,
                in_movie: true,
                width: w16.into(),
                height: h16.into(),
                ..Tkhd::default()
            },
            (TIMESCALE, b"vide", "rtcam video"),
            Minf {
                vmhd: Some(Vmhd::default()),
                ..Minf::default()
            },
            avc1.into(),
        )],
        ..Moov::default()
    };
    if let Some(audio) = audio {
        moov.trak.push(audio_trak(audio));
        if let Some(mvex) = &mut moov.mvex {
            mvex.trex.push(trex(AUDIO_TRACK));
        }
    }
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out).map_err(enc)?;
    moov.encode(&mut out).map_err(enc)?;
    Ok(out)
}

/// An access unit as MP4 sample data: each NAL unit behind a 4-byte length,
/// without the parameter sets and delimiters `avcC` already carries.
pub fn sample_data(au: &[u8], out: &mut Vec<u8>) -> u32 {
    let start = out.len();
    for nal in nal_units(au).filter(|n| !matches!(nal_type(n), NAL_SPS | NAL_PPS | NAL_AUD)) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    (out.len() - start) as u32
}

/// The `traf` of one track's samples, their data appended to `data`.
fn traf(track_id: u32, samples: &[Timed], data: &mut Vec<u8>, video: bool) -> Traf {
    let entries: Vec<TrunEntry> = samples
        .iter()
        .map(|t| TrunEntry {
            duration: Some(t.duration_ticks),
            size: Some(if video {
                sample_data(&t.sample.data, data)
            } else {
                data.extend_from_slice(&t.sample.data);
                t.sample.data.len() as u32
            }),
            // Every Opus packet decodes on its own: all sync samples.
            flags: Some(if t.sample.keyframe || !video {
                SYNC_FLAGS
            } else {
                NON_SYNC_FLAGS
            }),
            cts: None,
        })
        .collect();
    Traf {
        tfhd: Tfhd {
            track_id,
            default_base_is_moof: true,
            ..Tfhd::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: samples.first().map_or(0, |t| t.decode_ticks),
        }),
        trun: vec![Trun {
            data_offset: Some(0),
            samples: TrunSamples::Explicit(entries),
        }],
        ..Traf::default()
    }
}

/// One fragment (`moof` + `mdat`) numbered `sequence` (from 1 in each
/// segment): a `traf` for the video and one for the audio, each when it has
/// samples, their data one after the other in the `mdat`.
pub fn fragment(sequence: u32, video: &[Timed], audio: &[Timed]) -> Result<Vec<u8>, Mp4Error> {
    let size = |s: &[Timed]| s.iter().map(|t| t.sample.data.len()).sum::<usize>();
    let mut data = Vec::with_capacity(size(video) + size(audio));
    let mut trafs = Vec::with_capacity(2);
    // Where each traf's samples start in the mdat's data.
    let mut starts = Vec::with_capacity(2);
    for (track, samples, is_video) in [(VIDEO_TRACK, video, true), (AUDIO_TRACK, audio, false)] {
        if !samples.is_empty() {
            starts.push(data.len());
            trafs.push(traf(track, samples, &mut data, is_video));
        }
    }
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: trafs,
    };
    // The data offsets count from the moof's first byte to the samples;
    // their values do not change the moof's size, so measure, then set them.
    let mut probe = Vec::new();
    moof.encode(&mut probe).map_err(enc)?;
    let offset = probe.len() + 8;
    for (traf, start) in moof.traf.iter_mut().zip(starts) {
        traf.trun[0].data_offset = Some(
            i32::try_from(offset + start).map_err(|_| Mp4Error::Encode("moof too large".into()))?,
        );
    }
    let mut out = Vec::with_capacity(offset + data.len());
    moof.encode(&mut out).map_err(enc)?;
    Header {
        kind: FourCC::new(b"mdat"),
        size: Some(data.len()),
    }
    .encode(&mut out)
    .map_err(enc)?;
    out.extend_from_slice(&data);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::policy::{AUDIO_FRAME_TICKS, Sample};
    use bytes::Bytes;
    use mp4_atom::{Codec, Decode};
    use std::time::Duration;

    /// A 320x240 baseline SPS and its PPS (from x264).
    pub(crate) const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0c, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x01, 0xe0, 0xf1, 0x42, 0xa4, 0x80,
    ];
    pub(crate) const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    pub(crate) fn config() -> StreamConfig {
        StreamConfig {
            sps: SPS.to_vec(),
            pps: PPS.to_vec(),
        }
    }

    fn annexb(nals: &[&[u8]]) -> Bytes {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        Bytes::from(out)
    }

    pub(crate) fn timed(
        data: Bytes,
        keyframe: bool,
        decode_ticks: u64,
        duration_ticks: u32,
    ) -> Timed {
        Timed {
            sample: Sample {
                data,
                pts: Duration::ZERO,
                keyframe,
            },
            decode_ticks,
            duration_ticks,
        }
    }

    #[test]
    fn the_init_segment_has_an_opus_track_beside_the_video_when_audio_is_on() {
        let init = init_segment(&config(), Some(AudioConfig { channels: 1 })).expect("init");
        let mut buf = init.as_slice();
        let ftyp = Ftyp::decode(&mut buf).expect("ftyp");
        assert!(ftyp.compatible_brands.contains(&FourCC::new(b"Opus")));
        let moov = Moov::decode(&mut buf).expect("moov");
        assert!(buf.is_empty(), "nothing after the moov");
        assert_eq!(moov.mvhd.next_track_id, 3);
        let trex: Vec<u32> = moov
            .mvex
            .as_ref()
            .expect("mvex")
            .trex
            .iter()
            .map(|t| t.track_id)
            .collect();
        assert_eq!(trex, [VIDEO_TRACK, AUDIO_TRACK]);
        let [video, audio] = &moov.trak[..] else {
            panic!("two tracks: {:?}", moov.trak)
        };
        assert_eq!(video.tkhd.track_id, VIDEO_TRACK);
        assert_eq!(video.mdia.mdhd.timescale, TIMESCALE);
        assert_eq!(video.mdia.hdlr.handler, FourCC::new(b"vide"));
        let [Codec::Avc1(avc1)] = &video.mdia.minf.stbl.stsd.codecs[..] else {
            panic!("avc1")
        };
        assert_eq!((avc1.visual.width, avc1.visual.height), (320, 240));
        assert_eq!(audio.tkhd.track_id, AUDIO_TRACK);
        assert!(audio.tkhd.enabled);
        assert_eq!(audio.mdia.mdhd.timescale, AUDIO_TIMESCALE);
        assert_eq!(audio.mdia.hdlr.handler, FourCC::new(b"soun"));
        assert!(audio.mdia.minf.smhd.is_some() && audio.mdia.minf.vmhd.is_none());
        let [Codec::Opus(opus)] = &audio.mdia.minf.stbl.stsd.codecs[..] else {
            panic!("Opus: {:?}", audio.mdia.minf.stbl.stsd)
        };
        assert_eq!(opus.audio.channel_count, 1);
        assert_eq!(opus.audio.sample_rate.integer(), 48000);
        assert_eq!(
            opus.dops,
            Dops {
                output_channel_count: 1,
                pre_skip: PRE_SKIP,
                input_sample_rate: 48000,
                output_gain: 0,
                channel_mapping: None,
            }
        );
        // Stereo says so; no microphone: the video alone, as before.
        let init = init_segment(&config(), Some(AudioConfig { channels: 2 })).expect("init");
        let mut buf = init.as_slice();
        Ftyp::decode(&mut buf).expect("ftyp");
        let moov = Moov::decode(&mut buf).expect("moov");
        let Codec::Opus(opus) = &moov.trak[1].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("Opus")
        };
        assert_eq!(
            (opus.audio.channel_count, opus.dops.output_channel_count),
            (2, 2)
        );
        let init = init_segment(&config(), None).expect("init");
        let mut buf = init.as_slice();
        let ftyp = Ftyp::decode(&mut buf).expect("ftyp");
        assert!(!ftyp.compatible_brands.contains(&FourCC::new(b"Opus")));
        let moov = Moov::decode(&mut buf).expect("moov");
        assert_eq!(moov.trak.len(), 1);
        assert_eq!(moov.mvhd.next_track_id, 2);
    }

    #[test]
    fn pre_skip_is_the_microphone_encoders_lookahead() {
        for channels in [1, 2] {
            let mut enc = crate::audio::codec::OpusEncoder::new(channels, 32).expect("encoder");
            assert_eq!(enc.lookahead().expect("lookahead"), u32::from(PRE_SKIP));
        }
    }

    /// The samples of each track of a fragment, read back through its
    /// boxes: (track, tfdt, [(duration, flags, bytes)]).
    #[allow(clippy::type_complexity)]
    fn read_back(frag: &[u8]) -> Vec<(u32, u64, Vec<(u32, u32, Vec<u8>)>)> {
        let mut buf = frag;
        let moof = Moof::decode(&mut buf).expect("moof");
        let mdat = Header::decode(&mut buf).expect("mdat header");
        assert_eq!(mdat.kind, FourCC::new(b"mdat"));
        assert_eq!(mdat.size, Some(buf.len()), "the mdat is the rest");
        moof.traf
            .iter()
            .map(|traf| {
                assert!(traf.tfhd.default_base_is_moof);
                let [trun] = &traf.trun[..] else {
                    panic!("one trun")
                };
                let mut at = trun.data_offset.expect("data offset") as usize;
                let samples = trun
                    .samples
                    .iter()
                    .map(|e| {
                        let size = e.size.expect("size") as usize;
                        let data = frag[at..at + size].to_vec();
                        at += size;
                        (e.duration.expect("duration"), e.flags.expect("flags"), data)
                    })
                    .collect();
                let tfdt = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
                (traf.tfhd.track_id, tfdt, samples)
            })
            .collect()
    }

    #[test]
    fn a_fragment_carries_a_traf_per_track_with_its_samples() {
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
        let p: &[u8] = &[0x41, 0x9a, 0x02];
        let video = vec![
            timed(annexb(&[SPS, PPS, idr]), true, 0, 3000),
            timed(annexb(&[p]), false, 3000, 3000),
        ];
        let packets: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![0x78, i, i, i])).collect();
        let audio: Vec<Timed> = packets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                timed(
                    b.clone(),
                    true,
                    240 + i as u64 * u64::from(AUDIO_FRAME_TICKS),
                    AUDIO_FRAME_TICKS,
                )
            })
            .collect();
        let frag = fragment(7, &video, &audio).expect("fragment");
        let mut buf = frag.as_slice();
        assert_eq!(
            Moof::decode(&mut buf).expect("moof").mfhd.sequence_number,
            7
        );
        let tracks = read_back(&frag);
        assert_eq!(tracks.len(), 2);
        let (track, tfdt, v) = &tracks[0];
        assert_eq!((*track, *tfdt), (VIDEO_TRACK, 0));
        // The parameter sets live in avcC: the IDR alone, length-prefixed.
        let mut want = vec![0, 0, 0, 5];
        want.extend_from_slice(idr);
        assert_eq!(v[0], (3000, SYNC_FLAGS, want));
        assert_eq!(
            v[1],
            (3000, NON_SYNC_FLAGS, [&[0, 0, 0, 3][..], p].concat())
        );
        let (track, tfdt, a) = &tracks[1];
        assert_eq!((*track, *tfdt), (AUDIO_TRACK, 240));
        assert_eq!(a.len(), 4);
        for (got, want) in a.iter().zip(&packets) {
            // Opus packets as they are, each a sync sample of 20 ms.
            assert_eq!(got, &(AUDIO_FRAME_TICKS, SYNC_FLAGS, want.to_vec()));
        }
        // No audio in a fragment (the microphone stalled): no audio traf.
        let frag = fragment(8, &video[1..], &[]).expect("fragment");
        let tracks = read_back(&frag);
        assert_eq!(tracks.len(), 1);
        assert_eq!((tracks[0].0, tracks[0].1), (VIDEO_TRACK, 3000));
    }
}
