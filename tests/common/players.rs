//! The independent players the tests run (aiortc's MQTT viewer and WHEP
//! client, the `whip-whep` page): the setup scripts that install them, and
//! the JSON report each prints as its last line.

use super::agent::AgentProcess;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

pub fn repo() -> &'static Path {
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

/// The Python of `target/aiortc-venv` (made by `tests/aiortc/setup`), in
/// which the aiortc players run.
pub fn aiortc_python() -> PathBuf {
    setup("tests/aiortc/setup", "target/aiortc-venv/bin/python")
}

/// Runs `cmd`, a player bounded by itself (`bound` only in case it cannot),
/// and returns the JSON report on the last line of its output once it ran
/// to its end; `what` names it in failures, with `agent`'s log.
pub async fn report(
    mut cmd: tokio::process::Command,
    bound: Duration,
    agent: &AgentProcess,
    what: &str,
) -> Value {
    let out = cmd.stdin(Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(bound, out)
        .await
        .unwrap_or_else(|_| panic!("the {what} ran over its own time bound"))
        .unwrap_or_else(|e| panic!("the {what} does not run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "the {what} prints a JSON report ({}); stdout:\n{stdout}\nstderr:\n{stderr}\nagent log:\n{}",
                out.status,
                agent.log().tail(40)
            )
        });
    eprintln!("{what} report: {report:#}");
    assert!(
        out.status.success(),
        "the {what} did not run to its end ({}): {report:#}\nstderr:\n{stderr}\nagent log:\n{}",
        out.status,
        agent.log().tail(60)
    );
    report
}
