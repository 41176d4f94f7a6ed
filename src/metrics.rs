//! `/metrics`: the agent's figures in the Prometheus text format, built at
//! each scrape from the same snapshot as `/stats.json`, plus the media
//! thread's per-stage time histograms (which persist between scrapes).

use crate::agent::AgentStats;
use crate::media::stage_times::StageTimes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// One connected viewer's link, as its peer connection's statistics say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ViewerLink {
    /// Round-trip time of the selected ICE candidate pair.
    pub rtt: Option<Duration>,
    /// Share of packets lost, from the viewer's last receiver report (0-1).
    pub fraction_lost: Option<f64>,
    /// Packets lost in all, from the viewer's receiver reports.
    pub packets_lost: Option<i64>,
    /// RTP bytes sent to it.
    pub bytes_sent: u64,
    /// Congestion control's estimate of what its link carries, kbit/s.
    pub estimated_kbps: Option<u32>,
    /// Whether it gets keyframes only (it cannot keep up with the stream).
    pub keyframes_only: bool,
    /// The send-side (GCC, transport-wide feedback) estimate, kbit/s.
    pub transport_kbps: Option<u32>,
}

/// The connected viewers' links, by client id (sessions update their own
/// entry every few seconds and remove it when they end).
#[derive(Debug, Default)]
pub struct ViewerLinks {
    links: Mutex<BTreeMap<String, ViewerLink>>,
    /// ICE restarts answered since start.
    ice_restarts: std::sync::atomic::AtomicU64,
}

impl ViewerLinks {
    /// Records `client`'s latest figures.
    pub fn set(&self, client: &str, link: ViewerLink) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client.to_string(), link);
    }

    /// Forgets `client` (its session ended).
    pub fn remove(&self, client: &str) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(client);
    }

    /// Every viewer's figures.
    pub fn snapshot(&self) -> BTreeMap<String, ViewerLink> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts an ICE restart a viewer asked for and got.
    pub fn note_ice_restart(&self) {
        self.ice_restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// ICE restarts answered since start.
    pub fn ice_restarts(&self) -> u64 {
        self.ice_restarts.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The label of per-viewer series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClientLabel {
    client: String,
}

/// Media figures `/stats.json` does not carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaFigures {
    /// The bitrate the encoder applied (kbit/s); `None` when it has none (passthrough).
    pub bitrate_kbps: Option<u32>,
    /// The ceiling `video.bitrate` (or the config) set, in kbit/s.
    pub bitrate_ceiling_kbps: u32,
    /// Camera frames per encoded one (congestion control lowers the frame rate).
    pub frame_divisor: u32,
    /// CPU copies of pictures on their way to the encoder since start.
    pub frame_copies: u64,
    /// Frames that could not be converted or encoded (skipped).
    pub bad_frames: u64,
    /// Times the camera (or its encoder) failed and was reopened.
    pub restarts: u64,
    /// Whether the camera is running now.
    pub camera_running: bool,
    /// The recorder's figures, when recording is on.
    pub record: Option<RecordFigures>,
    /// The audio paths' figures, when `[audio]` is on.
    pub audio: Option<AudioFigures>,
}

/// The audio paths' figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioFigures {
    /// The microphone is capturing.
    pub capturing: bool,
    /// Microphone frames encoded.
    pub frames: u64,
    /// Opus bytes encoded.
    pub bytes: u64,
    /// Microphone or speaker failures.
    pub errors: u64,
    /// Someone holds the talkback floor.
    pub talking: bool,
    /// Talkback packets taken for the speaker.
    pub talk_packets: u64,
    /// Talkback packets dropped (the speaker fell behind).
    pub talk_dropped: u64,
    /// Frames written to the speaker.
    pub played: u64,
}

