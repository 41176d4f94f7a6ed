//! Every documented configuration example loads in the shipped binary:
//! each commented example group of `rtcam.example.toml` and of the packaged
//! `debian/rtcam.toml` (uncommented, on its own), and each ```toml block of
//! the README and `docs/`, passes `rtcam config --check`, and what
//! `rtcam config --print` prints for it loads back to the same settings
//! (its hidden secrets put back). Every configuration key, and every field
//! of a `[[gpio.pins]]` entry, must appear in a loading example: a key
//! documented without one fails here.

mod common;

use common::process::rtcam;
use common::tls::Pki;
use rtcam::config::keys::KEYS;
use rtcam::config::{Layers, Settings, load};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One example, ready to load.
#[derive(Debug)]
struct Example {
    /// `file:line` where it starts.
    origin: String,
    /// Its TOML, with the section it sits in.
    toml: String,
}

/// Whether an uncommented line starts an example: a table header or a
/// `key = value` assignment.
fn starts_example(body: &str) -> bool {
    if body.starts_with('[') {
        return true;
    }
    let Some((key, _)) = body.split_once(" = ") else {
        return false;
    };
    key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Open brackets minus closed ones, outside strings and comments.
fn depth(line: &str) -> i32 {
    let (mut d, mut in_str) = (0, false);
    for c in line.chars() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => break,
            '[' | '{' if !in_str => d += 1,
            ']' | '}' if !in_str => d -= 1,
            _ => {}
        }
    }
    d
}

/// The example groups of a commented TOML file: runs of `# key = value`
/// lines (with multi-line values), ended by prose, a bare `#`, an active
/// line or a table header (which starts a group of its own). Each is put under the active section it sits in.
fn commented_examples(file: &str, text: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut group: Option<(usize, Vec<String>)> = None;
    let mut open = 0;
    let finish =
        |group: &mut Option<(usize, Vec<String>)>, section: &str, out: &mut Vec<Example>| {
            if let Some((line, lines)) = group.take() {
                let body = lines.join("\n");
                let toml = if lines[0].starts_with('[') {
                    body
                } else {
                    format!("[{section}]\n{body}")
                };
                out.push(Example {
                    origin: format!("{file}:{line}"),
                    toml,
                });
            }
        };
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix('#') {
            let body = rest.strip_prefix(' ').unwrap_or(rest);
            if open > 0 {
                open += depth(body);
                group
                    .as_mut()
                    .expect("a group is open")
                    .1
                    .push(body.to_string());
                continue;
            }
            if starts_example(body) {
                // A table header begins a group of its own.
                if body.starts_with('[') {
                    finish(&mut group, &section, &mut out);
                }
                open += depth(body);
                group
                    .get_or_insert_with(|| (i + 1, Vec::new()))
                    .1
                    .push(body.to_string());
                continue;
            }
            finish(&mut group, &section, &mut out);
        } else {
            finish(&mut group, &section, &mut out);
            let t = line.trim();
            if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                section = name.trim_matches(['[', ']']).to_string();
            }
        }
    }
    finish(&mut group, &section, &mut out);
    out
}

/// The ```toml blocks of a Markdown file.
fn markdown_examples(file: &str, text: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut block: Option<(usize, Vec<&str>)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut block {
            None if fence.starts_with("```toml") => block = Some((i + 1, Vec::new())),
            Some((start, lines)) if fence.starts_with("```") => {
                out.push(Example {
                    origin: format!("{file}:{start}"),
                    toml: lines.join("\n"),
                });
                block = None;
            }
            Some((_, lines)) => lines.push(line),
            None => {}
        }
    }
    out
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files the examples name under /etc/rtcam/, made for real in `dir`.
struct Files {
    dir: PathBuf,
    pki: Pki,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
            pki: Pki::generate(dir),
        }
    }

    /// The example's text with each `/etc/rtcam/NAME` replaced by a real
    /// file holding what such a file holds.
    fn localise(&self, toml: &str) -> String {
        let mut out = String::new();
        let mut rest = toml;
        while let Some(at) = rest.find("\"/etc/rtcam/") {
            out.push_str(&rest[..at]);
            let path_end = rest[at + 1..].find('"').expect("a closed string") + at + 1;
            let name = &rest[at + "\"/etc/rtcam/".len()..path_end];
            let local = match name {
                "mqtt-password" => self.write(name, "an-example-password\n"),
                "token.key" => self.write(name, "0123456789abcdef0123456789abcdef\n"),
                "turn.key" => self.write(name, "a-turn-static-auth-secret-0123456789\n"),
                "broker-ca.pem" => self.pki.ca.clone(),
                "rtcam.crt" => self.pki.client_cert.clone(),
                "rtcam.key" => self.pki.client_key.clone(),
                "https.crt" => self.pki.server_cert.clone(),
                "https.key" => self.pki.server_key.clone(),
                other => panic!(
                    "an example names /etc/rtcam/{other}: teach this test what that file holds"
                ),
            };
            out.push_str(&format!("{:?}", local.display().to_string()));
            rest = &rest[path_end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write an example's file");
        path
    }
}

fn load_text(dir: &Path, name: &str, text: &str) -> Result<Settings, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    load(&Layers {
        file: Some(&path),
        ..Layers::default()
    })
    .map(|l| l.settings)
    .map_err(|e| e.to_string())
}

