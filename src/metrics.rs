//! `/metrics`: the agent's figures in the Prometheus text format, built at
//! each scrape from the same snapshot as `/stats.json`, plus the media
//! thread's per-stage time histograms (which persist between scrapes).

use crate::agent::AgentStats;
use crate::media::stage_times::StageTimes;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Media figures `/stats.json` does not carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaFigures {
    /// The bitrate the encoder applied (kbit/s); `None` when it has none (passthrough).
    pub bitrate_kbps: Option<u32>,
    /// CPU copies of pictures on their way to the encoder since start.
    pub frame_copies: u64,
    /// Frames that could not be converted or encoded (skipped).
    pub bad_frames: u64,
    /// Times the camera (or its encoder) failed and was reopened.
    pub restarts: u64,
    /// Whether the camera is running now.
    pub camera_running: bool,
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

/// The text a scrape gets.
pub fn render(stats: &AgentStats, media: &MediaFigures, stages: &StageTimes) -> String {
    let mut r = Registry::with_prefix("rtcam");
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
    counter(
        &mut r,
        "log_lines_dropped",
        "Log lines dropped because stderr was blocked",
        stats.log_lines_dropped,
    );
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
    use std::time::Duration;

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
            frame_copies: 12,
            bad_frames: 1,
            restarts: 2,
            camera_running: true,
        };
        let text = render(&stats(), &media, &stages);
        for line in [
            "rtcam_frames_total 300",
            "rtcam_frames_dropped_total 4",
            "rtcam_frame_copies_total 12",
            "rtcam_camera_restarts_total 2",
            "rtcam_camera_running 1",
            "rtcam_encoder_bitrate_kbps 2000",
            "rtcam_viewers 1",
            "rtcam_sessions 2",
            "rtcam_mqtt_connected 1",
            "rtcam_stage_seconds_count{stage=\"encode\"} 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        // Passthrough: no bitrate to report.
        let none = render(&stats(), &MediaFigures::default(), &stages);
        assert!(!none.contains("encoder_bitrate_kbps"), "{none}");
    }
}
