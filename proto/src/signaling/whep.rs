//! WHEP (draft-ietf-wish-whep-04) text handling: the trickle-ICE SDP
//! fragments of `PATCH` (RFC 8840), the ICE-restart offer rebuilt from one,
//! the answer with the agent's gathered candidates, and the `If-Match`
//! header. Pure: the HTTP adapter (`rtcam::signaling::whep`) does the I/O.

use crate::signaling::messages::IceCandidate;

/// The media type of a WHEP offer and answer.
pub const SDP_TYPE: &str = "application/sdp";
/// The media type of a `PATCH` body (RFC 8840).
pub const SDPFRAG_TYPE: &str = "application/trickle-ice-sdpfrag";
/// Longest fragment read; a real one is a few hundred bytes per candidate.
pub const MAX_SDPFRAG: usize = 16 * 1024;
/// Candidates one fragment may carry.
pub const MAX_FRAG_CANDIDATES: usize = 64;

/// What is wrong with a `PATCH` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragError {
    /// Over [`MAX_SDPFRAG`].
    #[error("the fragment is {0} bytes; the limit is {MAX_SDPFRAG}")]
    TooLarge(usize),
    /// Not UTF-8 text.
    #[error("the fragment is not UTF-8 text")]
    NotText,
    /// A line that is not `x=value`.
    #[error("line {line} is not an SDP line (\"x=value\")")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// An `a=candidate` line that is not a candidate.
    #[error("line {line}: {reason}")]
    BadCandidate {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// More than [`MAX_FRAG_CANDIDATES`].
    #[error("the fragment has {0} candidates; at most {MAX_FRAG_CANDIDATES} are taken")]
    TooManyCandidates(usize),
    /// `a=ice-ufrag` without `a=ice-pwd` or the other way round.
    #[error("the fragment has one of a=ice-ufrag and a=ice-pwd without the other")]
    HalfCredentials,
    /// Neither credentials nor candidates: nothing to do.
    #[error("the fragment has no a=ice-ufrag, a=ice-pwd or a=candidate lines")]
    Empty,
}

/// A parsed trickle-ICE fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag` and `a=ice-pwd`, when given (an ICE restart if they
    /// differ from the session's).
    pub credentials: Option<(String, String)>,
    /// The candidates, each with the `a=mid` of its media section.
    pub candidates: Vec<IceCandidate>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// Parses a `PATCH` body.
pub fn parse_sdpfrag(body: &[u8]) -> Result<SdpFrag, FragError> {
    if body.len() > MAX_SDPFRAG {
        return Err(FragError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| FragError::NotText)?;
    let mut frag = SdpFrag::default();
    let (mut ufrag, mut pwd) = (None, None);
    let mut mid: Option<String> = None;
    let mut mline: Option<u16> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(FragError::BadLine { line: n });
        }
        if line.starts_with("m=") {
            mline = Some(mline.map_or(0, |m| m.saturating_add(1)));
            mid = None;
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            mid = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ufrag = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            pwd = Some(v.trim().to_string());
        } else if line == "a=end-of-candidates" {
            frag.end_of_candidates = true;
        } else if let Some(v) = line.strip_prefix("a=") {
            if v.starts_with("candidate:") {
                check_candidate(v).map_err(|reason| FragError::BadCandidate { line: n, reason })?;
                frag.candidates.push(IceCandidate {
                    candidate: v.to_string(),
                    sdp_mid: mid.clone(),
                    sdp_mline_index: Some(mline.unwrap_or(0)),
                });
                if frag.candidates.len() > MAX_FRAG_CANDIDATES {
                    return Err(FragError::TooManyCandidates(frag.candidates.len()));
                }
            }
        }
    }
    frag.credentials = match (ufrag, pwd) {
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, p)),
        (None, None) => None,
        _ => return Err(FragError::HalfCredentials),
    };
    if frag.credentials.is_none() && frag.candidates.is_empty() && !frag.end_of_candidates {
        return Err(FragError::Empty);
    }
    Ok(frag)
}

/// RFC 8839 §5.1: `candidate:foundation component transport priority
/// address port typ type …`.
fn check_candidate(v: &str) -> Result<(), &'static str> {
    let fields: Vec<&str> = v["candidate:".len()..].split_ascii_whitespace().collect();
    if fields.len() < 8 {
        return Err("a candidate has at least 8 fields");
    }
    if fields[1].parse::<u16>().is_err() {
        return Err("the candidate's component is not a number");
    }
    if fields[3].parse::<u32>().is_err() {
        return Err("the candidate's priority is not a number");
    }
    if fields[5].parse::<u16>().is_err() {
        return Err("the candidate's port is not a number");
    }
    if fields[6] != "typ" {
        return Err("the candidate has no \"typ\" after its port");
    }
    Ok(())
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP.
pub fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// The offer of an ICE restart: the session's `offer` with the fragment's
/// credentials in place of its own, and its old candidates left out (they
/// belong to the old ICE session; the fragment's are trickled after).
pub fn restart_offer(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines() {
        let l = line.trim_end_matches('\r');
        if l.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if l.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(l);
        }
        out.push_str("\r\n");
    }
    out
}

