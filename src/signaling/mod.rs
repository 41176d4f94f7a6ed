//! MQTT signaling: the topic scheme and message payloads (pure, from
//! `rtcam_proto`), echo filtering (pure), the client connection with
//! reconnect backoff, and the embedded broker.

pub mod broker;
pub mod echo;
pub mod mqtt;

pub use rtcam_proto::signaling::{acl, messages, origin, topics};
