//! Property tests for every parser that takes outside input: MQTT topics
//! and client ids, signaling JSON and SDP offers, DataChannel commands and
//! GPIO-over-MQTT payloads, and the configuration (file, environment,
//! flags) and viewer tokens. Each parser must be total (no input panics), and each has
//! structural properties: valid input generated from a strategy is
//! accepted and round-trips, invalid input gets the documented code and
//! names what was wrong. The `fuzz/` targets drive the same parsers with
//! libFuzzer (`.ci/fuzz`).

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use rtcam::auth::{AuthError, Authorizer, MAX_TOKEN_LEN, Role, StaticToken, mint, parse_ttl};
use rtcam::config::keys::{self, KEYS, Kind as KeyKind};
use rtcam::config::settings::{AuthMode, MqttScheme, check_topic_prefix, parse_mqtt_url};
use rtcam::config::{ConfigError, Layers, Loaded, Settings, load, render_effective};
use rtcam::control::commands::{Command, NAMES};
use rtcam::control::protocol::{ControlCode, MAX_MESSAGE, Request, parse_request};
use rtcam::gpio::mqtt::{SetRequest, parse_set, pin_of_set_topic, set_topic, state_topic};
use rtcam::gpio::pins::{
    MAX_SERVO_PULSE_US, MIN_SERVO_PULSE_US, PinMode, PinRef, Pull, ServoTarget,
};
use rtcam::peer::sdp::{OfferSummary, SdpError, summarize_offer};
use rtcam::signaling::messages::{
    ErrorCode, IceCandidate, MAX_CANDIDATE, MAX_PAYLOAD, Offer, candidate_json, parse_bye,
    parse_candidate, parse_offer,
};
use rtcam::signaling::topics::{BadClientId, ClientId, Kind, TopicError, Topics};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::time::Duration;

// ---------------------------------------------------------------- strategies

/// The documented client id rule, written independently of the parser.
fn is_client_id(s: &str) -> bool {
    (1..=64).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn client_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

/// Strings near the client id rule: valid ones, too long ones, ones with a
/// stray character, and anything at all.
fn near_client_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,70}",
        "[A-Za-z0-9_-]{0,30}[^A-Za-z0-9_-][A-Za-z0-9_-]{0,30}",
        any::<String>(),
    ]
}

/// Ids the rule rejects: empty, over 64, or with a character outside the set.
fn bad_client_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9_-]{65,90}",
        "[A-Za-z0-9_-]{0,30}[^A-Za-z0-9_-][^/]{0,30}",
    ]
}

/// A topic prefix as the config accepts it: levels without wildcards.
fn prefix() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,8}(/[a-zA-Z0-9_ .-]{1,8}){0,3}"
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Offer), Just(Kind::Ice), Just(Kind::Bye)]
}

fn topic_for(t: &Topics, kind: Kind, id: &ClientId) -> String {
    match kind {
        Kind::Offer => t.offer(id),
        Kind::Ice => t.ice(id),
        Kind::Bye => t.bye(id),
    }
}

/// Topics under `prefix` that look like ours or almost, and arbitrary text.
fn topic_near(prefix: String) -> impl Strategy<Value = String> {
    prop_oneof![
        "(/|//)?(offer|ice|bye|answer|error|status|info|gpio|OFFER|)(/|//)?.{0,70}"
            .prop_map(move |rest| format!("{prefix}{rest}")),
        any::<String>(),
    ]
}

fn pin_modes() -> [PinMode; 4] {
    [
        PinMode::Output {
            initial: false,
            failsafe: None,
        },
        PinMode::Input {
            pull: Pull::None,
            debounce: Duration::ZERO,
        },
        PinMode::Pwm {
            frequency_hz: 1000.0,
            min_duty: 0.0,
            max_duty: 1.0,
            initial: 0.0,
            failsafe: None,
        },
        PinMode::Servo {
            min_us: 1000,
            max_us: 2000,
            max_angle: 180.0,
            initial: 90.0,
            failsafe: None,
        },
    ]
}

/// Keys that the parsers look for, and others.
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(&[
            "type", "sdp", "token", "candidate", "sdpMid", "sdpMLineIndex", "id", "cmd",
            "pin", "value", "ms", "duty", "angle", "pulse_us", "kbps", "control",
            "frequency_hz", "reason",
        ][..])
        .prop_map(String::from),
        1 => ".{0,8}",
    ]
}

