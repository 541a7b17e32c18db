//! Answer the stragglers (`serve_polls`): while a feed is live, plain GETs of
//! its upstream path with the same query and credentials are answered from
//! its latest poll, with ETag and 304, and cost the upstream nothing.
//!
//! Every request a test sends as a "straggler" carries `x-straggler: 1`, so
//! the upstream's log tells exactly which of them reached it (the feed's own
//! polls never carry it).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The test config with `serve_polls` on.
fn serving(up: &TestUpstream) -> pollcast::Config {
    let mut c = config(up);
    c.feeds[0].serve_polls = true;
    c
}

/// Straggler requests (any method) that reached the upstream.
fn passed(up: &TestUpstream) -> usize {
    up.seen("/")
        .iter()
        .filter(|s| s.headers.contains_key("x-straggler"))
        .count()
}

/// A straggler's request, with extra headers.
async fn poll(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    bytes::Bytes,
) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("x-straggler", "1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = within("straggler request", req.send())
        .await
        .expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = within("straggler body", resp.bytes()).await.expect("body");
    (status, headers, body)
}

async fn get(
    url: &str,
    headers: &[(&str, &str)],
) -> (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    bytes::Bytes,
) {
    poll(reqwest::Method::GET, url, headers).await
}

fn from_snapshot(h: &reqwest::header::HeaderMap) -> bool {
    h.get("x-pollcast").is_some_and(|v| v == "snapshot")
}

/// The upstream's own answer, read directly (not through pollcast).
async fn direct(up: &TestUpstream, path: &str) -> bytes::Bytes {
    reqwest::get(format!("http://{}{}", up.addr, path))
        .await
        .expect("direct")
        .bytes()
        .await
        .expect("body")
}

#[tokio::test]
async fn polls_of_a_live_feed_are_answered_from_its_latest_poll_without_the_upstream() {
    let up = TestUpstream::start().await;
    up.set(
        "/api/jobs",
        json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]),
    );
    let pc = pollcast::start(serving(&up)).await.expect("start");
    let upstream_body = direct(&up, "/api/jobs").await;
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");

    let mut etag = None;
    for _ in 0..20 {
        let (status, h, body) = get(&url(&pc, "/api/jobs"), &[]).await;
        assert_eq!(status, 200);
        assert!(from_snapshot(&h), "{h:?}");
        assert_eq!(body, upstream_body, "the upstream's exact bytes");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["cache-control"], "no-cache");
        assert!(h["age"].to_str().expect("age").parse::<u64>().is_ok());
        let e = h["etag"].clone();
        assert!(
            e.as_bytes().starts_with(b"\"") && e.as_bytes().len() > 10,
            "{e:?}"
        );
        assert!(
            etag.get_or_insert(e.clone()) == &e,
            "the same body keeps its ETag"
        );
    }
    let (status, h, body) = poll(reqwest::Method::HEAD, &url(&pc, "/api/jobs"), &[]).await;
    assert_eq!(status, 200);
    assert!(from_snapshot(&h) && body.is_empty());
    assert_eq!(
        h["content-length"],
        upstream_body.len().to_string().as_str()
    );
    assert_eq!(passed(&up), 0, "no straggler reached the upstream");

    // A change: once a subscriber has it, a straggler has it too.
    up.set(
        "/api/jobs",
        json!([{"id": 1, "name": "a"}, {"id": 2, "name": "c"}]),
    );
    assert_eq!(s.next().await.event, "updated");
    let (_, h, body) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(from_snapshot(&h));
    assert_eq!(body, direct(&up, "/api/jobs").await);
    assert_ne!(Some(&h["etag"]), etag.as_ref(), "a new body has a new ETag");
    assert_eq!(passed(&up), 0);

    let m = scrape_metrics(&pc).await;
    let answered = [("feed", "jobs"), ("status", "200")];
    assert_eq!(
        metric_value(&m, "pollcast_stragglers_answered_total", &answered),
        Some(22.0),
        "{m}"
    );
    let bytes = 20 * upstream_body.len() + body.len();
    assert!(
        m.contains(&format!(
            "pollcast_stragglers_bytes_total{{feed=\"jobs\"}} {bytes}\n"
        )),
        "{m}"
    );
    pc.stop().await;
}