/// The secrets `config --print` leaves out, put back into the printed text.
fn with_hidden_secrets(printed: &str, example: &toml::Table) -> String {
    let mut table: toml::Table = toml::from_str(printed).expect("the printed config is TOML");
    // (The ICE servers are put back whole: their static credentials are not printed.)
    for (section, key) in [
        ("mqtt", "password"),
        ("rtsp", "password"),
        ("auth", "tokens"),
        ("webrtc", "ice_servers"),
    ] {
        if let Some(v) = example.get(section).and_then(|s| s.get(key)) {
            table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("a section")
                .insert(key.into(), v.clone());
        }
    }
    toml::to_string(&table).expect("serialises")
}

/// Checks one example through the binary; returns the keys it sets.
fn check(example: &Example, files: &Files, dir: &Path) -> BTreeSet<String> {
    let text = files.localise(&example.toml);
    let path = dir.join("example.toml");
    std::fs::write(&path, &text).expect("write");
    let run = |args: &[&str]| {
        rtcam()
            .arg("--config")
            .arg(&path)
            .arg("config")
            .args(args)
            .output()
            .expect("rtcam runs")
    };
    let checked = run(&["--check"]);
    assert!(
        checked.status.success(),
        "{} does not load: {}\n{}",
        example.origin,
        String::from_utf8_lossy(&checked.stderr),
        example.toml
    );
    let printed = run(&["--print"]);
    assert!(printed.status.success(), "{}", example.origin);
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    let table: toml::Table = toml::from_str(&text).expect("an example that loads is TOML");
    let original = load_text(dir, "original.toml", &text).expect("loads in the library too");
    let again = load_text(dir, "printed.toml", &with_hidden_secrets(&printed, &table))
        .unwrap_or_else(|e| {
            panic!(
                "{}: the printed config does not load: {e}\n{printed}",
                example.origin
            )
        });
    assert_eq!(
        again, original,
        "{}: config --print does not load back to the same settings",
        example.origin
    );
    let mut keys = BTreeSet::new();
    for (section, v) in &table {
        for (key, value) in v.as_table().expect("sections are tables") {
            keys.insert(format!("{section}.{key}"));
            if section == "gpio" && key == "pins" {
                for pin in value.as_array().expect("pins are an array") {
                    for field in pin.as_table().expect("a pin is a table").keys() {
                        keys.insert(format!("gpio.pins[].{field}"));
                    }
                }
            }
        }
    }
    keys
}

#[test]
fn every_documented_example_loads_and_prints_back_to_the_same_settings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Files::new(dir.path());
    let mut examples = Vec::new();
    for file in ["rtcam.example.toml", "debian/rtcam.toml"] {
        let text = std::fs::read_to_string(repo().join(file)).expect("readable");
        // The file itself, as shipped.
        examples.push(Example {
            origin: format!("{file} (as shipped)"),
            toml: text.clone(),
        });
        examples.extend(commented_examples(file, &text));
    }
    let mut docs = vec![PathBuf::from("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).expect("docs/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(
                path.strip_prefix(repo())
                    .expect("in the repo")
                    .to_path_buf(),
            );
        }
    }
    for file in &docs {
        let text = std::fs::read_to_string(repo().join(file)).expect("readable");
        examples.extend(markdown_examples(&file.display().to_string(), &text));
    }
    let mut covered = BTreeSet::new();
    for example in &examples {
        covered.extend(check(example, &files, dir.path()));
    }
    eprintln!("{} examples loaded", examples.len());
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|k| k.path)
        .filter(|k| !covered.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys documented without an example that loads: {missing:?}"
    );
    let pin_fields = [
        "name",
        "pin",
        "mode",
        "initial",
        "active_low",
        "failsafe",
        "pull",
        "debounce_ms",
        "frequency_hz",
        "min_duty",
        "max_duty",
        "min_us",
        "max_us",
        "max_angle",
    ];
    let missing: Vec<&str> = pin_fields
        .iter()
        .copied()
        .filter(|f| !covered.contains(&format!("gpio.pins[].{f}")))
        .collect();
    assert!(
        missing.is_empty(),
        "pin fields without an example that loads: {missing:?}"
    );
}

#[test]
fn the_extraction_finds_groups_and_ignores_prose() {
    let text = "[mqtt]\n# Prose = not an example, it starts with a capital.\n# url = \"mqtt://h:1\"\n\
                # username = \"u\"\n#\n# password = \"p\"\nprotocol = \"5\"\n\
                # ice = [\n#   { a = 1 },\n# ]\n# [[gpio.pins]]\n# name = \"x\"\n";
    let found = commented_examples("t", text);
    let texts: Vec<&str> = found.iter().map(|e| e.toml.as_str()).collect();
    assert_eq!(
        texts,
        [
            "[mqtt]\nurl = \"mqtt://h:1\"\nusername = \"u\"",
            "[mqtt]\npassword = \"p\"",
            "[mqtt]\nice = [\n  { a = 1 },\n]",
            "[[gpio.pins]]\nname = \"x\"",
        ]
    );
    assert_eq!(found[1].origin, "t:6");
    let md = markdown_examples("d.md", "text\n```toml\n[a]\nb = 1\n```\n```sh\nx\n```\n");
    assert_eq!(md.len(), 1);
    assert_eq!(md[0].toml, "[a]\nb = 1");
}