/// The recorder's figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordFigures {
    /// A segment is being written.
    pub recording: bool,
    /// The disk refused the last write (retrying).
    pub failing: bool,
    /// Segments started.
    pub segments: u64,
    /// Frames written.
    pub frames: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Fragments lost to a stalled or failing disk.
    pub dropped_fragments: u64,
    /// Disk errors.
    pub write_errors: u64,
    /// Segments deleted by retention.
    pub deleted: u64,
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// Per-viewer gauges and counters, one series per connected client.
fn viewer_series(r: &mut Registry, links: &BTreeMap<String, ViewerLink>) {
    let rtt = Family::<ClientLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let lost_share = Family::<ClientLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let lost = Family::<ClientLabel, Gauge>::default();
    let sent = Family::<ClientLabel, Counter>::default();
    let estimate = Family::<ClientLabel, Gauge>::default();
    let keyframes_only = Family::<ClientLabel, Gauge>::default();
    let transport = Family::<ClientLabel, Gauge>::default();
    for (client, l) in links {
        let label = ClientLabel {
            client: client.clone(),
        };
        if let Some(t) = l.rtt {
            rtt.get_or_create(&label).set(t.as_secs_f64());
        }
        if let Some(f) = l.fraction_lost {
            lost_share.get_or_create(&label).set(f);
        }
        if let Some(n) = l.packets_lost {
            lost.get_or_create(&label).set(n);
        }
        sent.get_or_create(&label).inc_by(l.bytes_sent);
        if let Some(kbps) = l.estimated_kbps {
            estimate.get_or_create(&label).set(i64::from(kbps));
        }
        keyframes_only
            .get_or_create(&label)
            .set(i64::from(l.keyframes_only));
        if let Some(kbps) = l.transport_kbps {
            transport.get_or_create(&label).set(i64::from(kbps));
        }
    }
    r.register(
        "viewer_rtt_seconds",
        "Round-trip time to each viewer (selected ICE pair)",
        rtt,
    );
    r.register(
        "viewer_fraction_lost",
        "Share of packets each viewer lost, from its last receiver report",
        lost_share,
    );
    r.register(
        "viewer_packets_lost",
        "Packets each viewer lost, from its receiver reports",
        lost,
    );
    r.register("viewer_sent_bytes", "RTP bytes sent to each viewer", sent);
    r.register(
        "viewer_estimated_kbps",
        "What each viewer's link carries, as congestion control estimates it (kbit/s)",
        estimate,
    );
    r.register(
        "viewer_transport_estimate_kbps",
        "Each viewer's send-side estimate: GCC on its transport-wide feedback (kbit/s)",
        transport,
    );
    r.register(
        "viewer_keyframes_only",
        "1 for a viewer that gets keyframes only (it cannot keep up)",
        keyframes_only,
    );
}

