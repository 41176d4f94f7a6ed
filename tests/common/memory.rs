//! The agent process's memory and descriptors, read from outside it
//! (`/proc/<pid>`), with the agent started in the environment the systemd
//! unit gives it, so the figures are the ones a deployed camera shows.

use super::agent::TestConfig;
use std::path::Path;

/// The `Environment=` settings of the shipped systemd unit
/// (`systemd/rtcam.service`), in order. Among them `GLIBC_TUNABLES`, which
/// fixes glibc's mmap and trim thresholds: by default both rise after the
/// first large block is freed, and from then on the heap keeps what a busy
/// moment freed (RSS at rest wandered between 60 and 130 MB from one soak
/// round to the next while the memory in use stayed near 30 MB). Fixed,
/// large blocks are mapped and unmapped on their own and the heap's free
/// top goes back to the kernel; free pages inside the heap stay resident
/// until something calls `malloc_trim`, which the agent does not.
pub fn service_environment() -> Vec<(String, String)> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/rtcam.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("the systemd unit {} is readable: {e}", unit.display()));
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("Environment=NAME=value in the unit: {kv:?}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    assert!(
        env.iter().any(|(k, _)| k == "GLIBC_TUNABLES"),
        "the unit pins glibc's malloc thresholds (GLIBC_TUNABLES): {env:?}"
    );
    env
}

/// `cfg` with the systemd unit's environment added ([`service_environment`]);
/// variables the test sets afterwards (`RTCAM_LOG`) take precedence.
pub fn as_service(mut cfg: TestConfig) -> TestConfig {
    for (k, v) in service_environment() {
        cfg = cfg.with_env(&k, &v);
    }
    cfg
}

/// A `kB` figure from `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path} is readable (is the process alive?): {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in {path}"))
}

/// The process's resident memory in kB, as the kernel counts it now.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS")
}

/// Of which anonymous memory (the heap and the thread stacks, not the
/// mapped binary), in kB.
pub fn rss_anon_kb(pid: u32) -> u64 {
    status_kb(pid, "RssAnon")
}

/// The process's open file descriptors.
pub fn open_fds(pid: u32) -> usize {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{path} is readable (the test started the process): {e}"))
        .count()
}

/// The process's threads.
pub fn threads(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("Threads in {path}"))
}
