//! Who may publish and subscribe where on the embedded broker: the
//! signaling protocol's access rules as a pure function of the client's
//! identity and the topic (or filter). The broker asks it for every
//! PUBLISH, SUBSCRIBE filter and will; `docs/SECURITY.md` gives the same
//! rules for Mosquitto.
//!
//! With `P` the topic prefix and `C` the client's MQTT client id:
//!
//! | client | may publish | may subscribe to (read) |
//! |---|---|---|
//! | the agent (its credential and client id) | anything under `P/` and the Home Assistant discovery prefix `H/` | the same |
//! | a viewer `C` (any role) | `P/offer/C`, `P/ice/C`, `P/bye/C` | `P/answer/C`, `P/ice/C`, `P/error/C`, `P/bye/C`, `P/status`, `P/info`, `P/gpio/+/state`, `P/record`, `P/record/event`, `P/snapshot`, `P/motion`, `H/#` |
//! | a `control` client | also `P/gpio/+/set`, `P/record/set`, `P/snapshot/set` | the same as a viewer |
//!
//! Anything else, under `P/`, `H/` or elsewhere (`$SYS`, other prefixes),
//! is denied. A filter is allowed only if every topic it can match is
//! readable: `P/answer/+` is denied, `P/gpio/+/state` allowed. `H/#` is
//! denied when it overlaps `P/` (a prefix nested in the other), since it
//! would then match other viewers' answers. Only the agent's publishes are
//! retained: a viewer's retained publish is delivered, not stored.
//!
//! `P/ice/C` and `P/bye/C` carry both directions: the viewer publishes its
//! candidates and byes there and reads the agent's. Only `C` (and the
//! agent) can write there, so what a viewer reads on them is its own echo
//! or the agent's; the agent, subscribed to `P/ice/+`, hears `C`'s
//! candidates only from `C`. A viewer whose client id is not a valid
//! signaling id (1–64 of `A-Z a-z 0-9 _ -`) gets no topic of its own.

use super::topics::ClientId;

/// Who a broker client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The agent itself (authenticated with its own secret).
    Agent,
    /// Anyone else: a viewer, or an automation.
    Client {
        /// Its MQTT client id.
        client_id: String,
        /// Whether its credential grants `control` (every client does with
        /// `auth.mode = "none"`).
        control: bool,
    },
}

/// The rules for one camera: its topic prefix and discovery prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    prefix: String,
    discovery: String,
}

impl Acl {
    /// Rules for topic prefix `P` and Home Assistant discovery prefix `H`
    /// (both validated by the config: no wildcards, no empty level).
    pub fn new(prefix: &str, discovery: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
            discovery: discovery.trim_end_matches('/').to_string(),
        }
    }

    fn own(&self, kind: &str, who: &str) -> Option<String> {
        ClientId::parse(who)
            .ok()
            .map(|c| format!("{}/{kind}/{c}", self.prefix))
    }

    fn everything(&self) -> [String; 2] {
        [
            format!("{}/#", self.prefix),
            format!("{}/#", self.discovery),
        ]
    }

    /// May `who` publish on `topic`?
    pub fn may_publish(&self, who: &Principal, topic: &str) -> bool {
        if !valid_topic(topic) {
            return false;
        }
        match who {
            Principal::Agent => self.everything().iter().any(|p| matches(topic, p)),
            Principal::Client { client_id, control } => {
                let mut allowed: Vec<String> = ["offer", "ice", "bye"]
                    .iter()
                    .filter_map(|k| self.own(k, client_id))
                    .collect();
                if *control {
                    allowed.push(format!("{}/gpio/+/set", self.prefix));
                    allowed.push(format!("{}/record/set", self.prefix));
                    allowed.push(format!("{}/snapshot/set", self.prefix));
                }
                allowed.iter().any(|p| matches(topic, p))
            }
        }
    }

    /// May `who` subscribe to `filter` (read every topic it matches)?
    pub fn may_subscribe(&self, who: &Principal, filter: &str) -> bool {
        if !valid_filter(filter) {
            return false;
        }
        match who {
            Principal::Agent => self.everything().iter().any(|p| within(filter, p)),
            Principal::Client { client_id, .. } => {
                let mut readable: Vec<String> = ["answer", "ice", "error", "bye"]
                    .iter()
                    .filter_map(|k| self.own(k, client_id))
                    .collect();
                readable.extend([
                    format!("{}/status", self.prefix),
                    format!("{}/info", self.prefix),
                    format!("{}/gpio/+/state", self.prefix),
                    format!("{}/record", self.prefix),
                    format!("{}/record/event", self.prefix),
                    format!("{}/snapshot", self.prefix),
                    format!("{}/motion", self.prefix),
                ]);
                if readable.iter().any(|p| within(filter, p)) {
                    return true;
                }
                // Discovery documents: only the agent writes there. Not
                // when the prefixes nest: the filter would reach `P/`.
                let discovery = format!("{}/#", self.discovery);
                let ours = format!("{}/#", self.prefix);
                within(filter, &discovery) && !overlap(filter, &ours)
            }
        }
    }

    /// May `who`'s publishes be retained? Only the agent's: it keeps
    /// `P/status`, `P/info`, pin states and discovery documents.
    pub fn may_retain(&self, who: &Principal) -> bool {
        matches!(who, Principal::Agent)
    }
}

