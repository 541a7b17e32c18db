//! The status page: its JSON stream after real traffic, and the page itself
//! rendered live in headless Chromium.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "Bearer s3cret-token";
const QUERY_SECRET: &str = "alice-private-query";

fn items(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!({"id": i, "v": i})).collect())
}

/// The next `status` snapshot from the status stream.
async fn status(s: &mut Sse) -> (Value, String) {
    let e = s.next_named("status").await;
    (data(&e), e.data)
}

#[tokio::test]
async fn status_stream_reports_feeds_polls_events_and_upstream_state_without_credentials() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", items(1));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let base = format!("http://{}", pc.addr);
    let ops = admin_url(&pc, "");

    let page = reqwest::get(format!("{ops}/_pollcast/status"))
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.expect("text").contains("pollcast status"));

    let mut sub = Sse::connect_with(
        &format!("{base}/sse/jobs?owner={QUERY_SECRET}"),
        &[("authorization", TOKEN)],
    )
    .await;
    assert_eq!(sub.next().await.event, "snapshot");

    let mut st = Sse::connect(&format!("{ops}/_pollcast/status/events")).await;
    assert_eq!(st.headers["content-type"], "text/event-stream");
    assert!(!st.headers.contains_key("content-encoding"));

    // Keep changing the list until a snapshot shows the events as a rate.
    let mut n = 1;
    let (snap, raw) = loop {
        n += 1;
        up.set("/api/jobs", items(n));
        let (s, raw) = status(&mut st).await;
        if s["feeds"][0]["events_per_s"].as_f64() > Some(0.0) && s["feeds"][0]["events"] != 0 {
            break (s, raw);
        }
    };
    let f = &snap["feeds"][0];
    assert_eq!(f["name"], "jobs");
    assert_eq!(f["sse"], "/sse/jobs");
    assert_eq!(f["poll"], "/api/jobs");
    assert_eq!(f["subscribers"], 1);
    assert_eq!(f["instances"], 1);
    assert_eq!(f["upstream_state"], "ok");
    assert_eq!(f["last_poll"]["outcome"], "ok");
    assert!(f["last_poll"]["latency_ms"].as_f64().is_some());
    assert!(f["polls_ok"].as_u64() > Some(0));
    assert!(f["polls_per_s"].as_f64() > Some(0.0));
    assert!(f["events_per_s_history"]
        .as_array()
        .expect("history")
        .iter()
        .any(|v| v.as_f64() > Some(0.0)));
    assert_eq!(snap["subscribers"], 1);
    assert_eq!(snap["upstream"], format!("http://{}", up.addr));
    for secret in ["s3cret", QUERY_SECRET, "owner="] {
        assert!(!raw.contains(secret), "{secret} leaked: {raw}");
    }
    // The events counted are the ones subscribers get.
    assert_eq!(sub.next().await.event, "added");

    // A failing upstream shows as stale, with the failure and its reason.
    up.mode(Mode::Status(503));
    let snap = loop {
        let (s, _) = status(&mut st).await;
        if s["feeds"][0]["upstream_state"] == "stale"
            && s["feeds"][0]["last_poll"]["outcome"] == "failed"
        {
            break s;
        }
    };
    let f = &snap["feeds"][0];
    assert_eq!(f["stale_instances"], 1);
    assert!(f["polls_failed"].as_u64() > Some(0));
    assert!(
        f["last_poll"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{f}"
    );

    // The stream ends on shutdown.
    pc.shutdown();
    while st.next_or_end().await.is_some() {}
}

#[tokio::test]
async fn status_page_renders_live_in_chromium() {
    let Some(browser_dir) = browser_tools() else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", items(1));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let base = format!("http://{}", pc.addr);
    let ops = admin_url(&pc, "");
    let mut sub = Sse::connect_with(
        &format!("{base}/sse/jobs?owner={QUERY_SECRET}"),
        &[("authorization", TOKEN)],
    )
    .await;
    assert_eq!(sub.next().await.event, "snapshot");

    // Traffic for the page to show: the list grows while the browser watches.
    let stop = CancellationToken::new();
    let churn = tokio::spawn({
        let (up, stop) = (up.clone(), stop.clone());
        async move {
            let mut n = 1;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while stop.run_until_cancelled(tick.tick()).await.is_some() {
                n += 1;
                up.set("/api/jobs", items(n));
            }
        }
    });
    // The subscriber keeps reading so its feed stays a live, healthy one.
    let reader = tokio::spawn(async move { while sub.next_or_end().await.is_some() {} });

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("{ops}/_pollcast/status");
    let script = browser_dir.join("status.mjs");
    let out = tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || {
            std::process::Command::new("node")
                .arg(script)
                .arg(url)
                .arg("jobs")
                .arg(shot)
                .output()
                .expect("run node")
        }
    })
    .await
    .expect("join");
    stop.cancel();
    churn.await.expect("churn");
    assert!(
        out.status.success(),
        "chromium check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "node printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    assert_eq!(shown["subscribers"], "1");
    assert_eq!(shown["outcome"], "ok");
    assert_eq!(shown["upstream_state"], "ok");
    assert!(shown["updates"].as_u64() >= Some(3), "{shown}");
    assert!(shown["spark_max"].as_f64() > Some(0.0), "{shown}");
    assert!(shown["spark_points"].as_u64() >= Some(2), "{shown}");
    assert!(shown["total_spark_points"].as_u64() >= Some(2), "{shown}");
    let text = shown["text"].as_str().expect("text");
    assert!(
        text.contains("jobs") && text.contains("/api/jobs"),
        "{text}"
    );
    assert_eq!(shown["errors"], json!([]), "no script errors");
    let html = shown["html"].as_str().expect("html");
    for secret in ["s3cret", QUERY_SECRET] {
        assert!(!html.contains(secret), "{secret} shown on the page");
    }
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "a real screenshot"
    );
    eprintln!("screenshot: {}", shot.display());

    pc.stop().await;
    reader.await.expect("reader");
}

#[tokio::test]
async fn with_an_admin_listener_the_status_page_is_served_there_only() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", items(1));
    let mut cfg = config(&up);
    cfg.admin.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let pc = pollcast::start(cfg).await.expect("start");
    let admin = pc.admin_addr.expect("admin listener");
    for path in ["/_pollcast/status", "/_pollcast/status/events"] {
        let r = reqwest::get(format!("http://{}{path}", pc.addr))
            .await
            .expect("main");
        assert_eq!(r.status(), 404, "{path} on the main listener");
    }
    assert_eq!(up.hits("/_pollcast"), 0, "never passed through");
    let r = reqwest::get(format!("http://{admin}/_pollcast/status"))
        .await
        .expect("admin");
    assert_eq!(r.status(), 200);
    let mut st = Sse::connect(&format!("http://{admin}/_pollcast/status/events")).await;
    let (snap, _) = status(&mut st).await;
    assert_eq!(snap["feeds"][0]["name"], "jobs");
    pc.stop().await;
}
