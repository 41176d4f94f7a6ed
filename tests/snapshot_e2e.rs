//! Snapshots end to end through the `rtcam` binary: over the DataChannel
//! and MQTT, each a JPEG of the camera's picture at that moment (the test
//! pattern's block code carries its capture time), the camera started for
//! the shot when nobody watches and stopped after. Runs inside a private
//! network namespace.

mod common;

use base64::Engine as _;
use common::agent::{AgentProcess, TestConfig};
use common::{WAIT, Watch};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// The JPEG's size and the capture time its block code carries.
fn read_jpeg(jpeg: &[u8]) -> (usize, usize, u64) {
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut d = JpegDecoder::new_with_options(ZCursor::new(jpeg), opts);
    let luma = d.decode().expect("the snapshot is a JPEG");
    let info = d.info().expect("a header");
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    let code = rtcam::blockcode::decode(&luma, w, w, h).expect("the block code survives JPEG");
    (w, h, code.ts_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_over_the_datachannel_and_mqtt_show_the_camera_now() {
    let cfg = TestConfig::new("snap").with("gpio.ha_prefix", "ha-snap");
    let agent = AgentProcess::start(&cfg).await;
    let s = agent.settings().clone();
    let p = s.mqtt.topic_prefix.clone();
    let base = agent.stats().await;
    assert_eq!(base.subscribers, 0, "nobody watches: the camera is off");

    // A control panel without video asks for one.
    let v = common::viewer(&s, "snap-dc", false).await;
    let before = unix_ms();
    let r = v
        .command(serde_json::json!({"cmd": "snapshot"}), WAIT)
        .await
        .expect("a reply");
    let after = unix_ms();
    assert_eq!(r["ok"], true, "{r}");
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(r["result"]["jpeg"].as_str().expect("base64 JPEG"))
        .expect("valid base64");
    assert_eq!(r["result"]["bytes"], jpeg.len());
    let (w, h, ts) = read_jpeg(&jpeg);
    assert_eq!((w, h), (640, 480));
    assert_eq!(
        (
            r["result"]["width"].as_u64(),
            r["result"]["height"].as_u64()
        ),
        (Some(640), Some(480))
    );
    assert!(
        ts >= before.saturating_sub(1000) && ts <= after,
        "captured for this request: {ts} in {before}..{after}"
    );
    // The camera stops again once the shot is taken.
    agent
        .wait_stats("the camera idle again", |st| st.subscribers == 0)
        .await;

    // MQTT: a request on P/snapshot/set is answered on P/snapshot (retained).
    let mut shots = Watch::start(&s, "snap-watch", &format!("{p}/snapshot")).await;
    let asker = Watch::start(&s, "snap-ask", &format!("{p}/status")).await;
    let before = unix_ms();
    asker.publish(&format!("{p}/snapshot/set"), "now").await;
    let jpeg = shots
        .wait_for("a snapshot", &format!("{p}/snapshot"), |b| {
            b.starts_with(&[0xff, 0xd8])
        })
        .await;
    let (_, _, ts) = read_jpeg(&jpeg);
    assert!(ts + 1000 >= before, "a fresh picture: {ts} vs {before}");

    // Home Assistant: a camera entity on that topic.
    let mut ha = Watch::start(&s, "snap-ha", "ha-snap/#").await;
    let doc = ha
        .wait_for(
            "the camera entity",
            "ha-snap/camera/rtcam_agent_snap/snapshot/config",
            |_| true,
        )
        .await;
    let doc: serde_json::Value = serde_json::from_slice(&doc).expect("JSON");
    assert_eq!(doc["topic"], format!("{p}/snapshot"));
    // HTTP: /snapshot.jpg.
    let before = unix_ms();
    let (status, headers, jpeg) =
        common::http_request_bytes(agent.http_addr(), "GET", "/snapshot.jpg", &[]).await;
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "image/jpeg")
    );
    let (w, _, ts) = read_jpeg(&jpeg);
    assert_eq!(w, 640);
    assert!(ts + 1000 >= before, "a fresh picture");
    drop(v);
    agent.shutdown().await;
}
