//! What rtcam needs to know about an SDP offer before handing it to the
//! WebRTC stack: is it plausibly SDP, does it want video, can that video be
//! H.264 Constrained Baseline with packetization-mode 1. Pure.

/// Facts read from an offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferSummary {
    /// The offer has a video m-line the viewer can receive.
    pub wants_video: bool,
    /// That video m-line lists H.264 with packetization-mode=1 and a Baseline-compatible profile.
    pub video_h264: bool,
    /// The offer has an `m=application` (DataChannel) section.
    pub has_data_channel: bool,
    /// `a=candidate:` lines in the offer (each costs the camera checks).
    pub candidates: usize,
    /// The first `a=fingerprint:` value (the offerer's DTLS key).
    pub fingerprint: Option<String>,
    /// The offer has an Opus audio m-line the viewer can receive (the microphone).
    pub audio_recv: bool,
    /// The offer has an Opus audio m-line the viewer sends on (talkback).
    pub audio_send: bool,
}

/// Why the text is not an SDP offer rtcam can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not SDP at all.
    #[error("not an SDP description (it must start with v=0 and have o=, s= and m= lines)")]
    NotSdp,
    /// Neither video nor a DataChannel.
    #[error("the offer has neither a video m-line nor a DataChannel")]
    NothingToNegotiate,
}

/// Whether an `a=fmtp` parameter list allows our H.264 stream (Constrained
/// Baseline, packetization-mode 1). Missing profile-level-id means 42000a.
fn fmtp_accepts_ours(params: &str) -> bool {
    let mut mode = "0";
    let mut profile = "42000a";
    for kv in params.split(';') {
        let Some((k, v)) = kv.trim().split_once('=') else {
            continue;
        };
        match k.trim() {
            "packetization-mode" => mode = v.trim(),
            "profile-level-id" => profile = v.trim(),
            _ => {}
        }
    }
    let profile = profile.to_ascii_lowercase();
    // Baseline (42) or Constrained Baseline (42e0/42c0/4240…) decoders take our stream;
    // the WebRTC stack matches on the first two bytes, 42e0.
    mode == "1" && profile.len() == 6 && profile.starts_with("42") && profile[2..4] == *"e0"
}

