//! Pass-through: everything pollcast does not own reaches the upstream unchanged.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn get_and_post_pass_through_with_status_headers_and_body() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let client = reqwest::Client::new();

    // The polled endpoint itself is passed through for plain GETs.
    let r = client
        .get(format!("http://{}/api/jobs", pc.addr))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json"), json!([{"id": 1}]));

    let r = client
        .post(format!("http://{}/echo/things?status=201&x=1", pc.addr))
        .header("x-custom", "kept")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "hop")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .body("hello body")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-echo"], "yes");
    let seen: Value = r.json().await.expect("json");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/echo/things?status=201&x=1");
    assert_eq!(seen["body"], "hello body");
    let h = &seen["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert!(
        h.get("x-drop-me").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert!(h.get("proxy-authorization").is_none());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], pc.addr.to_string());
    assert_eq!(h["host"], up.addr.to_string(), "Host is the upstream's");

    for method in ["PUT", "PATCH", "DELETE"] {
        let r = client
            .request(
                method.parse().expect("method"),
                format!("http://{}/echo/x?status=404", pc.addr),
            )
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.expect("json")["method"], method);
    }
    pc.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let r = client
            .get(format!("http://{}/echo/p", pc.addr))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
    }
    let peers: std::collections::HashSet<_> = up.seen("/echo/p").iter().map(|s| s.peer).collect();
    assert_eq!(up.hits("/echo/p"), 5);
    assert_eq!(
        peers.len(),
        1,
        "sequential requests reuse one pooled upstream connection"
    );
    pc.stop().await;
}

#[tokio::test]
async fn refused_upstream_is_502_and_slow_upstream_is_504() {
    // A port with nothing listening: bind, note the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    cfg.upstream.url =
        pollcast::config::UpstreamUrl::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let pc = pollcast::start(cfg).await.expect("start");
    let r = reqwest::get(format!("http://{}/anything", pc.addr))
        .await
        .expect("get");
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(!r.text().await.expect("text").is_empty());
    pc.stop().await;

    up.set("/api/slow", json!([]));
    up.mode(Mode::Delay(Duration::from_secs(3)));
    let mut cfg = config(&up);
    cfg.upstream.timeout = Duration::from_millis(200);
    let pc = pollcast::start(cfg).await.expect("start");
    let r = reqwest::get(format!("http://{}/api/slow", pc.addr))
        .await
        .expect("get");
    assert_eq!(r.status(), 504);
    pc.stop().await;
}

#[tokio::test]
async fn non_get_on_an_sse_path_is_405() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let r = reqwest::Client::new()
        .post(format!("http://{}/sse/jobs", pc.addr))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, OPTIONS");
    assert_eq!(up.hits("/"), 0, "nothing reached the upstream");
    pc.stop().await;
}
