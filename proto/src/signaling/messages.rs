//! Signaling message payloads (JSON), their parsing with stable error
//! codes, and the agent's replies. Pure: no I/O.

use serde::{Deserialize, Serialize};

/// Largest signaling payload accepted (an SDP offer is typically 3–8 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest ICE candidate string accepted.
pub const MAX_CANDIDATE: usize = 1024;
/// Version of the signaling protocol described in `docs/protocol.md`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Stable error codes sent on `P/error/{clientId}` (documented in `docs/protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The payload is not valid JSON (or not UTF-8).
    BadJson,
    /// Valid JSON, but not the expected message (missing or wrong fields).
    BadMessage,
    /// The SDP could not be used.
    BadSdp,
    /// The payload is over the size limit.
    TooLarge,
    /// The offer's video has no H.264 Constrained Baseline / packetization-mode 1.
    NoVideoCodec,
    /// The viewer limit is reached.
    MaxViewers,
    /// Too many sessions are negotiating at once.
    Busy,
    /// ICE or bye for a client id with no session.
    UnknownSession,
    /// The ICE candidate was rejected.
    BadCandidate,
    /// Too many ICE candidates before the offer.
    TooManyCandidates,
    /// The session did not connect in time.
    Timeout,
    /// Missing, wrong or expired token.
    Unauthorized,
    /// Too many offers from this client id.
    RateLimited,
    /// The client id has a live session and the offer did not present its secret.
    ClientIdInUse,
    /// Something failed inside the agent.
    Internal,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NoVideoCodec => "no_video_codec",
            ErrorCode::MaxViewers => "max_viewers",
            ErrorCode::Busy => "busy",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::BadCandidate => "bad_candidate",
            ErrorCode::TooManyCandidates => "too_many_candidates",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ClientIdInUse => "client_id_in_use",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A rejected message: its code and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct SignalError {
    /// Stable code.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

impl SignalError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// An ICE candidate as signaled (the browser's `RTCIceCandidateInit` shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// `candidate:…` attribute; empty means end of candidates.
    pub candidate: String,
    /// Media id of the m-line.
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Index of the m-line.
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
}

impl IceCandidate {
    /// The end-of-candidates marker.
    pub fn end() -> Self {
        Self {
            candidate: String::new(),
            sdp_mid: None,
            sdp_mline_index: None,
        }
    }

    /// True for the end-of-candidates marker.
    pub fn is_end(&self) -> bool {
        self.candidate.is_empty()
    }
}

/// A viewer's offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The SDP.
    pub sdp: String,
    /// Proof of holding a token (`"auth"`), when the camera needs one.
    pub auth: Option<crate::auth::Proof>,
    /// The offer carried a token itself (`"token"`): refused, since everyone
    /// on the broker could read it.
    pub bearer_token: bool,
    /// The secret of the client's live session (`"session"`), to replace it.
    pub session: Option<String>,
    /// `"restart": true`: an ICE restart of the live session named by
    /// `session` (same DTLS, same video and channels), not a new session.
    pub restart: bool,
}

/// Longest session secret looked at.
pub const MAX_SESSION_SECRET: usize = 128;

