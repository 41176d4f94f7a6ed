//! The aiortc WHEP player of the tests (`tests/aiortc/whep_client.py`).

use super::agent::AgentProcess;
use super::players::{aiortc_python, repo};
use serde_json::Value;
use std::time::Duration;

/// Runs `tests/aiortc/whep_client.py` against the WHEP endpoint `url`
/// with `token`, sending `commands` on its DataChannel (`extra`: more
/// arguments); returns its report once it ran to the end.
pub async fn player(
    agent: &AgentProcess,
    url: &str,
    token: &str,
    commands: &[&str],
    extra: &[&str],
) -> Value {
    let mut cmd = tokio::process::Command::new(aiortc_python());
    cmd.arg(repo().join("tests/aiortc/whep_client.py"))
        .args(["--url", url, "--token", token, "--seconds", "3"])
        .args(extra);
    for c in commands {
        cmd.args(["--command", c]);
    }
    super::players::report(cmd, Duration::from_secs(120), agent, "WHEP player").await
}