/// Arbitrary JSON; floats only when `floats` (serde_json does not promise
/// that a float re-parses to the identical bits, so round trips avoid them).
fn json_value(floats: bool) -> impl Strategy<Value = Value> {
    let float = if floats {
        prop_oneof![
            (-1e6f64..1e6).prop_map(Value::from).boxed(),
            any::<f64>().prop_map(Value::from).boxed(),
        ]
        .boxed()
    } else {
        Just(Value::Null).boxed()
    };
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..70_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        float,
        ".{0,16}".prop_map(Value::from),
        select(
            &[
                "offer",
                "answer",
                "candidate:1 1 udp 2 1.2.3.4 9 typ host",
                "ping",
                "gpio.set"
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(json_key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object(floats: bool) -> impl Strategy<Value = Map<String, Value>> {
    btree_map(json_key(), json_value(floats), 0..8).prop_map(|m| m.into_iter().collect())
}

fn non_object() -> impl Strategy<Value = Value> {
    json_value(true).prop_filter("not an object", |v| !v.is_object())
}

/// Payloads: raw bytes, arbitrary JSON, and JSON shaped like the messages.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..300),
        json_value(true).prop_map(|v| v.to_string().into_bytes()),
        (json_object(true), ".{0,40}", any::<bool>()).prop_map(|(mut m, s, offer)| {
            if offer {
                m.insert("type".into(), "offer".into());
                m.insert("sdp".into(), s.into());
            } else {
                m.insert("candidate".into(), format!("candidate:{s}").into());
            }
            Value::Object(m).to_string().into_bytes()
        }),
    ]
}

fn code<T: std::fmt::Debug>(r: Result<T, rtcam::signaling::messages::SignalError>) -> ErrorCode {
    r.expect_err("must be rejected").code
}

/// `text` padded with trailing spaces (valid JSON whitespace) to `len` bytes.
fn padded(text: &str, len: usize) -> Vec<u8> {
    assert!(text.len() <= len);
    let mut out = text.as_bytes().to_vec();
    out.resize(len, b' ');
    out
}

// -------------------------------------------------------------- MQTT topics

proptest! {
    #[test]
    fn client_id_is_accepted_iff_1_to_64_of_the_charset(s in near_client_id()) {
        let parsed = ClientId::parse(&s);
        prop_assert_eq!(parsed.is_ok(), is_client_id(&s), "{:?}", s);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert_eq!(id.to_string(), s);
        } else {
            prop_assert_eq!(parsed, Err(BadClientId));
        }
    }

    #[test]
    fn viewer_topics_round_trip(
        prefix in prefix(),
        trailing_slash in any::<bool>(),
        kind in kind(),
        id in client_id(),
    ) {
        let written = if trailing_slash { format!("{prefix}/") } else { prefix.clone() };
        let t = Topics::new(&written);
        prop_assert_eq!(t.prefix(), prefix.as_str());
        let id = ClientId::parse(&id).expect("generated ids are valid");
        let topic = topic_for(&t, kind, &id);
        prop_assert_eq!(t.parse(&topic), Ok((kind, id.clone())));
        // What the agent itself publishes is never taken as viewer input.
        for other in [t.answer(&id), t.error(&id), t.status(), t.info()] {
            prop_assert_eq!(t.parse(&other), Err(TopicError::NotOurs), "{}", other);
        }
        // The same topic under another prefix is not ours.
        let elsewhere = Topics::new(&format!("{prefix}x"));
        prop_assert_eq!(elsewhere.parse(&topic), Err(TopicError::NotOurs));
    }

    #[test]
    fn bad_client_ids_in_viewer_topics_are_reported(
        prefix in prefix(),
        kind in select(&["offer", "ice", "bye"][..]),
        id in bad_client_id(),
    ) {
        let t = Topics::new(&prefix);
        prop_assert_eq!(
            t.parse(&format!("{prefix}/{kind}/{id}")),
            Err(TopicError::BadClientId(BadClientId))
        );
    }

    #[test]
    fn topic_parsing_is_total_and_sound(
        (prefix, topic) in prop_oneof![prefix(), any::<String>()]
            .prop_flat_map(|p| (Just(p.clone()), topic_near(p))),
    ) {
        let t = Topics::new(&prefix);
        match t.parse(&topic) {
            // Whatever parses is exactly the topic the agent would build.
            Ok((kind, id)) => prop_assert_eq!(topic_for(&t, kind, &id), topic),
            Err(TopicError::NotOurs) => {}
            Err(TopicError::BadClientId(_)) => {
                prop_assert!(topic.starts_with(&format!("{}/", t.prefix())), "{:?}", topic)
            }
        }
    }

    #[test]
    fn gpio_set_topics_round_trip(prefix in prefix(), name in "[A-Za-z0-9_-]{1,32}") {
        let t = Topics::new(&prefix);
        let set = set_topic(&t, &name);
        let state = state_topic(&t, &name);
        let nested = format!("{prefix}/gpio/{name}/x/set");
        prop_assert_eq!(pin_of_set_topic(&t, &set), Some(name.as_str()));
        prop_assert_eq!(pin_of_set_topic(&t, &state), None);
        prop_assert_eq!(pin_of_set_topic(&t, &nested), None);
    }

    #[test]
    fn gpio_set_topic_parsing_is_sound(
        (prefix, topic) in prop_oneof![prefix(), any::<String>()]
            .prop_flat_map(|p| (Just(p.clone()), topic_near(p))),
    ) {
        let t = Topics::new(&prefix);
        if let Some(pin) = pin_of_set_topic(&t, &topic) {
            prop_assert!(!pin.is_empty() && !pin.contains('/'));
            prop_assert_eq!(set_topic(&t, pin), topic);
        }
    }

    #[test]
    fn gpio_set_payloads_are_total(payload in vec(any::<u8>(), 0..64)) {
        for mode in pin_modes() {
            match parse_set(&mode, &payload) {
                Ok(SetRequest::Duty(x) | SetRequest::Angle(x)) => prop_assert!(x.is_finite()),
                Ok(_) => {
                    let output = matches!(mode, PinMode::Output { .. });
                    prop_assert!(output, "levels only for outputs");
                }
                Err(_) => {}
            }
        }
        prop_assert!(parse_set(&pin_modes()[1], &payload).is_err(), "inputs cannot be set");
    }

    #[test]
    fn gpio_output_payloads_are_words_in_any_case(
        word in "(on|off|true|false|toggle|1|0|onn|of|yes|)",
        upper in vec(any::<bool>(), 6),
        pad in "[ \t\r\n]{0,2}",
    ) {
        let cased: String = word
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
            .collect();
        let payload = format!("{pad}{cased}{pad}");
        let want = match word.as_str() {
            "on" | "true" | "1" => Some(SetRequest::Level(true)),
            "off" | "false" | "0" => Some(SetRequest::Level(false)),
            "toggle" => Some(SetRequest::Toggle),
            _ => None,
        };
        prop_assert_eq!(parse_set(&pin_modes()[0], payload.as_bytes()).ok(), want);
    }

    #[test]
    fn gpio_numeric_payloads_round_trip(x in any::<f64>()) {
        let text = x.to_string();
        let duty = parse_set(&pin_modes()[2], text.as_bytes());
        let angle = parse_set(&pin_modes()[3], text.as_bytes());
        if x.is_finite() {
            prop_assert_eq!(duty, Ok(SetRequest::Duty(x)));
            prop_assert_eq!(angle, Ok(SetRequest::Angle(x)));
        } else {
            prop_assert!(duty.is_err() && angle.is_err(), "{}", text);
        }
    }
}

// ----------------------------------------------------------- signaling JSON

proptest! {
    #[test]
    fn signaling_parsers_are_total_and_use_documented_codes(payload in payload()) {
        match parse_offer(&payload) {
            Ok(o) => prop_assert!(!o.sdp.trim().is_empty()),
            Err(e) => prop_assert!(matches!(
                e.code,
                ErrorCode::BadJson | ErrorCode::BadMessage | ErrorCode::BadSdp
            ), "{}", e),
        }
        match parse_candidate(&payload) {
            Ok(c) => {
                prop_assert!(c.is_end() || c.candidate.starts_with("candidate:"));
                prop_assert!(!c.candidate.contains(['\r', '\n']));
                prop_assert!(c.candidate.len() <= MAX_CANDIDATE);
            }
            Err(e) => prop_assert!(matches!(
                e.code,
                ErrorCode::BadJson | ErrorCode::BadMessage | ErrorCode::BadCandidate
                    | ErrorCode::TooLarge
            ), "{}", e),
        }
        if let Err(e) = parse_bye(&payload) {
            prop_assert!(matches!(e.code, ErrorCode::BadJson | ErrorCode::BadMessage), "{}", e);
        }
        if std::str::from_utf8(&payload).is_err() {
            prop_assert_eq!(code(parse_offer(&payload)), ErrorCode::BadJson);
            prop_assert_eq!(code(parse_candidate(&payload)), ErrorCode::BadJson);
            prop_assert_eq!(code(parse_bye(&payload)), ErrorCode::BadJson);
        }
    }

    #[test]
    fn offers_round_trip(
        sdp in ".{0,300}".prop_filter("not blank", |s| !s.trim().is_empty()),
        token in option::of(".{0,40}"),
        proof in option::of(("[!-~]{0,40}", any::<u64>(), "[A-Za-z0-9_-]{0,43}")),
        session in option::of("[!-~]{0,64}"),
        restart in any::<bool>(),
        extra in json_object(true),
    ) {
        let mut m = extra;
        m.insert("type".into(), "offer".into());
        m.insert("sdp".into(), sdp.clone().into());
        match &token {
            Some(t) => m.insert("token".into(), t.clone().into()),
            None => m.remove("token"),
        };
        let auth = proof.map(|(token_id, ts, proof)| rtcam::auth::Proof { token_id, ts, proof });
        match &auth {
            Some(a) => m.insert("auth".into(), serde_json::to_value(a).expect("plain data")),
            None => m.remove("auth"),
        };
        match &session {
            Some(s) => m.insert("session".into(), s.clone().into()),
            None => m.remove("session"),
        };
        m.insert("restart".into(), restart.into());
        let payload = Value::Object(m).to_string();
        if restart && session.is_none() {
            // A restart names the session it restarts.
            prop_assert_eq!(parse_offer(payload.as_bytes()).map_err(|e| e.code), Err(ErrorCode::BadMessage));
        } else {
            let want = Offer { sdp, auth, bearer_token: token.is_some(), session, restart };
            prop_assert_eq!(parse_offer(payload.as_bytes()), Ok(want));
        }
    }

    #[test]
    fn offers_with_blank_sdp_or_wrong_type_are_rejected(
        blank in "[ \t\r\n]{0,10}",
        kind in prop_oneof![".{0,10}".prop_map(Value::from), non_object()],
    ) {
        let p = json!({"type": "offer", "sdp": blank}).to_string();
        prop_assert_eq!(code(parse_offer(p.as_bytes())), ErrorCode::BadSdp);
        if kind != "offer" {
            let p = json!({"type": kind, "sdp": "v=0"}).to_string();
            prop_assert_eq!(code(parse_offer(p.as_bytes())), ErrorCode::BadMessage);
        }
    }

    #[test]
    fn non_objects_are_bad_message(v in non_object()) {
        let p = v.to_string();
        prop_assert_eq!(code(parse_offer(p.as_bytes())), ErrorCode::BadMessage);
        prop_assert_eq!(code(parse_candidate(p.as_bytes())), ErrorCode::BadMessage);
        prop_assert_eq!(code(parse_bye(p.as_bytes())), ErrorCode::BadMessage);
    }

    #[test]
    fn truncated_json_is_bad_json(m in json_object(true), cut in 1usize..8) {
        let mut text = Value::Object(m).to_string();
        // Dropping the closing brace (and maybe more) never leaves valid JSON.
        let keep = text.len().saturating_sub(cut);
        let keep = (0..=keep).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(keep);
        if !text.trim().is_empty() {
            prop_assert_eq!(code(parse_offer(text.as_bytes())), ErrorCode::BadJson);
            prop_assert_eq!(code(parse_candidate(text.as_bytes())), ErrorCode::BadJson);
            prop_assert_eq!(code(parse_bye(text.as_bytes())), ErrorCode::BadJson);
        }
    }

    #[test]
    fn payloads_over_the_limit_are_too_large_and_at_it_are_read(extra in 1usize..4096) {
        let offer = r#"{"type":"offer","sdp":"v=0\r\n"}"#;
        let cand = r#"{"candidate":"candidate:1 1 udp 2 127.0.0.1 9 typ host"}"#;
        let bye = "{}";
        // "": a blank bye is accepted, but not once it is over the limit.
        for text in [offer, cand, bye, ""] {
            let over = padded(text, MAX_PAYLOAD + extra);
            prop_assert_eq!(code(parse_offer(&over)), ErrorCode::TooLarge);
            prop_assert_eq!(code(parse_candidate(&over)), ErrorCode::TooLarge);
            prop_assert_eq!(code(parse_bye(&over)), ErrorCode::TooLarge);
        }
        prop_assert!(parse_offer(&padded(offer, MAX_PAYLOAD)).is_ok());
        prop_assert!(parse_candidate(&padded(cand, MAX_PAYLOAD)).is_ok());
        prop_assert!(parse_bye(&padded(bye, MAX_PAYLOAD)).is_ok());
    }

    #[test]
    fn candidate_lines_round_trip(
        body in "candidate:[^\r\n]{0,200}",
        a_prefix in any::<bool>(),
        mid in option::of(".{0,8}"),
        index in option::of(any::<u16>()),
    ) {
        let line = if a_prefix { format!("a={body}") } else { body.clone() };
        let mut m = Map::new();
        m.insert("candidate".into(), line.into());
        if let Some(mid) = &mid {
            m.insert("sdpMid".into(), mid.clone().into());
        }
        if let Some(i) = index {
            m.insert("sdpMLineIndex".into(), i.into());
        }
        let want = IceCandidate { candidate: body, sdp_mid: mid, sdp_mline_index: index };
        prop_assert_eq!(parse_candidate(Value::Object(m).to_string().as_bytes()), Ok(want.clone()));
        // What the agent sends reads back the same.
        prop_assert_eq!(parse_candidate(candidate_json(&want).as_bytes()), Ok(want));
    }

    #[test]
    fn candidates_must_be_one_candidate_line(
        before in "[^\r\n]{0,40}",
        brk in "\r|\n|\r\n",
        after in "[^\r\n]{0,40}",
        other in "[^\r\n]{1,40}",
    ) {
        let two_lines = json!({"candidate": format!("candidate:{before}{brk}{after}")});
        prop_assert_eq!(
            code(parse_candidate(two_lines.to_string().as_bytes())),
            ErrorCode::BadCandidate
        );
        let body = other.strip_prefix("a=").unwrap_or(&other);
        if !body.is_empty() && !body.starts_with("candidate:") {
            let p = json!({"candidate": other}).to_string();
            prop_assert_eq!(code(parse_candidate(p.as_bytes())), ErrorCode::BadCandidate);
        }
    }

    #[test]
    fn candidate_length_limit(len in (MAX_CANDIDATE - 20)..(MAX_CANDIDATE + 20)) {
        let line = format!("candidate:{}", "1".repeat(len - "candidate:".len()));
        let r = parse_candidate(json!({ "candidate": line }).to_string().as_bytes());
        if len <= MAX_CANDIDATE {
            prop_assert!(r.is_ok());
        } else {
            prop_assert_eq!(code(r), ErrorCode::TooLarge);
        }
    }

    #[test]
    fn end_of_candidates_and_any_bye_object_are_accepted(
        m in json_object(true),
        ws in "[ \t\r\n]{0,4}",
    ) {
        let mut end = m.clone();
        end.insert("candidate".into(), Value::Null);
        end.remove("sdpMid");
        end.remove("sdpMLineIndex");
        prop_assert!(parse_candidate(Value::Object(end).to_string().as_bytes()).is_ok_and(|c| c.is_end()));
        let mut bye = m;
        bye.remove("session");
        prop_assert_eq!(parse_bye(Value::Object(bye).to_string().as_bytes()), Ok(None));
        prop_assert_eq!(parse_bye(ws.as_bytes()), Ok(None));
    }
}

// -------------------------------------------------------------- SDP offers

/// One payload type in a generated video section.
#[derive(Debug, Clone)]
struct Pt {
    pt: u8,
    codec: &'static str,
    mode: Option<&'static str>,
    profile: Option<&'static str>,
    extra: bool,
}

fn pt() -> impl Strategy<Value = Pt> {
    (
        96u8..128,
        prop_oneof![
            4 => Just("H264"),
            1 => Just("h264"),
            2 => select(&["VP8", "VP9", "AV1", "H265"][..]),
        ],
        prop_oneof![
            1 => Just(None),
            3 => Just(Some("1")),
            1 => Just(Some(" 1")),
            1 => select(&["0", "2"][..]).prop_map(Some),
        ],
        prop_oneof![
            1 => Just(None),
            3 => Just(Some("42e01f")),
            1 => select(&["42E01F", "42e034"][..]).prop_map(Some),
            3 => select(&["42001f", "42c01f", "640c1f", "4d001f", "42e0", "42e01f0"][..])
                .prop_map(Some),
        ],
        any::<bool>(),
    )
        .prop_map(|(pt, codec, mode, profile, extra)| Pt {
            pt,
            codec,
            mode,
            profile,
            extra,
        })
}

/// What the summary must say about a video section, from its parts.
fn h264_usable(p: &Pt) -> bool {
    let profile = p.profile.unwrap_or("42000a").to_ascii_lowercase();
    p.codec.eq_ignore_ascii_case("h264")
        && p.mode.map(str::trim) == Some("1")
        && profile.len() == 6
        && profile.starts_with("42e0")
}

#[derive(Debug, Clone)]
struct OfferParts {
    audio_first: bool,
    video: Option<(bool, &'static str, Vec<Pt>)>,
    data: Option<bool>,
    eol: &'static str,
    attr_order: Vec<usize>,
}

fn offer_parts() -> impl Strategy<Value = OfferParts> {
    (
        any::<bool>(),
        option::weighted(
            0.8,
            (
                proptest::bool::weighted(0.8),
                prop_oneof![
                    3 => select(&["recvonly", "sendrecv", ""][..]),
                    1 => select(&["sendonly", "inactive"][..]),
                ],
                vec(pt(), 0..4),
            ),
        ),
        option::of(any::<bool>()),
        select(&["\r\n", "\n"][..]),
        Just((0..16).collect::<Vec<usize>>()).prop_shuffle(),
    )
        .prop_map(|(audio_first, mut video, data, eol, attr_order)| {
            // Distinct payload types, as in any real offer.
            if let Some((_, _, pts)) = &mut video {
                for (i, p) in pts.iter_mut().enumerate() {
                    p.pt = 96 + 8 * i as u8 + p.pt % 8;
                }
            }
            OfferParts {
                audio_first,
                video,
                data,
                eol,
                attr_order,
            }
        })
}

fn render_offer(o: &OfferParts) -> String {
    let mut lines = vec![
        "v=0".to_string(),
        "o=- 4611 2 IN IP4 127.0.0.1".into(),
        "s=-".into(),
        "t=0 0".into(),
    ];
    if o.audio_first {
        lines.push("m=audio 9 UDP/TLS/RTP/SAVPF 111".into());
        lines.push("a=rtpmap:111 opus/48000/2".into());
        // Audio H.264 lines must not count as video.
        lines.push("a=rtpmap:112 H264/90000".into());
        lines.push("a=fmtp:112 packetization-mode=1;profile-level-id=42e01f".into());
    }
    if let Some((port_open, dir, pts)) = &o.video {
        let port = if *port_open { 9 } else { 0 };
        let list: Vec<String> = pts.iter().map(|p| p.pt.to_string()).collect();
        lines.push(format!(
            "m=video {port} UDP/TLS/RTP/SAVPF {}",
            list.join(" ")
        ));
        let mut attrs = vec!["a=mid:0".to_string()];
        if !dir.is_empty() {
            attrs.push(format!("a={dir}"));
        }
        for p in pts {
            attrs.push(format!("a=rtpmap:{} {}/90000", p.pt, p.codec));
            let mut params = Vec::new();
            if p.extra {
                params.push("level-asymmetry-allowed=1".to_string());
            }
            if let Some(m) = p.mode {
                params.push(format!("packetization-mode={m}"));
            }
            if let Some(pr) = p.profile {
                params.push(format!("profile-level-id={pr}"));
            }
            if !params.is_empty() {
                attrs.push(format!("a=fmtp:{} {}", p.pt, params.join(";")));
            }
        }
        // Attribute order within the section does not matter.
        let mut order: Vec<usize> = o
            .attr_order
            .iter()
            .copied()
            .filter(|&i| i < attrs.len())
            .collect();
        order.extend(o.attr_order.len()..attrs.len());
        lines.extend(order.into_iter().map(|i| attrs[i].clone()));
    }
    if let Some(open) = o.data {
        let port = if open { 9 } else { 0 };
        lines.push(format!(
            "m=application {port} UDP/DTLS/SCTP webrtc-datachannel"
        ));
        lines.push("a=mid:1".into());
        lines.push("a=sctp-port:5000".into());
    }
    if !o.audio_first {
        lines.push("m=audio 9 UDP/TLS/RTP/SAVPF 111".into());
    }
    let mut text = lines.join(o.eol);
    text.push_str(o.eol);
    text
}

/// Lines that look like SDP, in any order, for totality.
fn sdp_like() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "(v|o|s|t|m|a|c)=.{0,30}",
        "m=(video|application|audio) (0|9|x)( [A-Z/]{0,12})?( [0-9]{1,3}){0,3}",
        "a=(rtpmap|fmtp):[0-9]{0,3}( .{0,40})?",
        "a=fmtp:[0-9]{1,3} (packetization-mode=[01 ]{0,2}|profile-level-id=.{0,8}|;|=| ){0,6}",
        "a=(inactive|sendonly|recvonly)",
        ".{0,20}",
    ];
    (
        any::<bool>(),
        vec(line, 0..20),
        select(&["\r\n", "\n", "\r"][..]),
    )
        .prop_map(|(head, lines, eol)| {
            let mut text = if head {
                format!("v=0{eol}o=-{eol}s=-{eol}")
            } else {
                String::new()
            };
            text.push_str(&lines.join(eol));
            text
        })
}

