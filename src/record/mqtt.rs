//! Recording over MQTT: the recorder's state retained on `P/record`
//! (republished on every reconnect), `record.started` / `record.stopped` /
//! `record.error` events on `P/record/event`, and `start` / `stop` /
//! `trigger` commands from automations on `P/record/set` (topic scheme and
//! payload parsing in `rtcam_proto::record`).

pub use rtcam_proto::record::{RecordRequest, event_topic, parse_set, set_topic, state_topic};

use super::recorder::{Command, RecordState, RecordStatus, Recorder};
use crate::signaling::mqtt::Publisher;
use crate::signaling::topics::Topics;
use crate::throttle::LogBudget;
use bytes::Bytes;
use serde_json::json;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The event a change of state is, if any: `(event, segment or error)`.
pub fn event_for(before: &RecordStatus, after: &RecordStatus) -> Option<serde_json::Value> {
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if after.segment.is_some() && after.segment != before.segment {
        return Some(json!({"event": "record.started", "segment": after.segment, "ts_ms": ts_ms}));
    }
    if after.state == RecordState::Error && before.state != RecordState::Error {
        return Some(json!({"event": "record.error", "error": after.error, "ts_ms": ts_ms}));
    }
    if before.segment.is_some() && after.segment.is_none() {
        return Some(json!({"event": "record.stopped", "segment": before.segment, "ts_ms": ts_ms}));
    }
    None
}

/// Publishes the recorder's state and events (to MQTT and every control
/// channel), and carries out `P/record/set`.
pub async fn run(
    recorder: Recorder,
    publisher: Publisher,
    topics: Topics,
    control: std::sync::Arc<crate::control::Controller>,
    mut sets: mpsc::Receiver<Bytes>,
    mut connected: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut status = recorder.watch();
    let mut last = status.borrow_and_update().clone();
    let state = |s: &RecordStatus| serde_json::to_string(s).unwrap_or_default();
    if *connected.borrow_and_update() {
        publisher.publish_retained(&state_topic(&topics), state(&last));
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            up = crate::signaling::mqtt::connected_again(&mut connected) => match up {
                Some(()) => publisher.publish_retained(&state_topic(&topics), state(&last)),
                None => break,
            },
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = status.borrow_and_update().clone();
                if let Some(ev) = event_for(&last, &now) {
                    publisher.publish(&event_topic(&topics), ev.to_string());
                    if let serde_json::Value::Object(mut fields) = ev {
                        let name = match fields.remove("event").as_ref().and_then(|v| v.as_str()) {
                            Some("record.started") => "record.started",
                            Some("record.stopped") => "record.stopped",
                            _ => "record.error",
                        };
                        control.notify(name, fields);
                    }
                }
                // Counters move with every fragment: the retained state
                // follows changes of what is recorded, not every byte.
                if (now.state, &now.segment, &now.error) != (last.state, &last.segment, &last.error) {
                    publisher.publish_retained(&state_topic(&topics), state(&now));
                }
                last = now;
            }
            Some(payload) = sets.recv() => match parse_set(&payload) {
                Ok(req) => {
                    let cmd = match req {
                        RecordRequest::Start => Command::Start,
                        RecordRequest::Stop => Command::Stop,
                        RecordRequest::Trigger => Command::Trigger("mqtt".into()),
                    };
                    recorder.command(cmd);
                }
                Err(e) => {
                    static BAD: LogBudget = LogBudget::new(1, Duration::from_secs(10));
                    if let Some(suppressed) = BAD.check() {
                        tracing::warn!(topic = %set_topic(&topics), error = %e, more_since_last = suppressed, "recording command over MQTT ignored");
                    }
                }
            },
        }
    }
}