/// A topic name: not empty, no wildcard, no NUL.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// A subscription filter: `+` a whole level, `#` a whole last level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == last,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

/// Whether topic name `topic` matches filter `filter` (MQTT rules; a topic
/// starting with `$` matches no filter starting with a wildcard).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match t.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// Whether every topic filter `filter` can match is matched by `pattern`
/// (both valid filters): `a/+/c` is within `a/#` and `a/+/+`, not within
/// `a/b/c`.
pub fn within(filter: &str, pattern: &str) -> bool {
    let mut f = filter.split('/');
    let mut p = pattern.split('/');
    loop {
        match (f.next(), p.next()) {
            (_, Some("#")) => return true,
            (None, None) => return true,
            // `a/#` also matches `a`: the filter `a` is within it.
            (None, Some(_)) => return false,
            (Some(_), None) => return false,
            (Some("#"), Some(_)) => return false,
            (Some(_), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Whether some topic matches both filters.
pub fn overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(m)) if l == m => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> Acl {
        Acl::new("rtcam/cam1", "homeassistant")
    }

    fn viewer(id: &str) -> Principal {
        Principal::Client {
            client_id: id.into(),
            control: false,
        }
    }

    fn control(id: &str) -> Principal {
        Principal::Client {
            client_id: id.into(),
            control: true,
        }
    }

    #[test]
    fn a_viewer_publishes_only_on_its_own_topics() {
        let a = acl();
        let v = viewer("v1");
        for t in [
            "rtcam/cam1/offer/v1",
            "rtcam/cam1/ice/v1",
            "rtcam/cam1/bye/v1",
        ] {
            assert!(a.may_publish(&v, t), "{t}");
        }
        for t in [
            "rtcam/cam1/offer/v2",
            "rtcam/cam1/ice/v2",
            "rtcam/cam1/answer/v1",
            "rtcam/cam1/error/v1",
            "rtcam/cam1/status",
            "rtcam/cam1/info",
            "rtcam/cam1/gpio/relay1/set",
            "rtcam/cam1/gpio/relay1/state",
            "rtcam/cam1/offer/v1/x",
            "rtcam/cam1/offer/+",
            "rtcam/cam1",
            "rtcam/cam2/offer/v1",
            "homeassistant/switch/x/config",
            "$SYS/broker",
            "other",
        ] {
            assert!(!a.may_publish(&v, t), "{t}");
        }
    }

    #[test]
    fn control_adds_the_gpio_and_record_commands_only() {
        let a = acl();
        let c = control("ha");
        assert!(a.may_publish(&c, "rtcam/cam1/gpio/relay1/set"));
        assert!(a.may_publish(&c, "rtcam/cam1/record/set"));
        assert!(a.may_publish(&c, "rtcam/cam1/snapshot/set"));
        assert!(!a.may_publish(&viewer("v1"), "rtcam/cam1/snapshot/set"));
        assert!(!a.may_publish(&c, "rtcam/cam1/motion"));
        assert!(!a.may_publish(&viewer("v1"), "rtcam/cam1/record/set"));
        assert!(a.may_publish(&c, "rtcam/cam1/offer/ha"));
        for t in [
            "rtcam/cam1/gpio/relay1/state",
            "rtcam/cam1/gpio/relay1/set/x",
            "rtcam/cam1/record",
            "rtcam/cam1/record/event",
            "rtcam/cam1/record/set/x",
            "rtcam/cam1/status",
            "rtcam/cam1/answer/v1",
        ] {
            assert!(!a.may_publish(&c, t), "{t}");
        }
    }

    #[test]
    fn a_viewer_reads_its_own_topics_and_the_shared_state() {
        let a = acl();
        let v = viewer("v1");
        for f in [
            "rtcam/cam1/answer/v1",
            "rtcam/cam1/ice/v1",
            "rtcam/cam1/error/v1",
            "rtcam/cam1/bye/v1",
            "rtcam/cam1/status",
            "rtcam/cam1/info",
            "rtcam/cam1/gpio/+/state",
            "rtcam/cam1/gpio/relay1/state",
            "rtcam/cam1/record",
            "rtcam/cam1/record/event",
            "rtcam/cam1/snapshot",
            "rtcam/cam1/motion",
            "homeassistant/#",
            "homeassistant/+/rtcam_cam1/+/config",
        ] {
            assert!(a.may_subscribe(&v, f), "{f}");
        }
        for f in [
            "#",
            "+/+/answer/v1",
            "rtcam/#",
            "rtcam/cam1/#",
            "rtcam/cam1/+",
            "rtcam/cam1/answer/+",
            "rtcam/cam1/answer/#",
            "rtcam/cam1/answer/v2",
            "rtcam/cam1/offer/v1",
            "rtcam/cam1/offer/+",
            "rtcam/cam1/gpio/+/set",
            "rtcam/cam1/gpio/#",
            "rtcam/cam1/record/#",
            "rtcam/cam1/record/set",
            "rtcam/cam1/snapshot/set",
            "rtcam/cam1/snapshot/#",
            "rtcam/cam1/+/v1",
            "$SYS/#",
            "rtcam/cam1/answer/v1#",
            "",
        ] {
            assert!(!a.may_subscribe(&v, f), "{f:?}");
        }
    }

    #[test]
    fn an_invalid_client_id_owns_no_topic() {
        let a = acl();
        for id in ["", "a/b", "+", "#", "a b", &"x".repeat(65)] {
            let v = viewer(id);
            assert!(
                !a.may_publish(&v, &format!("rtcam/cam1/offer/{id}")),
                "{id:?}"
            );
            assert!(
                !a.may_subscribe(&v, &format!("rtcam/cam1/answer/{id}")),
                "{id:?}"
            );
            // The shared state stays readable.
            assert!(a.may_subscribe(&v, "rtcam/cam1/status"));
        }
        // `a/b` would have reached another viewer's topic level by level.
        assert!(!a.may_subscribe(&viewer("a/b"), "rtcam/cam1/answer/a/b"));
    }

    #[test]
    fn the_agent_owns_its_prefix_and_discovery_only() {
        let a = acl();
        let me = Principal::Agent;
        for t in [
            "rtcam/cam1/status",
            "rtcam/cam1/answer/v1",
            "rtcam/cam1/gpio/relay1/state",
            "homeassistant/switch/rtcam_cam1/relay1/config",
        ] {
            assert!(a.may_publish(&me, t), "{t}");
        }
        for f in [
            "rtcam/cam1/offer/+",
            "rtcam/cam1/ice/+",
            "rtcam/cam1/gpio/+/set",
        ] {
            assert!(a.may_subscribe(&me, f), "{f}");
        }
        assert!(!a.may_publish(&me, "rtcam/cam2/status"));
        assert!(!a.may_subscribe(&me, "#"));
        assert!(!a.may_subscribe(&me, "$SYS/#"));
        assert!(a.may_retain(&me));
        assert!(!a.may_retain(&viewer("v1")));
        assert!(!a.may_retain(&control("ha")));
    }

    #[test]
    fn nested_prefixes_do_not_open_the_signaling_topics() {
        let a = Acl::new("homeassistant/cam1", "homeassistant");
        let v = viewer("v1");
        assert!(!a.may_subscribe(&v, "homeassistant/#"));
        assert!(!a.may_subscribe(&v, "homeassistant/+/+/+"));
        assert!(a.may_subscribe(&v, "homeassistant/switch/+/+/config"));
        assert!(a.may_subscribe(&v, "homeassistant/cam1/answer/v1"));
        let b = Acl::new("rtcam", "rtcam/ha");
        assert!(!b.may_subscribe(&v, "rtcam/ha/#"), "H inside P");
    }

    #[test]
    fn filter_arithmetic() {
        assert!(within("a/+/c", "a/#"));
        assert!(within("a/+/c", "a/+/+"));
        assert!(!within("a/+/c", "a/b/c"));
        assert!(within("a", "a/#"));
        assert!(!within("a/#", "a/+"));
        assert!(within("a/#", "a/#"));
        assert!(!within("#", "a/#"));
        assert!(overlap("#", "a/b"));
        assert!(overlap("a/+", "+/b"));
        assert!(!overlap("a/b", "a/c"));
        assert!(!overlap("a/b", "a/b/c"));
        assert!(overlap("a/b", "a/b/#"));
        assert!(matches("a/b", "a/+"));
        assert!(matches("a", "a/#"));
        assert!(!matches("$SYS/x", "#"));
        assert!(!matches("a/b/c", "a/+"));
        assert!(valid_filter("a/+/#"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a/b+"));
        assert!(!valid_topic("a/+"));
    }
}
