//! Recording over MQTT: the recorder's state retained on `P/record`
//! (republished on every reconnect), `record.started` / `record.stopped` /
//! `record.error` events on `P/record/event`, and `start` / `stop` /
//! `trigger` commands from automations on `P/record/set` (topic scheme and
//! payload parsing in `rtcam_proto::record`).

pub use rtcam_proto::record::{RecordRequest, event_topic, parse_set, set_topic, state_topic};

use super::recorder::{Command, RecordStatus, Recorder};
use crate::signaling::mqtt::Publisher;
use crate::signaling::topics::Topics;
use crate::throttle::LogBudget;
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

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
    let mut events = recorder.events();
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
                // Counters move with every fragment: the retained state
                // follows changes of what is recorded, not every byte.
                if (now.state, &now.segment, &now.error) != (last.state, &last.segment, &last.error) {
                    publisher.publish_retained(&state_topic(&topics), state(&now));
                }
                last = now;
            }
            ev = events.recv() => match ev {
                Ok(ev) => {
                    let (name, fields) = ev.fields();
                    let mut doc = fields.clone();
                    doc.insert("event".into(), name.into());
                    publisher.publish(&event_topic(&topics), serde_json::Value::Object(doc).to_string());
                    control.notify(name, fields);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "recording events fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
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
