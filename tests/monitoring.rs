//! What operators plug pollcast into: the standard `process_*` metrics beside
//! pollcast's own, a `/metrics` text that `promtool check metrics` accepts,
//! and the shipped Grafana dashboard and Prometheus alert rules querying only
//! metrics a real pollcast exports (compared with a real scrape, after traffic
//! that makes every family the dashboard and alerts use appear).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{admin_url, config, must_series, scrape_metrics, url, Sse, TestUpstream};
use serde_json::{json, Value};

/// Metric names the alert rules may use although this scrape (no `[cluster]`)
/// does not have them: pollcast exports the shared engine's health only with
/// `[cluster]` set (tests/cluster.rs scrapes it there), so a lone pollcast
/// never fires the engine alert. A scrape without a cluster must not have them.
const ONLY_WITH_CLUSTER: &[&str] = &["pollcast_cluster_up"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scrape (OpenMetrics, as Prometheus asks) of a pollcast that has polled,
/// published events, served a subscriber and passed a request through.
async fn scrape_after_traffic() -> String {
    scrape_after_traffic_as(None).await
}

/// [`scrape_after_traffic`], sending `accept` as the scrape's `Accept`
/// (checked to be answered in the classic text format).
async fn scrape_after_traffic_as(accept: Option<&str>) -> String {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let p = pollcast::start(config(&up)).await.expect("start");
    let mut sse = Sse::connect(&url(&p, "/sse/jobs")).await;
    sse.next_named("snapshot").await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    sse.next_named("added").await;
    let r = reqwest::get(url(&p, "/echo")).await.expect("pass-through");
    r.bytes().await.expect("body");
    let Some(accept) = accept else {
        return scrape_metrics(&p).await;
    };
    let r = reqwest::Client::new()
        .get(admin_url(&p, "/_pollcast/metrics"))
        .header("accept", accept)
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    r.text().await.expect("metrics text")
}

/// Names of the samples in a metrics text (`foo_bucket`, `foo_count`, ...).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn process_metrics_appear_beside_pollcasts_own_with_sane_values() {
    let m = scrape_after_traffic().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs_f64();
    let start = must_series(&m, "process_start_time_seconds");
    assert!(
        start > now - 3600.0 && start <= now + 1.0,
        "start {start}, now {now}"
    );
    // Counted in clock ticks (10 ms): a short test may not have used one yet,
    // but never more than every core for as long as the process has lived.
    let cpu = must_series(&m, "process_cpu_seconds_total");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(
        cpu >= 0.0 && cpu <= (now - start + 1.0) * cores,
        "cpu {cpu}, alive {}s",
        now - start
    );
    let rss = must_series(&m, "process_resident_memory_bytes");
    assert!(rss > 1_000_000.0, "rss {rss}");
    assert!(must_series(&m, "process_virtual_memory_bytes") >= rss);
    // The listeners, the upstream's, the subscriber's and the pools' sockets.
    let fds = must_series(&m, "process_open_fds");
    assert!(fds >= 5.0, "open fds {fds}");
    let max = must_series(&m, "process_max_fds");
    assert!(max >= fds, "max fds {max}, open {fds}");
    // Typed as Prometheus' client libraries type them.
    for (family, kind) in [
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            m.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} {kind} in:\n{m}"
        );
    }
    // Still beside pollcast's own.
    assert_eq!(must_series(&m, r#"pollcast_subscribers{feed="jobs"}"#), 1.0);
}

/// `promtool`, or `None` (skip, saying why) on a developer machine without it;
/// a panic with `CI=true`, where `.ci/run` installs it.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("promtool");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot run: missing promtool (apt-get install prometheus); .ci/run installs it");
    }
    eprintln!("skipped: missing promtool (apt-get install prometheus)");
    None
}

