//! The `rtcam` binary: `record` output checked by ffmpeg, config printing
//! (secrets hidden, the output loadable) and error reporting.

mod common;

use common::process::rtcam;
use std::path::Path;
use std::process::Command;

/// `rtcam --config FILE config ARGS…`, run to completion.
fn config_command(file: &Path, args: &[&str]) -> std::process::Output {
    rtcam()
        .arg("--config")
        .arg(file)
        .arg("config")
        .args(args)
        .output()
        .expect("rtcam runs")
}

/// Fails with the run's stderr unless it succeeded.
fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is required for this test: run the README's test command, which installs it"
    );
    Command::new(name)
}

#[test]
fn record_writes_a_stream_ffmpeg_accepts_with_the_right_frame_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.h264");
    let status = rtcam()
        .args([
            "--video-width",
            "640",
            "--video-height",
            "480",
            "record",
            "--frames",
            "90",
            "-o",
        ])
        .arg(&out)
        .status()
        .expect("rtcam runs");
    assert!(status.success());

    let strict = tool("ffmpeg")
        .args(["-v", "error", "-xerror", "-f", "h264", "-i"])
        .arg(&out)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        strict.status.success() && strict.stderr.is_empty(),
        "ffmpeg found errors: {}",
        String::from_utf8_lossy(&strict.stderr)
    );

    let probe = tool("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,width,height,profile",
            "-of",
            "default=nw=1",
        ])
        .arg(&out)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(text.contains("nb_read_frames=90"), "{text}");
    assert!(
        text.contains("width=640") && text.contains("height=480"),
        "{text}"
    );
    assert!(text.contains("profile=Constrained Baseline"), "{text}");
}

#[test]
fn config_print_shows_the_effective_values_and_their_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rtcam.toml");
    std::fs::write(&file, "[video]\nwidth = 640\nheight = 480\n").expect("write");
    let out = rtcam()
        .arg("--config")
        .arg(&file)
        .env("RTCAM_VIDEO_FPS", "15")
        .args(["config", "--print", "--video-height", "360"])
        .output()
        .expect("rtcam runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("width = 640  # file"), "{text}");
    assert!(
        text.contains("height = 360  # flag --video-height"),
        "{text}"
    );
    assert!(
        text.contains("fps = 15  # environment RTCAM_VIDEO_FPS"),
        "{text}"
    );
    assert!(text.contains("bitrate_kbps = 2000  # default"), "{text}");
}

#[test]
fn config_print_hides_static_tokens_and_its_output_checks_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write");
    let file = dir.path().join("rtcam.toml");
    std::fs::write(
        &file,
        format!(
            "[auth]\nmode = \"token\"\nsecret_file = {:?}\n\
             [[auth.tokens]]\ntoken = \"viewer-token-0001\"\nrole = \"view\"\n",
            secret.display().to_string()
        ),
    )
    .expect("write");
    let out = config_command(&file, &["--print"]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("viewer-token-0001"), "{text}");
    assert!(
        text.contains("# tokens holds 1 static token(s), roles view"),
        "{text}"
    );
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, text.as_bytes()).expect("write");
    assert_success(&config_command(&printed, &["--check"]));
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let out = rtcam()
        .env("RTCAM_VIDEO_WIDTH", "641")
        .args(["config", "--check"])
        .output()
        .expect("rtcam runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("video.width") && err.contains("641") && err.contains("even"),
        "{err}"
    );
}

#[test]
fn example_config_checks_clean() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("rtcam.example.toml");
    assert_success(&config_command(&example, &["--check"]));
}

#[test]
fn devices_lists_or_says_none() {
    let out = rtcam().arg("devices").output().expect("rtcam runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/video") || text.contains("no V4L2 capture devices"),
        "{text}"
    );
}

