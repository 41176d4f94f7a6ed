//! DataChannel control: requests from a viewer's `control` channel are
//! parsed ([`protocol`]) and dispatched here to the encoder, the camera and
//! (in later modules) GPIO. Every reply carries the request's id.

pub mod protocol;

use crate::hub::Hub;
use crate::pipeline::{CameraState, PipelineStatus};
use protocol::{ControlCode, ControlError, Request, error_reply, ok_reply, parse_request};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::watch;

/// The label of the control DataChannel.
pub const CHANNEL_LABEL: &str = "control";

/// What the controller needs from the rest of the agent.
pub struct Controller {
    hub: Arc<Hub>,
    camera: Arc<PipelineStatus>,
    viewers: watch::Receiver<usize>,
    size: (u32, u32, u32),
}

impl Controller {
    /// A controller over the shared encoder and camera; `viewers` counts sessions.
    pub fn new(
        hub: Arc<Hub>,
        camera: Arc<PipelineStatus>,
        viewers: watch::Receiver<usize>,
        size: (u32, u32, u32),
    ) -> Self {
        Self {
            hub,
            camera,
            viewers,
            size,
        }
    }

    /// Handles one text message; returns the reply to send.
    pub async fn handle(&self, text: &str) -> String {
        let req = match parse_request(text) {
            Ok(r) => r,
            Err((id, e)) => return error_reply(&id, &e),
        };
        match self.dispatch(&req).await {
            Ok(result) => ok_reply(&req.id, result),
            Err(e) => error_reply(&req.id, &e),
        }
    }

    async fn dispatch(&self, req: &Request) -> Result<Value, ControlError> {
        match req.cmd.as_str() {
            "ping" => Ok(json!({ "pong": true })),
            "video.keyframe" => {
                self.hub.request_keyframe();
                Ok(json!({ "requested": true }))
            }
            "video.status" => Ok(self.video_status()),
            other => Err(ControlError::new(
                ControlCode::UnknownCmd,
                format!("unknown command {other:?}"),
            )),
        }
    }

    fn video_status(&self) -> Value {
        let stats = self.hub.stats();
        let (w, h, fps) = match self.camera.state() {
            CameraState::Running(info) => (info.width as u32, info.height as u32, info.fps),
            _ => self.size,
        };
        json!({
            "width": w,
            "height": h,
            "fps": fps,
            "bitrate_kbps": self.hub.bitrate_kbps(),
            "viewers": *self.viewers.borrow(),
            "frames": self.camera.frames(),
            "frames_dropped": stats.dropped,
            "camera": match self.camera.state() {
                CameraState::Idle => "idle".to_string(),
                CameraState::Running(_) => "running".to_string(),
                CameraState::Failed(e) => format!("failed: {e}"),
                CameraState::Stopped => "stopped".to_string(),
            },
        })
    }
}