/// Reads an offer's media sections.
pub fn summarize_offer(sdp: &str) -> Result<OfferSummary, SdpError> {
    let lines: Vec<&str> = sdp.lines().map(str::trim_end).collect();
    let starts_ok = lines.first().is_some_and(|l| *l == "v=0");
    let has = |p: &str| lines.iter().any(|l| l.starts_with(p));
    if !starts_ok || !has("o=") || !has("s=") || !has("m=") {
        return Err(SdpError::NotSdp);
    }
    let mut summary = OfferSummary::default();
    // Walk m-sections; within a video section collect H.264 payload types and their fmtp.
    let mut in_video = false;
    let mut video_inactive = false;
    let mut h264_pts: Vec<String> = Vec::new();
    let mut fmtp: Vec<(String, String)> = Vec::new();
    let finish_video = |h264: &mut Vec<String>,
                        fmtp: &mut Vec<(String, String)>,
                        inactive: bool,
                        s: &mut OfferSummary| {
        if !inactive {
            s.wants_video = true;
            if h264.iter().any(|pt| {
                fmtp.iter()
                    .any(|(p, params)| p == pt && fmtp_accepts_ours(params))
            }) {
                s.video_h264 = true;
            }
        }
        h264.clear();
        fmtp.clear();
    };
    // The audio section being read: its direction and whether it lists Opus.
    let mut audio: Option<(&str, bool)> = None;
    let finish_audio = |a: &mut Option<(&str, bool)>, s: &mut OfferSummary| {
        if let Some((dir, true)) = a.take() {
            s.audio_recv |= matches!(dir, "sendrecv" | "recvonly");
            s.audio_send |= matches!(dir, "sendrecv" | "sendonly");
        }
    };
    for line in &lines {
        if line.starts_with("a=candidate:") {
            summary.candidates += 1;
        } else if summary.fingerprint.is_none()
            && let Some(fp) = line.strip_prefix("a=fingerprint:")
        {
            summary.fingerprint = Some(fp.trim().to_string());
        }
        if let Some(m) = line.strip_prefix("m=") {
            if in_video {
                finish_video(&mut h264_pts, &mut fmtp, video_inactive, &mut summary);
            }
            finish_audio(&mut audio, &mut summary);
            let media = m.split_whitespace().next().unwrap_or("");
            // A port of 0 rejects the section.
            let port_zero = m.split_whitespace().nth(1) == Some("0");
            if media == "audio" && !port_zero {
                audio = Some(("sendrecv", false));
            }
            in_video = media == "video" && !port_zero;
            video_inactive = false;
            if media == "application" && !port_zero {
                summary.has_data_channel = true;
            }
        } else if let Some((dir, opus)) = &mut audio {
            match *line {
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive" => *dir = &line[2..],
                _ => {
                    if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                        let codec = rest.split_whitespace().nth(1).unwrap_or("");
                        *opus |= codec.to_ascii_lowercase().starts_with("opus/48000");
                    }
                }
            }
        } else if in_video {
            if *line == "a=inactive" || *line == "a=sendonly" {
                video_inactive = true;
            } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                let mut parts = rest.split_whitespace();
                let (pt, codec) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                if codec.to_ascii_uppercase().starts_with("H264/") {
                    h264_pts.push(pt.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
                if let Some((pt, params)) = rest.split_once(' ') {
                    fmtp.push((pt.to_string(), params.to_string()));
                }
            }
        }
    }
    if in_video {
        finish_video(&mut h264_pts, &mut fmtp, video_inactive, &mut summary);
    }
    finish_audio(&mut audio, &mut summary);
    if !summary.wants_video && !summary.has_data_channel {
        return Err(SdpError::NothingToNegotiate);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

    fn offer(body: &str) -> String {
        format!("{HEAD}{body}")
    }

    const CHROME_VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96 102 104\r\na=mid:0\r\na=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";
    const DATA: &str = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n";

    #[test]
    fn chrome_style_offer_with_video_and_data() {
        let s = summarize_offer(&offer(&format!("{CHROME_VIDEO}{DATA}"))).expect("valid");
        assert_eq!(
            s,
            OfferSummary {
                wants_video: true,
                video_h264: true,
                has_data_channel: true,
                candidates: 0,
                fingerprint: None,
                audio_recv: false,
                audio_send: false,
            }
        );
    }

    #[test]
    fn opus_audio_directions_are_read() {
        let audio = |dir: &str| {
            format!(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:2\r\n{dir}a=rtpmap:111 opus/48000/2\r\n\
                 a=rtpmap:0 PCMU/8000\r\n"
            )
        };
        let read = |dir: &str| {
            let s = summarize_offer(&offer(&format!("{CHROME_VIDEO}{}{DATA}", audio(dir))))
                .expect("valid");
            (s.audio_recv, s.audio_send)
        };
        assert_eq!(read("a=sendrecv\r\n"), (true, true));
        assert_eq!(read(""), (true, true), "sendrecv by default");
        assert_eq!(read("a=recvonly\r\n"), (true, false));
        assert_eq!(read("a=sendonly\r\n"), (false, true));
        assert_eq!(read("a=inactive\r\n"), (false, false));
        let pcmu = "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let s = summarize_offer(&offer(&format!("{pcmu}{DATA}"))).expect("valid");
        assert!(!s.audio_recv && !s.audio_send, "no Opus, no audio");
        let rejected = "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let s = summarize_offer(&offer(&format!("{rejected}{DATA}"))).expect("valid");
        assert!(!s.audio_recv);
    }

    #[test]
    fn candidates_and_the_fingerprint_are_counted_and_read() {
        let body = format!(
            "a=fingerprint:sha-256 AB:CD\r\n{CHROME_VIDEO}a=candidate:1 1 udp 2 127.0.0.1 9 typ host\r\n\
             a=candidate:2 1 udp 2 127.0.0.1 10 typ host\r\n{DATA}a=fingerprint:sha-256 FF\r\n"
        );
        let s = summarize_offer(&offer(&body)).expect("valid");
        assert_eq!(s.candidates, 2);
        assert_eq!(s.fingerprint.as_deref(), Some("sha-256 AB:CD"));
    }

    #[test]
    fn data_channel_only_offer() {
        let s = summarize_offer(&offer(DATA)).expect("valid");
        assert!(!s.wants_video && s.has_data_channel);
    }

    #[test]
    fn video_without_usable_h264() {
        let vp8 = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n";
        let s = summarize_offer(&offer(vp8)).expect("valid SDP");
        assert!(s.wants_video && !s.video_h264);
        let mode0 = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=0;profile-level-id=42e01f\r\n";
        assert!(!summarize_offer(&offer(mode0)).expect("valid").video_h264);
        let high = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=1;profile-level-id=640c1f\r\n";
        assert!(!summarize_offer(&offer(high)).expect("valid").video_h264);
    }

    #[test]
    fn rejected_or_inactive_video_is_not_wanted() {
        let rejected = "m=video 0 UDP/TLS/RTP/SAVPF 102\r\n";
        let s = summarize_offer(&offer(&format!("{rejected}{DATA}"))).expect("valid");
        assert!(!s.wants_video);
        let inactive = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=inactive\r\n";
        let s = summarize_offer(&offer(&format!("{inactive}{DATA}"))).expect("valid");
        assert!(!s.wants_video);
    }

    #[test]
    fn garbage_is_not_sdp() {
        assert_eq!(summarize_offer(""), Err(SdpError::NotSdp));
        assert_eq!(summarize_offer("hello"), Err(SdpError::NotSdp));
        assert_eq!(summarize_offer("v=0\r\nm=video"), Err(SdpError::NotSdp));
        let audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(
            summarize_offer(&offer(audio)),
            Err(SdpError::NothingToNegotiate)
        );
    }
}
