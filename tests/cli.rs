//! The binary as a user runs it: config errors, --check, signals.

use std::io::Write;
use std::process::Command;

mod common;

fn pollcast() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pollcast"));
    // The developer's own RUST_LOG must not change what these tests see.
    cmd.env_remove("RUST_LOG");
    cmd
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

fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    (stdout, stderr)
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1, stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_and_help_describe_the_binary() {
    let (out, _) = run_ok(pollcast().arg("--version"));
    assert_eq!(out.trim(), concat!("pollcast ", env!("CARGO_PKG_VERSION")));
    let (help, _) = run_ok(pollcast().arg("--help"));
    for flag in [
        "--config",
        "--check",
        "--demo",
        "--log-format",
        "--log-level",
        "--version",
        "--help",
        "POLLCAST_UPSTREAM_URL",
        "POLLCAST_ADMIN_LISTEN",
        "POLLCAST_<SECTION>__<KEY>",
        "POLLCAST_FEEDS__<NAME>__<KEY>",
        "RUST_LOG",
        "SIGHUP",
        "[reload] watch",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(help.contains("[default: config.toml]"), "{help}");
}

#[test]
fn check_prints_the_effective_config_with_secrets_redacted() {
    let f = config_file(GOOD);
    let (out, _) = run_ok(
        pollcast()
            .args(["--check", "--log-level", "debug", "--config"])
            .arg(f.path())
            .env(
                "POLLCAST_UPSTREAM_URL",
                "http://svc:hunter2@127.0.0.1:3999/v1",
            )
            .env("POLLCAST_LOG_FORMAT", "json")
            .env("POLLCAST_ADMIN_LISTEN", "127.0.0.1:9099"),
    );
    assert!(!out.contains("hunter2"), "secret printed:\n{out}");
    // The output is TOML a person can read and a tool can parse.
    let v: toml::Value = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    // Environment overrides and flags are applied.
    assert_eq!(
        v["upstream"]["url"].as_str(),
        Some("http://svc:REDACTED@127.0.0.1:3999/v1")
    );
    assert_eq!(v["log"]["format"].as_str(), Some("json"));
    assert_eq!(v["log"]["level"].as_str(), Some("debug"));
    assert_eq!(v["admin"]["listen"].as_str(), Some("127.0.0.1:9099"));
    // Defaults are filled in, including derived ones.
    assert_eq!(v["feeds"][0]["sse"].as_str(), Some("/sse/jobs"));
    assert_eq!(v["feeds"][0]["interval"].as_str(), Some("2s"));
    assert_eq!(v["sse"]["history"].as_integer(), Some(1024));
    assert_eq!(v["admin"]["prefix"].as_str(), Some("/_pollcast"));
    assert_eq!(v["upstream"]["timeout"].as_str(), Some("5s"));
}

#[test]
fn check_rejects_a_bad_config_with_exit_1_and_its_location() {
    let f = config_file(&format!("{GOOD}\n[log]\nformat = \"xml\"\n"));
    let err = run_err(pollcast().arg("--check").arg("--config").arg(f.path()));
    let path = f.path().display().to_string();
    // File, line, column, key, and the allowed values of the closed set.
    assert!(err.contains(&format!("{path}:12:10: log.format:")), "{err}");
    assert!(err.contains("`text`") && err.contains("`json`"), "{err}");
}

#[test]
fn validation_errors_carry_line_and_column() {
    let f = config_file(&format!("{GOOD}\n[admin]\n  prefix = \"/\"\n"));
    let err = run_err(pollcast().arg("--check").arg("--config").arg(f.path()));
    let path = f.path().display().to_string();
    assert!(
        err.contains(&format!("{path}:12:3: admin.prefix:")),
        "{err}"
    );
}

/// Issue 12, item 9: a feed polled with pollcast's own credentials for
/// everyone (`auth = "check"`/`"none"`) must say which query parameters
/// clients may send; without it `--check` fails naming file, line and key.
#[test]
fn service_credentials_without_a_query_allowlist_are_refused() {
    for auth in ["check", "none"] {
        let shared = format!(
            "{GOOD}
[[feeds]]
name = \"shared\"
poll = \"/api/shared\"
auth = \"{auth}\"
credentials_env = \"POLLCAST_TEST_SERVICE\"
"
        );
        let f = config_file(&shared);
        let err = run_err(
            pollcast()
                .env("POLLCAST_TEST_SERVICE", "Bearer service")
                .arg("--check")
                .arg("--config")
                .arg(f.path()),
        );
        let path = f.path().display().to_string();
        // The line of the feed's [[feeds]] table: the key is missing.
        assert!(
            err.contains(&format!("{path}:11:1: feeds[1].query:")),
            "{auth}: {err}"
        );
        assert!(err.contains("service credentials"), "{auth}: {err}");
        assert!(err.contains("query = []"), "{auth}: {err}");
        // With an allowlist (empty or not) the config is good.
        for query in ["query = []", "query = [\"status\"]"] {
            let f = config_file(&format!("{shared}{query}\n"));
            run_ok(
                pollcast()
                    .env("POLLCAST_TEST_SERVICE", "Bearer service")
                    .arg("--check")
                    .arg("--config")
                    .arg(f.path()),
            );
        }
    }
}

#[test]
fn unknown_keys_are_errors_that_list_the_known_ones() {
    let f = config_file(&format!("{GOOD}\n[admin]\nlisten_on = \"x\"\n"));
    let err = run_err(pollcast().arg("--check").arg("--config").arg(f.path()));
    assert!(err.contains("admin.listen_on"), "{err}");
    assert!(
        err.contains("unknown field") && err.contains("`listen`"),
        "{err}"
    );
}

#[test]
fn a_bad_environment_override_names_the_variable_and_allowed_values() {
    let f = config_file(GOOD);
    let err = run_err(
        pollcast()
            .arg("--check")
            .arg("--config")
            .arg(f.path())
            .env("POLLCAST_LOG_LEVEL", "loud"),
    );
    assert!(err.contains("POLLCAST_LOG_LEVEL"), "{err}");
    assert!(err.contains("error, warn, info, debug, trace"), "{err}");
    let err = run_err(
        pollcast()
            .arg("--check")
            .arg("--config")
            .arg(f.path())
            .env("POLLCAST_ADMIN_LISTEN", "localhost"),
    );
    assert!(err.contains("POLLCAST_ADMIN_LISTEN"), "{err}");
}

/// The line of `out` that traces `key` to where its value came from.
fn source_of<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("#   {key} ");
    out.lines()
        .find(|l| l.starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim())
        .unwrap_or_else(|| panic!("no source line for {key} in:\n{out}"))
}

