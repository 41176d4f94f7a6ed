//! The independent WHEP players of the tests: aiortc's
//! (`tests/aiortc/whep_client.py`) and the setup scripts that install them.

use super::agent::AgentProcess;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a setup script once per test binary (it needs the network the
/// first time); a failure fails the test. Returns the path it made.
pub fn setup(script: &str, made: &str) -> PathBuf {
    static DONE: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let done = DONE.get_or_init(Default::default);
    let mut done = done
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = repo().join(made);
    if !done.iter().any(|d| d == script) {
        let out = std::process::Command::new(repo().join(script))
            .current_dir(repo())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{script} does not run: {e}"));
        assert!(
            out.status.success(),
            "{script} failed ({}): {}\nIt needs the network the first time: run it before \
             the tests enter their network namespace (.ci/test does).",
            out.status,
            super::process::all_output(&out)
        );
        done.push(script.to_string());
    }
    assert!(path.exists(), "{script} made no {}", path.display());
    path
}

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
    let python = setup("tests/aiortc/setup", "target/aiortc-venv/bin/python");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(repo().join("tests/aiortc/whep_client.py"))
        .args(["--url", url, "--token", token, "--seconds", "3"])
        .args(extra);
    for c in commands {
        cmd.args(["--command", c]);
    }
    let out = cmd.stdin(Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the player bounds itself")
        .expect("the player runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "the player prints a JSON report; stdout:\n{stdout}\nstderr:\n{}\nagent log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                agent.log().tail(40)
            )
        });
    eprintln!("WHEP player report: {report:#}");
    assert!(
        out.status.success(),
        "the player did not run to the end: {report:#}\nstderr:\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log().tail(60)
    );
    report
}
