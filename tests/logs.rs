//! Logs as an operator sees them: the child process's stderr, text by
//! default, JSON with `--log-format json`; one line per pass-through request
//! and per poll failure; no credential ever printed.

mod common;

use common::child::{config_file, Pollcast};
use common::{Mode, Sse, TestUpstream};
use serde_json::{json, Value};

const SECRETS: &[&str] = &["tok-s3cret", "sid-s3cret", "q-s3cret", "pw-s3cret"];

fn config_text(up: &TestUpstream) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://user:pw-s3cret@{}"
timeout = "2s"
[[feeds]]
name = "jobs"
poll = "/api/jobs"
interval = "50ms"
backoff_max = "100ms"
linger = "100ms"
"#,
        up.addr
    )
}

/// Real traffic with credentials everywhere: a pass-through request with a
/// token in the query, the Authorization and the Cookie header, and a feed
/// opened with the same credentials whose polls then fail.
async fn traffic(p: &Pollcast, up: &TestUpstream) {
    let addr = p.addr().await;
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/echo/x?status=404&token=q-s3cret"))
        .header("authorization", "Bearer tok-s3cret")
        .header("cookie", "sid=sid-s3cret")
        .send()
        .await
        .expect("pass-through");
    assert_eq!(r.status().as_u16(), 404);
    let mut sse = Sse::connect_with(
        &format!("http://{addr}/sse/jobs?token=q-s3cret"),
        &[
            ("authorization", "Bearer tok-s3cret"),
            ("cookie", "sid=sid-s3cret"),
        ],
    )
    .await;
    sse.next_named("snapshot").await;
    up.mode(Mode::Status(503));
    sse.next_named("stale").await;
    p.wait_line(&["poll failed"]).await;
}

fn assert_no_secrets(log: &str) {
    for s in SECRETS {
        assert!(!log.contains(s), "{s} leaked into the log:\n{log}");
    }
}

#[tokio::test]
async fn text_logs_have_an_access_line_and_a_poll_failure_line_without_secrets() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let f = config_file(&config_text(&up));
    let p = Pollcast::spawn(&["--config", f.path().to_str().expect("path")], &[]);
    traffic(&p, &up).await;

    let access = p.wait_line(&["pass-through"]).await;
    for part in [
        " INFO ",
        "method=GET",
        "path=\"/echo/x\"",
        "status=404",
        "latency_ms=",
        "client=127.0.0.1",
    ] {
        assert!(access.contains(part), "{part} not in: {access}");
    }
    let failure = p.wait_line(&["poll failed"]).await;
    for part in [
        " WARN ",
        "feed=jobs?token=<redacted> [credentials]",
        "failures=1",
        "503",
    ] {
        assert!(failure.contains(part), "{part} not in: {failure}");
    }
    // Human format: not JSON, no colour codes when not on a terminal.
    assert!(
        !access.starts_with('{') && !access.contains('\u{1b}'),
        "{access}"
    );
    assert_no_secrets(&p.log());
    assert!(p.stop().await.success());
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_same_fields() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let f = config_file(&config_text(&up));
    let p = Pollcast::spawn(
        &[
            "--config",
            f.path().to_str().expect("path"),
            "--log-format",
            "json",
        ],
        &[],
    );
    traffic(&p, &up).await;
    p.wait_line(&["pass-through"]).await;
    let lines: Vec<Value> = p
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["message"] == "pass-through")
        .expect("access line");
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/echo/x");
    assert_eq!(access["status"], 404);
    assert!(access["latency_ms"].as_f64().is_some(), "{access}");
    let failure = lines
        .iter()
        .find(|l| l["message"] == "poll failed")
        .expect("poll failure line");
    assert_eq!(failure["level"], "WARN");
    assert_eq!(failure["failures"], 1);
    assert!(
        failure["reason"]
            .as_str()
            .is_some_and(|r| r.contains("503")),
        "{failure}"
    );
    assert_no_secrets(&p.log());
    assert!(p.stop().await.success());
}

#[tokio::test]
async fn log_level_from_the_environment_silences_access_lines() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let f = config_file(&config_text(&up));
    // The "listening" line is info and so not printed: pick the port here.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let p = Pollcast::spawn(
        &["--config", f.path().to_str().expect("path")],
        &[
            ("POLLCAST_LOG_LEVEL", "warn"),
            ("POLLCAST_SERVER_LISTEN", &listen),
        ],
    );
    let url = format!("http://{listen}");
    // An HTTP answer, not a bare TCP connect: a connect to a port nobody
    // listens on yet can succeed as a TCP self-connection.
    common::within("the listener", async {
        loop {
            if let Ok(r) = reqwest::get(format!("{url}/_pollcast/healthz")).await {
                if r.status() == 200 {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let r = reqwest::get(format!("{url}/echo")).await.expect("echo");
    assert_eq!(r.status().as_u16(), 200);
    let mut sse = Sse::connect(&format!("{url}/sse/jobs")).await;
    sse.next_named("snapshot").await;
    up.mode(Mode::Status(500));
    sse.next_named("stale").await;
    // Warnings still come through; the info access line does not.
    p.wait_line(&["poll failed"]).await;
    let log = p.log();
    assert!(
        !log.contains("pass-through") && !log.contains(" INFO "),
        "{log}"
    );
    assert!(p.stop().await.success());
}

#[tokio::test]
async fn rust_log_replaces_the_configured_level_and_log_level_flag_beats_it() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    // `error` alone would hide "pollcast listening" (info) and the feed's debug lines.
    let f = config_file(&format!("{}[log]\nlevel = \"error\"\n", config_text(&up)));
    let path = f.path().to_str().expect("path");
    let p = Pollcast::spawn(&["--config", path], &[("RUST_LOG", "warn,pollcast=debug")]);
    let addr = p.addr().await;
    let mut sse = Sse::connect(&format!("http://{addr}/sse/jobs")).await;
    sse.next_named("snapshot").await;
    p.wait_line(&["DEBUG", "feed started"]).await;
    assert!(p.stop().await.success());

    // An explicit --log-level is the operator's last word.
    let p = Pollcast::spawn(
        &["--config", path, "--log-level", "info"],
        &[("RUST_LOG", "error")],
    );
    p.addr().await;
    assert!(p.stop().await.success());
}