#[test]
fn devices_lists_the_encoders_too() {
    let out = rtcam().arg("devices").output().expect("rtcam runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // No M2M node on a CI host: the section says software encoding is used.
    assert!(
        text.contains("encoders (V4L2 memory-to-memory):")
            && (text.contains("usable for H.264")
                || text.contains("not used:")
                || text.contains("OpenH264")),
        "{text}"
    );
}

#[test]
fn bench_latency_reports_every_stage() {
    let out = rtcam()
        .args([
            "bench",
            "latency",
            "--width",
            "160",
            "--height",
            "120",
            "--fps",
            "15",
            "--seconds",
            "2",
        ])
        .output()
        .expect("rtcam runs");
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for stage in [
        "encode",
        "publish",
        "capture_to_publish",
        "capture_to_subscriber",
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{stage} ")))
            .unwrap_or_else(|| panic!("no {stage} line in:\n{text}"));
        assert!(line.ends_with("frames)"), "{stage} was measured: {line}");
    }
    assert!(
        text.contains("convert              (not used)"),
        "the test pattern's I420 is not converted:\n{text}"
    );
}

/// A config in token mode with a fresh signing secret, in `dir`.
fn token_mode_config(dir: &Path) -> std::path::PathBuf {
    let secret = dir.join("token.key");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write secret");
    let cfg = dir.join("rtcam.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nmode = \"token\"\nsecret_file = {:?}\n",
            secret.display().to_string()
        ),
    )
    .expect("write config");
    cfg
}

/// `rtcam --config FILE token ARGS…`: (status, stdout, stderr).
fn token_command(cfg: &Path, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = rtcam()
        .arg("--config")
        .arg(cfg)
        .arg("token")
        .args(args)
        .output()
        .expect("rtcam runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn token_command_mints_tokens_that_the_configured_secret_accepts() {
    use rtcam::auth::{AuthError, Role};
    use rtcam::config::{Layers, load};
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = token_mode_config(dir.path());
    let settings = load(&Layers {
        file: Some(&cfg),
        ..Layers::default()
    })
    .expect("the config loads")
    .settings;
    let auth = settings.auth.authorizer();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();

    let (status, token, said) = token_command(&cfg, &["--role", "control", "--ttl", "1h"]);
    assert!(status.success(), "{said}");
    assert!(
        said.contains("control token for ") && said.contains(" valid until"),
        "it says what it made: {said}"
    );
    assert_eq!(auth.authorize(Some(&token), now), Ok(Role::Control));
    assert!(matches!(
        auth.authorize(Some(&token), now + 3600 + 60),
        Err(AuthError::Expired { .. })
    ));

    let (status, view, _) = token_command(&cfg, &["--role", "view", "--ttl", "90s"]);
    assert!(status.success());
    assert_eq!(auth.authorize(Some(&view), now), Ok(Role::View));
    assert_ne!(view, token);

    // Bad requests are refused, naming the flag; a token from another secret is worthless.
    let (status, out, said) = token_command(&cfg, &["--role", "admin", "--ttl", "1h"]);
    assert!(
        !status.success() && out.is_empty() && said.contains("--role"),
        "{said}"
    );
    let (status, out, said) = token_command(&cfg, &["--role", "view", "--ttl", "0s"]);
    assert!(
        !status.success() && out.is_empty() && said.contains("--ttl"),
        "{said}"
    );
    let other = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        other.path().join("token.key"),
        "another-secret-another-secret-xx\n",
    )
    .expect("write");
    let other_cfg = other.path().join("rtcam.toml");
    std::fs::write(
        &other_cfg,
        format!(
            "[auth]\nmode = \"token\"\nsecret_file = {:?}\n",
            other.path().join("token.key").display().to_string()
        ),
    )
    .expect("write");
    let (_, foreign, _) = token_command(&other_cfg, &["--role", "control", "--ttl", "1h"]);
    assert_eq!(auth.authorize(Some(&foreign), now), Err(AuthError::Invalid));

    // Without a secret there is nothing to sign with: the error says what to set.
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "[auth]\nmode = \"none\"\n").expect("write");
    let (status, out, said) = token_command(&bare, &["--role", "view", "--ttl", "1h"]);
    assert!(!status.success() && out.is_empty(), "{said}");
    assert!(said.contains("secret_file"), "{said}");
}

/// A log written to a file or a pipe is plain text: no ANSI colour codes,
/// with or without `NO_COLOR` (the harness sets it; a user's shell may not).
#[test]
fn a_log_that_is_not_a_terminal_has_no_colour_codes() {
    for no_color in [true, false] {
        let mut cmd = rtcam();
        if !no_color {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd
            .env("RTCAM_LOG", "debug")
            .args([
                "bench", "encoder", "--frames", "3", "--width", "64", "--height", "48",
            ])
            .output()
            .expect("rtcam runs");
        assert_success(&out);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("DEBUG"),
            "the encoder logs at DEBUG (NO_COLOR={no_color}): {log}"
        );
        assert!(
            !log.contains('\u{1b}'),
            "no escape codes (NO_COLOR={no_color}): {log}"
        );
    }
}
