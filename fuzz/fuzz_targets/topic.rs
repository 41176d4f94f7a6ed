//! MQTT topics from the broker: viewer topics under a prefix, client ids,
//! GPIO `…/set` topics, `P/record/set` payloads and the config's topic-prefix check. No input may
//! panic, and whatever parses must rebuild to the same topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcam_proto::config::settings::check_topic_prefix;
use rtcam_proto::gpio::mqtt::{pin_of_set_topic, set_topic};
use rtcam_proto::signaling::topics::{ClientId, Kind, TopicError, Topics};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // "prefix\ntopic"; without a newline the whole input is the topic under "rtcam/cam".
    let (prefix, topic) = text.split_once('\n').unwrap_or(("rtcam/cam", &text));
    let _ = check_topic_prefix(prefix);
    let topics = Topics::new(prefix);

    let valid_id = ClientId::parse(topic).is_ok();
    let expect_valid = (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    assert_eq!(valid_id, expect_valid, "ClientId::parse({topic:?})");

    match topics.parse(topic) {
        Ok((kind, id)) => {
            let rebuilt = match kind {
                Kind::Offer => topics.offer(&id),
                Kind::Ice => topics.ice(&id),
                Kind::Bye => topics.bye(&id),
            };
            assert_eq!(rebuilt, topic, "parsed topic must rebuild to itself");
        }
        Err(TopicError::NotOurs) => {}
        Err(TopicError::BadClientId(_)) => {
            assert!(topic.starts_with(topics.prefix()), "{topic:?}");
        }
    }

    if let Some(pin) = pin_of_set_topic(&topics, topic) {
        assert!(!pin.is_empty() && !pin.contains('/'), "{pin:?}");
        assert_eq!(set_topic(&topics, pin), topic);
    }

    // The whole input as a P/record/set payload: parses or names the problem.
    match rtcam_proto::record::parse_set(data) {
        Ok(req) => assert_eq!(
            rtcam_proto::record::parse_set(req.as_str().as_bytes()),
            Ok(req)
        ),
        // At most 32 characters of the payload are quoted, each escaped in at most 10.
        Err(e) => assert!(!e.is_empty() && e.len() < 400, "{e:?}"),
    }
});
