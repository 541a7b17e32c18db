//! The core contract end to end: a real upstream, pollcast, a real SSE client.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;

async fn setup() -> (TestUpstream, pollcast::Running) {
    let up = TestUpstream::start().await;
    up.set(
        "/api/jobs",
        json!([{"id": 1, "status": "running"}, {"id": "b", "status": "queued"}]),
    );
    let pc = pollcast::start(config(&up)).await.expect("start");
    (up, pc)
}

#[tokio::test]
async fn snapshot_then_added_updated_removed_with_ids_and_patch() {
    let (up, pc) = setup().await;
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert_eq!(s.headers["cache-control"], "no-cache");
    assert_eq!(s.headers["x-accel-buffering"], "no");

    let e = s.next().await;
    assert_eq!(e.event, "snapshot");
    assert!(!e.id.is_empty());
    assert_eq!(
        data(&e),
        json!({"items": [{"id": 1, "status": "running"}, {"id": "b", "status": "queued"}]})
    );

    up.set("/api/jobs", json!([{"id": 1, "status": "running"}, {"id": "b", "status": "queued"}, {"id": 3, "status": "new"}]));
    let e = s.next().await;
    assert_eq!(e.event, "added");
    assert_eq!(
        data(&e),
        json!({"id": 3, "item": {"id": 3, "status": "new"}})
    );

    up.set("/api/jobs", json!([{"id": 1, "status": "done", "extra": [1]}, {"id": "b", "status": "queued"}, {"id": 3, "status": "new"}]));
    let e = s.next().await;
    assert_eq!(e.event, "updated");
    let d = data(&e);
    assert_eq!(d["id"], json!(1));
    assert_eq!(d["item"], json!({"id": 1, "status": "done", "extra": [1]}));
    // The patch really turns the old item into the new one.
    let mut old = json!({"id": 1, "status": "running"});
    let patch: json_patch::Patch =
        serde_json::from_value(d["patch"].clone()).expect("RFC 6902 patch");
    json_patch::patch(&mut old, &patch).expect("patch applies");
    assert_eq!(old, d["item"]);

    up.set(
        "/api/jobs",
        json!([{"id": 1, "status": "done", "extra": [1]}, {"id": 3, "status": "new"}]),
    );
    let e = s.next().await;
    assert_eq!(e.event, "removed");
    assert_eq!(data(&e), json!({"id": "b"}));
    pc.stop().await;
}

#[tokio::test]
async fn resume_with_known_id_replays_exactly_and_unknown_id_gets_snapshot() {
    let (up, pc) = setup().await;
    // Keep the feed alive while the reader below reconnects.
    let mut keeper = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let snap = keeper.next().await;
    assert_eq!(snap.event, "snapshot");

    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let first = s.next().await;
    up.set(
        "/api/jobs",
        json!([{"id": 1, "status": "running"}, {"id": "b", "status": "queued"}, {"id": 3}]),
    );
    let added3 = s.next().await;
    assert_eq!(added3.event, "added");
    assert_eq!(keeper.next().await.id, added3.id);
    drop(s);

    // Changes while the reader is away.
    up.set(
        "/api/jobs",
        json!([{"id": 1, "status": "x"}, {"id": "b", "status": "queued"}, {"id": 3}, {"id": 4}]),
    );
    let u = keeper.next().await;
    let a = keeper.next().await;
    assert_eq!((u.event.as_str(), a.event.as_str()), ("updated", "added"));

    // Header resume: exactly the events after `added3`, nothing before, nothing twice.
    let mut r = Sse::connect_with(&url(&pc, "/sse/jobs"), &[("last-event-id", &added3.id)]).await;
    let e1 = r.next().await;
    let e2 = r.next().await;
    assert_eq!(
        (e1.event.as_str(), e1.id.as_str()),
        ("updated", u.id.as_str())
    );
    assert_eq!(
        (e2.event.as_str(), e2.id.as_str()),
        ("added", a.id.as_str())
    );
    assert_eq!(e1.data, u.data);

    // Query-parameter resume from the snapshot's id replays everything since.
    let mut q = Sse::connect(&url(&pc, &format!("/sse/jobs?lastEventId={}", first.id))).await;
    let names: Vec<String> = vec![
        q.next().await.event,
        q.next().await.event,
        q.next().await.event,
    ];
    assert_eq!(names, ["added", "updated", "added"]);

    // Unknown id: a fresh snapshot of the current list.
    let mut f = Sse::connect_with(&url(&pc, "/sse/jobs"), &[("last-event-id", "nope:42")]).await;
    let e = f.next().await;
    assert_eq!(e.event, "snapshot");
    assert_eq!(data(&e)["items"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        e.id, a.id,
        "a snapshot carries the id of the state it shows"
    );
    pc.stop().await;
}

#[tokio::test]
async fn subscribers_share_one_poll_loop_and_new_ones_get_the_snapshot_without_a_request() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    cfg.feeds[0].interval = Duration::from_secs(3600);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut a = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(a.next().await.event, "snapshot");
    assert_eq!(up.hits("/api/jobs"), 1);
    let mut b = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let e = b.next().await;
    assert_eq!(e.event, "snapshot");
    assert_eq!(data(&e), json!({"items": [{"id": 1}]}));
    assert_eq!(
        up.hits("/api/jobs"),
        1,
        "the second subscriber caused no upstream request"
    );
    assert_eq!(pc.registry.live_feeds(), 1);
    assert_eq!(pc.registry.subscribers(), 2);
    pc.stop().await;
}

