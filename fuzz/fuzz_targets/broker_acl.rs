//! The embedded broker's access rules and WebSocket origin check, fed what
//! a client sends: its client id, a topic it publishes, a filter it
//! subscribes to, and a handshake's `Origin` and `Host` headers. No input
//! may panic, and the rules must hold: a viewer never writes outside its
//! camera's prefix nor reads another client's answers or errors, and the
//! filter algebra agrees with topic matching.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcam_proto::signaling::acl::{
    Acl, Principal, matches, overlap, valid_filter, valid_topic, within,
};
use rtcam_proto::signaling::origin::{Origin, OriginPolicy};

const PREFIX: &str = "rtcam/cam";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // "client id\ntopic\nfilter\norigin\nhost"; missing lines are empty.
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or("");
    let (client_id, topic, filter, origin, host) = (next(), next(), next(), next(), next());

    let acl = Acl::new(PREFIX, "homeassistant");
    let viewer = Principal::Client {
        client_id: client_id.to_string(),
        control: true,
    };
    if acl.may_publish(&viewer, topic) {
        assert!(
            matches(topic, &format!("{PREFIX}/#")),
            "viewer wrote {topic:?}"
        );
        assert!(acl.may_publish(&Principal::Agent, topic), "{topic:?}");
    }
    if acl.may_subscribe(&viewer, filter) && valid_topic(topic) && matches(topic, filter) {
        for kind in ["answer", "error"] {
            if let Some(owner) = topic.strip_prefix(&format!("{PREFIX}/{kind}/")) {
                assert_eq!(owner, client_id, "{filter:?} reads {topic:?}");
            }
        }
    }
    assert!(!acl.may_retain(&viewer));

    if valid_filter(filter) {
        assert!(within(filter, filter), "{filter:?}");
        assert_eq!(overlap(filter, topic), overlap(topic, filter));
        // `topic` read as a second filter: matching is transitive through
        // `within` (for topics outside `$`, which wildcards never reach).
        if valid_topic(client_id)
            && !client_id.starts_with('$')
            && matches(client_id, filter)
            && valid_filter(topic)
            && within(filter, topic)
        {
            assert!(
                matches(client_id, topic),
                "{client_id:?} {filter:?} {topic:?}"
            );
        }
    }

    if let Some(o) = Origin::parse(origin) {
        assert!(o.scheme == "http" || o.scheme == "https");
        assert_ne!(o.port, 0);
        let host_part = if o.host.contains(':') {
            format!("[{}]", o.host)
        } else {
            o.host.clone()
        };
        let again = Origin::parse(&format!("{}://{}:{}", o.scheme, host_part, o.port));
        assert_eq!(again.as_ref(), Some(&o), "{origin:?}");
    }
    let policy = OriginPolicy::new(&[], Some(8080), &["localhost".to_string()]);
    assert!(policy.allows(None, Some(host)));
    let _ = policy.allows(Some(origin), Some(host));
});
