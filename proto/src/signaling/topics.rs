//! The MQTT topic scheme under prefix `P` (which may contain `/`), and
//! viewer client ids. Pure.
//!
//! | topic | direction |
//! |---|---|
//! | `P/offer/{clientId}` | viewer → agent |
//! | `P/answer/{clientId}` | agent → viewer |
//! | `P/ice/{clientId}` | both ways |
//! | `P/bye/{clientId}` | viewer → agent (and agent → viewer at shutdown) |
//! | `P/error/{clientId}` | agent → viewer |
//! | `P/status`, `P/info` | agent, retained |

use std::fmt;

/// A viewer's id: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(String);

/// Why a client id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client id must be 1-64 characters of A-Z a-z 0-9 _ -")]
pub struct BadClientId;

impl ClientId {
    /// Validates a client id.
    pub fn parse(s: &str) -> Result<Self, BadClientId> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(BadClientId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Kinds of viewer → agent messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `P/offer/{id}`
    Offer,
    /// `P/ice/{id}`
    Ice,
    /// `P/bye/{id}`
    Bye,
}

/// Why a topic is not one the agent handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Outside the prefix, or not offer/ice/bye.
    #[error("not an rtcam viewer topic")]
    NotOurs,
    /// The right shape, but the client id is invalid (no reply is possible).
    #[error("{0}")]
    BadClientId(BadClientId),
}

/// Builds and parses topics for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics under `prefix` (already validated by the config).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The prefix `P`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Subscription filters for everything viewers send.
    pub fn inbound_filters(&self) -> [String; 3] {
        [
            format!("{}/offer/+", self.prefix),
            format!("{}/ice/+", self.prefix),
            format!("{}/bye/+", self.prefix),
        ]
    }

    /// `P/answer/{id}`
    pub fn answer(&self, id: &ClientId) -> String {
        format!("{}/answer/{id}", self.prefix)
    }

    /// `P/ice/{id}`
    pub fn ice(&self, id: &ClientId) -> String {
        format!("{}/ice/{id}", self.prefix)
    }

    /// `P/offer/{id}`
    pub fn offer(&self, id: &ClientId) -> String {
        format!("{}/offer/{id}", self.prefix)
    }

    /// `P/bye/{id}`
    pub fn bye(&self, id: &ClientId) -> String {
        format!("{}/bye/{id}", self.prefix)
    }

    /// `P/error/{id}`
    pub fn error(&self, id: &ClientId) -> String {
        format!("{}/error/{id}", self.prefix)
    }

    /// `P/status`
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `P/info`
    pub fn info(&self) -> String {
        format!("{}/info", self.prefix)
    }

    /// `P/snapshot`: the last snapshot (retained JPEG).
    pub fn snapshot(&self) -> String {
        format!("{}/snapshot", self.prefix)
    }

    /// `P/snapshot/set`: any payload asks for a snapshot (control role).
    pub fn snapshot_set(&self) -> String {
        format!("{}/snapshot/set", self.prefix)
    }

    /// `P/motion`: `ON` while something moves, else `OFF` (retained).
    pub fn motion(&self) -> String {
        format!("{}/motion", self.prefix)
    }

    /// Reads a viewer → agent topic.
    pub fn parse(&self, topic: &str) -> Result<(Kind, ClientId), TopicError> {
        let rest = topic
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(TopicError::NotOurs)?;
        let (kind, id) = rest.split_once('/').ok_or(TopicError::NotOurs)?;
        let kind = match kind {
            "offer" => Kind::Offer,
            "ice" => Kind::Ice,
            "bye" => Kind::Bye,
            _ => return Err(TopicError::NotOurs),
        };
        let id = ClientId::parse(id).map_err(TopicError::BadClientId)?;
        Ok((kind, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_with_slashes_round_trip() {
        let t = Topics::new("home/rtcam/garage");
        let id = ClientId::parse("viewer-1_A").expect("valid");
        assert_eq!(t.answer(&id), "home/rtcam/garage/answer/viewer-1_A");
        for (topic, kind) in [
            (t.offer(&id), Kind::Offer),
            (t.ice(&id), Kind::Ice),
            (t.bye(&id), Kind::Bye),
        ] {
            assert_eq!(t.parse(&topic), Ok((kind, id.clone())));
        }
        assert_eq!(t.inbound_filters()[0], "home/rtcam/garage/offer/+");
    }

    #[test]
    fn other_topics_are_not_ours() {
        let t = Topics::new("rtcam/cam1");
        for topic in [
            "rtcam/cam2/offer/x",
            "rtcam/cam1",
            "rtcam/cam1/answer/x",
            "rtcam/cam1/offer",
            "rtcam/cam1x/offer/a",
            "rtcam/cam1/status",
        ] {
            assert_eq!(t.parse(topic), Err(TopicError::NotOurs), "{topic}");
        }
    }

    #[test]
    fn client_ids_are_bounded() {
        assert!(ClientId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", &"a".repeat(65), "a b", "a/b", "a+b", "ü", "a#"] {
            assert_eq!(ClientId::parse(bad), Err(BadClientId), "{bad:?}");
        }
        let t = Topics::new("p");
        assert!(matches!(
            t.parse("p/offer/a/b"),
            Err(TopicError::BadClientId(_))
        ));
    }
}
