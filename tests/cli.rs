//! The binary as a user runs it: config errors, --check, signals.

use std::io::Write;
use std::process::Command;

fn pollcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pollcast"))
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp");
    f.write_all(text.as_bytes()).expect("write");
    f
}

const GOOD: &str = r#"[server]
listen = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:3000"

[[feeds]]
name = "jobs"
poll = "/api/jobs"
"#;

#[test]
fn a_bad_config_exits_non_zero_naming_file_line_and_key() {
    let f = config_file(&GOOD.replace(
        "poll = \"/api/jobs\"",
        "poll = \"/api/jobs\"\ninterval = \"often\"",
    ));
    let out = pollcast()
        .arg("--config")
        .arg(f.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let path = f.path().display().to_string();
    assert!(err.contains(&format!("{path}:10:")), "{err}");
    assert!(err.contains("feeds[0].interval"), "{err}");
}

#[test]
fn a_missing_config_file_is_named() {
    let out = pollcast()
        .args(["--config", "/nonexistent/pollcast.toml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pollcast.toml"));
}

#[test]
fn check_accepts_a_good_config() {
    let f = config_file(GOOD);
    let out = pollcast()
        .arg("--check")
        .arg("--config")
        .arg(f.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_config_is_valid() {
    let out = pollcast()
        .args([
            "--check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
