//! MQTT signaling: the topic scheme, message payloads, echo filtering (all
//! pure), the client connection with reconnect backoff, and the embedded broker.

pub mod broker;
pub mod echo;
pub mod messages;
pub mod mqtt;
pub mod topics;
