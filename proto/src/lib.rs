//! rtcam-proto: the parsers of everything rtcam takes from outside, and the
//! types they produce. A crate of its own for two reasons:
//!
//! - the compiler enforces that these parsers are pure: this crate cannot
//!   reach an async runtime, the network, WebRTC, MQTT, HTTP, GPIO or the
//!   camera, because it does not depend on any of them (the one I/O left is
//!   [`config::load`] reading the files it is given);
//! - they fuzz (`fuzz/`, `.ci/fuzz`) without building the media stack
//!   (WebRTC, OpenH264's C, MQTT, HTTP), in a fraction of the time.
//!
//! The `rtcam` crate re-exports every module at the same path
//! (`rtcam::config`, `rtcam::control::commands`, …).
//!
//! # Modules
//!
//! - [`auth`]: viewer tokens (static and signed, expiring) and their roles.
//! - [`config`]: TOML file + `RTCAM_*` env + CLI flags → validated [`config::Settings`].
//! - [`control::protocol`], [`control::commands`]: DataChannel control requests → commands.
//! - [`http`]: the `Host` header the web viewer reads.
//! - [`rtsp`]: RTSP requests, transports, SDP and responses; Digest/Basic authentication ([`rtsp::auth`]).
//! - [`turn`]: short-lived TURN credentials (coturn's `use-auth-secret`).
//! - [`gpio::pins`]: pin declarations, servo and PWM arithmetic, debouncing.
//! - [`gpio::mqtt`]: GPIO-over-MQTT `…/set` topics and payloads.
//! - [`peer::sdp`]: what rtcam reads from an SDP offer before the WebRTC stack sees it.
//! - [`signaling::messages`], [`signaling::topics`]: MQTT signaling payloads and the topic scheme.
//! - [`signaling::acl`], [`signaling::origin`]: the embedded broker's access rules and
//!   WebSocket origin rules.
//! - [`signaling::whep`]: WHEP's trickle-ICE fragments, restart offers and `If-Match`.

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod http;
pub mod record;
pub mod rtsp;
pub mod turn;

/// DataChannel control: the request/reply protocol and the commands.
pub mod control {
    pub mod commands;
    pub mod protocol;
}

/// GPIO: pin declarations and the MQTT `…/set` scheme.
pub mod gpio {
    pub mod mqtt;
    pub mod pins;
}

/// WebRTC peer: the SDP offer summary.
pub mod peer {
    pub mod sdp;
}

/// MQTT signaling: message payloads, the topic scheme, and who may use
/// which topic and WebSocket origin on the embedded broker.
pub mod signaling {
    pub mod acl;
    pub mod messages;
    pub mod origin;
    pub mod topics;
    pub mod whep;
}