#[tokio::test]
async fn if_none_match_with_the_etag_gives_304() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(serving(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");

    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    let etag = h["etag"].to_str().expect("etag").to_owned();
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let (status, h, body) = get(&url(&pc, "/api/jobs"), &[("if-none-match", &inm)]).await;
        assert_eq!(status, 304, "{inm}");
        assert!(from_snapshot(&h) && body.is_empty(), "{inm}");
        assert_eq!(h["etag"], etag.as_str());
        assert!(h.get("content-type").is_none());
    }
    let (status, h, body) = get(&url(&pc, "/api/jobs"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, 200);
    assert!(from_snapshot(&h));
    assert_eq!(body, direct(&up, "/api/jobs").await);
    assert_eq!(passed(&up), 0);
    let m = scrape_metrics(&pc).await;
    let answered = [("feed", "jobs"), ("status", "304")];
    assert_eq!(
        metric_value(&m, "pollcast_stragglers_answered_total", &answered),
        Some(4.0),
        "{m}"
    );
    pc.stop().await;
}

#[tokio::test]
async fn the_upstreams_own_validators_are_replayed() {
    let up = TestUpstream::start().await;
    up.validators(true);
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(serving(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    // Polls now cost 304s; each one confirms the answer.
    wait_until("two 304 polls", || up.not_modified() >= 2).await;
    let upstream = reqwest::get(format!("http://{}/api/jobs", up.addr))
        .await
        .expect("direct");
    let upstream_etag = upstream.headers()["etag"].clone();
    let lm = "Mon, 23 Nov 2026 10:00:00 GMT";

    let (status, h, body) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert_eq!(status, 200);
    assert!(from_snapshot(&h));
    assert_eq!(h["etag"], upstream_etag);
    assert_eq!(h["last-modified"], lm);
    assert_eq!(body, upstream.bytes().await.expect("body"));

    let (status, h, _) = get(&url(&pc, "/api/jobs"), &[("if-modified-since", lm)]).await;
    assert_eq!(status, 304);
    assert!(from_snapshot(&h));
    let earlier = "Mon, 23 Nov 2026 09:00:00 GMT";
    let (status, _, _) = get(&url(&pc, "/api/jobs"), &[("if-modified-since", earlier)]).await;
    assert_eq!(status, 200);
    assert_eq!(passed(&up), 0);
    pc.stop().await;
}

#[tokio::test]
async fn only_the_same_path_query_and_credentials_are_answered() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "owner": "{{token}}"}]));
    let pc = pollcast::start(serving(&up)).await.expect("start");
    let alice = ("authorization", "Bearer alice");
    let mut s = Sse::connect_with(&url(&pc, "/sse/jobs?b=2&a=1"), &[alice]).await;
    assert_eq!(s.next().await.event, "snapshot");

    for path in ["/api/jobs?a=1&b=2", "/api/jobs?b=2&a=1"] {
        let (status, h, body) = get(&url(&pc, path), &[alice]).await;
        assert_eq!(status, 200);
        assert!(from_snapshot(&h), "{path}");
        assert!(String::from_utf8_lossy(&body).contains("Bearer alice"));
    }
    assert_eq!(passed(&up), 0);

    // Another user: the upstream answers, with that user's data.
    let (_, h, body) = get(
        &url(&pc, "/api/jobs?a=1&b=2"),
        &[("authorization", "Bearer bob")],
    )
    .await;
    assert!(!from_snapshot(&h));
    assert!(
        String::from_utf8_lossy(&body).contains("Bearer bob"),
        "{body:?}"
    );
    assert_eq!(up.seen_with("/api/jobs", "Bearer bob").len(), 1);
    let others: [(&str, &[(&str, &str)]); 6] = [
        ("/api/jobs?a=1&b=2", &[]),
        ("/api/jobs?a=1", &[alice]),
        ("/api/jobs?a=1&b=2&c=3", &[alice]),
        ("/api/jobs?a=1&b=2", &[alice, ("cookie", "sid=1")]),
        (
            "/api/jobs?a=1&b=2",
            &[alice, ("origin", "http://elsewhere.example")],
        ),
        ("/api/jobs/?a=1&b=2", &[alice]),
    ];
    for (i, (path, headers)) in others.iter().enumerate() {
        let (_, h, _) = get(&url(&pc, path), headers).await;
        assert!(!from_snapshot(&h), "{path} {headers:?}");
        assert_eq!(
            passed(&up),
            2 + i,
            "{path} {headers:?} reached the upstream"
        );
    }
    pc.stop().await;
}

