//! Fragmented MP4 (ISO BMFF) for recorded H.264: the init segment (`ftyp`
//! and `moov`, with the stream's SPS/PPS in `avcC`) and one `moof` and
//! `mdat` per fragment. The boxes are `mp4-atom`'s; this module only fills
//! them. Pure.

use super::policy::{TIMESCALE, Timed};
use crate::media::h264::{NAL_PPS, NAL_SPS, nal_type, nal_units};
use mp4_atom::{
    Avc1, Avcc, Dinf, Dref, Encode, FourCC, Ftyp, Hdlr, Header, Mdhd, Mdia, Mfhd, Minf, Moof, Moov,
    Mvex, Mvhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun,
    TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

/// Track id of the video track.
const VIDEO_TRACK: u32 = 1;
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

/// `ftyp` + `moov` of a segment whose video is described by `config`.
pub fn init_segment(config: &StreamConfig) -> Result<Vec<u8>, Mp4Error> {
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
        ],
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
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: VIDEO_TRACK + 1,
            ..Mvhd::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: VIDEO_TRACK,
                default_sample_description_index: 1,
                ..Trex::default()
            }],
        }),
        trak: vec![Trak {
            tkhd: Tkhd {
                track_id: VIDEO_TRACK,
                enabled: true,
                in_movie: true,
                width: w16.into(),
                height: h16.into(),
                ..Tkhd::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: TIMESCALE,
                    language: "und".into(),
                    ..Mdhd::default()
                },
                hdlr: Hdlr {
                    handler: FourCC::new(b"vide"),
                    name: "rtcam video".into(),
                },
                minf: Minf {
                    vmhd: Some(Vmhd::default()),
                    dinf: Dinf {
                        dref: Dref {
                            entries: vec![Url::default().into()],
                        },
                    },
                    stbl: Stbl {
                        stsd: Stsd {
                            codecs: vec![avc1.into()],
                        },
                        stts: Stts::default(),
                        stsc: Stsc::default(),
                        stsz: Stsz::default(),
                        stco: Some(Stco::default()),
                        ..Stbl::default()
                    },
                    ..Minf::default()
                },
            },
            ..Trak::default()
        }],
        ..Moov::default()
    };
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

/// One fragment (`moof` + `mdat`) numbered `sequence` (from 1 in each segment).
pub fn fragment(sequence: u32, samples: &[Timed]) -> Result<Vec<u8>, Mp4Error> {
    let mut data = Vec::with_capacity(samples.iter().map(|t| t.sample.data.len()).sum());
    let entries: Vec<TrunEntry> = samples
        .iter()
        .map(|t| TrunEntry {
            duration: Some(t.duration_ticks),
            size: Some(sample_data(&t.sample.data, &mut data)),
            flags: Some(if t.sample.keyframe {
                SYNC_FLAGS
            } else {
                NON_SYNC_FLAGS
            }),
            cts: None,
        })
        .collect();
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: VIDEO_TRACK,
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
        }],
    };
    // The data offset counts from the moof's first byte to the samples; its
    // own value does not change the moof's size, so measure, then set it.
    let mut probe = Vec::new();
    moof.encode(&mut probe).map_err(enc)?;
    let offset = probe.len() + 8;
    moof.traf[0].trun[0].data_offset =
        Some(i32::try_from(offset).map_err(|_| Mp4Error::Encode("moof too large".into()))?);
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