/// Each candidate's media section in `sdp`: by `a=mid`, else by index,
/// else the first (BUNDLE: one transport for all).
fn section_of(mids: &[Option<String>], c: &IceCandidate) -> usize {
    if let Some(m) = &c.sdp_mid
        && let Some(i) = mids.iter().position(|x| x.as_deref() == Some(m.as_str()))
    {
        return i;
    }
    match c.sdp_mline_index {
        Some(i) if usize::from(i) < mids.len() => usize::from(i),
        _ => 0,
    }
}

/// The agent's answer with its gathered `candidates` in their media
/// sections, each section ended by `a=end-of-candidates` when `complete`:
/// a WHEP player gets every candidate in the `201` (the draft has no way to
/// trickle the server's candidates to it later).
pub fn answer_with_candidates(answer: &str, candidates: &[IceCandidate], complete: bool) -> String {
    // Split into the session part and the media sections.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in answer.lines() {
        let l = line.trim_end_matches('\r');
        if l.is_empty() {
            continue;
        }
        if l.starts_with("m=") {
            sections.push(Vec::new());
        }
        if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
            continue;
        }
        if let Some(last) = sections.last_mut() {
            last.push(l);
        }
    }
    let mids: Vec<Option<String>> = sections[1..]
        .iter()
        .map(|s| {
            s.iter()
                .find_map(|l| l.strip_prefix("a=mid:"))
                .map(str::to_string)
        })
        .collect();
    let mut out = String::with_capacity(answer.len() + candidates.len() * 100);
    for (i, section) in sections.iter().enumerate() {
        for l in section {
            out.push_str(l);
            out.push_str("\r\n");
        }
        if i == 0 {
            continue;
        }
        let here: Vec<&IceCandidate> = candidates
            .iter()
            .filter(|c| section_of(&mids, c) == i - 1)
            .collect();
        push_candidates(&mut out, here, complete);
    }
    out
}

/// `a=candidate` lines (the end marker left out), then
/// `a=end-of-candidates` when `complete`.
fn push_candidates<'a>(
    out: &mut String,
    candidates: impl IntoIterator<Item = &'a IceCandidate>,
    complete: bool,
) {
    for c in candidates.into_iter().filter(|c| !c.candidate.is_empty()) {
        out.push_str("a=");
        out.push_str(c.candidate.trim_start_matches("a="));
        out.push_str("\r\n");
    }
    if complete {
        out.push_str("a=end-of-candidates\r\n");
    }
}

/// The `200` body of an ICE restart (RFC 8840 fragment): the agent's new
/// credentials, and its candidates under the first media section (the
/// bundle's transport).
pub fn restart_answer_frag(answer: &str, candidates: &[IceCandidate], complete: bool) -> String {
    let mut out = String::new();
    if let Some((u, p)) = ice_credentials(answer) {
        out.push_str(&format!("a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n"));
    }
    let mline = answer
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| l.starts_with("m="));
    let mid = answer
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=mid:"));
    if let Some(m) = mline {
        out.push_str(m);
        out.push_str("\r\n");
    }
    if let Some(m) = mid {
        out.push_str(&format!("a=mid:{m}\r\n"));
    }
    push_candidates(&mut out, candidates, complete);
    out
}

/// What an `If-Match` header asks (RFC 9110 §13.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header.
    Absent,
    /// `*`: any current ICE session (what a restart sends).
    Any,
    /// One or more entity-tags.
    Tags(Vec<String>),
}

impl IfMatch {
    /// Parses the header's value (`None`: absent).
    pub fn parse(value: Option<&str>) -> IfMatch {
        match value.map(str::trim) {
            None => IfMatch::Absent,
            Some("*") => IfMatch::Any,
            Some(v) => IfMatch::Tags(
                v.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect(),
            ),
        }
    }