#[tokio::test]
async fn a_shared_feed_answers_only_requests_without_credentials() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut c = serving(&up);
    c.feeds[0].auth = pollcast::config::AuthMode::None;
    let pc = pollcast::start(c).await.expect("start");
    let mut s = Sse::connect_with(&url(&pc, "/sse/jobs"), &[("authorization", "Bearer a")]).await;
    assert_eq!(s.next().await.event, "snapshot");
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(
        from_snapshot(&h),
        "the poll sends no credentials, nor does this request"
    );
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[("authorization", "Bearer a")]).await;
    assert!(
        !from_snapshot(&h),
        "with credentials the upstream may answer otherwise"
    );
    assert_eq!(passed(&up), 1);
    pc.stop().await;
}

#[tokio::test]
async fn without_serve_polls_every_poll_goes_upstream() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    for i in 1..=5 {
        let (status, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
        assert_eq!(status, 200);
        assert!(!from_snapshot(&h));
        assert_eq!(passed(&up), i);
    }
    pc.stop().await;
}

#[tokio::test]
async fn a_failing_feed_lets_polls_through_until_it_recovers() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(serving(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(from_snapshot(&h));

    up.mode(Mode::Status(500));
    assert_eq!(s.next().await.event, "stale");
    let (status, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert_eq!(status, 500, "the upstream's own answer");
    assert!(!from_snapshot(&h));
    assert_eq!(passed(&up), 1);

    up.mode(Mode::Ok);
    assert_eq!(s.next().await.event, "recovered");
    let (status, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert_eq!(status, 200);
    assert!(from_snapshot(&h));
    assert_eq!(passed(&up), 1);
    pc.stop().await;
}

#[tokio::test]
async fn once_the_feed_has_lingered_out_polls_pass_through() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(serving(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(from_snapshot(&h));
    drop(s);
    wait_until("the poll loop ended", || pc.registry.live_pollers() == 0).await;
    let (status, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert_eq!(status, 200);
    assert!(!from_snapshot(&h));
    assert_eq!(passed(&up), 1);
    pc.stop().await;
}

#[tokio::test]
async fn requests_that_are_not_plain_polls_pass_through() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(serving(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(from_snapshot(&h));

    let cases: [&[(&str, &str)]; 7] = [
        &[("range", "bytes=0-3")],
        &[("cache-control", "no-cache")],
        &[("cache-control", "max-age=0, no-store")],
        &[("pragma", "no-cache")],
        &[("accept", "text/html")],
        &[("if-match", "\"x\"")],
        &[("cookie", "a=1"), ("cookie", "b=2")],
    ];
    let mut n = 0;
    for headers in cases {
        let (_, h, _) = get(&url(&pc, "/api/jobs"), headers).await;
        assert!(!from_snapshot(&h), "{headers:?}");
        n += 1;
        assert_eq!(passed(&up), n, "{headers:?} reached the upstream");
    }
    // A GET with a body, and other methods.
    let resp = reqwest::Client::new()
        .get(url(&pc, "/api/jobs"))
        .header("x-straggler", "1")
        .body("{}")
        .send()
        .await
        .expect("get with body");
    assert!(resp.headers().get("x-pollcast").is_none());
    for method in [reqwest::Method::OPTIONS, reqwest::Method::DELETE] {
        let (_, h, _) = poll(method, &url(&pc, "/api/jobs"), &[]).await;
        assert!(!from_snapshot(&h));
    }
    assert_eq!(passed(&up), n + 3);
    pc.stop().await;
}

#[tokio::test]
async fn after_a_write_polls_go_upstream_until_the_feed_has_polled_again() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut c = serving(&up);
    // Only a refresh makes this feed poll again within the test.
    c.feeds[0].interval = Duration::from_secs(3600);
    c.feeds[0].backoff_max = Duration::from_secs(3600);
    let pc = pollcast::start(c).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(from_snapshot(&h));

    // The write changes the list; the client reads right after it.
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    let (status, _, _) = poll(reqwest::Method::POST, &url(&pc, "/api/jobs"), &[]).await;
    assert_eq!(status, 200);
    let (_, _, body) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert_eq!(
        body,
        direct(&up, "/api/jobs").await,
        "the reader sees its write"
    );

    // The refresh poll publishes the change and serves it from then on.
    assert_eq!(s.next().await.event, "added");
    let before = passed(&up);
    let (_, h, body) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(from_snapshot(&h));
    assert_eq!(body, direct(&up, "/api/jobs").await);
    assert_eq!(passed(&up), before);
    pc.stop().await;
}

#[tokio::test]
async fn a_reload_turns_answering_on_and_off() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let off = config(&up);
    let pc = pollcast::start(off.clone()).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(!from_snapshot(&h));

    let mut on = off.feeds.clone();
    on[0].serve_polls = true;
    assert_eq!(pc.registry.reload(&on).changed, ["jobs"]);
    // The old stream is sent away; its reconnect follows the new definition.
    while s.next_or_end().await.is_some() {}
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(from_snapshot(&h));
    assert_eq!(passed(&up), 1);

    // Off again: from the next request on, whatever the old loop is doing.
    assert_eq!(pc.registry.reload(&off.feeds).changed, ["jobs"]);
    let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
    assert!(!from_snapshot(&h));
    assert_eq!(passed(&up), 2);
    pc.stop().await;
}

#[tokio::test]
async fn a_quiet_adaptive_feed_keeps_answering_between_its_slower_polls() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut c = serving(&up);
    c.upstream.timeout = Duration::from_millis(200);
    c.feeds[0].interval_max = Some(Duration::from_secs(5));
    c.feeds[0].backoff_max = Duration::from_secs(5);
    let pc = pollcast::start(c).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    // Unchanged polls stretch the delay by half each time, far beyond
    // interval + timeout (250ms); the answer stays good until the next poll.
    // A straggler polls every 20ms until it gets such an answer.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, h, _) = get(&url(&pc, "/api/jobs"), &[]).await;
        let age = h
            .get("age")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if from_snapshot(&h) && age >= Some(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer from the snapshot a second old within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pc.stop().await;
}

#[tokio::test]
async fn http2_polls_are_answered_too_but_not_with_a_body() {
    use http_body_util::{BodyExt, Empty, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(serving(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");

    let tcp = tokio::net::TcpStream::connect(pc.addr)
        .await
        .expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let uri = format!("http://127.0.0.1:{}/api/jobs", pc.addr.port());
    let req = |inm: Option<&str>| {
        let mut r = http::Request::get(&uri).header("x-straggler", "1");
        if let Some(v) = inm {
            r = r.header("if-none-match", v);
        }
        r.body(Empty::<bytes::Bytes>::new().boxed())
            .expect("request")
    };
    let resp = within("h2 GET", sender.clone().send_request(req(None)))
        .await
        .expect("GET");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-pollcast"], "snapshot");
    let etag = resp.headers()["etag"].to_str().expect("etag").to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, direct(&up, "/api/jobs").await);
    let resp = within(
        "h2 conditional GET",
        sender.clone().send_request(req(Some(&etag))),
    )
    .await
    .expect("GET");
    assert_eq!(resp.status(), 304);
    assert_eq!(passed(&up), 0);

    let with_body = http::Request::get(&uri)
        .header("x-straggler", "1")
        .body(Full::new(bytes::Bytes::from_static(b"{}")).boxed())
        .expect("request");
    let resp = within("h2 GET with a body", sender.clone().send_request(with_body))
        .await
        .expect("GET");
    assert!(resp.headers().get("x-pollcast").is_none());
    assert_eq!(passed(&up), 1);
    pc.stop().await;
}

#[tokio::test]
async fn a_feed_with_path_parameters_answers_its_own_filled_in_path_only() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs/7/steps", json!([{"id": 1, "job": 7}]));
    up.set("/api/jobs/8/steps", json!([{"id": 1, "job": 8}]));
    let mut c = serving(&up);
    c.feeds[0].poll = "/api/jobs/{job}/steps".into();
    c.feeds[0].sse = Some("/sse/jobs/{job}/steps".into());
    let pc = pollcast::start(c).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs/7/steps")).await;
    assert_eq!(s.next().await.event, "snapshot");

    let (_, h, body) = get(&url(&pc, "/api/jobs/7/steps"), &[]).await;
    assert!(from_snapshot(&h));
    assert_eq!(body, direct(&up, "/api/jobs/7/steps").await);
    let (_, h, body) = get(&url(&pc, "/api/jobs/8/steps"), &[]).await;
    assert!(!from_snapshot(&h));
    assert_eq!(body, direct(&up, "/api/jobs/8/steps").await);
    assert_eq!(passed(&up), 1);
    pc.stop().await;
}
