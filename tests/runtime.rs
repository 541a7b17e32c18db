//! The runtime pollcast picks: a current-thread tokio runtime when it has
//! one CPU (here: an affinity mask of one CPU, as `bench/run.sh` pins it and
//! as a cgroup quota of one would), a multi-thread one otherwise; and on the
//! current-thread runtime it still serves streams and pass-through.

mod common;

use common::child::{config_file, Pollcast};
use common::*;
use serde_json::json;

fn config(up: &TestUpstream) -> tempfile::NamedTempFile {
    config_file(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n\
         [[feeds]]\nname = \"jobs\"\npoll = \"/api/jobs\"\nsse = \"/sse/jobs\"\ninterval = \"100ms\"\n",
        up.url()
    ))
}

#[tokio::test]
async fn one_cpu_gets_a_current_thread_runtime_that_serves_streams_and_pass_through() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    up.set("/api/other", json!({"ok": true}));
    let f = config(&up);
    let path = f.path().to_str().expect("path");
    let mut p = Pollcast::spawn_via(&["taskset", "-c", "0"], &["--config", path], &[]);
    p.wait_line(&["tokio runtime", "current-thread"]).await;
    let addr = p.addr().await;
    let mut s = Sse::connect(&format!("http://{addr}/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    assert_eq!(s.next().await.event, "added");
    let body = reqwest_like_get(&format!("http://{addr}/api/other")).await;
    assert!(body.contains("\"ok\":true"), "{body}");
    p.signal(libc::SIGTERM);
    assert!(p.exit().await.success());
}

#[tokio::test]
async fn more_cpus_get_a_multi_thread_runtime() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: this machine has one CPU");
        return;
    }
    let up = TestUpstream::start().await;
    let f = config(&up);
    let path = f.path().to_str().expect("path");
    let mut p = Pollcast::spawn(&["--config", path], &[]);
    p.wait_line(&["tokio runtime", "multi-thread"]).await;
    // Signals are handled from "listening" on.
    p.addr().await;
    p.signal(libc::SIGTERM);
    assert!(p.exit().await.success());
}

/// A plain GET through pollcast (pass-through), as text.
async fn reqwest_like_get(url: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = within("pass-through answer", client.get(url.parse().expect("uri")))
        .await
        .expect("GET");
    assert!(resp.status().is_success(), "{}", resp.status());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
