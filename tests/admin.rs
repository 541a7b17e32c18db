//! pollcast's own endpoints: prefix, probes, and the separate admin listener.

mod common;

use std::time::Duration;

use common::{config, TestUpstream};
use serde_json::json;

async fn get(url: &str) -> (u16, String) {
    let r = common::within(url, reqwest::get(url))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// An address nothing listens on.
async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn healthz_answers_under_a_configurable_prefix_and_the_old_one_passes_through() {
    let up = TestUpstream::start().await;
    let mut c = config(&up);
    c.admin.prefix = "/ops/pc".into();
    let p = pollcast::start(c).await.expect("start");
    let (s, body) = get(&format!("http://{}/ops/pc/healthz", p.addr)).await;
    assert_eq!((s, body.as_str()), (200, "ok\n"));
    // Unknown own routes are pollcast's 404s, never forwarded upstream.
    let (s, _) = get(&format!("http://{}/ops/pc/nope", p.addr)).await;
    assert_eq!(s, 404);
    assert_eq!(up.hits("/ops"), 0);
    // The default prefix is no longer special: it goes to the upstream.
    let (s, body) = get(&format!("http://{}/_pollcast/healthz", p.addr)).await;
    assert_eq!((s, body.as_str()), (404, "not found"));
    assert_eq!(up.hits("/_pollcast/healthz"), 1);
    p.stop().await;
}

#[tokio::test]
async fn readyz_waits_for_the_upstream_and_caches_its_verdict() {
    let up = TestUpstream::start().await;
    let mut c = config(&up);
    // An upstream that is not there yet.
    c.upstream.url =
        pollcast::config::UpstreamUrl::parse(&format!("http://{}", closed_port().await))
            .expect("url");
    c.admin.ready_cache = Duration::from_secs(3600);
    let p = pollcast::start(c).await.expect("start");
    let url = format!("http://{}/_pollcast/readyz", p.addr);
    let (s, body) = get(&url).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.starts_with("not ready: HEAD /:"), "{body}");
    // Liveness does not depend on the upstream.
    let (s, _) = get(&format!("http://{}/_pollcast/healthz", p.addr)).await;
    assert_eq!(s, 200);
    p.stop().await;

    // The upstream is there: one HEAD / is enough, and the verdict sticks
    // without asking again.
    let mut c = config(&up);
    c.admin.ready_cache = Duration::from_secs(3600);
    let p = pollcast::start(c).await.expect("start");
    let url = format!("http://{}/_pollcast/readyz", p.addr);
    for _ in 0..3 {
        let (s, body) = get(&url).await;
        assert_eq!(s, 200, "{body}");
    }
    let heads: Vec<_> = up
        .seen("/")
        .into_iter()
        .filter(|s| s.method == "HEAD" && s.path_and_query == "/")
        .collect();
    assert_eq!(heads.len(), 1, "{heads:?}");
    p.stop().await;
}

#[tokio::test]
async fn readyz_counts_a_poll_as_reaching_the_upstream() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let p = pollcast::start(config(&up)).await.expect("start");
    let mut sse = common::Sse::connect(&format!("http://{}/sse/jobs", p.addr)).await;
    sse.next_named("snapshot").await;
    let (s, body) = get(&format!("http://{}/_pollcast/readyz", p.addr)).await;
    assert_eq!((s, body.as_str()), (200, "ready: upstream has answered\n"));
    assert!(up.seen("/").iter().all(|s| s.method != "HEAD"));
    p.stop().await;
}

#[tokio::test]
async fn readyz_with_a_probe_path_follows_its_status_within_the_cache() {
    let up = TestUpstream::start().await;
    up.set("/health", json!([]));
    let mut c = config(&up);
    c.admin.ready_probe = Some("/health".into());
    c.admin.ready_cache = Duration::ZERO;
    let p = pollcast::start(c).await.expect("start");
    let url = format!("http://{}/_pollcast/readyz", p.addr);
    let (s, body) = get(&url).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("probe GET /health answered 200"), "{body}");
    up.mode(common::Mode::Status(503));
    let (s, body) = get(&url).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("answered 503"), "{body}");
    p.stop().await;

    // With a long cache, the first verdict is reused: one probe request.
    up.mode(common::Mode::Ok);
    let before = up.hits("/health");
    let mut c = config(&up);
    c.admin.ready_probe = Some("/health".into());
    c.admin.ready_cache = Duration::from_secs(3600);
    let p = pollcast::start(c).await.expect("start");
    let url = format!("http://{}/_pollcast/readyz", p.addr);
    let (s, _) = get(&url).await;
    assert_eq!(s, 200);
    up.mode(common::Mode::Status(503));
    let (s, _) = get(&url).await;
    assert_eq!(s, 200);
    assert_eq!(up.hits("/health") - before, 1);
    p.stop().await;
}

#[tokio::test]
async fn a_separate_admin_listener_keeps_operator_endpoints_off_the_main_one() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    let mut c = config(&up);
    c.admin.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let p = pollcast::start(c).await.expect("start");
    let admin = p.admin_addr.expect("admin listener");
    assert_ne!(admin, p.addr);
    for path in ["metrics", "stats", "status"] {
        let (s, _) = get(&format!("http://{admin}/_pollcast/{path}")).await;
        assert_eq!(s, 200, "{path} on the admin listener");
        let (s, body) = get(&format!("http://{}/_pollcast/{path}", p.addr)).await;
        assert_eq!(s, 404, "{path} on the main listener: {body}");
    }
    // Probes answer on both: the kubelet may be given either port.
    for path in ["healthz", "readyz"] {
        for addr in [admin, p.addr] {
            let (s, body) = get(&format!("http://{addr}/_pollcast/{path}")).await;
            assert_eq!(s, 200, "{path} on {addr}: {body}");
        }
    }
    // The prefix stays reserved on the main listener: nothing goes upstream.
    assert_eq!(up.hits("/_pollcast"), 0);
    // The admin listener serves nothing else: no SSE, no pass-through.
    let (s, _) = get(&format!("http://{admin}/sse/jobs")).await;
    assert_eq!(s, 404);
    let (s, _) = get(&format!("http://{admin}/echo")).await;
    assert_eq!(s, 404);
    assert_eq!(up.hits("/echo"), 0);
    // The main listener still does its job.
    let (s, _) = get(&format!("http://{}/echo", p.addr)).await;
    assert_eq!(s, 200);
    p.stop().await;
}
