//! rtcam: a WebRTC camera daemon for Raspberry Pi and other ARM Linux boards.
//!
//! # Data flow
//!
//! ```text
//!  camera / test pattern          media thread (one per agent)                 async runtime
//! ┌──────────────────────┐   ┌──────────────────────────────────────┐   ┌───────────────────────┐
//! │ capture::Source      │──▶│ convert (→ I420, only if the encoder │──▶│ hub ─▶ Subscription   │──▶ viewers
//! │ (test, v4l2)         │   │ needs it) ─▶ encode::VideoEncoder    │   │  Packets of tracks,   │
//! └──────────────────────┘   │ (OpenH264, or camera H.264 passed    │   │  bounded queue each   │
//!                            │  through)                            │   └───────────────────────┘
//!                            └──────────────────────────────────────┘
//!                              pipeline: runs only while the hub has subscribers;
//!                              steered through encode::EncoderControl (keyframes, bitrate)
//! ```
//!
//! Each frame is encoded once; the hub hands the same `Bytes` to every
//! subscriber. A slow subscriber loses frames (counted) and resumes at the
//! next keyframe; it never stalls capture or the other subscribers.
//!
//! ```text
//!  browser ──MQTT offer/ICE/bye──▶ broker (embedded rumqttd, or external)
//!                                    │
//!        signaling::mqtt (client link, reconnect backoff) ─▶ mqtt_door ─┐
//!  WHEP player ──HTTP(S) POST/PATCH/DELETE──▶ web ─▶ signaling::whep ────┤ session::signal::Request
//!                                                                        ▼
//!                               session manager: admission::admit (one pure decision for every door)
//!                                                        │ one task per viewer, replies through its Door
//!                     peer (WebRTC: H.264 track ◀── hub Subscription)
//!                          └─ DataChannel ──▶ control ──▶ gpio / EncoderControl / camera
//! ```
//!
//! [`agent`] wires these together and owns the one shutdown path: a cancel
//! token every task selects on, and tracked completion.
//!
//! # Modules
//!
//! The parsers of outside input are in the `rtcam-proto` crate (`proto/`),
//! re-exported here at their old paths: [`auth`], [`config`],
//! [`control::commands`] and [`control::protocol`], [`gpio::pins`] and the
//! `…/set` parsing in [`gpio::mqtt`], [`peer::sdp`], [`signaling::messages`]
//! and [`signaling::topics`]. There the compiler keeps them pure (that crate
//! cannot reach tokio, WebRTC, MQTT, HTTP, GPIO or the camera), and they
//! fuzz without building the media stack.
//!
//! - [`config`]: TOML file + `RTCAM_*` env + CLI flags → validated [`config::Settings`] (rtcam-proto).
//! - [`media`]: the media chain, one module per stage in data-flow order:
//!   - [`media::capture`]: the `Source` trait and its sources (test pattern, V4L2), device listing, mode choice.
//!   - [`media::convert`]: camera formats (YUYV, NV12, MJPEG) → I420, for encoders that need it.
//!   - [`media::encode`]: the `VideoEncoder` trait, its factory (`choose`: passthrough, the board's V4L2 M2M encoder, OpenH264) and implementations (OpenH264 configured for WebRTC, the V4L2 M2M hardware encoder fed by DMA-BUF or MMAP, camera H.264 passthrough), and `EncoderControl` (keyframe requests, bitrate).
//!   - [`media::frame`]: frame types passed between stages, and the hub's `Packet`s of tracks.
//!   - [`media::h264`]: Annex B parsing: NAL types, keyframes, SPS/PPS re-insertion.
//!   - [`media::hub`]: encode-once fan-out with per-subscriber bounded queues; [`media::hub::policy`] is its pure state machine.
//!   - [`media::pipeline`]: the media thread tying source → convert → encode → hub, with reopen backoff.
//!   - [`media::stage_times`]: how long each frame spends in each stage (histograms and recent percentiles).
//! - [`audio`]: the microphone (ALSA or a test tone, Opus-encoded once, the hub's audio track) and talkback (the floor, a jitter buffer, the ALSA speaker).
//! - [`blockcode`]: the test pattern's machine-readable sequence/timestamp code and its decoder.
//! - [`backoff`]: retry delays shared by every reconnect loop.
//! - [`record`]: recording to crash-safe fragmented MP4 segments (policy, boxes, files, retention, MQTT), and `rtcam record`'s Annex B dump.
//! - [`bench`]: `rtcam bench`, encoder and pipeline CPU cost, per-stage latency.
//! - [`motion`]: motion detection on a small luma picture, its events to viewers, MQTT, Home Assistant and the recorder.
//! - [`metrics`]: `/metrics`, the agent's figures in the Prometheus text format.
//! - [`snapshot`]: JPEG snapshots from the raw picture (or the next keyframe), for HTTP, the DataChannel and MQTT.
//! - [`signaling`]: the doors viewers signal through: MQTT (the client link with reconnect backoff, echo filtering, the embedded broker, [`signaling::mqtt_door`]) and WHEP ([`signaling::whep`]).
//! - [`rtsp`]: the RTSP server (`[rtsp]`): `rtsp://host:8554/cam` over UDP or TCP, one more hub subscriber per client.
//! - [`session`]: the transport-neutral session core: its vocabulary ([`session::signal`]), the one admission decision ([`session::admission`]), the pure rules ([`session::table`]), one task per viewer.
//! - [`peer`]: the adapter over the `webrtc` crate; nothing else names its types.
//! - [`control`]: DataChannel commands checked against role and rate limit, carried out.
//! - [`gpio`]: named pins behind the `GpioBackend` trait (simulated, Linux cdev, rppal), failsafes, MQTT bridge.
//! - [`web`]: the built-in web viewer and its JSON endpoints, HTTPS ([`web::tls`]), the broker's WebSocket on its origin ([`web::mqtt_ws`]), and the WHEP routes.
//! - [`systemd`]: readiness, status, stopping and the watchdog, in one place.
//! - [`throttle`]: budgets per time window, so floods are cut and reported once.
//! - [`agent`]: the running agent and its shutdown path.
//! - [`probe`]: `rtcam probe`, a headless viewer that decodes and checks the stream.
//! - [`cli`]: the command line.
//! - [`logging`]: log filter and journald-friendly output.

#![warn(missing_docs)]

pub mod agent;
pub mod audio;
pub use rtcam_proto::auth;
pub mod backoff;
pub mod bench;
pub mod blockcode;
pub mod cli;
pub use rtcam_proto::config;
pub mod control;
pub mod gpio;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod motion;
pub mod peer;
pub mod probe;
pub mod record;
pub mod rtsp;
pub mod session;
pub mod signaling;
pub mod snapshot;
pub mod systemd;
pub mod throttle;
pub mod web;
