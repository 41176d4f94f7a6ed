//! Just enough H.264 Annex B parsing to route access units: split NAL units,
//! read their types, and keep SPS/PPS in-band before every IDR (cameras that
//! send parameter sets only once would otherwise break late joiners). Pure.

/// NAL unit type of a coded slice of an IDR picture.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of a non-IDR coded slice.
pub const NAL_SLICE: u8 = 1;

/// Iterates the NAL units (without start codes) of an Annex B buffer.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start(data, 0).map(|(_, end)| end);
    std::iter::from_fn(move || {
        let start = pos?;
        match find_start(data, start) {
            Some((next_begin, next_end)) => {
                pos = Some(next_end);
                Some(trim_trailing_zeros(&data[start..next_begin]))
            }
            None => {
                pos = None;
                Some(trim_trailing_zeros(&data[start..]))
            }
        }
    })
    .filter(|nal| !nal.is_empty())
}

/// Finds the next 00 00 01 start code at or after `from`: (its first byte, the byte after it).
fn find_start(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            return Some((i, i + 3));
        }
        i += 1;
    }
    None
}

/// A 4-byte start code leaves one zero at the end of the previous unit.
fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    &nal[..end]
}

/// The type field (low 5 bits of the first byte) of a NAL unit.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// True when the access unit contains an IDR slice.
pub fn is_keyframe(au: &[u8]) -> bool {
    nal_units(au).any(|n| nal_type(n) == NAL_IDR)
}

/// The NAL types in an access unit, in order (handy in tests and logs).
pub fn nal_types(au: &[u8]) -> Vec<u8> {
    nal_units(au).map(nal_type).collect()
}

/// The `profile_idc`, constraint flags and `level_idc` bytes of an SPS,
/// formatted as an SDP `profile-level-id` (e.g. `42e01f`).
pub fn profile_level_id(sps: &[u8]) -> Option<String> {
    if nal_type(sps) != NAL_SPS || sps.len() < 4 {
        return None;
    }
    Some(format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]))
}

/// Remembers the last SPS and PPS seen and re-inserts them before IDRs that
/// arrive without them.
#[derive(Debug, Default, Clone)]
pub struct ParamSets {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl ParamSets {
    /// Returns the access unit with SPS/PPS in front when it is an IDR lacking
    /// them; otherwise `None` (use the input as is).
    pub fn fix_access_unit(&mut self, au: &[u8]) -> Option<Vec<u8>> {
        let (mut has_sps, mut has_pps, mut idr) = (false, false, false);
        for nal in nal_units(au) {
            match nal_type(nal) {
                NAL_SPS => {
                    has_sps = true;
                    self.sps = Some(nal.to_vec());
                }
                NAL_PPS => {
                    has_pps = true;
                    self.pps = Some(nal.to_vec());
                }
                NAL_IDR => idr = true,
                _ => {}
            }
        }
        if !idr || (has_sps && has_pps) {
            return None;
        }
        let (sps, pps) = (self.sps.as_ref()?, self.pps.as_ref()?);
        let mut out = Vec::with_capacity(au.len() + sps.len() + pps.len() + 8);
        for ps in [sps, pps] {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(ps);
        }
        out.extend_from_slice(au);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0xaa];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
            .collect()
    }

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let mut data = vec![0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 4];
        data.extend_from_slice(&[0, 0, 0]);
        let units: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4]]);
        assert_eq!(nal_types(&data), [7, 8, 5]);
        assert!(is_keyframe(&data));
    }

    #[test]
    fn no_start_code_means_no_units() {
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(nal_units(&[]).count(), 0);
        assert!(!is_keyframe(&[0, 0, 1]));
    }

    #[test]
    fn profile_level_id_reads_sps() {
        assert_eq!(profile_level_id(SPS).as_deref(), Some("42e01f"));
        assert_eq!(profile_level_id(PPS), None);
    }

    #[test]
    fn param_sets_are_inserted_before_bare_idr() {
        let mut ps = ParamSets::default();
        let first = au(&[SPS, PPS, &[0x65, 1]]);
        assert_eq!(ps.fix_access_unit(&first), None);
        assert_eq!(ps.fix_access_unit(&au(&[&[0x41, 2]])), None);
        let fixed = ps.fix_access_unit(&au(&[&[0x65, 3]])).expect("bare IDR");
        assert_eq!(nal_types(&fixed), [7, 8, 5]);
    }

    #[test]
    fn bare_idr_before_any_param_sets_is_left_alone() {
        let mut ps = ParamSets::default();
        assert_eq!(ps.fix_access_unit(&au(&[&[0x65, 3]])), None);
    }
}