proptest! {
    #[test]
    fn offer_summary_matches_the_offer(o in offer_parts()) {
        let wants_video = o.video.as_ref().is_some_and(|(open, dir, _)| {
            *open && *dir != "sendonly" && *dir != "inactive"
        });
        let video_h264 = wants_video
            && o.video.as_ref().is_some_and(|(_, _, pts)| pts.iter().any(h264_usable));
        let has_data_channel = o.data == Some(true);
        let want = if wants_video || has_data_channel {
            // The leading audio section lists Opus (sendrecv by default); the
            // trailing one lists no codec the agent knows.
            Ok(OfferSummary { wants_video, video_h264, has_data_channel, candidates: 0, fingerprint: None, audio_recv: o.audio_first, audio_send: o.audio_first })
        } else {
            Err(SdpError::NothingToNegotiate)
        };
        let sdp = render_offer(&o);
        prop_assert_eq!(summarize_offer(&sdp), want, "{}", sdp);
    }

    #[test]
    fn offer_summary_is_total(text in prop_oneof![sdp_like(), any::<String>()]) {
        let r = summarize_offer(&text);
        let first = text.lines().next().map(str::trim_end);
        if first != Some("v=0") {
            prop_assert_eq!(r, Err(SdpError::NotSdp));
        } else if let Ok(s) = r {
            prop_assert!(s.wants_video || s.has_data_channel);
            prop_assert!(!s.video_h264 || s.wants_video);
        }
    }
}

// ----------------------------------------------------- DataChannel commands

/// The parameters each command takes (docs/protocol.md).
const PARAMS: &[(&str, &[&str])] = &[
    ("ping", &[]),
    ("gpio.list", &[]),
    ("gpio.get", &["pin"]),
    ("gpio.set", &["pin", "value"]),
    ("gpio.toggle", &["pin"]),
    ("gpio.pulse", &["pin", "ms", "value"]),
    ("pwm.set", &["pin", "duty", "frequency_hz"]),
    ("servo.set", &["pin", "angle", "pulse_us"]),
    ("video.keyframe", &[]),
    ("video.bitrate", &["kbps"]),
    ("video.status", &[]),
    ("camera.controls", &[]),
    ("camera.set", &["control", "value"]),
    ("snapshot", &[]),
    ("record.list", &[]),
    ("record.start", &[]),
    ("record.stop", &[]),
    ("record.delete", &["name"]),
    ("audio.talk", &["on"]),
];