#[test]
fn environment_overrides_follow_one_rule_and_check_says_where_each_value_came_from() {
    let f = config_file(&GOOD.replace("name = \"jobs\"", "name = \"job-runs\""));
    let (out, _) = run_ok(
        pollcast()
            .args(["--check", "--log-format", "json", "--config"])
            .arg(f.path())
            .env("POLLCAST_SSE__KEEPALIVE", "5s")
            .env("POLLCAST_LIMITS__MAX_SUBSCRIBERS", "100")
            .env(
                "POLLCAST_CORS__ALLOWED_ORIGINS",
                r#"["https://app.example"]"#,
            )
            .env("POLLCAST_FEEDS__JOB_RUNS__INTERVAL", "250ms")
            .env("POLLCAST_ADMIN_LISTEN", "127.0.0.1:9099")
            .env("RUST_LOG", "debug"),
    );
    let v: toml::Value = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(v["sse"]["keepalive"].as_str(), Some("5s"));
    assert_eq!(v["limits"]["max_subscribers"].as_integer(), Some(100));
    assert_eq!(
        v["cors"]["allowed_origins"][0].as_str(),
        Some("https://app.example")
    );
    assert_eq!(v["feeds"][0]["interval"].as_str(), Some("250ms"));
    let file = f.path().display().to_string();
    for (key, from) in [
        ("sse.keepalive", "env POLLCAST_SSE__KEEPALIVE".to_owned()),
        (
            "limits.max_subscribers",
            "env POLLCAST_LIMITS__MAX_SUBSCRIBERS".to_owned(),
        ),
        (
            "feeds[0].interval",
            "env POLLCAST_FEEDS__JOB_RUNS__INTERVAL".to_owned(),
        ),
        ("admin.listen", "env POLLCAST_ADMIN_LISTEN".to_owned()),
        ("upstream.url", format!("{file}:5")),
        ("feeds[0].poll", format!("{file}:9")),
        ("sse.history", "default".to_owned()),
        ("log.format", "flag --log-format".to_owned()),
        (
            "log.level",
            "env RUST_LOG (replaces [log] level)".to_owned(),
        ),
    ] {
        assert_eq!(source_of(&out, key), from, "{key}");
    }

    // The rule's own name wins over an alias of the same key.
    let (out, _) = run_ok(
        pollcast()
            .args(["--check", "--config"])
            .arg(f.path())
            .env("POLLCAST_LOG_LEVEL", "warn")
            .env("POLLCAST_LOG__LEVEL", "debug"),
    );
    assert!(out.contains("level = \"debug\""), "{out}");
    assert_eq!(source_of(&out, "log.level"), "env POLLCAST_LOG__LEVEL");

    // A value that does not fit, an unknown key, an unknown feed: the variable is named.
    for (var, value, part) in [
        ("POLLCAST_SSE__KEEPALIVE", "soon", "sse.keepalive"),
        ("POLLCAST_SSE__KEEPALIV", "5s", "unknown field"),
        ("POLLCAST_FEEDS__JOBS__INTERVAL", "1s", "JOB_RUNS"),
    ] {
        let err = run_err(
            pollcast()
                .args(["--check", "--config"])
                .arg(f.path())
                .env(var, value),
        );
        assert!(
            err.contains(&format!("environment variable {var}: ")),
            "{err}"
        );
        assert!(err.contains(part), "{part} not in {err}");
    }
}

