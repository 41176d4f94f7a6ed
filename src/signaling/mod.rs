//! Signaling adapters over the transport-neutral session core
//! ([`crate::session::signal`]): MQTT (the topic scheme and message
//! payloads, pure, from `rtcam_proto`; echo filtering; the client
//! connection with reconnect backoff; the embedded broker; [`mqtt_door`],
//! the adapter) and WHEP over the web server ([`whep`]).

pub mod broker;
pub mod echo;
pub mod mqtt;
pub mod mqtt_door;
pub mod whep;

/// WHEP's pure text handling (trickle-ICE fragments, restart offers).
pub use rtcam_proto::signaling::whep as whep_text;
pub use rtcam_proto::signaling::{acl, messages, origin, topics};