/// The text a scrape gets.
pub fn render(
    stats: &AgentStats,
    media: &MediaFigures,
    stages: &StageTimes,
    links: &ViewerLinks,
) -> String {
    let mut r = Registry::with_prefix("rtcam");
    if let Some(a) = &media.audio {
        gauge(
            &mut r,
            "audio_capturing",
            "1 while the microphone captures",
            u64::from(a.capturing),
        );
        counter(
            &mut r,
            "audio_frames",
            "Microphone frames encoded (20 ms each)",
            a.frames,
        );
        counter(
            &mut r,
            "audio_bytes",
            "Opus bytes encoded from the microphone",
            a.bytes,
        );
        counter(
            &mut r,
            "audio_errors",
            "Microphone or speaker failures (each retried)",
            a.errors,
        );
        gauge(
            &mut r,
            "audio_talking",
            "1 while a viewer holds the talkback floor",
            u64::from(a.talking),
        );
        counter(
            &mut r,
            "audio_talk_packets",
            "Talkback packets taken for the speaker",
            a.talk_packets,
        );
        counter(
            &mut r,
            "audio_talk_dropped",
            "Talkback packets dropped because the speaker fell behind",
            a.talk_dropped,
        );
        counter(
            &mut r,
            "audio_played_frames",
            "Frames written to the speaker (20 ms each)",
            a.played,
        );
    }
    if let Some(rec) = &media.record {
        gauge(
            &mut r,
            "record_recording",
            "1 while a recording segment is being written",
            u64::from(rec.recording),
        );
        gauge(
            &mut r,
            "record_failing",
            "1 while the recording disk refuses writes (retrying)",
            u64::from(rec.failing),
        );
        counter(
            &mut r,
            "record_segments",
            "Recording segments started",
            rec.segments,
        );
        counter(
            &mut r,
            "record_frames",
            "Frames written to recordings",
            rec.frames,
        );
        counter(
            &mut r,
            "record_bytes",
            "Bytes written to recordings",
            rec.bytes,
        );
        counter(
            &mut r,
            "record_dropped_fragments",
            "Recording fragments lost to a stalled or failing disk",
            rec.dropped_fragments,
        );
        counter(
            &mut r,
            "record_write_errors",
            "Recording disk errors",
            rec.write_errors,
        );
        counter(
            &mut r,
            "record_deleted",
            "Recording segments deleted by retention",
            rec.deleted,
        );
    }
    counter(
        &mut r,
        "frames",
        "Frames encoded and published",
        stats.frames,
    );
    counter(
        &mut r,
        "frames_dropped",
        "Frames dropped for viewers that could not keep up",
        stats.frames_dropped,
    );
    counter(
        &mut r,
        "frames_bad",
        "Camera frames skipped because they could not be converted or encoded",
        media.bad_frames,
    );
    counter(
        &mut r,
        "frame_copies",
        "CPU copies of pictures on their way to the encoder",
        media.frame_copies,
    );
    counter(
        &mut r,
        "camera_restarts",
        "Times the camera or its encoder failed and was reopened",
        media.restarts,
    );
    gauge(
        &mut r,
        "camera_running",
        "1 while the camera runs",
        u64::from(media.camera_running),
    );
    if let Some(kbps) = media.bitrate_kbps {
        gauge(
            &mut r,
            "encoder_bitrate_kbps",
            "Bitrate the encoder applied, in kbit/s",
            u64::from(kbps),
        );
    }
    gauge(
        &mut r,
        "encoder_bitrate_ceiling_kbps",
        "The ceiling congestion control keeps the bitrate under, in kbit/s",
        u64::from(media.bitrate_ceiling_kbps),
    );
    gauge(
        &mut r,
        "encoder_frame_divisor",
        "Camera frames per encoded one (1: every frame is encoded)",
        u64::from(media.frame_divisor),
    );
    gauge(
        &mut r,
        "sessions",
        "Viewer sessions, negotiating or connected",
        stats.sessions as u64,
    );
    gauge(
        &mut r,
        "viewers",
        "Viewer sessions connected",
        stats.connected as u64,
    );
    gauge(
        &mut r,
        "video_subscribers",
        "Sessions receiving video",
        stats.subscribers as u64,
    );
    gauge(
        &mut r,
        "mqtt_connected",
        "1 while connected to the MQTT broker",
        u64::from(stats.mqtt_connected),
    );
    counter(
        &mut r,
        "signaling_received",
        "Viewer signaling messages handed to the session manager",
        stats.signaling_received,
    );
    counter(
        &mut r,
        "signaling_dropped",
        "Viewer signaling messages dropped because the session manager was behind",
        stats.signaling_dropped,
    );
    counter(
        &mut r,
        "publishes_dropped",
        "Signaling publishes dropped while the broker was away",
        stats.publishes_dropped,
    );
    gauge(
        &mut r,
        "http_connections",
        "Web viewer connections open",
        stats.http_connections as u64,
    );
    gauge(
        &mut r,
        "rtsp_clients",
        "RTSP connections open",
        stats.rtsp_clients as u64,
    );
    counter(
        &mut r,
        "log_lines_dropped",
        "Log lines dropped because stderr was blocked",
        stats.log_lines_dropped,
    );
    counter(
        &mut r,
        "ice_restarts",
        "ICE restarts viewers asked for and got (their sessions went on)",
        links.ice_restarts(),
    );
    viewer_series(&mut r, &links.snapshot());
    r.register(
        "stage_seconds",
        "Media thread time per frame in each stage (convert, encode, publish, capture_to_publish)",
        stages.histograms(),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::stage_times::Stage;

    fn stats() -> AgentStats {
        serde_json::from_value(serde_json::json!({
            "sessions": 2, "negotiating": 1, "connected": 1, "subscribers": 1, "holds": 0,
            "tasks": 9, "mqtt_connected": true, "camera": "running", "frames": 300,
            "frames_dropped": 4, "echoes_dropped": 0, "publishes_dropped": 0,
            "signaling_received": 7, "signaling_dropped": 0, "runtime_tasks": 20
        }))
        .expect("AgentStats from JSON")
    }

    #[test]
    fn a_scrape_has_the_counters_gauges_and_stage_histograms() {
        let stages = StageTimes::new();
        stages.observe(Stage::Encode, Duration::from_millis(4));
        let media = MediaFigures {
            bitrate_kbps: Some(2000),
            bitrate_ceiling_kbps: 2000,
            frame_divisor: 2,
            frame_copies: 12,
            bad_frames: 1,
            restarts: 2,
            camera_running: true,
            record: Some(RecordFigures {
                recording: true,
                frames: 90,
                deleted: 3,
                ..RecordFigures::default()
            }),
            audio: Some(AudioFigures {
                capturing: true,
                frames: 50,
                talking: true,
                ..AudioFigures::default()
            }),
        };
        let links = ViewerLinks::default();
        links.note_ice_restart();
        links.set(
            "web-1",
            ViewerLink {
                rtt: Some(Duration::from_millis(12)),
                fraction_lost: Some(0.25),
                packets_lost: Some(7),
                bytes_sent: 5000,
                estimated_kbps: Some(1500),
                keyframes_only: false,
                transport_kbps: Some(1700),
            },
        );
        let text = render(&stats(), &media, &stages, &links);
        for line in [
            "rtcam_frames_total 300",
            "rtcam_frames_dropped_total 4",
            "rtcam_frame_copies_total 12",
            "rtcam_camera_restarts_total 2",
            "rtcam_camera_running 1",
            "rtcam_encoder_bitrate_kbps 2000",
            "rtcam_encoder_bitrate_ceiling_kbps 2000",
            "rtcam_encoder_frame_divisor 2",
            "rtcam_viewers 1",
            "rtcam_ice_restarts_total 1",
            "rtcam_sessions 2",
            "rtcam_mqtt_connected 1",
            "rtcam_stage_seconds_count{stage=\"encode\"} 1",
            "rtcam_viewer_rtt_seconds{client=\"web-1\"} 0.012",
            "rtcam_viewer_fraction_lost{client=\"web-1\"} 0.25",
            "rtcam_viewer_packets_lost{client=\"web-1\"} 7",
            "rtcam_viewer_sent_bytes_total{client=\"web-1\"} 5000",
            "rtcam_viewer_estimated_kbps{client=\"web-1\"} 1500",
            "rtcam_viewer_keyframes_only{client=\"web-1\"} 0",
            "rtcam_viewer_transport_estimate_kbps{client=\"web-1\"} 1700",
            "rtcam_record_recording 1",
            "rtcam_record_failing 0",
            "rtcam_record_frames_total 90",
            "rtcam_record_deleted_total 3",
            "rtcam_audio_capturing 1",
            "rtcam_audio_frames_total 50",
            "rtcam_audio_talking 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        // Passthrough: no bitrate to report.
        let none = render(
            &stats(),
            &MediaFigures::default(),
            &stages,
            &ViewerLinks::default(),
        );
        assert!(!none.contains("encoder_bitrate_kbps"), "{none}");
        assert!(
            !none.contains("rtcam_record_"),
            "recording off: no recording figures"
        );
        assert!(
            !none.contains("rtcam_audio_"),
            "audio off: no audio figures"
        );
    }
}
