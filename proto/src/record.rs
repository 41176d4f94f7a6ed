//! Recording over MQTT: the retained state on `P/record`, events on
//! `P/record/event`, and commands on `P/record/set` (`start`, `stop`,
//! `trigger`), whose payload parsing is here (pure, fuzzed).

use crate::signaling::topics::Topics;

/// `P/record`: the recorder's state (retained JSON).
pub fn state_topic(topics: &Topics) -> String {
    format!("{}/record", topics.prefix())
}

/// `P/record/event`: recording started, stopped, failed (JSON, not retained).
pub fn event_topic(topics: &Topics) -> String {
    format!("{}/record/event", topics.prefix())
}

/// `P/record/set`: commands from automations (control role).
pub fn set_topic(topics: &Topics) -> String {
    format!("{}/record/set", topics.prefix())
}

/// A recording command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordRequest {
    /// Record until `stop`.
    Start,
    /// End a started recording.
    Stop,
    /// Events mode: record with pre- and post-roll.
    Trigger,
}

impl RecordRequest {
    /// The command as written.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordRequest::Start => "start",
            RecordRequest::Stop => "stop",
            RecordRequest::Trigger => "trigger",
        }
    }
}

/// Reads a `P/record/set` payload: `start`, `stop` or `trigger` (any case,
/// surrounding white space ignored; `ON`/`OFF` as Home Assistant switches send).
pub fn parse_set(payload: &[u8]) -> Result<RecordRequest, String> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| "the payload is not UTF-8 text".to_string())?
        .trim();
    match text.to_ascii_lowercase().as_str() {
        "start" | "on" => Ok(RecordRequest::Start),
        "stop" | "off" => Ok(RecordRequest::Stop),
        "trigger" => Ok(RecordRequest::Trigger),
        _ => {
            let shown: String = text.chars().take(32).collect();
            Err(format!("expected start, stop or trigger, got {shown:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_payloads() {
        let t = Topics::new("home/cam");
        assert_eq!(state_topic(&t), "home/cam/record");
        assert_eq!(set_topic(&t), "home/cam/record/set");
        assert_eq!(event_topic(&t), "home/cam/record/event");
        assert_eq!(parse_set(b" Start\n"), Ok(RecordRequest::Start));
        assert_eq!(parse_set(b"OFF"), Ok(RecordRequest::Stop));
        assert_eq!(parse_set(b"trigger"), Ok(RecordRequest::Trigger));
        assert!(parse_set(b"record please").is_err_and(|e| e.contains("start, stop or trigger")));
        assert!(parse_set(&[0xff, 0xfe]).is_err_and(|e| e.contains("UTF-8")));
        let long = "x".repeat(10_000);
        assert!(parse_set(long.as_bytes()).is_err_and(|e| e.len() < 100));
    }
}