/// `promtool check metrics` reads Prometheus' classic text format only: the
/// scrape asks for it as promtool's users do (`curl -H 'Accept: text/plain'`).
/// The same families in OpenMetrics are what every other test scrapes.
#[tokio::test]
async fn metrics_text_passes_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let m = scrape_after_traffic_as(Some("text/plain;version=0.0.4")).await;
    assert!(m.contains("# TYPE pollcast_polls_total counter\n"), "{m}");
    assert!(
        m.contains("# TYPE process_cpu_seconds_total counter\n"),
        "{m}"
    );
    assert!(!m.contains("# EOF") && !m.contains("# UNIT"), "{m}");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(m.as_bytes())
        .expect("write metrics to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\non:\n{m}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names in a PromQL expression: identifiers that are not functions,
/// keywords, label names, label values, durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may put `by (...)` between their name and parenthesis.
    const KEYWORDS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    ];
    // Blank out strings, label matchers `{...}`, ranges `[...]` and the label
    // lists after by/without/on/ignoring/group_*.
    let mut cleaned = String::with_capacity(expr.len());
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            c => cleaned.push(c),
        }
    }
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(c) = cleaned[i..].chars().next() {
        if !ident(c) {
            i += c.len_utf8();
            continue;
        }
        // Numbers (0.99, 1e3) and durations (5m) are skipped whole.
        let number = c.is_ascii_digit();
        let len = cleaned[i..]
            .find(|d: char| !(ident(d) || (number && d == '.')))
            .unwrap_or(cleaned.len() - i);
        let tok = &cleaned[i..i + len];
        i += len;
        let rest = cleaned[i..].trim_start();
        let lower = tok.to_ascii_lowercase();
        if LABEL_LISTS.contains(&lower.as_str()) && rest.starts_with('(') {
            // by (le, feed): label names, up to the closing parenthesis.
            i = cleaned.len() - rest.len();
            i += rest.find(')').map_or(rest.len(), |at| at + 1);
            continue;
        }
        if number
            || tok.starts_with('$')
            || KEYWORDS.contains(&lower.as_str())
            || rest.starts_with('(')
        {
            continue;
        }
        names.insert(tok.to_owned());
    }
    names
}

#[test]
fn promql_names_are_found_and_the_rest_left_out() {
    let e = r#"histogram_quantile(0.99, sum by (le, feed) (rate(pollcast_poll_duration_seconds_bucket{feed=~"$feed"}[$__rate_interval]))) > on (feed) group_left() 2 * pollcast_poll_delay_seconds offset 5m and process_open_fds / process_max_fds > 0.8 unless absent(x:y_z{a="b"})"#;
    let got: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(
        got,
        [
            "pollcast_poll_delay_seconds",
            "pollcast_poll_duration_seconds_bucket",
            "process_max_fds",
            "process_open_fds",
            "x:y_z",
        ]
    );
}

/// Every `expr` in the Grafana dashboard's panels (and rows' panels).
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn assert_exported(what: &str, exprs: &[String], scrape: &str) {
    let have = exported(scrape);
    for name in ONLY_WITH_CLUSTER {
        assert!(
            !have.contains(*name),
            "pollcast exports {name} without [cluster]: an alert on it would fire for a lone pollcast"
        );
    }
    let mut missing = Vec::new();
    for e in exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{what}: no metric in {e:?}");
        for n in names {
            if !have.contains(&n) && !ONLY_WITH_CLUSTER.contains(&n.as_str()) {
                missing.push(format!("{n} (in {e})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{what} uses metrics pollcast does not export:\n{}\n\nexported: {have:?}",
        missing.join("\n")
    );
}

#[tokio::test]
async fn grafana_dashboard_queries_only_exported_metrics() {
    let path = "deploy/grafana/pollcast.json";
    let dashboard: Value = serde_json::from_str(&read(path)).expect("dashboard is JSON");
    assert_eq!(dashboard["title"], "pollcast");
    let mut exprs = Vec::new();
    dashboard_queries(&dashboard["panels"], &mut exprs);
    // The variables' label_values(<series>, <label>) queries name a series too.
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(q) = var["definition"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(series, _)| series)
                .unwrap_or_else(|| panic!("{path}: unexpected variable query {q}"));
            exprs.push(inner.to_owned());
        }
    }
    // Feeds, subscribers, polls and their latency, events, refusals.
    for wanted in [
        "pollcast_feeds",
        "pollcast_subscribers",
        "pollcast_polls_total",
        "pollcast_poll_duration_seconds_bucket",
        "pollcast_events_total",
        "pollcast_limit_refusals_total",
    ] {
        assert!(
            exprs.iter().any(|e| metric_names(e).contains(wanted)),
            "{path}: no panel queries {wanted}"
        );
    }
    assert_exported(path, &exprs, &scrape_after_traffic().await);
}

#[tokio::test]
async fn alert_rules_query_only_exported_metrics() {
    let path = "deploy/prometheus/alerts.yaml";
    let rules: Value = serde_norway::from_str(&read(path)).expect("alert rules are YAML");
    let mut exprs = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
            alerts.insert(rule["alert"].as_str().expect("alert").to_owned());
        }
    }
    // Failing polls, stale feeds, limit refusals, write timeouts, the engine.
    for wanted in [
        "PollcastPollsFailing",
        "PollcastFeedStale",
        "PollcastLimitRefusals",
        "PollcastWriteTimeouts",
        "PollcastEngineDown",
    ] {
        assert!(alerts.contains(wanted), "{path}: no alert {wanted}");
    }
    assert_exported(path, &exprs, &scrape_after_traffic().await);
}
