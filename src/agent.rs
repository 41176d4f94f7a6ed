//! The running agent: wires the media pipeline, the embedded broker, MQTT
//! signaling, the session manager and the web viewer together, and owns the
//! one shutdown path (cancel token → every task stops → tracked completion).

use crate::audio::{AudioStats, Talkback};
use crate::backoff::Backoff;
use crate::config::settings::CongestionPolicy;
use crate::config::settings::{HttpTls, MqttProtocol, MqttScheme, MqttUrl};
use crate::config::{AudioInput, RecordMode, Settings};
use crate::control::{Controller, ControllerParts};
use crate::gpio::demo as gpio_demo;
use crate::gpio::mqtt as gpio_mqtt;
use crate::gpio::pins::PinMode;
use crate::gpio::{Gpio, GpioError};
use crate::media::encode::{EncoderControl, EncoderSettings, PROFILE_LEVEL_ID};
use crate::media::frame::TrackInfo;
use crate::media::hub::Hub;
use crate::media::hub::policy::PolicyConfig;
use crate::media::pipeline::{CameraState, Pipeline, PipelineOptions, PipelineStatus};
use crate::media::rate::policy::Mode as RateMode;
use crate::peer::PeerOptions;
use crate::record::mqtt as record_mqtt;
use crate::record::recorder::{Command as RecordCommand, RecordState, Recorder};
use crate::session::table::{Counts, Limits};
use crate::session::{self, Faults, SessionContext};
use crate::signaling::messages::{AudioInfo, Info, PROTOCOL_VERSION, PinInfo, VideoInfo};
use crate::signaling::mqtt::{self, MqttOptions, Retained, TlsFiles};
use crate::signaling::topics::Topics;
use crate::signaling::{broker, mqtt::Publisher};
use crate::systemd::{Heartbeats, Notifier, Watchdog};
use crate::web::{self, PageConfig, WsUrl};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the demo's door opens or closes by itself.
const DEMO_DOOR_PERIOD: Duration = Duration::from_secs(7);
/// `P/info` is republished at most this often while pins change.
const INFO_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// How long shutdown waits for tasks before giving up on them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(4);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The embedded broker.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// MQTT client setup.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    /// The web viewer's address.
    #[error("web viewer cannot listen on {addr} (http.listen): {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// HTTPS (`http.tls`).
    #[error("https (http.tls): {0}")]
    Tls(#[from] web::tls::TlsError),
    /// The media thread.
    #[error("cannot start the media thread: {0}")]
    Media(std::io::Error),
    /// GPIO.
    #[error(transparent)]
    Gpio(#[from] GpioError),
    /// The RTSP server's address.
    #[error(transparent)]
    Rtsp(#[from] crate::rtsp::RtspError),
}

/// Extra start options (tests).
#[derive(Clone, Default)]
pub struct AgentOptions {
    /// Faults to inject.
    pub faults: Faults,
    /// Replace the frame source (tests use a failing one).
    pub source: Option<Arc<dyn crate::media::capture::SourceFactory>>,
}

/// A snapshot of the agent's state, served as `/stats.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentStats {
    /// Sessions (negotiating or connected).
    pub sessions: usize,
    /// Of which negotiating.
    pub negotiating: usize,
    /// Of which connected.
    pub connected: usize,
    /// Hub subscribers (video sessions streaming).
    pub subscribers: usize,
    /// Hub demand holds (video sessions negotiating).
    pub holds: usize,
    /// Tasks the agent tracks (sessions, pumps, channels, MQTT, HTTP, manager).
    pub tasks: usize,
    /// Connected to the broker.
    pub mqtt_connected: bool,
    /// Camera state.
    pub camera: String,
    /// Frames encoded since start.
    pub frames: u64,
    /// Frames dropped for slow viewers.
    pub frames_dropped: u64,
    /// The agent's own MQTT messages echoed back by the broker and dropped.
    pub echoes_dropped: u64,
    /// Signaling publishes dropped while the broker was away.
    pub publishes_dropped: u64,
    /// Viewer signaling messages handed to the session manager.
    pub signaling_received: u64,
    /// Viewer signaling messages dropped because the manager was behind (a flood).
    pub signaling_dropped: u64,
    /// Tasks alive in the async runtime (the WebRTC stack's included).
    pub runtime_tasks: usize,
    /// Web viewer connections open now.
    #[serde(default)]
    pub http_connections: usize,
    /// Web viewer connections accepted since start.
    #[serde(default)]
    pub http_accepted: u64,
    /// Web viewer connections closed by the header or idle timeout.
    #[serde(default)]
    pub http_timed_out: u64,
    /// Web viewer connections closed to make room at `http.max_connections`.
    #[serde(default)]
    pub http_evicted: u64,
    /// Log lines dropped because the log output (stderr) was blocked.
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// RTSP connections open now (`[rtsp]`).
    #[serde(default)]
    pub rtsp_clients: usize,
}

/// The running agent.
pub struct Agent {
    settings: Settings,
    hub: Arc<Hub>,
    pipeline: Option<Pipeline>,
    /// The microphone's thread; it ends when the hub closes.
    microphone: Option<std::thread::JoinHandle<()>>,
    camera: Arc<PipelineStatus>,
    shutdown: CancellationToken,
    sessions_stop: CancellationToken,
    manager: Option<tokio::task::JoinHandle<()>>,
    tracker: TaskTracker,
    counts: watch::Receiver<Counts>,
    mqtt_connected: watch::Receiver<bool>,
    echoes_dropped: Arc<std::sync::atomic::AtomicU64>,
    inbound: Arc<mqtt::InboundCounts>,
    http_addr: Option<SocketAddr>,
    web: Arc<web::WebCounts>,
    info: watch::Sender<Retained>,
    publisher: Publisher,
    gpio: Option<Arc<Gpio>>,
    recorder: Option<Recorder>,
    rtsp: Arc<crate::rtsp::RtspCounts>,
}

fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// The `P/info` document for these settings.
pub fn info_for(settings: &Settings, gpio: Option<&Gpio>) -> Info {
    Info {
        protocol: PROTOCOL_VERSION,
        agent: "rtcam".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        device: settings.device.name.clone(),
        video: VideoInfo {
            codec: "H264".into(),
            profile_level_id: PROFILE_LEVEL_ID.into(),
            width: settings.video.width,
            height: settings.video.height,
            fps: settings.video.fps,
        },
        max_viewers: settings.webrtc.max_viewers,
        audio: {
            let a = &settings.audio;
            let microphone = a.input != AudioInput::Off;
            (microphone || a.output.is_some()).then(|| AudioInfo {
                codec: "opus".into(),
                sample_rate: crate::audio::SAMPLE_RATE,
                channels: a.channels,
                microphone,
                talkback: a.output.is_some(),
            })
        },
        pins: gpio
            .map(|g| {
                g.list()
                    .iter()
                    .map(|p| {
                        let (min, max) = match p.spec.mode {
                            PinMode::Pwm {
                                min_duty, max_duty, ..
                            } => (Some(min_duty), Some(max_duty)),
                            PinMode::Servo { max_angle, .. } => (Some(0.0), Some(max_angle)),
                            _ => (None, None),
                        };
                        PinInfo {
                            name: p.spec.name.clone(),
                            mode: p.spec.mode.name().into(),
                            value: Some(p.value.json()),
                            min,
                            max,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl Agent {
    /// Starts every part. Returns once they run; the broker may still be unreachable.
    pub async fn start(settings: Settings, opts: AgentOptions) -> Result<Agent, AgentError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        // Media: idle until a viewer subscribes.
        let v = &settings.video;
        let policy = PolicyConfig {
            always_on: v.always_on,
            ..PolicyConfig::default()
        };
        let encoder = EncoderControl::new(policy.drop_keyframe_gap, v.bitrate_kbps);
        // The microphone is the hub's second track, fanned out like the video.
        let mic = settings.audio.input != AudioInput::Off;
        let mut tracks = vec![TrackInfo::VIDEO_H264];
        if mic {
            tracks.push(TrackInfo::AUDIO_OPUS);
        }
        let hub = Hub::with_tracks(policy, tracks, encoder.clone());
        let factory: Box<dyn crate::media::capture::SourceFactory> = match opts.source {
            Some(f) => Box::new(SharedFactory(f)),
            None => crate::media::capture::factory_for(v),
        };
        let pipeline = Pipeline::spawn(
            factory,
            hub.clone(),
            encoder.clone(),
            PipelineOptions {
                encoder: EncoderSettings::from_video(v),
                backoff: Backoff::standard(),
            },
        )
        .map_err(AgentError::Media)?;
        let camera = pipeline.status();
        let audio_stats = Arc::new(AudioStats::default());
        let microphone = if mic {
            Some(
                crate::audio::capture::spawn(&settings.audio, hub.clone(), audio_stats.clone())
                    .map_err(AgentError::Media)?,
            )
        } else {
            None
        };
        let talk = match &settings.audio.output {
            Some(_) => Some(
                Talkback::spawn(&settings.audio, audio_stats.clone()).map_err(AgentError::Media)?,
            ),
            None => None,
        };
        let heartbeats = Arc::new(Heartbeats::new());
        heartbeats.add("media", camera.heartbeat());

        // Broker and MQTT. The embedded broker gives the agent a credential
        // of its own; an external one is reached with the configured one.
        let mut embedded = None;
        let (url, protocol, username, password) = match &settings.mqtt.url {
            Some(u) => {
                if let Some(w) =
                    broker::external_broker_check(&settings).map_err(broker::BrokerError::Unsafe)?
                {
                    tracing::warn!("{w}");
                }
                (
                    u.clone(),
                    settings.mqtt.protocol,
                    settings.mqtt.username.clone(),
                    settings.mqtt.password.clone(),
                )
            }
            None => {
                let b = broker::start(&settings)?;
                let addr = match settings.mqtt.protocol {
                    MqttProtocol::V5 => local(settings.broker.v5_listen),
                    MqttProtocol::V311 => local(settings.broker.listen),
                };
                let credential = (Some(b.username.clone()), Some(b.password.clone()));
                embedded = Some(b);
                (
                    MqttUrl {
                        scheme: MqttScheme::Mqtt,
                        host: addr.ip().to_string(),
                        port: addr.port(),
                        path: String::new(),
                    },
                    settings.mqtt.protocol,
                    credential.0,
                    credential.1,
                )
            }
        };
        let topics = Topics::new(&settings.mqtt.topic_prefix);
        // GPIO: the demo pin set on the simulator, or the declared pins.
        let gpio = if settings.gpio.demo || !settings.gpio.pins.is_empty() {
            let pins = if settings.gpio.demo {
                gpio_demo::pins()
            } else {
                settings.gpio.pins.clone()
            };
            let (backend, sim) = crate::gpio::open_backend(settings.gpio.backend)?;
            let g = Gpio::start(pins, backend, sim, settings.gpio.max_pulse)?;
            if settings.gpio.demo
                && let Some(sim) = g.simulator()
            {
                tracker.spawn(gpio_demo::door_driver(
                    sim.clone(),
                    DEMO_DOOR_PERIOD,
                    shutdown.clone(),
                ));
            }
            Some(g)
        } else {
            None
        };
        let snapshots = crate::snapshot::Snapshots::new(hub.clone(), pipeline.taps(), 85);
        // Recording: one more subscriber of the hub, and the pins that trigger it.
        let recorder = if settings.record.mode == RecordMode::Off {
            None
        } else {
            let (recorder, task) = crate::record::recorder::start(
                &settings.record,
                settings.audio.channels,
                hub.clone(),
                shutdown.clone(),
            );
            tracker.spawn(task);
            if let Some(g) = &gpio
                && !settings.record.triggers.is_empty()
            {
                tracker.spawn(forward_triggers(
                    g.clone(),
                    settings.record.triggers.clone(),
                    recorder.clone(),
                    shutdown.clone(),
                ));
            }
            tracing::info!(
                mode = settings.record.mode.as_str(),
                dir = %settings.record.dir.display(),
                "recording on"
            );
            Some(recorder)
        };
        let info_json = serde_json::to_string(&info_for(&settings, gpio.as_deref()))
            .expect("Info is plain data and always serialises");
        let (info, info_rx) = watch::channel(Retained { info: info_json });
        let (inbound_tx, inbound_rx) = mpsc::channel(256);
        // Every door's viewer messages, into the one session core.
        let (requests_tx, requests_rx) = mpsc::channel(256);
        // GPIO over MQTT: state and Home Assistant discovery out, …/set in.
        let gpio_bridge = gpio.as_ref().filter(|_| settings.gpio.mqtt).cloned();
        let (gpio_set_tx, gpio_set_rx) = match &gpio_bridge {
            Some(_) => {
                let (tx, rx) = mpsc::channel(64);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        // Recording commands from automations (`P/record/set`).
        let (record_set_tx, record_set_rx) = match &recorder {
            Some(_) => {
                let (tx, rx) = mpsc::channel(16);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let mut extra_filters = Vec::new();
        if gpio_bridge.is_some() {
            extra_filters.push(gpio_mqtt::set_filter(&topics));
        }
        let record_set = record_mqtt::set_topic(&topics);
        if recorder.is_some() {
            extra_filters.push(record_set.clone());
        }
        let snapshot_set = topics.snapshot_set();
        extra_filters.push(snapshot_set.clone());
        let (snapshot_tx, snapshot_rx) = mpsc::channel::<bytes::Bytes>(4);
        // One route for every extra subscription (there is always
        // `P/snapshot/set`), split here by topic.
        let extra_tx = {
            let (tx, mut rx) = mpsc::channel::<(String, bytes::Bytes)>(64);
            let stop = shutdown.clone();
            tracker.spawn(async move {
                loop {
                    let (topic, payload) = tokio::select! {
                        _ = stop.cancelled() => break,
                        m = rx.recv() => match m { Some(m) => m, None => break },
                    };
                    let full = if topic == snapshot_set {
                        Some(snapshot_tx.try_send(payload).is_err())
                    } else if topic == record_set {
                        record_set_tx.as_ref().map(|t| t.try_send(payload).is_err())
                    } else {
                        gpio_set_tx
                            .as_ref()
                            .map(|t| t.try_send((topic, payload)).is_err())
                    };
                    if full == Some(true) {
                        tracing::debug!("an MQTT command was dropped: its handler is busy");
                    }
                }
            });
            Some(tx)
        };
        let conn = mqtt::start(
            &MqttOptions {
                url,
                protocol,
                client_id: settings.mqtt.client_id.clone(),
                username,
                password,
                tls: TlsFiles::from_settings(&settings.mqtt),
                keep_alive: Duration::from_secs(30),
            },
            topics.clone(),
            info_rx,
            mqtt::Routes {
                inbound: inbound_tx,
                extra_filters,
                extra: extra_tx,
                heartbeat: heartbeats.register("signaling"),
            },
            shutdown.clone(),
        )?;
        let publisher = conn.publisher.clone();
        tracker.spawn(crate::signaling::mqtt_door::run(
            inbound_rx,
            Arc::new(crate::signaling::mqtt_door::MqttDoor::new(
                publisher.clone(),
            )),
            settings.mqtt.max_payload_bytes,
            requests_tx.clone(),
            shutdown.clone(),
        ));
        let discovery = settings.gpio.ha_discovery.then(|| gpio_mqtt::Discovery {
            prefix: settings.gpio.ha_prefix.clone(),
            device: settings.device.name.clone(),
            node_id: gpio_mqtt::node_id(&settings.mqtt.client_id),
        });
        let mqtt_snapshots = crate::snapshot::MqttSnapshots {
            snapshots: snapshots.clone(),
            publisher: publisher.clone(),
            topics: topics.clone(),
            discovery: discovery.clone(),
        };
        tracker.spawn(mqtt_snapshots.clone().run(
            snapshot_rx,
            conn.connected.clone(),
            shutdown.clone(),
        ));
        if let (Some(g), Some(rx)) = (gpio_bridge, gpio_set_rx) {
            let bridge = gpio_mqtt::Bridge {
                gpio: g,
                publisher: publisher.clone(),
                topics: topics.clone(),
                discovery: settings.gpio.ha_discovery.then(|| gpio_mqtt::Discovery {
                    prefix: settings.gpio.ha_prefix.clone(),
                    device: settings.device.name.clone(),
                    node_id: gpio_mqtt::node_id(&settings.mqtt.client_id),
                }),
                rate_limit: settings.control.rate_limit,
            };
            tracker.spawn(bridge.run(rx, conn.connected.clone(), shutdown.clone()));
        }
        if let Some(g) = &gpio {
            tracker.spawn(republish_info(
                settings.clone(),
                g.clone(),
                info.clone(),
                shutdown.clone(),
            ));
        }
        let mqtt_task = conn.task;
        tracker.spawn(async move {
            let _ = mqtt_task.await;
        });

        // Sessions.
        let (counts_tx, counts) = watch::channel(Counts::default());
        let (viewers_tx, viewers_rx) = watch::channel(0usize);
        let mut counts_watch = counts.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = counts_watch.changed() => {
                        if changed.is_err() { break; }
                        let n = counts_watch.borrow_and_update().sessions;
                        let _ = viewers_tx.send(n);
                    }
                }
            }
        });
        let rate = crate::media::rate::RateControl::new(
            crate::media::rate::RateSettings {
                mode: match v.congestion {
                    CongestionPolicy::FollowWeakest => RateMode::FollowWeakest,
                    CongestionPolicy::KeepQuality => RateMode::KeepQuality,
                    CongestionPolicy::Off => RateMode::Off,
                },
                ceiling_kbps: v.bitrate_kbps,
                min_kbps: v.min_bitrate_kbps,
                picture: Some(crate::media::rate::policy::Picture {
                    width: v.width,
                    height: v.height,
                    fps: v.fps,
                }),
            },
            encoder.clone(),
        );
        let control = Arc::new(Controller::new(ControllerParts {
            hub: hub.clone(),
            encoder: encoder.clone(),
            rate: rate.clone(),
            camera: camera.clone(),
            camera_controls: pipeline.camera_controls(),
            gpio: gpio.clone(),
            viewers: viewers_rx,
            size: (v.width, v.height, v.fps),
            bitrate_bounds: (v.min_bitrate_kbps, v.max_bitrate_kbps),
            rate_limit: settings.control.rate_limit,
            max_message: settings.control.max_message_bytes,
            recorder: recorder.clone(),
            snapshots: snapshots.clone(),
            talk,
        }));
        // Recording and motion events go to MQTT and to every control channel.
        if let (Some(r), Some(rx)) = (&recorder, record_set_rx) {
            tracker.spawn(record_mqtt::run(
                r.clone(),
                publisher.clone(),
                topics.clone(),
                control.clone(),
                rx,
                conn.connected.clone(),
                shutdown.clone(),
            ));
        }
        if settings.motion.enabled {
            let parts = crate::motion::MotionParts {
                settings: settings.motion.clone(),
                picture: (v.width, v.height),
                hub: hub.clone(),
                taps: pipeline.taps(),
                control: control.clone(),
                publisher: publisher.clone(),
                topics: topics.clone(),
                discovery: discovery.clone(),
                recorder: recorder.clone(),
                snapshots: mqtt_snapshots.clone(),
                tracker: tracker.clone(),
            };
            tracker.spawn(parts.run(conn.connected.clone(), shutdown.clone()));
        }
        let links = Arc::new(crate::metrics::ViewerLinks::default());
        let ctx = Arc::new(SessionContext {
            hub: hub.clone(),
            encoder: encoder.clone(),
            peer: PeerOptions {
                // GCC on the viewers' transport-wide feedback feeds
                // congestion control, within the encoder's bounds.
                send_side_bwe: (v.congestion != CongestionPolicy::Off).then(|| {
                    (
                        v.min_bitrate_kbps.saturating_mul(1000),
                        v.max_bitrate_kbps.saturating_mul(1000),
                    )
                }),
                audio: mic || settings.audio.output.is_some(),
                ..PeerOptions::from_settings(&settings.webrtc)
            },
            control: control.clone(),
            frame_duration: Duration::from_secs(1) / v.fps.max(1),
            auth: settings.auth.authorizer(),
            faults: opts.faults,
            links: links.clone(),
            rate: rate.clone(),
        });
        let limits = Limits {
            max_viewers: settings.webrtc.max_viewers,
            max_negotiating: settings.webrtc.max_negotiating,
            negotiation_timeout: settings.webrtc.negotiation_timeout,
            disconnected_timeout: settings.webrtc.disconnected_timeout,
            early_ice_per_client: settings.webrtc.early_ice_candidates,
            early_ice_clients: settings.webrtc.early_ice_clients,
            offers_per_minute: settings.mqtt.offers_per_minute as usize,
            ..Limits::default()
        };
        // Sessions stop first (saying bye over MQTT), then the rest.
        let sessions_stop = CancellationToken::new();
        let manager = tracker.spawn(session::run(
            ctx,
            limits,
            requests_rx,
            counts_tx,
            tracker.clone(),
            heartbeats.register("sessions"),
            sessions_stop.clone(),
        ));

        // The RTSP server's figures exist (at zero) even when it is off.
        let rtsp_counts = Arc::new(crate::rtsp::RtspCounts::default());

        // Web viewer.
        let mut http_addr = None;
        let web_counts = Arc::new(web::WebCounts::default());
        if let Some(addr) = settings.http.listen {
            // The certificate first: a bad one stops the start with its reason.
            let names = {
                let known = web::KnownHosts::of_this_machine(&settings.http.hosts);
                let mut n = known.machine;
                n.extend(known.configured);
                n
            };
            let https = web::tls::setup(&settings.http.tls, &web::tls::state_dir(), &names)?;
            if let Some(h) = &https {
                tracing::info!(
                    certificate = %h.source.display(),
                    sha256 = %h.fingerprint,
                    "https: the web viewer and WHEP are served over TLS; certificate fingerprint SHA-256 {}",
                    h.fingerprint
                );
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Http { addr, source })?;
            http_addr = listener.local_addr().ok();
            if let (Some(b), Some(a)) = (&embedded, http_addr) {
                b.web_viewer_bound(a.port());
            }
            let ws = match (&settings.http.mqtt_ws_url, &settings.mqtt.url) {
                (Some(u), _) => WsUrl::Fixed(u.clone()),
                (None, None) => WsUrl::SameHost {
                    port: settings.broker.ws_listen.port(),
                },
                (None, Some(u)) if matches!(u.scheme, MqttScheme::Ws | MqttScheme::Wss) => {
                    WsUrl::Fixed(u.to_string())
                }
                (None, Some(_)) => WsUrl::Unknown,
            };
            // The page and WHEP players get the same ICE servers.
            let turn_secret = settings
                .webrtc
                .turn_secret
                .clone()
                .map(|s| (s, settings.webrtc.turn_credential_ttl));
            let page = PageConfig {
                device: settings.device.name.clone(),
                topic_prefix: settings.mqtt.topic_prefix.clone(),
                mqtt_protocol: 4,
                ice_servers: settings.webrtc.ice_servers.clone(),
                turn_secret: turn_secret.clone(),
                serve_static_turn_credentials: settings.http.serve_static_turn_credentials,
            };
            let stats_src = StatsSource {
                hub: hub.clone(),
                camera: camera.clone(),
                counts: counts.clone(),
                mqtt: conn.connected.clone(),
                echoes_dropped: conn.echoes_dropped.clone(),
                inbound: conn.inbound.clone(),
                publisher: publisher.clone(),
                tracker: tracker.clone(),
                web: web_counts.clone(),
                rtsp: rtsp_counts.clone(),
            };
            let metrics_src = stats_src.clone();
            let viewer_links = links.clone();
            let applied = encoder.clone();
            let stats: web::StatsFn = Arc::new(move || {
                serde_json::to_value(stats_src.snapshot())
                    .expect("AgentStats is plain data and always serialises")
            });
            let metrics_recorder = recorder.clone();
            let metrics_audio = (settings.audio.input != AudioInput::Off
                || settings.audio.output.is_some())
            .then(|| (audio_stats.clone(), control.talk().cloned()));
            let web_auth = Arc::new(settings.auth.authorizer());
            let metrics: web::MetricsFn = Arc::new(move || {
                let camera = &metrics_src.camera;
                let media = crate::metrics::MediaFigures {
                    bitrate_kbps: applied.applied_kbps(),
                    bitrate_ceiling_kbps: rate.ceiling_kbps(),
                    frame_divisor: applied.frame_divisor(),
                    frame_copies: camera.copies(),
                    bad_frames: camera.bad_frames(),
                    restarts: camera.restarts(),
                    camera_running: matches!(camera.state(), CameraState::Running(_)),
                    audio: metrics_audio.as_ref().map(|(a, talk)| {
                        use std::sync::atomic::Ordering::Relaxed;
                        crate::metrics::AudioFigures {
                            capturing: a.running.load(Relaxed),
                            frames: a.frames.load(Relaxed),
                            bytes: a.bytes.load(Relaxed),
                            errors: a.errors.load(Relaxed),
                            talking: talk.as_ref().is_some_and(|t| t.talker().is_some()),
                            talk_packets: a.talk_packets.load(Relaxed),
                            talk_dropped: a.talk_dropped.load(Relaxed),
                            played: a.played.load(Relaxed),
                        }
                    }),
                    record: metrics_recorder.as_ref().map(|r| {
                        let s = r.status();
                        crate::metrics::RecordFigures {
                            recording: s.state == RecordState::Recording,
                            failing: s.state == RecordState::Error,
                            segments: s.segments,
                            frames: s.frames,
                            bytes: s.bytes,
                            dropped_fragments: s.dropped_fragments,
                            write_errors: s.write_errors,
                            deleted: s.deleted,
                        }
                    }),
                };
                crate::metrics::render(
                    &metrics_src.snapshot(),
                    &media,
                    camera.stage_times(),
                    &viewer_links,
                )
            });
            let opts = web::ServeOptions {
                limits: web::Limits {
                    cap: settings.http.max_connections,
                    header_timeout: settings.http.header_timeout,
                    idle_timeout: settings.http.idle_timeout,
                },
                hosts: settings.http.hosts.clone(),
                recordings: recorder.clone().map(|r| web::Recordings {
                    door: Arc::new(RecorderDoor(r)),
                    auth: web_auth.clone(),
                }),
                snapshot: Some(web::snapshot::Shots {
                    take: {
                        let shots = snapshots.clone();
                        Arc::new(move || {
                            let shots = shots.clone();
                            Box::pin(async move {
                                shots
                                    .take()
                                    .await
                                    .map(|s| s.jpeg)
                                    .map_err(|e| e.to_string())
                            })
                        })
                    },
                    auth: web_auth.clone(),
                }),
                whep: Some(crate::signaling::whep::Whep::new(
                    crate::signaling::whep::WhepOptions {
                        requests: requests_tx.clone(),
                        auth: web_auth.clone(),
                        ice_servers: settings.webrtc.ice_servers.clone(),
                        turn_secret,
                        serve_static_turn_credentials: settings.http.serve_static_turn_credentials,
                    },
                )),
                tls: https.map(|h| web::TlsOn(h.acceptor)),
                mqtt_ws: embedded.is_some().then_some(settings.broker.ws_listen),
            };
            tracker.spawn(web::serve(
                listener,
                page,
                ws,
                web::Figures { stats, metrics },
                opts,
                web_counts.clone(),
                shutdown.clone(),
            ));
        }

        // RTSP: each client one more subscriber of the same hub.
        if let Some((listener, url)) = crate::rtsp::bind(&settings.rtsp).await? {
            if settings.rtsp.credentials.is_none()
                && settings.rtsp.listen.is_some_and(|a| !a.ip().is_loopback())
            {
                tracing::warn!(
                    "rtsp: open to the network without rtsp.username/password: anyone who can reach it can watch"
                );
            }
            tracing::info!("rtsp: serving {url}");
            let ctx = Arc::new(crate::rtsp::Context {
                hub: hub.clone(),
                settings: settings.rtsp.clone(),
                counts: rtsp_counts.clone(),
            });
            tracker.spawn(crate::rtsp::serve(
                listener,
                ctx,
                tracker.clone(),
                shutdown.clone(),
            ));
        }

        let agent = Agent {
            settings,
            hub,
            pipeline: Some(pipeline),
            microphone,
            camera,
            shutdown,
            sessions_stop,
            manager: Some(manager),
            tracker,
            counts,
            mqtt_connected: conn.connected,
            echoes_dropped: conn.echoes_dropped,
            inbound: conn.inbound,
            http_addr,
            web: web_counts,
            info,
            publisher,
            gpio,
            recorder,
            rtsp: rtsp_counts,
        };
        agent.tracker.spawn(supervise(
            agent.stats_source(),
            heartbeats,
            agent.shutdown.clone(),
        ));
        // Last: once it is printed, every task of an idle agent runs.
        agent.banner();
        Ok(agent)
    }

    fn banner(&self) {
        let s = &self.settings;
        let scheme = if s.http.tls == HttpTls::Off {
            "http"
        } else {
            "https"
        };
        let url = self
            .http_addr
            .map(|a| format!("{scheme}://{}", local(a)))
            .unwrap_or_else(|| "(web viewer off)".into());
        let broker = match &s.mqtt.url {
            Some(u) => format!("broker {u}"),
            None => format!(
                "embedded broker on {} (MQTT 5 on {}, WebSocket on {})",
                s.broker.listen, s.broker.v5_listen, s.broker.ws_listen
            ),
        };
        if let Some(w) = s.security_warning() {
            tracing::warn!("{w}");
        }
        tracing::info!(
            "rtcam ready: open {url} | camera {} {}x{}@{} | {broker} | topics {}/…",
            s.video.source.as_config(),
            s.video.width,
            s.video.height,
            s.video.fps,
            s.mqtt.topic_prefix
        );
    }

    /// The web viewer's bound address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The settings the agent runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// GPIO, when pins are declared (or the demo runs).
    pub fn gpio(&self) -> Option<&Arc<Gpio>> {
        self.gpio.as_ref()
    }

    /// The recorder, when `[record] mode` is not off.
    pub fn recorder(&self) -> Option<&Recorder> {
        self.recorder.as_ref()
    }

    /// The shared encoded stream.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Replaces the retained `P/info` document (republished at once when connected).
    pub fn set_info(&self, info: &Info) {
        let json = serde_json::to_string(info).expect("Info is plain data and always serialises");
        let _ = self.info.send(Retained { info: json });
    }

    /// Signaling publisher (tests use it to check echo handling).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Current figures.
    pub fn stats(&self) -> AgentStats {
        self.stats_source().snapshot()
    }

    fn stats_source(&self) -> StatsSource {
        StatsSource {
            hub: self.hub.clone(),
            camera: self.camera.clone(),
            counts: self.counts.clone(),
            mqtt: self.mqtt_connected.clone(),
            echoes_dropped: self.echoes_dropped.clone(),
            inbound: self.inbound.clone(),
            publisher: self.publisher.clone(),
            tracker: self.tracker.clone(),
            web: self.web.clone(),
            rtsp: self.rtsp.clone(),
        }
    }

    /// Waits until connected to the broker (or `timeout`); true if connected.
    pub async fn wait_mqtt_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.mqtt_connected.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the broker connection is up (`true`) or down (`false`); false on timeout.
    pub async fn wait_mqtt(&self, connected: bool, timeout: Duration) -> bool {
        let mut rx = self.mqtt_connected.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c == connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the session counts satisfy `pred` (or `timeout`).
    pub async fn wait_sessions(&self, timeout: Duration, pred: impl Fn(&Counts) -> bool) -> bool {
        let mut rx = self.counts.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| pred(c)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops everything: sessions get a bye, `status` goes `offline`, tasks end.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        // Everything below shares one deadline, so SIGTERM ends within 5 s.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        self.sessions_stop.cancel();
        if let Some(m) = self.manager.take() {
            let _ = tokio::time::timeout_at(deadline, m).await;
        }
        if let Some(g) = &self.gpio {
            g.apply_all_failsafes();
        }
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                "some tasks did not stop in time"
            );
        }
        if let Some(p) = self.pipeline.take() {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
        // The hub is closed now: the microphone's thread sees it within a frame.
        self.hub.close();
        if let Some(m) = self.microphone.take() {
            let _ = tokio::task::spawn_blocking(move || m.join()).await;
        }
    }
}

/// Keeps `P/info`'s pin values current, republishing at most every
/// [`INFO_MIN_INTERVAL`] while pins change (a servo slider sends many).
async fn republish_info(
    settings: Settings,
    gpio: Arc<Gpio>,
    info: watch::Sender<Retained>,
    stop: CancellationToken,
) {
    let mut events = gpio.subscribe();
    let mut dirty = false;
    let mut tick = tokio::time::interval(INFO_MIN_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dirty = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick(), if dirty => {
                dirty = false;
                let json = serde_json::to_string(&info_for(&settings, Some(&gpio)))
                    .expect("Info is plain data and always serialises");
                let _ = info.send(Retained { info: json });
            }
        }
    }
}

/// The recorder as the web server sees it.
struct RecorderDoor(Recorder);

impl web::RecordingsDoor for RecorderDoor {
    fn list(&self) -> Vec<web::RecordingEntry> {
        self.0
            .list()
            .into_iter()
            .map(|l| web::RecordingEntry {
                name: l.name,
                start_ms: l.start_ms,
                duration_ms: l.duration_ms,
                frames: l.frames,
                bytes: l.bytes,
                open: l.open,
            })
            .collect()
    }

    fn motion(&self) -> Vec<serde_json::Value> {
        self.0
            .motion()
            .into_iter()
            .filter_map(|m| serde_json::to_value(m).ok())
            .collect()
    }

    fn path(&self, name: &str) -> Result<std::path::PathBuf, web::RecordingsError> {
        let path = self
            .0
            .store()
            .path(name)
            .map_err(|e| web::RecordingsError::BadName(e.to_string()))?;
        if path.is_file() {
            Ok(path)
        } else {
            Err(web::RecordingsError::NotFound(name.to_string()))
        }
    }

    fn delete(&self, name: &str) -> Result<(), web::RecordingsError> {
        use crate::record::recorder::DeleteError;
        use crate::record::store::StoreError;
        self.0.delete(name).map_err(|e| match e {
            DeleteError::Open(n) => web::RecordingsError::InUse(n),
            DeleteError::Store(StoreError::NotFound(n)) => web::RecordingsError::NotFound(n),
            DeleteError::Store(StoreError::BadName(n)) => web::RecordingsError::BadName(n),
            DeleteError::Store(e @ StoreError::Io { .. }) => {
                web::RecordingsError::Io(e.to_string())
            }
        })
    }
}

/// Turns edges of the trigger pins into recording triggers.
async fn forward_triggers(
    gpio: Arc<Gpio>,
    pins: Vec<String>,
    recorder: Recorder,
    stop: CancellationToken,
) {
    let mut events = gpio.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(ev) if pins.contains(&ev.pin) => {
                    if !recorder.command(RecordCommand::Trigger(format!("gpio:{}", ev.pin))) {
                        break;
                    }
                }
                Ok(_) => {}
                // Missed edges: one trigger stands for them.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    recorder.command(RecordCommand::Trigger("gpio".into()));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

/// Tells systemd what the agent is doing (`STATUS=` when it changes) and
/// pings its watchdog while every component's heartbeat is fresh: a wedged
/// media thread, signaling loop or session manager gets the service restarted.
async fn supervise(stats: StatsSource, heartbeats: Arc<Heartbeats>, stop: CancellationToken) {
    let notifier = Notifier;
    let watchdog = notifier.watchdog_period();
    // Ping twice per period; a component is stale after half of it.
    let tick_every = watchdog.map_or(Duration::from_secs(2), |w| {
        (w / 3).max(Duration::from_millis(200))
    });
    let max_age = watchdog.map_or(Duration::from_secs(60), |w| w / 2);
    // The first tick after one period: by then the caller has said READY=1.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + tick_every, tick_every);
    let mut last_status = String::new();
    let mut dog = Watchdog::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let s = stats.snapshot();
        let status = format!(
            "{}; {} viewer{}; camera {}",
            if s.mqtt_connected {
                "broker connected"
            } else {
                "broker unreachable, retrying"
            },
            s.sessions,
            if s.sessions == 1 { "" } else { "s" },
            s.camera
        );
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
        let step = dog.tick(heartbeats.stale(Instant::now(), max_age));
        if step.ping && watchdog.is_some() {
            notifier.watchdog();
        }
        if !step.newly_stale.is_empty() {
            tracing::error!(components = ?step.newly_stale, "no heartbeat: withholding the watchdog ping so systemd restarts rtcam");
        }
        if step.recovered {
            tracing::warn!("every component beats again; watchdog pings resume");
        }
    }
}

#[derive(Clone)]
struct StatsSource {
    hub: Arc<Hub>,
    camera: Arc<PipelineStatus>,
    counts: watch::Receiver<Counts>,
    mqtt: watch::Receiver<bool>,
    echoes_dropped: Arc<std::sync::atomic::AtomicU64>,
    inbound: Arc<mqtt::InboundCounts>,
    publisher: Publisher,
    tracker: TaskTracker,
    web: Arc<web::WebCounts>,
    rtsp: Arc<crate::rtsp::RtspCounts>,
}

impl StatsSource {
    fn snapshot(&self) -> AgentStats {
        let c = *self.counts.borrow();
        let h = self.hub.stats();
        AgentStats {
            sessions: c.sessions,
            negotiating: c.negotiating,
            connected: c.connected,
            subscribers: h.subscribers,
            holds: h.holds,
            tasks: self.tracker.len(),
            mqtt_connected: *self.mqtt.borrow(),
            camera: match self.camera.state() {
                CameraState::Idle => "idle".into(),
                CameraState::Running(i) => format!("running {}x{} {}", i.width, i.height, i.format),
                CameraState::Failed(e) => format!("failed: {e}"),
                CameraState::Stopped => "stopped".into(),
            },
            frames: self.camera.frames(),
            frames_dropped: h.dropped,
            echoes_dropped: self
                .echoes_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            publishes_dropped: self.publisher.dropped(),
            signaling_received: self
                .inbound
                .received
                .load(std::sync::atomic::Ordering::Relaxed),
            signaling_dropped: self
                .inbound
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            runtime_tasks: tokio::runtime::Handle::try_current()
                .map_or(0, |h| h.metrics().num_alive_tasks()),
            http_connections: self.web.open.load(std::sync::atomic::Ordering::Relaxed),
            http_accepted: self.web.accepted.load(std::sync::atomic::Ordering::Relaxed),
            http_timed_out: self
                .web
                .timed_out
                .load(std::sync::atomic::Ordering::Relaxed),
            http_evicted: self.web.evicted.load(std::sync::atomic::Ordering::Relaxed),
            log_lines_dropped: crate::logging::dropped_lines(),
            rtsp_clients: self.rtsp.clients.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Lets tests hand in a shared factory.
struct SharedFactory(Arc<dyn crate::media::capture::SourceFactory>);

impl crate::media::capture::SourceFactory for SharedFactory {
    fn open(
        &self,
    ) -> Result<Box<dyn crate::media::capture::Source>, crate::media::capture::SourceError> {
        self.0.open()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Dropped without shutdown(): still stop the tasks.
        self.sessions_stop.cancel();
        self.shutdown.cancel();
    }
}