/// A valid request for each command, as text, and the command it must parse to.
fn valid_command() -> impl Strategy<Value = (String, Command)> {
    let pin = "[A-Za-z0-9_-]{1,16}";
    // Decimal fractions: they print and re-parse to the same f64.
    let frac =
        |den: f64, range: std::ops::RangeInclusive<i64>| range.prop_map(move |k| k as f64 / den);
    prop_oneof![
        select(
            &[
                "ping",
                "gpio.list",
                "video.keyframe",
                "video.status",
                "camera.controls",
                "snapshot",
                "record.list",
                "record.start",
                "record.stop"
            ][..]
        )
        .prop_map(|c| {
            let want = match c {
                "ping" => Command::Ping,
                "gpio.list" => Command::GpioList,
                "video.keyframe" => Command::VideoKeyframe,
                "video.status" => Command::VideoStatus,
                "snapshot" => Command::Snapshot,
                "record.list" => Command::RecordList,
                "record.start" => Command::RecordStart,
                "record.stop" => Command::RecordStop,
                _ => Command::CameraControls,
            };
            (json!({ "cmd": c }), want)
        }),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}/[0-9]{2}-[0-9]{2}-[0-9]{2}\\.mp4".prop_map(|name| {
            (
                json!({"cmd": "record.delete", "name": name}),
                Command::RecordDelete { name },
            )
        }),
        (pin, any::<bool>()).prop_map(|(pin, toggle)| if toggle {
            (
                json!({"cmd": "gpio.toggle", "pin": pin}),
                Command::GpioToggle { pin },
            )
        } else {
            (
                json!({"cmd": "gpio.get", "pin": pin}),
                Command::GpioGet { pin },
            )
        }),
        (pin, any::<bool>()).prop_map(|(pin, value)| {
            (
                json!({"cmd": "gpio.set", "pin": pin, "value": value}),
                Command::GpioSet { pin, value },
            )
        }),
        (pin, 1i64.., option::of(any::<bool>())).prop_map(|(pin, ms, value)| {
            let mut j = json!({"cmd": "gpio.pulse", "pin": pin, "ms": ms});
            if let Some(v) = value {
                j["value"] = v.into();
            }
            (
                j,
                Command::GpioPulse {
                    pin,
                    ms: ms as u64,
                    value,
                },
            )
        }),
        (
            pin,
            frac(1000.0, 0..=1000),
            option::of(frac(10.0, 1..=10_000_000))
        )
            .prop_map(|(pin, duty, frequency_hz)| {
                let mut j = json!({"cmd": "pwm.set", "pin": pin, "duty": duty});
                if let Some(f) = frequency_hz {
                    j["frequency_hz"] = f.into();
                }
                (
                    j,
                    Command::PwmSet {
                        pin,
                        duty,
                        frequency_hz,
                    },
                )
            }),
        (pin, frac(10.0, -3600..=3600)).prop_map(|(pin, a)| {
            (
                json!({"cmd": "servo.set", "pin": pin, "angle": a}),
                Command::ServoSet {
                    pin,
                    target: ServoTarget::Angle(a),
                },
            )
        }),
        (pin, MIN_SERVO_PULSE_US..=MAX_SERVO_PULSE_US).prop_map(|(pin, us)| {
            (
                json!({"cmd": "servo.set", "pin": pin, "pulse_us": us}),
                Command::ServoSet {
                    pin,
                    target: ServoTarget::PulseUs(us),
                },
            )
        }),
        (1u32..).prop_map(|kbps| (
            json!({"cmd": "video.bitrate", "kbps": kbps}),
            Command::VideoBitrate { kbps }
        )),
        ("[a-z_]{1,20}", any::<i64>()).prop_map(|(control, value)| {
            (
                json!({"cmd": "camera.set", "control": control, "value": value}),
                Command::CameraSet { control, value },
            )
        }),
        any::<bool>().prop_map(|on| (
            json!({"cmd": "audio.talk", "on": on}),
            Command::AudioTalk { on }
        )),
    ]
    .prop_map(|(j, want)| (j.to_string(), want))
}

/// Commands a `view` session may send.
const READ_ONLY: &[&str] = &[
    "ping",
    "gpio.list",
    "gpio.get",
    "video.status",
    "camera.controls",
    "snapshot",
    "record.list",
];

fn request_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn command_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(NAMES).prop_map(String::from),
        1 => "[a-z.]{1,16}",
        1 => ".{1,16}",
    ]
}

/// Requests for known commands with parameters of any type, and others.
fn request_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        json_value(true).prop_map(|v| v.to_string()),
        (request_id(), command_name(), json_object(true)).prop_map(|(id, cmd, mut m)| {
            if !id.is_null() {
                m.insert("id".into(), id);
            }
            m.insert("cmd".into(), cmd.into());
            Value::Object(m).to_string()
        }),
    ]
}

fn request(cmd: &str, params: Value) -> Request {
    let Value::Object(params) = params else {
        panic!("params must be an object")
    };
    Request {
        id: Value::Null,
        cmd: cmd.into(),
        params,
    }
}