#[tokio::test]
async fn one_upstream_request_per_interval_however_many_subscribers() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let interval = Duration::from_millis(100);
    let mut cfg = config(&up);
    cfg.feeds[0].interval = interval;
    let pc = pollcast::start(cfg).await.expect("start");
    let mut subs = Vec::new();
    for _ in 0..5 {
        let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
        assert_eq!(s.next().await.event, "snapshot");
        subs.push(s);
    }
    up.wait_hits("/api/jobs", 6).await;
    let seen = up.seen("/api/jobs");
    // One loop sleeps a whole interval between polls; several loops would not.
    for w in seen.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= interval.mul_f32(0.9),
            "two polls {gap:?} apart: more than one poll loop"
        );
    }
    assert_eq!(pc.registry.live_feeds(), 1);
    pc.stop().await;
}

#[tokio::test]
async fn query_strings_and_credentials_make_separate_feeds_with_separate_data() {
    let up = TestUpstream::start().await;
    up.set(
        "/api/jobs?status=running",
        json!([{"id": 1, "status": "running"}]),
    );
    up.set(
        "/api/jobs?status=done",
        json!([{"id": 2, "status": "done"}]),
    );
    up.set("/api/jobs", json!([{"id": 9, "owner": "{{token}}"}]));
    let pc = pollcast::start(config(&up)).await.expect("start");

    let mut r = Sse::connect(&url(&pc, "/sse/jobs?status=running")).await;
    let mut d = Sse::connect(&url(&pc, "/sse/jobs?status=done&lastEventId=x")).await;
    assert_eq!(
        data(&r.next().await),
        json!({"items": [{"id": 1, "status": "running"}]})
    );
    assert_eq!(
        data(&d.next().await),
        json!({"items": [{"id": 2, "status": "done"}]})
    );
    // pollcast's own parameter never reaches the upstream.
    assert!(up
        .seen("/api/jobs?")
        .iter()
        .all(|s| !s.path_and_query.contains("lastEventId")));

    let mut alice =
        Sse::connect_with(&url(&pc, "/sse/jobs"), &[("authorization", "Bearer alice")]).await;
    let mut bob = Sse::connect_with(
        &url(&pc, "/sse/jobs"),
        &[("authorization", "Bearer bob"), ("cookie", "sid=1")],
    )
    .await;
    assert_eq!(
        data(&alice.next().await),
        json!({"items": [{"id": 9, "owner": "Bearer alice"}]})
    );
    assert_eq!(
        data(&bob.next().await),
        json!({"items": [{"id": 9, "owner": "Bearer bob"}]})
    );
    assert_eq!(pc.registry.live_feeds(), 4);
    // Credentials are forwarded on the polls of their own feed only.
    let bob_polls: Vec<_> = up
        .seen("/api/jobs")
        .into_iter()
        .filter(|s| {
            s.headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer bob")
        })
        .collect();
    assert!(!bob_polls.is_empty());
    assert!(bob_polls.iter().all(|s| s.headers["cookie"] == "sid=1"));
    pc.stop().await;
}

#[tokio::test]
async fn a_feed_stops_polling_after_its_last_subscriber_leaves() {
    let (up, pc) = setup().await;
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    up.wait_hits("/api/jobs", 3).await;
    drop(s);
    wait_until("feed and poll loop gone", || {
        pc.registry.live_feeds() == 0 && pc.registry.live_pollers() == 0
    })
    .await;
    let hits = up.hits("/api/jobs");
    // The loop has exited, so nothing can poll any more; give it several intervals to prove it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.hits("/api/jobs"), hits);
    // A new subscriber starts a new instance: new epoch, fresh snapshot.
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    assert!(up.hits("/api/jobs") > hits);
    pc.stop().await;
}

async fn failure_keeps_items_and_reports(mode: Mode, reason_part: &str) {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    let mut cfg = config(&up);
    cfg.upstream.timeout = Duration::from_millis(300);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");

    up.mode(mode);
    let e = s.next().await;
    assert_eq!(e.event, "stale", "{e:?}");
    let reason = data(&e)["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains(reason_part),
        "reason {reason:?} lacks {reason_part:?}"
    );
    let failed_at = up.hits("/api/jobs");
    up.wait_hits("/api/jobs", failed_at + 2).await;

    // A subscriber arriving during the outage gets the last good list and the status.
    let mut late = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let snap = late.next().await;
    assert_eq!(snap.event, "snapshot");
    assert_eq!(data(&snap), json!({"items": [{"id": 1}, {"id": 2}]}));
    assert_eq!(late.next().await.event, "stale");

    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    up.mode(Mode::Ok);
    let mut names = Vec::new();
    while names.last().map(String::as_str) != Some("added") {
        names.push(s.next().await.event);
    }
    assert_eq!(
        names,
        ["recovered", "added"],
        "exactly one recovery, no removals"
    );
    pc.stop().await;
}

