//! Conditional polls and refresh, end to end: polls carry the upstream's
//! validators and a `304` is a successful poll; a successful write through
//! pollcast refreshes the feeds its path covers (and only those); the refresh
//! endpoint polls a feed definition now. (The polling work these save is
//! measured in bench/, not here.)

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn unchanged_lists_cost_a_304_which_is_a_successful_empty_poll() {
    let up = TestUpstream::start().await;
    up.validators(true);
    up.set("/api/jobs", json!([{"id": 1, "s": "a"}]));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");

    // Several polls answered 304: each one carried the validators it was given.
    wait_until("three 304s", || up.not_modified() >= 3).await;
    let polls = up.seen("/api/jobs");
    let first = &polls[0];
    assert!(
        first.headers.get("if-none-match").is_none(),
        "first poll is unconditional"
    );
    let later = polls.last().expect("polls");
    assert!(later
        .headers
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes().starts_with(b"\"")));
    assert_eq!(
        later.headers["if-modified-since"],
        "Mon, 23 Nov 2026 10:00:00 GMT"
    );

    // A 304 is neither a failure (no `stale`) nor an empty list (no `removed`):
    // the next event is the real change.
    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}]),
    );
    let e = s.next().await;
    assert_eq!(e.event, "added", "{e:?}");
    assert_eq!(data(&e)["id"], json!(2));
    // New validators are used from then on.
    let before = up.not_modified();
    wait_until("a 304 for the new list", || up.not_modified() > before).await;
    pc.stop().await;
}

#[tokio::test]
async fn without_validators_polls_stay_unconditional() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    up.wait_hits("/api/jobs", 3).await;
    for p in up.seen("/api/jobs") {
        assert!(p.headers.get("if-none-match").is_none());
        assert!(p.headers.get("if-modified-since").is_none());
    }
    pc.stop().await;
}

/// A config whose feed would not poll again for an hour on its own.
fn hourly(up: &TestUpstream) -> pollcast::Config {
    let mut c = config(up);
    c.feeds[0].interval = Duration::from_secs(3600);
    c.feeds[0].backoff_max = Duration::from_secs(3600);
    c
}

#[tokio::test]
async fn a_successful_write_through_pollcast_reaches_subscribers_without_waiting_an_interval() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "queued"}]));
    up.set("/api/jobs/1", json!({"id": 1}));
    let pc = pollcast::start(hourly(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let http = reqwest::Client::new();

    // A write below the poll path: PATCH /api/jobs/1.
    up.set("/api/jobs", json!([{"id": 1, "s": "running"}]));
    let r = http
        .patch(url(&pc, "/api/jobs/1"))
        .body(r#"{"s":"running"}"#)
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    let e = s.next().await;
    assert_eq!(e.event, "updated");
    assert_eq!(data(&e)["item"]["s"], "running");

    // A write at the poll path: POST /api/jobs.
    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "running"}, {"id": 2, "s": "queued"}]),
    );
    let r = http
        .post(url(&pc, "/api/jobs"))
        .body(r#"{"id":2}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let e = s.next().await;
    assert_eq!(e.event, "added");
    assert_eq!(data(&e)["id"], json!(2));
    pc.stop().await;
}

#[tokio::test]
async fn a_write_refreshes_the_feed_whose_filled_in_path_covers_it_and_no_other() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs/7/steps", json!([{"id": 1, "s": "a"}]));
    up.set("/api/jobs/8/steps", json!([{"id": 1, "s": "a"}]));
    up.set("/api/jobs/7/steps/1", json!({"id": 1}));
    let mut c = hourly(&up);
    c.feeds[0].poll = "/api/jobs/{job}/steps".into();
    c.feeds[0].sse = Some("/sse/jobs/{job}/steps".into());
    let pc = pollcast::start(c).await.expect("start");
    let mut s7 = Sse::connect(&url(&pc, "/sse/jobs/7/steps")).await;
    let mut s8 = Sse::connect(&url(&pc, "/sse/jobs/8/steps")).await;
    assert_eq!(s7.next().await.event, "snapshot");
    assert_eq!(s8.next().await.event, "snapshot");
    let polls8 = up.hits("/api/jobs/8/steps");
    let http = reqwest::Client::new();
    for round in ["b", "c"] {
        up.set("/api/jobs/7/steps", json!([{"id": 1, "s": round}]));
        let r = http
            .patch(url(&pc, "/api/jobs/7/steps/1"))
            .body("{}")
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), 200);
        // The interval is an hour: only the write can have re-polled job 7.
        let e = s7.next().await;
        assert_eq!(e.event, "updated");
        assert_eq!(data(&e)["item"]["s"], round);
    }
    assert_eq!(
        up.hits("/api/jobs/8/steps"),
        polls8,
        "job 8's feed was not re-polled by writes to job 7"
    );
    pc.stop().await;
}

#[tokio::test]
async fn reads_and_failed_writes_do_not_refresh() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(hourly(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let http = reqwest::Client::new();
    // Failing writes (404: no list at that path) and reads.
    for _ in 0..3 {
        let r = http
            .delete(url(&pc, "/api/jobs/404"))
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status(), 404);
        let r = http.get(url(&pc, "/api/jobs")).send().await.expect("get");
        assert_eq!(r.status(), 200);
    }
    // Then a successful write: the poll it causes is the second poll of the
    // feed; none of the requests above caused one.
    let r = http.post(url(&pc, "/api/jobs")).send().await.expect("post");
    assert_eq!(r.status(), 200);
    wait_until("the refresh poll", || {
        up.seen("/api/jobs")
            .iter()
            .filter(|p| p.method == "GET" && p.headers.get("x-forwarded-for").is_none())
            .count()
            >= 2
    })
    .await;
    let polls = up
        .seen("/api/jobs")
        .into_iter()
        .filter(|p| p.method == "GET" && p.headers.get("x-forwarded-for").is_none())
        .count();
    assert_eq!(polls, 2, "only the successful write refreshed the feed");
    pc.stop().await;
}

#[tokio::test]
async fn the_refresh_endpoint_polls_a_feed_definition_now() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(hourly(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let http = reqwest::Client::new();

    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    let r = http
        .post(admin_url(&pc, "/_pollcast/refresh/jobs"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), 202);
    let e = s.next().await;
    assert_eq!(e.event, "added");

    let r = http
        .post(admin_url(&pc, "/_pollcast/refresh/nope"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), 404);
    let r = http
        .get(admin_url(&pc, "/_pollcast/refresh/jobs"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    pc.stop().await;
}