proptest! {
    #[test]
    fn requests_are_total_and_use_documented_codes(text in request_text()) {
        match parse_request(&text) {
            Ok(req) => {
                prop_assert!(!req.cmd.is_empty());
                prop_assert!(!req.params.contains_key("id") && !req.params.contains_key("cmd"));
                prop_assert!(req.id.is_null() || req.id.is_number() || req.id.is_string());
                match Command::parse(&req) {
                    Ok(c) => {
                        prop_assert!(NAMES.contains(&req.cmd.as_str()));
                        prop_assert_eq!(c.mutates(), !READ_ONLY.contains(&req.cmd.as_str()));
                    }
                    Err(e) if NAMES.contains(&req.cmd.as_str()) => {
                        prop_assert_eq!(e.code, ControlCode::BadParams, "{}", e)
                    }
                    Err(e) => {
                        prop_assert_eq!(e.code, ControlCode::UnknownCmd);
                        prop_assert!(e.message.contains("gpio.set"), "lists the commands");
                    }
                }
            }
            Err((id, e)) => {
                prop_assert!(matches!(e.code, ControlCode::BadJson | ControlCode::BadParams), "{}", e);
                prop_assert!(id.is_null() || id.is_number() || id.is_string());
            }
        }
    }

    #[test]
    fn valid_commands_parse_to_what_they_say((text, want) in valid_command(), id in request_id()) {
        let mut v: Value = serde_json::from_str(&text).expect("generated JSON");
        v["id"] = id.clone();
        let req = parse_request(&v.to_string()).map_err(|(_, e)| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&req.id, &id);
        let cmd = req.cmd.clone();
        prop_assert_eq!(Command::parse(&req), Ok(want.clone()));
        prop_assert_eq!(want.mutates(), !READ_ONLY.contains(&cmd.as_str()), "{}", cmd);
    }

    #[test]
    fn requests_round_trip(
        id in request_id(),
        cmd in command_name(),
        params in json_object(false),
    ) {
        let mut m = params.clone();
        m.remove("id");
        m.remove("cmd");
        let want = Request { id: id.clone(), cmd: cmd.clone(), params: m.clone() };
        m.insert("id".into(), id);
        m.insert("cmd".into(), cmd.into());
        prop_assert_eq!(parse_request(&Value::Object(m).to_string()), Ok(want));
    }

    #[test]
    fn request_size_limit(extra in 0usize..4096, over in any::<bool>()) {
        let text = r#"{"id":1,"cmd":"ping"}"#;
        let len = if over { MAX_MESSAGE + 1 + extra } else { MAX_MESSAGE - extra.min(MAX_MESSAGE - text.len()) };
        let padded = String::from_utf8(padded(text, len)).expect("ascii");
        match parse_request(&padded) {
            Ok(r) => prop_assert!(!over && r.cmd == "ping"),
            Err((id, e)) => {
                prop_assert!(over);
                prop_assert_eq!((id, e.code), (Value::Null, ControlCode::BadJson));
            }
        }
    }

    #[test]
    fn malformed_requests_are_bad_json(v in non_object(), junk in "[^ \t\r\n]{1,3}") {
        let (id, e) = parse_request(&v.to_string()).expect_err("not an object");
        prop_assert_eq!((id, e.code), (Value::Null, ControlCode::BadJson));
        let text = format!(r#"{{"cmd":"ping"}}{junk}"#);
        prop_assert_eq!(parse_request(&text).expect_err("trailing junk").1.code, ControlCode::BadJson);
    }

    #[test]
    fn bad_ids_and_missing_commands_are_bad_params(
        id in request_id(),
        bad_id in prop_oneof![any::<bool>().prop_map(Value::from), vec(json_value(true), 0..3).prop_map(Value::Array), json_object(true).prop_map(Value::Object)],
        cmd in prop_oneof![Just(None), Just(Some(Value::from(""))), non_object().prop_filter("not a non-empty string", |v| v.as_str().is_none_or(str::is_empty)).prop_map(Some)],
    ) {
        let (got, e) = parse_request(&json!({"id": bad_id, "cmd": "ping"}).to_string()).expect_err("bad id");
        prop_assert_eq!((got, e.code), (Value::Null, ControlCode::BadParams));
        let mut m = Map::new();
        m.insert("id".into(), id.clone());
        if let Some(c) = cmd {
            m.insert("cmd".into(), c);
        }
        // The reply can still carry the id.
        let (got, e) = parse_request(&Value::Object(m).to_string()).expect_err("no cmd");
        prop_assert_eq!((got, e.code), (id, ControlCode::BadParams));
    }

    #[test]
    fn unknown_parameters_are_named(
        (cmd, allowed) in select(PARAMS),
        extra in "[a-z_]{1,12}",
    ) {
        prop_assume!(!allowed.contains(&extra.as_str()));
        let mut params = Map::new();
        params.insert(extra.clone(), 1.into());
        let e = Command::parse(&request(cmd, Value::Object(params))).expect_err("unknown parameter");
        prop_assert_eq!(e.code, ControlCode::BadParams);
        prop_assert!(e.message.contains(&extra), "{}", e.message);
    }

    #[test]
    fn gpio_commands_take_their_values(
        pin in ".{0,12}",
        value in any::<bool>(),
        ms in prop_oneof![any::<i64>(), -3i64..3],
        pulse_value in option::of(any::<bool>()),
    ) {
        let set = Command::parse(&request("gpio.set", json!({"pin": pin, "value": value})));
        let mut pulse = json!({"pin": pin, "ms": ms});
        if let Some(v) = pulse_value {
            pulse["value"] = v.into();
        }
        let pulse = Command::parse(&request("gpio.pulse", pulse));
        if pin.is_empty() {
            prop_assert_eq!(set.expect_err("empty pin").code, ControlCode::BadParams);
        } else {
            prop_assert_eq!(set, Ok(Command::GpioSet { pin: pin.clone(), value }));
            if ms > 0 {
                prop_assert_eq!(pulse, Ok(Command::GpioPulse { pin, ms: ms as u64, value: pulse_value }));
            } else {
                let e = pulse.expect_err("ms must be positive");
                prop_assert!(e.code == ControlCode::BadParams && e.message.contains("ms"));
            }
        }
    }

    #[test]
    fn pwm_duty_must_be_within_0_1(
        duty in prop_oneof![-0.5f64..1.5, any::<f64>(), Just(0.0), Just(1.0)],
        freq in option::of(0.1f64..1e6),
    ) {
        let mut p = json!({"pin": "dim", "duty": duty});
        if let Some(f) = freq {
            p["frequency_hz"] = f.into();
        }
        let r = Command::parse(&request("pwm.set", p));
        if duty.is_finite() && (0.0..=1.0).contains(&duty) {
            prop_assert_eq!(r, Ok(Command::PwmSet { pin: "dim".into(), duty, frequency_hz: freq }));
        } else {
            // Non-finite numbers serialise as null: "duty is required".
            let e = r.expect_err("out of range");
            prop_assert!(e.code == ControlCode::BadParams && e.message.contains("duty"), "{}", e);
        }
    }

    #[test]
    fn integer_parameters_are_range_checked(n in prop_oneof![any::<i64>(), -2i64..2, 98i64..102, 4998i64..5002, (u32::MAX as i64 - 2)..(u32::MAX as i64 + 2)]) {
        let kbps = Command::parse(&request("video.bitrate", json!({ "kbps": n })));
        match u32::try_from(n) {
            Ok(k) if k > 0 => prop_assert_eq!(kbps, Ok(Command::VideoBitrate { kbps: k })),
            _ => prop_assert_eq!(kbps.expect_err("kbps").code, ControlCode::BadParams),
        }
        let servo = Command::parse(&request("servo.set", json!({"pin": "pan", "pulse_us": n})));
        match u32::try_from(n) {
            Ok(us) if (MIN_SERVO_PULSE_US..=MAX_SERVO_PULSE_US).contains(&us) => {
                prop_assert_eq!(servo, Ok(Command::ServoSet { pin: "pan".into(), target: ServoTarget::PulseUs(us) }))
            }
            _ => prop_assert_eq!(servo.expect_err("pulse_us").code, ControlCode::BadParams),
        }
        let cam = Command::parse(&request("camera.set", json!({"control": "brightness", "value": n})));
        prop_assert_eq!(cam, Ok(Command::CameraSet { control: "brightness".into(), value: n }));
    }

    #[test]
    fn servo_takes_exactly_one_of_angle_and_pulse(
        angle in option::of(-400f64..400.0),
        pulse in option::of(prop_oneof![0i64..6000, 90i64..110, 4990i64..5010]),
    ) {
        let mut p = json!({"pin": "pan"});
        if let Some(a) = angle {
            p["angle"] = a.into();
        }
        if let Some(u) = pulse {
            p["pulse_us"] = u.into();
        }
        let r = Command::parse(&request("servo.set", p));
        match (angle, pulse) {
            (Some(a), None) => prop_assert_eq!(r, Ok(Command::ServoSet { pin: "pan".into(), target: ServoTarget::Angle(a) })),
            (None, Some(u)) if (i64::from(MIN_SERVO_PULSE_US)..=i64::from(MAX_SERVO_PULSE_US)).contains(&u) => {
                prop_assert_eq!(r, Ok(Command::ServoSet { pin: "pan".into(), target: ServoTarget::PulseUs(u as u32) }))
            }
            (None, Some(_)) => {
                let e = r.expect_err("pulse out of range");
                prop_assert_eq!(e.code, ControlCode::BadParams);
                prop_assert!(e.message.contains("pulse_us"), "{}", e.message);
            }
            _ => prop_assert_eq!(r.expect_err("one of them").code, ControlCode::BadParams),
        }
    }
}

// ------------------------------------------------------------ configuration

/// An integer key, its documented range and how to read it back.
struct IntKey {
    path: &'static str,
    min: i64,
    max: i64,
    even: bool,
    get: fn(&Settings) -> i64,
}

const INT_KEYS: &[IntKey] = &[
    IntKey {
        path: "video.width",
        min: 160,
        max: 3840,
        even: true,
        get: |s| s.video.width.into(),
    },
    IntKey {
        path: "video.height",
        min: 120,
        max: 2160,
        even: true,
        get: |s| s.video.height.into(),
    },
    IntKey {
        path: "video.fps",
        min: 1,
        max: 60,
        even: false,
        get: |s| s.video.fps.into(),
    },
    IntKey {
        path: "video.bitrate_kbps",
        min: 50,
        max: 50_000,
        even: false,
        get: |s| s.video.bitrate_kbps.into(),
    },
    IntKey {
        path: "video.keyframe_interval_ms",
        min: 100,
        max: 60_000,
        even: false,
        get: |s| s.video.keyframe_interval.as_millis() as i64,
    },
    IntKey {
        path: "video.encoder_threads",
        min: 0,
        max: 4,
        even: false,
        get: |s| s.video.encoder_threads.into(),
    },
    IntKey {
        path: "video.min_bitrate_kbps",
        min: 50,
        max: 50_000,
        even: false,
        get: |s| s.video.min_bitrate_kbps.into(),
    },
    IntKey {
        path: "video.max_bitrate_kbps",
        min: 50,
        max: 50_000,
        even: false,
        get: |s| s.video.max_bitrate_kbps.into(),
    },
    IntKey {
        path: "webrtc.max_viewers",
        min: 1,
        max: 64,
        even: false,
        get: |s| s.webrtc.max_viewers as i64,
    },
    IntKey {
        path: "webrtc.negotiation_timeout_ms",
        min: 1_000,
        max: 300_000,
        even: false,
        get: |s| s.webrtc.negotiation_timeout.as_millis() as i64,
    },
    IntKey {
        path: "webrtc.disconnected_timeout_ms",
        min: 1_000,
        max: 300_000,
        even: false,
        get: |s| s.webrtc.disconnected_timeout.as_millis() as i64,
    },
    IntKey {
        path: "webrtc.playout_delay_ms",
        min: 0,
        max: 10_000,
        even: false,
        get: |s| s.webrtc.playout_delay.map_or(-1, |d| d.as_millis() as i64),
    },
    IntKey {
        path: "gpio.max_pulse_ms",
        min: 1,
        max: 600_000,
        even: false,
        get: |s| s.gpio.max_pulse.as_millis() as i64,
    },
    IntKey {
        path: "control.rate_limit",
        min: 1,
        max: 1000,
        even: false,
        get: |s| s.control.rate_limit.into(),
    },
    IntKey {
        path: "control.max_message_bytes",
        min: 256,
        max: MAX_MESSAGE as i64,
        even: false,
        get: |s| s.control.max_message_bytes as i64,
    },
    IntKey {
        path: "webrtc.max_negotiating",
        min: 1,
        max: 64,
        even: false,
        get: |s| s.webrtc.max_negotiating as i64,
    },
    IntKey {
        path: "webrtc.early_ice_candidates",
        min: 1,
        max: 256,
        even: false,
        get: |s| s.webrtc.early_ice_candidates as i64,
    },
    IntKey {
        path: "webrtc.early_ice_clients",
        min: 1,
        max: 1024,
        even: false,
        get: |s| s.webrtc.early_ice_clients as i64,
    },
    IntKey {
        path: "mqtt.max_payload_bytes",
        min: 1024,
        max: MAX_PAYLOAD as i64,
        even: false,
        get: |s| s.mqtt.max_payload_bytes as i64,
    },
    IntKey {
        path: "mqtt.offers_per_minute",
        min: 1,
        max: 600,
        even: false,
        get: |s| s.mqtt.offers_per_minute.into(),
    },
    IntKey {
        path: "http.max_connections",
        min: 4,
        max: 4096,
        even: false,
        get: |s| s.http.max_connections as i64,
    },
    IntKey {
        path: "http.header_timeout_ms",
        min: 500,
        max: 300_000,
        even: false,
        get: |s| s.http.header_timeout.as_millis() as i64,
    },
    IntKey {
        path: "http.idle_timeout_ms",
        min: 1_000,
        max: 3_600_000,
        even: false,
        get: |s| s.http.idle_timeout.as_millis() as i64,
    },
];

#[derive(Debug, Clone, Copy)]
enum Via {
    File,
    Env,
    Flag,
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

/// Loads one key set through one layer.
fn load_one(path: &str, text: &str, toml_value: &str, via: Via) -> Result<Loaded, ConfigError> {
    let key = keys::find(path).expect("a registered key");
    match via {
        Via::Env => load(&Layers {
            env: vec![(key.env(), text.into())],
            ..Layers::default()
        }),
        Via::Flag => load(&Layers {
            flags: vec![(key, text.into())],
            ..Layers::default()
        }),
        Via::File => {
            let (section, name) = key.split();
            let f = toml_file(&format!("[{section}]\n{name} = {toml_value}\n"));
            load(&Layers {
                file: Some(f.path()),
                ..Layers::default()
            })
        }
    }
}

fn origin_text(path: &str, via: Via) -> String {
    let key = keys::find(path).expect("a registered key");
    match via {
        Via::Env => format!("environment {}", key.env()),
        Via::Flag => format!("flag --{}", key.flag()),
        Via::File => "(file ".into(),
    }
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![Just(Via::File), Just(Via::Env), Just(Via::Flag)]
}

/// Values for a config file: each key gets a value of its kind, mostly
/// plausible, sometimes wild.
fn str_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        select(
            &[
                "test",
                "auto",
                "/dev/video0",
                "video0",
                "query",
                "gather",
                "disabled",
                "5",
                "3.1.1",
                "4",
                "mqtt://127.0.0.1:1883",
                "ws://localhost:9001/mqtt",
                "mqtts://[::1]:8883",
                "mqtt://u@h",
                "127.0.0.1:8080",
                "0.0.0.0:1883",
                "[::1]:1884",
                "off",
                "",
                "rtcam/cam1",
                "a/+/b",
                "cam-1",
                "sim",
                "cdev",
                "rppal",
                "homeassistant",
                "Garage cam",
            ][..]
        )
        .prop_map(|s| toml::Value::String(s.into())),
        ".{0,20}".prop_map(toml::Value::String),
    ]
}

fn int_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        -2i64..2,
        40i64..70,
        (0i64..400).prop_map(|n| n * 10),
        (0i64..400).prop_map(|n| n * 1000),
        any::<i64>(),
    ]
    .prop_map(toml::Value::Integer)
}

fn num_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        (-10i64..400).prop_map(toml::Value::Integer),
        (-1.0f64..400.0).prop_map(toml::Value::Float),
        Just(toml::Value::Float(f64::NAN)),
        any::<bool>().prop_map(toml::Value::Boolean),
    ]
}