/// Refuses a payload over [`MAX_PAYLOAD`] before anything else reads it.
fn check_size(payload: &[u8], what: &str) -> Result<(), SignalError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(SignalError::new(
            ErrorCode::TooLarge,
            format!(
                "{what} is {} bytes; the limit is {MAX_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    Ok(())
}

fn json<'a, T: Deserialize<'a>>(payload: &'a [u8], what: &str) -> Result<T, SignalError> {
    check_size(payload, what)?;
    let text = std::str::from_utf8(payload)
        .map_err(|_| SignalError::new(ErrorCode::BadJson, "payload is not UTF-8"))?;
    // Syntax errors are bad_json; well-formed JSON of the wrong shape is bad_message.
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| SignalError::new(ErrorCode::BadJson, format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(SignalError::new(
            ErrorCode::BadMessage,
            format!("{what} must be a JSON object"),
        ));
    }
    serde_json::from_str(text)
        .map_err(|e| SignalError::new(ErrorCode::BadMessage, format!("invalid {what}: {e}")))
}

#[derive(Deserialize)]
struct RawOffer {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
    #[serde(default)]
    token: Option<serde_json::Value>,
    #[serde(default)]
    auth: Option<crate::auth::Proof>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    restart: bool,
}

/// Parses `{"type":"offer","sdp":"…"}` with optional `"auth"` (a
/// [`crate::auth::Proof`]), `"session"` and `"restart"`.
pub fn parse_offer(payload: &[u8]) -> Result<Offer, SignalError> {
    let raw: RawOffer = json(payload, "offer")?;
    if raw.kind != "offer" {
        return Err(SignalError::new(
            ErrorCode::BadMessage,
            format!("type must be \"offer\", not {:?}", raw.kind),
        ));
    }
    if raw.sdp.trim().is_empty() {
        return Err(SignalError::new(ErrorCode::BadSdp, "sdp is empty"));
    }
    if raw
        .session
        .as_ref()
        .is_some_and(|s| s.len() > MAX_SESSION_SECRET)
    {
        return Err(SignalError::new(
            ErrorCode::BadMessage,
            "session is too long",
        ));
    }
    if raw.restart && raw.session.is_none() {
        return Err(SignalError::new(
            ErrorCode::BadMessage,
            "\"restart\": true needs the live session's \"session\" (from its answer)",
        ));
    }
    Ok(Offer {
        sdp: raw.sdp,
        auth: raw.auth,
        bearer_token: raw.token.is_some(),
        session: raw.session,
        restart: raw.restart,
    })
}

#[derive(Deserialize)]
struct RawCandidate {
    candidate: Option<String>,
    #[serde(rename = "sdpMid", default)]
    sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    sdp_mline_index: Option<u16>,
}

/// Parses `{"candidate":"candidate:…","sdpMid":"0","sdpMLineIndex":0}`; an
/// empty or null candidate is the end-of-candidates marker.
pub fn parse_candidate(payload: &[u8]) -> Result<IceCandidate, SignalError> {
    let raw: RawCandidate = json(payload, "ICE message")?;
    let candidate = raw.candidate.unwrap_or_default();
    let body = candidate.strip_prefix("a=").unwrap_or(&candidate);
    if candidate.len() > MAX_CANDIDATE {
        return Err(SignalError::new(
            ErrorCode::TooLarge,
            "candidate is over 1024 characters",
        ));
    }
    if !body.is_empty() && (!body.starts_with("candidate:") || body.contains(['\r', '\n'])) {
        return Err(SignalError::new(
            ErrorCode::BadCandidate,
            "candidate must be one \"candidate:…\" line (or empty for end of candidates)",
        ));
    }
    Ok(IceCandidate {
        candidate: body.to_string(),
        sdp_mid: raw.sdp_mid,
        sdp_mline_index: raw.sdp_mline_index,
    })
}

#[derive(Deserialize)]
struct RawBye {
    #[serde(default)]
    session: Option<serde_json::Value>,
}

/// Parses a bye: `{"session":"…"}` naming the session it ends (`{}` or an
/// empty payload name none, which ends nothing). Returns the session secret.
pub fn parse_bye(payload: &[u8]) -> Result<Option<String>, SignalError> {
    // The size first: an oversized payload is too_large whatever it holds.
    check_size(payload, "bye")?;
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let raw: RawBye = json(payload, "bye")?;
    match raw.session {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.len() <= MAX_SESSION_SECRET => Ok(Some(s)),
        Some(_) => Err(SignalError::new(
            ErrorCode::BadMessage,
            "session must be the string the answer carried",
        )),
    }
}

/// `{"type":"answer","sdp":"…","session":"…"}`: `session` is the secret a
/// later bye or replacing offer of this client must present.
pub fn answer_json(sdp: &str, session: &str) -> String {
    serde_json::json!({ "type": "answer", "sdp": sdp, "session": session }).to_string()
}

/// A candidate message.
pub fn candidate_json(c: &IceCandidate) -> String {
    serde_json::to_string(c).expect("IceCandidate has only strings and numbers: always serialises")
}

/// `{"code":"…","message":"…"}`
pub fn error_json(e: &SignalError) -> String {
    serde_json::json!({ "code": e.code.as_str(), "message": e.message }).to_string()
}

/// The agent's bye to a viewer (at shutdown or when it ends a session).
pub fn bye_json(reason: &str) -> String {
    serde_json::json!({ "reason": reason }).to_string()
}

/// Video description in `P/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Always `"H264"`.
    pub codec: String,
    /// `profile-level-id` announced.
    pub profile_level_id: String,
    /// Configured width.
    pub width: u32,
    /// Configured height.
    pub height: u32,
    /// Configured frame rate.
    pub fps: u32,
}

/// Audio description in `P/info` (absent when `[audio]` is all off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioInfo {
    /// Always `"opus"`.
    pub codec: String,
    /// Always 48000.
    pub sample_rate: u32,
    /// The microphone's channels.
    pub channels: u8,
    /// A viewer that offers to receive audio gets the camera's microphone.
    pub microphone: bool,
    /// A viewer with the control role may talk back after taking the
    /// floor (`audio.talk`); one talker at a time.
    pub talkback: bool,
}

