//! WHEP `PATCH` bodies (trickle-ICE SDP fragments) and the SDP the agent
//! builds from them. No input may panic; a fragment that parses keeps its
//! candidates through the answer it is folded into, and the restart
//! fragment the agent answers with parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcam_proto::signaling::whep::{
    IfMatch, answer_with_candidates, ice_credentials, parse_sdpfrag, restart_answer_frag,
    restart_offer,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = IfMatch::parse(Some(&text)).matches("\"x\"");
    // The input as an offer, restarted with fixed credentials.
    let restarted = restart_offer(&text, "u", "p");
    // No candidate line of the old ICE session is left.
    assert!(
        !restarted.lines().any(|l| l.starts_with("a=candidate:")),
        "{restarted:?}"
    );
    if ice_credentials(&text).is_some() {
        assert_eq!(ice_credentials(&restarted), Some(("u".into(), "p".into())));
    }
    let Ok(frag) = parse_sdpfrag(data) else {
        return;
    };
    let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\n";
    let full = answer_with_candidates(answer, &frag.candidates, true);
    // Each candidate gets one line of its own.
    let lines = full.lines().filter(|l| l.starts_with("a=candidate:")).count();
    assert_eq!(lines, frag.candidates.len(), "{full:?}");
    let back = parse_sdpfrag(restart_answer_frag(&full, &frag.candidates, true).as_bytes());
    assert!(back.is_ok(), "{back:?}");
});