fn pin_entry() -> impl Strategy<Value = toml::Value> {
    (
        prop_oneof!["[a-z]{1,6}", ".{0,6}"],
        prop_oneof![
            (0i64..40).prop_map(toml::Value::Integer),
            (-2i64..2000).prop_map(toml::Value::Integer),
            "(gpiochip0|pwmchip0|chip):[0-9]{1,2}".prop_map(toml::Value::String),
            "GPIO[0-9]{1,2}".prop_map(toml::Value::String),
        ],
        select(&["output", "input", "pwm", "servo", "analog"][..]),
        vec(
            (
                select(
                    &[
                        "initial",
                        "failsafe",
                        "active_low",
                        "pull",
                        "debounce_ms",
                        "frequency_hz",
                        "min_duty",
                        "max_duty",
                        "min_us",
                        "max_us",
                        "max_angle",
                    ][..],
                ),
                num_value(),
            ),
            0..3,
        ),
        option::of(select(&["up", "down", "none", "sideways"][..])),
    )
        .prop_map(|(name, pin, mode, fields, pull)| {
            let mut t = toml::Table::new();
            t.insert("name".into(), toml::Value::String(name));
            t.insert("pin".into(), pin);
            t.insert("mode".into(), toml::Value::String(mode.into()));
            for (k, v) in fields {
                // Give each field a value of the type its struct field has.
                let v = match (k, v) {
                    ("active_low", v) => toml::Value::Boolean(v.as_bool().unwrap_or(true)),
                    ("debounce_ms" | "min_us" | "max_us", toml::Value::Float(f))
                        if f.is_finite() =>
                    {
                        toml::Value::Integer(f as i64)
                    }
                    ("debounce_ms" | "min_us" | "max_us", toml::Value::Integer(i)) => {
                        toml::Value::Integer(i * 10)
                    }
                    ("debounce_ms" | "min_us" | "max_us", _) => toml::Value::Integer(1500),
                    (
                        "frequency_hz" | "min_duty" | "max_duty" | "max_angle",
                        toml::Value::Integer(i),
                    ) => toml::Value::Float(i as f64 / 100.0),
                    (
                        "frequency_hz" | "min_duty" | "max_duty" | "max_angle",
                        toml::Value::Boolean(_),
                    ) => toml::Value::Float(0.5),
                    (_, v) => v,
                };
                t.insert(k.into(), v);
            }
            if let Some(p) = pull {
                t.insert("pull".into(), toml::Value::String(p.into()));
            }
            toml::Value::Table(t)
        })
}

fn array_value(path: &str) -> BoxedStrategy<toml::Value> {
    match path {
        "auth.tokens" => vec(
            (
                prop_oneof![3 => "[A-Za-z0-9_-]{16,40}", 1 => ".{0,20}"],
                prop_oneof![3 => select(&["view", "control"][..]), 1 => select(&["admin", ""][..])],
            ),
            0..3,
        )
        .prop_map(|tokens| {
            toml::Value::Array(
                tokens
                    .into_iter()
                    .map(|(token, role)| {
                        let mut t = toml::Table::new();
                        t.insert("token".into(), toml::Value::String(token));
                        t.insert("role".into(), toml::Value::String(role.into()));
                        toml::Value::Table(t)
                    })
                    .collect(),
            )
        })
        .boxed(),
        "gpio.pins" => vec(pin_entry(), 0..4).prop_map(toml::Value::Array).boxed(),
        "http.hosts" => vec(
            prop_oneof![
                3 => "[a-z][a-z0-9-]{0,8}(\\.[a-z]{2,4}){0,2}\\.?",
                1 => "[0-9]{1,3}(\\.[0-9]{1,3}){3}",
                1 => "\\[(::1|fe80::[0-9a-f]{1,4})\\]",
                1 => ".{0,12}",
            ],
            0..3,
        )
        .prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect()))
        .boxed(),
        "webrtc.ice_servers" => vec(
            (
                vec("(stun|turn|turns|http):[a-z.]{0,10}(:3478)?", 0..3),
                option::of("[a-z]{1,4}"),
                option::of("[a-z]{1,4}"),
            ),
            0..3,
        )
        .prop_map(|servers| {
            toml::Value::Array(
                servers
                    .into_iter()
                    .map(|(urls, user, cred)| {
                        let mut t = toml::Table::new();
                        t.insert(
                            "urls".into(),
                            toml::Value::Array(urls.into_iter().map(toml::Value::String).collect()),
                        );
                        if let Some(u) = user {
                            t.insert("username".into(), toml::Value::String(u));
                        }
                        if let Some(c) = cred {
                            t.insert("credential".into(), toml::Value::String(c));
                        }
                        toml::Value::Table(t)
                    })
                    .collect(),
            )
        })
        .boxed(),
        "motion.include" | "motion.exclude" => vec(
            (-0.5f64..1.5, -0.5f64..1.5, -0.5f64..1.5, -0.5f64..1.5),
            0..3,
        )
        .prop_map(|zones| {
            toml::Value::Array(
                zones
                    .into_iter()
                    .map(|(x, y, w, h)| {
                        let mut t = toml::Table::new();
                        for (k, v) in [("x", x), ("y", y), ("w", w), ("h", h)] {
                            t.insert(k.into(), toml::Value::Float(v));
                        }
                        toml::Value::Table(t)
                    })
                    .collect(),
            )
        })
        .boxed(),
        _ => vec(prop_oneof!["(eth|wlan)[0-9]", ".{0,17}"], 0..3)
            .prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect()))
            .boxed(),
    }
}

/// A config file setting a random subset of the registered keys (but
/// `…_file` keys such as `mqtt.password_file`: loading reads the file named).
/// Values that are valid for a key (most of the time), so that generated
/// files often load and the print-back property is exercised.
fn plausible(path: &'static str) -> Option<BoxedStrategy<toml::Value>> {
    let s = |v: &'static [&'static str]| {
        Some(
            select(v)
                .prop_map(|t| toml::Value::String(t.into()))
                .boxed(),
        )
    };
    if let Some(k) = INT_KEYS.iter().find(|k| k.path == path) {
        let even = k.even;
        return Some(
            (k.min..=k.max)
                .prop_map(move |v| toml::Value::Integer(if even { v & !1 } else { v }))
                .boxed(),
        );
    }
    match path {
        "video.source" => s(&["test", "auto", "/dev/video0", " test "]),
        "video.encoder" => s(&["auto", "openh264", "v4l2m2m"]),
        "video.encoder_device" => s(&["/dev/video11", "/dev/video31", ""]),
        "device.name" => Some(
            "[A-Za-z0-9][A-Za-z0-9 _.-]{0,20}"
                .prop_map(toml::Value::String)
                .boxed(),
        ),
        "webrtc.mdns" => s(&["query", "gather", "disabled"]),
        "mqtt.url" => s(&[
            "mqtt://127.0.0.1:1883",
            "ws://localhost:9001/mqtt",
            "mqtts://[::1]:8883",
            "tcp://broker",
            "",
        ]),
        "mqtt.protocol" => s(&["5", "5.0", "3.1.1", "4"]),
        "mqtt.client_id" => Some("[a-z0-9_-]{1,30}".prop_map(toml::Value::String).boxed()),
        "mqtt.topic_prefix" | "gpio.ha_prefix" => {
            Some(prefix().prop_map(toml::Value::String).boxed())
        }
        "mqtt.username" | "mqtt.password" | "mqtt.client_cert" | "mqtt.client_key" => {
            Some(".{0,12}".prop_map(toml::Value::String).boxed())
        }
        "http.listen" => s(&["127.0.0.1:8080", "0.0.0.0:8081", "[::1]:8080", "off", ""]),
        "http.mqtt_ws_url" => s(&["ws://127.0.0.1:9001/mqtt", "wss://cam.example:443/mqtt", ""]),
        "broker.listen" | "broker.v5_listen" | "broker.ws_listen" => Some(
            (1u16..=4)
                .prop_map(|i| toml::Value::String(format!("127.0.0.1:{}", 18_000 + i)))
                .boxed(),
        ),
        "gpio.backend" => s(&["auto", "rppal", "cdev", "sim"]),
        "webrtc.turn_credential_ttl" => s(&["12h", "1m", "7days", "59s", "8d", "soon"]),
        "auth.mode" => s(&["none", "token"]),
        _ => None,
    }
}

