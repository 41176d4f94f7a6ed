//! RTSP from a client: requests and interleaved frames (framing, CSeq,
//! target, Session and Transport headers) and `Authorization` headers. No
//! input may panic; a message that parses takes no more bytes than it was
//! given, and a checked request answers with a response that re-parses as
//! one status line and headers (no header injection through a value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcam_proto::rtsp::{self, Incoming, Response, auth};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Several messages back to back, as a connection's buffer holds them.
    for _ in 0..8 {
        match rtsp::parse(rest) {
            Ok(Some((msg, used))) => {
                assert!(used > 0 && used <= rest.len());
                if let Incoming::Request(r) = msg {
                    let _ = r.target("cam");
                    let _ = r.transport();
                    let session = r.session().unwrap_or("").to_string();
                    let _ = auth::check(
                        r.header("Authorization"),
                        r.method_name(),
                        "nonce",
                        "user",
                        "pass",
                    );
                    let text = Response::new(200, Some(r.cseq()))
                        .header("Session", session)
                        .to_bytes();
                    let text = String::from_utf8_lossy(&text);
                    let head = text.split("\r\n\r\n").next().unwrap_or("");
                    assert_eq!(head.lines().count(), 4, "{head:?}");
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = auth::check(Some(&text), "DESCRIBE", "nonce", "user", "pass");
});