#[tokio::test]
async fn upstream_500_is_stale_not_removed() {
    failure_keeps_items_and_reports(Mode::Status(500), "500").await;
}

#[tokio::test]
async fn invalid_json_is_stale_not_removed() {
    failure_keeps_items_and_reports(Mode::InvalidJson, "JSON").await;
}

#[tokio::test]
async fn upstream_timeout_is_stale_not_removed() {
    failure_keeps_items_and_reports(Mode::Delay(Duration::from_secs(2)), "did not answer").await;
}

#[tokio::test]
async fn first_subscriber_of_a_failing_feed_hears_why_and_keeps_waiting() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    up.mode(Mode::Status(503));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let e = s.next().await;
    assert_eq!(e.event, "stale");
    // No position was sent yet, so the status event carries none: a resume
    // position is only ever one the client was actually sent.
    assert!(
        e.id.is_empty(),
        "no id before the first snapshot: {:?}",
        e.id
    );
    up.mode(Mode::Ok);
    let e1 = s.next().await;
    let e2 = s.next().await;
    let mut got = [e1.event.as_str(), e2.event.as_str()];
    got.sort_unstable();
    assert_eq!(got, ["recovered", "snapshot"]);
    pc.stop().await;
}

#[tokio::test]
async fn multi_line_and_unicode_data_keeps_framing() {
    let up = TestUpstream::start().await;
    let item = json!({"id": 1, "text": "line1\nline2\r\nline3\rend", "emoji": "😀 é", "nested": {"a": [1, 2]}});
    up.set("/api/jobs", json!([item.clone()]));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let e = s.next().await;
    assert_eq!(data(&e), json!({"items": [item]}));
    pc.stop().await;
}

#[tokio::test]
async fn stream_starts_with_retry_and_sends_keepalives() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    let mut cfg = config(&up);
    cfg.sse.keepalive = Duration::from_millis(50);
    cfg.sse.retry = Duration::from_millis(1234);
    cfg.feeds[0].interval = Duration::from_secs(3600);
    let pc = pollcast::start(cfg).await.expect("start");
    let resp = reqwest::get(url(&pc, "/sse/jobs")).await.expect("get");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    within("retry, snapshot and two keepalives", async {
        while text.matches(":keepalive\n\n").count() < 2 {
            let chunk = body.next().await.expect("open").expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(text.starts_with("retry: 1234\n\n"), "{text}");
    assert!(text.contains("event: snapshot\n"), "{text}");
    pc.stop().await;
}

#[tokio::test]
async fn ignored_fields_do_not_produce_updates() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "a", "updated_at": 1}]));
    let mut cfg = config(&up);
    cfg.feeds[0].ignore = vec![pollcast::pointer::Pointer::parse("/updated_at").expect("ptr")];
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    up.set("/api/jobs", json!([{"id": 1, "s": "a", "updated_at": 2}]));
    let h = up.hits("/api/jobs");
    up.wait_hits("/api/jobs", h + 3).await;
    up.set("/api/jobs", json!([{"id": 1, "s": "b", "updated_at": 3}]));
    let e = s.next().await;
    assert_eq!(e.event, "updated");
    assert_eq!(data(&e)["item"]["s"], "b");
    // A late subscriber sees the newest content, ignored fields included.
    let mut late = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(data(&late.next().await)["items"][0]["updated_at"], 3);
    pc.stop().await;
}

#[tokio::test]
async fn nested_items_pointer_and_custom_id() {
    let up = TestUpstream::start().await;
    up.set(
        "/api/jobs",
        json!({"data": {"rows": [{"key": {"k": "x"}, "v": 1}]}}),
    );
    let mut cfg = config(&up);
    cfg.feeds[0].items = pollcast::pointer::Pointer::parse("/data/rows").expect("ptr");
    cfg.feeds[0].id = pollcast::pointer::Pointer::parse("/key/k").expect("ptr");
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(data(&s.next().await)["items"][0]["v"], 1);
    up.set("/api/jobs", json!({"data": {"rows": []}}));
    let e = s.next().await;
    assert_eq!(
        (e.event.as_str(), data(&e)),
        ("removed", json!({"id": "x"}))
    );
    // A body whose array vanished is a failed poll, not an empty list.
    up.set("/api/jobs", json!({"data": {}}));
    assert_eq!(s.next().await.event, "stale");
    pc.stop().await;
}

#[tokio::test]
async fn shutdown_sends_a_retry_hint_and_ends_streams() {
    let (_up, pc) = setup().await;
    let resp = reqwest::get(url(&pc, "/sse/jobs")).await.expect("get");
    let mut body = resp.bytes_stream();
    let first = within("first chunk", body.next()).await;
    assert!(first.is_some());
    let stop = tokio::spawn(pc.stop());
    let mut rest = String::new();
    within("stream end after shutdown", async {
        while let Some(Ok(chunk)) = body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(rest.ends_with("retry: 2000\n\n"), "{rest:?}");
    within("shutdown completes", stop).await.expect("join");
}