fn config_table() -> impl Strategy<Value = toml::Table> {
    let entries: Vec<BoxedStrategy<Option<(&'static str, toml::Value)>>> = KEYS
        .iter()
        .filter(|k| !k.path.ends_with("_file"))
        .map(|k| {
            let wild = match k.kind {
                KeyKind::Str => Some(str_value().boxed()),
                KeyKind::Int => Some(int_value().boxed()),
                _ => None,
            };
            let value = match (plausible(k.path), wild) {
                (Some(good), Some(wild)) => prop_oneof![6 => good, 1 => wild].boxed(),
                (Some(good), None) => good,
                (None, _) => match k.kind {
                    KeyKind::Str => str_value().boxed(),
                    KeyKind::Int => int_value().boxed(),
                    KeyKind::Float => {
                        prop_oneof![(-1e3f64..1e3).prop_map(toml::Value::Float), int_value(),]
                            .boxed()
                    }
                    KeyKind::Bool => any::<bool>().prop_map(toml::Value::Boolean).boxed(),
                    KeyKind::Array(_) => array_value(k.path),
                },
            };
            // Each key is set in about one file in eight (tokens more often).
            let p = if k.path == "auth.tokens" { 0.3 } else { 0.125 };
            option::weighted(p, value.prop_map(move |v| (k.path, v))).boxed()
        })
        .collect();
    entries.prop_map(|set| {
        let mut table = toml::Table::new();
        for (path, v) in set.into_iter().flatten() {
            let (section, name) = path.split_once('.').expect("section.key");
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                t.insert(name.into(), v);
            }
        }
        table
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn int_keys_take_their_range_and_errors_name_key_and_origin(
        (k, v) in (0..INT_KEYS.len()).prop_flat_map(|i| {
            let k = &INT_KEYS[i];
            (Just(i), prop_oneof![
                (k.min - 3)..=(k.min + 3),
                (k.max - 3)..=(k.max + 3),
                k.min..=k.max,
                // Around the bitrate bounds' defaults (100 and 8000), which they are checked against.
                prop_oneof![97i64..=103, 7997i64..=8003],
                any::<i64>(),
            ])
        }),
        via in via(),
    ) {
        let key = &INT_KEYS[k];
        let in_range = (key.min..=key.max).contains(&v) && (!key.even || v % 2 == 0);
        // The bitrate bounds also check each other (defaults: 100 and 8000).
        let cross = match key.path {
            "video.min_bitrate_kbps" if v > 8000 => Some("video.min_bitrate_kbps"),
            "video.max_bitrate_kbps" if v < 100 => Some("video.min_bitrate_kbps"),
            _ => None,
        };
        let r = load_one(key.path, &v.to_string(), &v.to_string(), via);
        match (in_range, cross, r) {
            (true, None, Ok(loaded)) => prop_assert_eq!((key.get)(&loaded.settings), v),
            (true, Some(named), Err(e)) => prop_assert_eq!(e.key(), Some(named), "{}", e),
            (false, _, Err(e)) => {
                prop_assert_eq!(e.key(), Some(key.path), "{}", e);
                let text = e.to_string();
                prop_assert!(text.contains(&v.to_string()), "names the value: {}", text);
                prop_assert!(text.contains(&origin_text(key.path, via)), "names the origin: {}", text);
            }
            (ok, cross, r) => prop_assert!(false, "{} = {} ({:?}): in range {}, cross {:?}, got {:?}", key.path, v, via, ok, cross, r.map(|_| ())),
        }
    }

    #[test]
    fn bitrate_bounds_are_checked_against_each_other(
        (min, max) in (50i64..=50_000).prop_flat_map(|min| (Just(min), prop_oneof![50i64..=50_000, (min - 3).max(50)..=(min + 3).min(50_000)])),
    ) {
        let env = |k: &str, v: i64| (keys::find(k).expect("registered").env(), v.to_string());
        let r = load(&Layers {
            env: vec![env("video.min_bitrate_kbps", min), env("video.max_bitrate_kbps", max)],
            ..Layers::default()
        });
        if min <= max {
            let s = r.map_err(|e| TestCaseError::fail(e.to_string()))?.settings;
            prop_assert_eq!((s.video.min_bitrate_kbps, s.video.max_bitrate_kbps), (min as u32, max as u32));
        } else {
            let e = r.map(|_| ()).expect_err("min above max");
            prop_assert_eq!(e.key(), Some("video.min_bitrate_kbps"), "{}", e);
        }
    }

    #[test]
    fn values_of_the_wrong_kind_name_the_key(
        key in select(KEYS).prop_filter("integer or bool", |k| matches!(k.kind, KeyKind::Int | KeyKind::Bool)),
        text in "[a-z]{1,6}|[0-9]{1,3}\\.[0-9]|\\[\\]",
        via in prop_oneof![Just(Via::Env), Just(Via::Flag)],
    ) {
        let accepted = match key.kind {
            KeyKind::Bool => ["true", "false", "yes", "no", "on", "off"].contains(&text.as_str()),
            _ => false,
        };
        prop_assume!(!accepted);
        let e = load_one(key.path, &text, "", via).map(|_| ()).expect_err("wrong kind");
        prop_assert_eq!(e.key(), Some(key.path), "{}", e);
        prop_assert!(e.to_string().contains(&origin_text(key.path, via)), "{}", e);
        // The same in a file: a string where a number or bool is expected.
        let e = load_one(key.path, "", &format!("{text:?}"), Via::File).map(|_| ()).expect_err("wrong kind");
        prop_assert_eq!(e.key(), Some(key.path), "{}", e);
    }

    #[test]
    fn unknown_env_vars_and_file_keys_are_named(
        var in "RTCAM_[A-Z_]{1,20}",
        section in select(&["video", "device", "webrtc", "mqtt", "http", "broker", "gpio", "control", "vidoe"][..]),
        name in "[a-z_]{1,12}",
    ) {
        if !KEYS.iter().any(|k| k.env() == var) && !keys::NON_KEY_ENV.contains(&var.as_str()) {
            let e = load(&Layers { env: vec![(var.clone(), "1".into())], ..Layers::default() })
                .map(|_| ())
                .expect_err("unknown variable");
            prop_assert!(matches!(&e, ConfigError::UnknownEnv(v) if *v == var), "{}", e);
        }
        let path = format!("{section}.{name}");
        if keys::find(&path).is_none() {
            let f = toml_file(&format!("[{section}]\n{name} = 1\n"));
            let e = load(&Layers { file: Some(f.path()), ..Layers::default() })
                .map(|_| ())
                .expect_err("unknown key");
            prop_assert_eq!(e.key(), Some(path.as_str()), "{}", e);
        }
    }

    #[test]
    fn config_files_load_or_name_a_key_and_print_back_the_same(table in config_table()) {
        let text = toml::to_string(&table).expect("a TOML table serialises");
        let f = toml_file(&text);
        match load(&Layers { file: Some(f.path()), ..Layers::default() }) {
            Ok(loaded) => {
                let printed = render_effective(&loaded);
                // Secrets are never printed (unless the same text is
                // printed anyway, as another key's value).
                let mut bare = loaded.settings.clone();
                bare.mqtt.password = None;
                bare.auth.tokens.clear();
                let baseline = render_effective(&Loaded { settings: bare, origins: loaded.origins.clone() });
                let secrets = loaded.settings.auth.tokens.iter().map(|t| t.token.expose())
                    .chain(loaded.settings.mqtt.password.as_ref().map(|p| p.expose()));
                for secret in secrets.filter(|s| s.len() >= 8 && !baseline.contains(s)) {
                    prop_assert!(!printed.contains(secret), "{:?} printed:\n{}", secret, printed);
                }
                let again = toml_file(&printed);
                let reloaded = load(&Layers { file: Some(again.path()), ..Layers::default() });
                let s = &loaded.settings.auth;
                if s.mode == AuthMode::Token && s.secret_file.is_none() && !s.tokens.is_empty() {
                    // Token mode whose only credentials are the (unprinted)
                    // static tokens fails closed, naming auth.mode.
                    let e = reloaded.map(|_| ()).expect_err("token mode without its tokens");
                    prop_assert_eq!(e.key(), Some("auth.mode"), "{}\n{}", e, printed);
                    return Ok(());
                }
                for c in loaded.settings.webrtc.ice_servers.iter().filter_map(|i| i.credential.as_deref()) {
                    let hidden = format!("credential = \"{c}\"");
                    prop_assert!(!printed.contains(&hidden), "{} printed:\n{}", c, printed);
                }
                if loaded.settings.webrtc.ice_servers.iter().any(|i| i.is_turn() && i.credential.is_some()) {
                    // A static TURN credential is never printed: its server
                    // (a user name and no credential) does not load back.
                    let e = reloaded.map(|_| ()).expect_err("a TURN server without its credential");
                    prop_assert_eq!(e.key(), Some("webrtc.ice_servers"), "{}\n{}", e, printed);
                    return Ok(());
                }
                prop_assert!(reloaded.is_ok(), "printed config does not load: {:?}\n{}", reloaded.map(|_| ()), printed);
                let mut want = loaded.settings.clone();
                // Secrets are never printed.
                want.mqtt.password = None;
                want.auth.tokens.clear();
                for i in &mut want.webrtc.ice_servers {
                    i.credential = None;
                }
                prop_assert_eq!(reloaded.expect("checked").settings, want, "{}", printed);
            }
            Err(e) => {
                let key = e.key().unwrap_or_else(|| panic!("error names no key: {e}\n{text}"));
                let section = key.split('.').next().unwrap_or("");
                prop_assert!(table.contains_key(section), "{} names a section not in the file:\n{}", e, text);
            }
        }
    }

    #[test]
    fn env_and_flag_text_parsing_is_total(text in prop_oneof![any::<String>(), "[ ]?(-?[0-9]{1,20}|true|FALSE|On|no|1|0|\\[.{0,10}\\])[ ]?"]) {
        let int = keys::parse_text(KeyKind::Int, &text);
        prop_assert_eq!(int.ok(), text.trim().parse::<i64>().ok().map(toml::Value::Integer));
        let b = keys::parse_text(KeyKind::Bool, &text).ok();
        let want = match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Some(toml::Value::Boolean(false)),
            _ => None,
        };
        prop_assert_eq!(b, want);
        prop_assert_eq!(keys::parse_text(KeyKind::Str, &text), Ok(toml::Value::String(text.trim().into())));
        if let Ok(v) = keys::parse_text(KeyKind::Array(keys::Entry::Str), &text) {
            prop_assert!(v.is_array());
        }
    }

    #[test]
    fn mqtt_urls_round_trip(
        scheme in select(&["mqtt", "tcp", "mqtts", "ssl", "ws", "wss"][..]),
        host in prop_oneof!["[a-z0-9]([a-z0-9.-]{0,20})", "\\[(::1|fe80::[0-9a-f]{1,4}|2001:db8::[0-9]{1,3})\\]"],
        port in option::of(1u16..=u16::MAX),
        path in "(/[a-z0-9]{0,6}){0,2}",
    ) {
        let ws = scheme.starts_with("ws");
        let url = format!(
            "{scheme}://{host}{}{}",
            port.map(|p| format!(":{p}")).unwrap_or_default(),
            if ws { path.as_str() } else { "" },
        );
        let parsed = parse_mqtt_url(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        let default = match scheme {
            "mqtt" | "tcp" => 1883,
            "mqtts" | "ssl" => 8883,
            "ws" => 80,
            _ => 443,
        };
        prop_assert_eq!(parsed.port, port.unwrap_or(default));
        prop_assert_eq!(parsed.host.as_str(), host.trim_start_matches('[').trim_end_matches(']'));
        prop_assert_eq!(matches!(parsed.scheme, MqttScheme::Ws | MqttScheme::Wss), ws);
        prop_assert_eq!(parse_mqtt_url(&parsed.to_string()), Ok(parsed.clone()));
        if !ws && !path.is_empty() {
            prop_assert!(parse_mqtt_url(&format!("{url}{path}")).is_err(), "mqtt URLs take no path");
        }
    }

    #[test]
    fn host_headers_parse_totally_and_print_back(
        text in prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9.:@/ _-]{0,24}",
            "\\[[0-9a-f:.]{0,20}\\](:[0-9]{0,6})?",
            "[0-9x.]{0,18}(:[0-9]{1,6})?",
        ],
    ) {
        // Whatever the web viewer accepts as a Host prints back as a host
        // that parses to the same thing, with nothing but name characters.
        if let Ok(h) = rtcam_proto::http::parse_host(&text) {
            let printed = h.name.to_string();
            prop_assert!(!printed.is_empty());
            prop_assert!(
                printed.chars().all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c)),
                "{:?} printed as {:?}", text, printed
            );
            prop_assert_eq!(rtcam_proto::http::parse_host_name(&printed), Ok(h.name.clone()));
            prop_assert!(h.port.is_none_or(|p| p > 0));
            prop_assert!(!text.contains(['@', '/', ' ', '?', '#']), "{:?} accepted", text);
        }
    }

    #[test]
    fn small_config_parsers_are_total(text in prop_oneof![any::<String>(), "[a-z]{0,5}://.{0,20}", "(mqtt|ws)://[\\[\\]:a-f0-9]{0,10}(:[0-9]{1,5})?", "(gpiochip|pwmchip)?[0-9]{0,3}:?.{0,6}"]) {
        if let Ok(url) = parse_mqtt_url(&text) {
            prop_assert!(!url.host.is_empty() && url.port > 0);
            prop_assert_eq!(parse_mqtt_url(&url.to_string()), Ok(url));
        }
        match PinRef::parse_text(&text) {
            Ok(PinRef::ChipOffset { chip, offset }) => {
                prop_assert_eq!(PinRef::parse_text(&format!("{chip}:{offset}")), Ok(PinRef::ChipOffset { chip, offset }))
            }
            Ok(PinRef::LineName(n)) => prop_assert!(!n.is_empty() && !n.contains(['/', ':'])),
            Ok(PinRef::Number(_)) => prop_assert!(false, "numbers come as TOML integers"),
            Err(_) => {}
        }
        let _ = check_topic_prefix(&text);
    }

    #[test]
    fn topic_prefixes_are_levels_without_wildcards(
        p in prefix(),
        bad in select(&["+", "#", "\0", "\n", "//"][..]),
        at in any::<prop::sample::Index>(),
    ) {
        prop_assert_eq!(check_topic_prefix(&p), Ok(()));
        let i = (0..=p.len()).filter(|&i| p.is_char_boundary(i)).nth(at.index(p.len() + 1)).unwrap_or(0);
        let broken = format!("{}{bad}{}", &p[..i], &p[i..]);
        prop_assert!(check_topic_prefix(&broken).is_err(), "{:?}", broken);
        let (leading, trailing) = (format!("/{p}"), format!("{p}/"));
        prop_assert!(check_topic_prefix(&leading).is_err(), "{:?}", leading);
        prop_assert!(check_topic_prefix(&trailing).is_err(), "{:?}", trailing);
        prop_assert!(check_topic_prefix(&"a".repeat(201)).is_err());
    }
}