    /// Whether it lets a change to the resource whose tag is `etag` through:
    /// If-Match compares strongly, so a weak tag (`W/"…"`) never matches.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            IfMatch::Absent | IfMatch::Any => true,
            IfMatch::Tags(tags) => tags.iter().any(|t| !t.starts_with("W/") && t == etag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpassword\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\na=ice-ufrag:old\r\na=ice-pwd:oldpassword\r\n";

    #[test]
    fn a_trickle_fragment_gives_its_candidates_with_their_mid() {
        let f = parse_sdpfrag(
            b"a=ice-ufrag:u1\r\na=ice-pwd:p1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
              a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(f.credentials, Some(("u1".into(), "p1".into())));
        assert_eq!(f.candidates.len(), 1);
        assert_eq!(f.candidates[0].sdp_mid.as_deref(), Some("0"));
        assert_eq!(f.candidates[0].sdp_mline_index, Some(0));
        assert!(f.candidates[0].candidate.starts_with("candidate:1 1 udp"));
        assert!(f.end_of_candidates);
    }

    #[test]
    fn bad_fragments_name_their_problem() {
        assert_eq!(
            parse_sdpfrag(b"hello\r\n"),
            Err(FragError::BadLine { line: 1 })
        );
        assert_eq!(parse_sdpfrag(b"a=mid:0\r\n"), Err(FragError::Empty));
        assert_eq!(
            parse_sdpfrag(b"a=ice-ufrag:x\r\n"),
            Err(FragError::HalfCredentials)
        );
        assert!(matches!(
            parse_sdpfrag(b"a=candidate:1 1 udp x 127.0.0.1 5000 typ host\r\n"),
            Err(FragError::BadCandidate { line: 1, .. })
        ));
        assert_eq!(parse_sdpfrag(&[0xff, 0xfe]), Err(FragError::NotText));
        let big = vec![b'a'; MAX_SDPFRAG + 1];
        assert_eq!(
            parse_sdpfrag(&big),
            Err(FragError::TooLarge(MAX_SDPFRAG + 1))
        );
        let many: String = (0..=MAX_FRAG_CANDIDATES)
            .map(|i| {
                format!(
                    "a=candidate:{i} 1 udp 1 127.0.0.1 {} typ host\r\n",
                    1000 + i
                )
            })
            .collect();
        assert_eq!(
            parse_sdpfrag(many.as_bytes()),
            Err(FragError::TooManyCandidates(MAX_FRAG_CANDIDATES + 1))
        );
    }

    #[test]
    fn a_restart_offer_takes_the_new_credentials_and_drops_old_candidates() {
        let o = restart_offer(OFFER, "new", "newpassword");
        assert_eq!(
            ice_credentials(&o),
            Some(("new".into(), "newpassword".into()))
        );
        assert!(!o.contains("oldpassword"));
        assert!(!o.contains("a=candidate"));
        assert!(!o.contains("end-of-candidates"));
        assert_eq!(o.matches("a=ice-ufrag:new").count(), 2);
        assert!(o.contains("a=group:BUNDLE 0 1\r\n"));
    }

    #[test]
    fn the_answer_gets_its_candidates_in_the_right_section() {
        let answer = OFFER.replace(
            "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n",
            "",
        );
        let cands = vec![
            IceCandidate {
                candidate: "candidate:9 1 udp 1 127.0.0.1 6000 typ host".into(),
                sdp_mid: Some("1".into()),
                sdp_mline_index: None,
            },
            IceCandidate {
                candidate: "candidate:8 1 udp 1 127.0.0.1 6001 typ host".into(),
                sdp_mid: None,
                sdp_mline_index: Some(0),
            },
            IceCandidate::end(),
        ];
        let a = answer_with_candidates(&answer, &cands, true);
        let video = a.find("m=video").unwrap();
        let app = a.find("m=application").unwrap();
        let c9 = a.find("candidate:9").unwrap();
        let c8 = a.find("candidate:8").unwrap();
        assert!(video < c8 && c8 < app && app < c9, "{a}");
        assert_eq!(a.matches("a=end-of-candidates").count(), 2);
        let frag = restart_answer_frag(&a, &cands, true);
        assert!(frag.starts_with("a=ice-ufrag:old\r\na=ice-pwd:oldpassword\r\nm=video"));
        assert_eq!(frag.matches("a=candidate:").count(), 2);
        // The fragment the agent sends is one a client can parse.
        let back = parse_sdpfrag(frag.as_bytes()).unwrap();
        assert_eq!(back.candidates.len(), 2);
    }

    #[test]
    fn if_match_compares_entity_tags() {
        assert!(IfMatch::parse(None).matches("\"a\""));
        assert!(IfMatch::parse(Some("*")).matches("\"a\""));
        assert!(IfMatch::parse(Some("\"b\", \"a\"")).matches("\"a\""));
        assert!(!IfMatch::parse(Some("W/\"a\"")).matches("\"a\""));
        assert!(!IfMatch::parse(Some("\"b\"")).matches("\"a\""));
    }
}
