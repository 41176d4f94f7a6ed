//! Signaling payloads from MQTT: offers, ICE candidates and byes (JSON),
//! and the SDP summary of an offer. No input may panic; every rejection
//! carries one of the codes documented for that message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcam_proto::peer::sdp::summarize_offer;
use rtcam_proto::signaling::messages::{
    ErrorCode, MAX_CANDIDATE, MAX_PAYLOAD, candidate_json, parse_bye, parse_candidate, parse_offer,
};

fuzz_target!(|data: &[u8]| {
    match parse_offer(data) {
        Ok(offer) => {
            assert!(!offer.sdp.trim().is_empty());
            let _ = summarize_offer(&offer.sdp);
        }
        Err(e) => assert!(
            matches!(
                e.code,
                ErrorCode::BadJson
                    | ErrorCode::BadMessage
                    | ErrorCode::BadSdp
                    | ErrorCode::TooLarge
            ),
            "offer: {e}"
        ),
    }
    match parse_candidate(data) {
        Ok(c) => {
            assert!(c.candidate.len() <= MAX_CANDIDATE);
            assert!(c.is_end() || c.candidate.starts_with("candidate:"));
            assert!(!c.candidate.contains(['\r', '\n']));
            // What the agent would send back parses to the same candidate.
            assert_eq!(parse_candidate(candidate_json(&c).as_bytes()), Ok(c));
        }
        Err(e) => assert!(
            matches!(
                e.code,
                ErrorCode::BadJson
                    | ErrorCode::BadMessage
                    | ErrorCode::BadCandidate
                    | ErrorCode::TooLarge
            ),
            "candidate: {e}"
        ),
    }
    if let Err(e) = parse_bye(data) {
        assert!(
            matches!(
                e.code,
                ErrorCode::BadJson | ErrorCode::BadMessage | ErrorCode::TooLarge
            ),
            "bye: {e}"
        );
    }
    if data.len() > MAX_PAYLOAD {
        let too_large = Err(ErrorCode::TooLarge);
        assert_eq!(parse_offer(data).map(|_| ()).map_err(|e| e.code), too_large);
        assert_eq!(
            parse_candidate(data).map(|_| ()).map_err(|e| e.code),
            too_large
        );
        assert_eq!(parse_bye(data).map(|_| ()).map_err(|e| e.code), too_large);
    }
    // The raw text as an SDP (the offer's sdp field is arbitrary text too).
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = summarize_offer(text);
    }
});