#[test]
fn a_bad_rust_log_is_named_and_refused() {
    let f = config_file(GOOD);
    let err = run_err(
        pollcast()
            .arg("--check")
            .arg("--config")
            .arg(f.path())
            .env("RUST_LOG", "pollcast=loud"),
    );
    assert!(err.contains("RUST_LOG"), "{err}");
    assert!(err.contains("pollcast=loud"), "{err}");
}

#[test]
fn a_bad_flag_value_lists_the_allowed_ones() {
    let out = pollcast()
        .args(["--check", "--log-format", "xml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
}

#[test]
fn config_path_defaults_to_config_toml_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("config.toml"), GOOD).expect("write");
    let (out, _) = run_ok(pollcast().arg("--check").current_dir(dir.path()));
    assert!(out.contains("config.toml: valid"), "{out}");
    let empty = tempfile::tempdir().expect("dir");
    let err = run_err(pollcast().arg("--check").current_dir(empty.path()));
    assert!(err.contains("config.toml"), "{err}");
}

#[tokio::test]
async fn demo_serves_a_live_feed_and_stops_cleanly_on_sigterm() {
    let p = common::child::Pollcast::spawn(
        &["--demo", "--config", "/nonexistent.toml"],
        &[("POLLCAST_SERVER_LISTEN", "127.0.0.1:0")],
    );
    let addr = p.addr().await;
    let mut sse = common::Sse::connect(&format!("http://{addr}/sse/jobs")).await;
    assert_eq!(sse.status, 200);
    let snap = sse.next_named("snapshot").await;
    assert!(common::data(&snap)["items"].is_array(), "{}", snap.data);
    // The demo feed lists the query parameters it takes (none), so a
    // newcomer's first run warns about nothing. The hint is logged after
    // every start-up line (the feed's warnings included): once it is read,
    // all before it are.
    p.wait_line_n(&["watch it: curl"], 1).await;
    let log = p.log();
    assert!(!log.contains("WARN"), "{log}");
    let refused = reqwest::get(format!("http://{addr}/sse/jobs?anything=1"))
        .await
        .expect("request");
    assert_eq!(refused.status(), 400);
    let status = p.stop().await;
    assert!(status.success(), "{status:?}");
}

#[test]
fn check_validates_the_cluster_section_and_its_secret() {
    let text = format!("{GOOD}\n[cluster]\nredis = \"redis://pollcast:pw-hunter2@redis:6379\"\n");
    let f = config_file(&text);
    // Without the hashing key from the environment: refused, with the variable named.
    let err = run_err(
        pollcast()
            .arg("--check")
            .arg("--config")
            .arg(f.path())
            .env_remove("POLLCAST_CLUSTER_SECRET"),
    );
    assert!(
        err.contains("cluster.redis") && err.contains("POLLCAST_CLUSTER_SECRET"),
        "{err}"
    );
    // With it: the section with its defaults, no password, no key.
    let (out, _) = run_ok(
        pollcast()
            .arg("--check")
            .arg("--config")
            .arg(f.path())
            .env("POLLCAST_CLUSTER_SECRET", "cluster-key-0123456789"),
    );
    assert!(
        !out.contains("hunter2") && !out.contains("cluster-key"),
        "{out}"
    );
    let v: toml::Value = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(v["cluster"]["lease"].as_str(), Some("3s"));
    assert_eq!(v["cluster"]["prefix"].as_str(), Some("pollcast:"));
    // A bad value names its key.
    let bad = config_file(&format!(
        "{GOOD}\n[cluster]\nredis = \"http://redis:6379\"\n"
    ));
    let err = run_err(
        pollcast()
            .arg("--check")
            .arg("--config")
            .arg(bad.path())
            .env("POLLCAST_CLUSTER_SECRET", "cluster-key-0123456789"),
    );
    assert!(
        err.contains("cluster.redis") && err.contains("redis://"),
        "{err}"
    );
}