/// A pin in `P/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinInfo {
    /// Pin name.
    pub name: String,
    /// `output`, `input`, `pwm` or `servo`.
    pub mode: String,
    /// Current value for inputs/outputs (bool) or PWM duty / servo angle (number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Smallest value a command may set (PWM duty, servo angle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest value a command may set (PWM duty, servo angle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// The retained `P/info` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// Signaling protocol version.
    pub protocol: u32,
    /// `rtcam`.
    pub agent: String,
    /// Agent version.
    pub version: String,
    /// Device name.
    pub device: String,
    /// The video stream.
    pub video: VideoInfo,
    /// Viewer limit.
    pub max_viewers: usize,
    /// Declared GPIO pins.
    pub pins: Vec<PinInfo>,
    /// The audio track and talkback, when either is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<impl std::fmt::Debug, SignalError>) -> ErrorCode {
        r.expect_err("must be rejected").code
    }

    #[test]
    fn offers_parse_and_bad_ones_get_codes() {
        let o = parse_offer(br#"{"type":"offer","sdp":"v=0\r\n","token":"t"}"#).expect("valid");
        assert_eq!(o.sdp, "v=0\r\n");
        assert!(o.bearer_token && o.auth.is_none() && o.session.is_none());
        let o = parse_offer(
            br#"{"type":"offer","sdp":"v=0","auth":{"token_id":"s.00","ts":5,"proof":"x"},"session":"abc"}"#,
        )
        .expect("valid");
        assert_eq!(o.auth.map(|a| a.ts), Some(5));
        assert_eq!(o.session.as_deref(), Some("abc"));
        assert!(!o.bearer_token);
        assert_eq!(
            code(parse_offer(
                br#"{"type":"offer","sdp":"v=0","auth":{"ts":"x"}}"#
            )),
            ErrorCode::BadMessage
        );
        assert_eq!(code(parse_offer(b"{not json")), ErrorCode::BadJson);
        assert_eq!(code(parse_offer(&[0xff, 0xfe])), ErrorCode::BadJson);
        assert_eq!(code(parse_offer(b"[1,2]")), ErrorCode::BadMessage);
        assert_eq!(
            code(parse_offer(br#"{"type":"answer","sdp":"v=0"}"#)),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(parse_offer(br#"{"type":"offer"}"#)),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(parse_offer(br#"{"type":"offer","sdp":42}"#)),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(parse_offer(br#"{"type":"offer","sdp":"  "}"#)),
            ErrorCode::BadSdp
        );
        let o = parse_offer(br#"{"type":"offer","sdp":"v=0","session":"abc","restart":true}"#)
            .expect("a restart");
        assert!(o.restart && o.session.as_deref() == Some("abc"));
        assert_eq!(
            code(parse_offer(
                br#"{"type":"offer","sdp":"v=0","restart":true}"#
            )),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(parse_offer(
                br#"{"type":"offer","sdp":"v=0","session":"abc","restart":"yes"}"#
            )),
            ErrorCode::BadMessage
        );
        let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(MAX_PAYLOAD));
        assert_eq!(code(parse_offer(big.as_bytes())), ErrorCode::TooLarge);
    }

    #[test]
    fn candidates_and_end_markers() {
        let c = parse_candidate(br#"{"candidate":"candidate:1 1 udp 2 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}"#)
            .expect("valid");
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert!(
            parse_candidate(br#"{"candidate":""}"#)
                .expect("end")
                .is_end()
        );
        assert!(
            parse_candidate(br#"{"candidate":null}"#)
                .expect("end")
                .is_end()
        );
        let a = parse_candidate(br#"{"candidate":"a=candidate:1 1 udp 2 1.2.3.4 9 typ host"}"#)
            .expect("a= prefix");
        assert!(a.candidate.starts_with("candidate:"));
        assert_eq!(
            code(parse_candidate(br#"{"candidate":"x=1\r\na=evil"}"#)),
            ErrorCode::BadCandidate
        );
        assert_eq!(
            code(parse_candidate(br#"{"candidate":"candidate:1\r\na=evil"}"#)),
            ErrorCode::BadCandidate
        );
        let long = format!(r#"{{"candidate":"candidate:{}"}}"#, "1".repeat(2000));
        assert_eq!(code(parse_candidate(long.as_bytes())), ErrorCode::TooLarge);
        assert_eq!(
            code(parse_candidate(br#"{"candidate":5}"#)),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn bye_is_lenient_but_not_garbage() {
        assert_eq!(parse_bye(b"{}"), Ok(None));
        assert_eq!(parse_bye(b""), Ok(None));
        assert_eq!(parse_bye(br#"{"reason":"done"}"#), Ok(None));
        assert_eq!(parse_bye(br#"{"session":"s1"}"#), Ok(Some("s1".into())));
        assert_eq!(code(parse_bye(br#"{"session":5}"#)), ErrorCode::BadMessage);
        assert_eq!(code(parse_bye(b"bye!")), ErrorCode::BadJson);
        assert_eq!(code(parse_bye(b"[]")), ErrorCode::BadMessage);
    }

    #[test]
    fn oversized_byes_are_too_large_even_when_blank() {
        let blank = vec![b' '; MAX_PAYLOAD];
        assert!(parse_bye(&blank).is_ok(), "at the limit: read");
        let blank = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(code(parse_bye(&blank)), ErrorCode::TooLarge);
        let padded = format!("{{}}{}", " ".repeat(MAX_PAYLOAD));
        assert_eq!(code(parse_bye(padded.as_bytes())), ErrorCode::TooLarge);
    }

    #[test]
    fn replies_are_json_with_codes() {
        let e = SignalError::new(ErrorCode::MaxViewers, "8 viewers already");
        let v: serde_json::Value = serde_json::from_str(&error_json(&e)).expect("json");
        assert_eq!(v["code"], "max_viewers");
        let a: serde_json::Value = serde_json::from_str(&answer_json("v=0", "s1")).expect("json");
        assert_eq!(
            (a["type"].as_str(), a["sdp"].as_str(), a["session"].as_str()),
            (Some("answer"), Some("v=0"), Some("s1"))
        );
        assert_eq!(candidate_json(&IceCandidate::end()), r#"{"candidate":""}"#);
    }

    #[test]
    fn error_codes_serialise_like_as_str() {
        for c in [
            ErrorCode::BadJson,
            ErrorCode::TooManyCandidates,
            ErrorCode::NoVideoCodec,
        ] {
            assert_eq!(serde_json::to_value(c).expect("json"), c.as_str());
        }
    }
}