// ------------------------------------------------------------------- tokens

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// The camera the tokens are for.
const AUD: &str = "rtcam/garage";
/// No lifetime limit: the properties below are about signatures and expiry.
const FOREVER: std::time::Duration = std::time::Duration::from_secs(u64::MAX);

/// An authoriser for signed tokens only, or with `statics`.
fn authorizer(statics: Vec<StaticToken>, secret: Option<&[u8]>) -> Authorizer {
    Authorizer::with_tokens(statics, secret, AUD, FOREVER)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::View), Just(Role::Control)]
}

/// Tokens: arbitrary text, and signed tokens with one character changed.
fn token_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "rtcam2\\.(view|control|admin|)\\.cnRjYW0vZ2FyYWdl\\.[0-9]{0,12}\\.[A-Za-z0-9_=+/-]{0,50}",
        (
            role(),
            any::<u64>(),
            any::<prop::sample::Index>(),
            any::<char>()
        )
            .prop_map(|(role, exp, at, c)| {
                let mut chars: Vec<char> = mint(SECRET, role, AUD, exp).chars().collect();
                let i = at.index(chars.len());
                chars[i] = c;
                chars.into_iter().collect()
            }),
    ]
}

proptest! {
    #[test]
    fn signed_tokens_grant_their_role_until_they_expire(
        role in role(),
        expires in any::<u64>(),
        now in prop_oneof![any::<u64>(), Just(0u64)],
        delta in -3i64..3,
    ) {
        let token = mint(SECRET, role, AUD, expires);
        let a = authorizer(Vec::new(), Some(SECRET));
        for now in [now, expires.saturating_add_signed(delta)] {
            let want = if now < expires { Ok(role) } else { Err(AuthError::Expired { expired_at: expires }) };
            prop_assert_eq!(a.authorize(Some(&token), now), want);
        }
        // Another secret, no secret, or tokens not required.
        let other = authorizer(Vec::new(), Some(b"another secret of 32 bytes......"));
        if expires > 0 {
            prop_assert_eq!(other.authorize(Some(&token), 0), Err(AuthError::Invalid));
            prop_assert_eq!(authorizer(Vec::new(), None).authorize(Some(&token), 0), Err(AuthError::Invalid));
        }
        prop_assert_eq!(Authorizer::open().authorize(Some(&token), 0), Ok(Role::Control));
    }

    #[test]
    fn only_authentic_tokens_are_accepted(text in token_text(), now in any::<u64>()) {
        let a = authorizer(Vec::new(), Some(SECRET));
        match a.authorize(Some(&text), now) {
            // Whatever is accepted is exactly a token minted with the secret.
            Ok(role) => {
                let expires: u64 = text.split('.').nth(3).and_then(|e| e.parse().ok()).unwrap_or_default();
                prop_assert_eq!(mint(SECRET, role, AUD, expires), text);
                prop_assert!(now < expires);
            }
            // Expiry is only reported once the claims name this camera.
            Err(AuthError::Expired { expired_at }) => prop_assert!(now >= expired_at),
            Err(AuthError::Missing) => prop_assert!(text.is_empty()),
            Err(_) => {}
        }
    }

    #[test]
    fn only_the_tokens_holder_can_prove_an_offer(
        role in role(),
        client in "[a-z0-9-]{1,20}",
        fp in "sha-256 [0-9A-F:]{2,20}",
        skew in -400_000i64..400_000,
        tamper in any::<prop::sample::Index>(),
    ) {
        let now_ms: u64 = 1_800_000_000_000;
        let token = mint(SECRET, role, AUD, now_ms / 1000 + 3600);
        let a = authorizer(Vec::new(), Some(SECRET));
        let proof = rtcam::auth::prove(&token, &client, &fp, now_ms.saturating_add_signed(skew));
        let got = a.verify_proof(Some(&proof), &client, &fp, now_ms);
        if skew.unsigned_abs() <= rtcam::auth::PROOF_WINDOW_MS {
            prop_assert_eq!(got.map(|g| g.role), Ok(role));
        } else {
            let stale = matches!(got, Err(AuthError::Stale { .. }));
            prop_assert!(stale);
        }
        // One character of the proof changed: refused.
        let mut chars: Vec<char> = proof.proof.chars().collect();
        let i = tamper.index(chars.len());
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let forged = rtcam::auth::Proof { proof: chars.into_iter().collect(), ..proof.clone() };
        prop_assert!(a.verify_proof(Some(&forged), &client, &fp, proof.ts).is_err());
        // Another client id: refused.
        let other = format!("{client}x");
        prop_assert!(a.verify_proof(Some(&proof), &other, &fp, proof.ts).is_err());
    }

    #[test]
    fn static_tokens_match_exactly(
        tokens in vec(("[!-~]{16,64}", role()), 1..4),
        pick in any::<prop::sample::Index>(),
        change in prop_oneof![Just(None), "[!-~]{1,2}".prop_map(Some)],
        long in any::<bool>(),
    ) {
        let statics = tokens.iter().map(|(t, r)| StaticToken::new(t, *r)).collect();
        let a = authorizer(statics, None);
        let (token, role) = &tokens[pick.index(tokens.len())];
        // The last static token with this text decides (duplicates are allowed).
        let want = tokens.iter().rev().find(|(t, _)| t == token).map(|(_, r)| *r).unwrap_or(*role);
        prop_assert_eq!(a.authorize(Some(token), 0), Ok(want));
        if let Some(extra) = change {
            let longer = format!("{token}{extra}");
            if !tokens.iter().any(|(t, _)| *t == longer) {
                prop_assert_eq!(a.authorize(Some(&longer), 0), Err(AuthError::Invalid));
            }
            let shorter = &token[..token.len() - 1];
            if !tokens.iter().any(|(t, _)| t == shorter) {
                prop_assert_eq!(a.authorize(Some(shorter), 0), Err(AuthError::Invalid));
            }
        }
        if long {
            // Over the length limit, even a configured token is refused unread.
            let huge = "x".repeat(MAX_TOKEN_LEN + 1);
            let a = authorizer(vec![StaticToken::new(&huge, Role::Control)], None);
            prop_assert_eq!(a.authorize(Some(&huge), 0), Err(AuthError::Invalid));
        }
        prop_assert_eq!(a.authorize(None, 0), Err(AuthError::Missing));
        prop_assert_eq!(a.authorize(Some(""), 0), Err(AuthError::Missing));
    }

    #[test]
    fn token_lifetimes_parse_within_bounds(
        parts in vec((prop_oneof![0u64..400, Just(0)], select(&["s", "m", "h", "d"][..])), 1..4),
        junk in prop_oneof![Just(String::new()), any::<String>()],
    ) {
        let text: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
        let secs: u64 = parts
            .iter()
            .map(|(n, u)| n * match *u { "s" => 1, "m" => 60, "h" => 3600, _ => 86_400 })
            .sum();
        let r = parse_ttl(&text);
        if (1..=10 * 365 * 24 * 3600).contains(&secs) {
            prop_assert_eq!(r, Ok(Duration::from_secs(secs)));
        } else {
            prop_assert!(r.is_err(), "{}", text);
        }
        if let Ok(d) = parse_ttl(&junk) {
            prop_assert!(d.as_secs() >= 1 && d.as_secs() <= 10 * 365 * 24 * 3600);
        }
    }
}
