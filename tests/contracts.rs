//! The six example contracts under `examples/contracts/`, byte for byte on the
//! wire: each shipped config is loaded as is (only the upstream address and
//! the intervals are changed), run against a real upstream, and read as raw
//! SSE bytes. `{ID}` matches an event id, `{TS}` an ISO 8601 timestamp.
//! The test upstream serializes with sorted keys; pollcast keeps item bytes
//! exactly as the upstream wrote them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn contract_1_job_list_named_events_wrapped_payloads_and_query_params() {
    let up = TestUpstream::start().await;
    let pq = "/api/jobs?limit=2&status_filter=running&token=abc";
    up.set(pq, json!([{"id": "j1", "status": "running"}]));
    let pc = pollcast::start(example("examples/contracts/1-job-list.toml", &up))
        .await
        .expect("start");
    let mut s = RawSse::connect(&url(
        &pc,
        "/sse/jobs?token=abc&status_filter=running&limit=2",
    ))
    .await;
    s.expect("retry: 2000\n\n").await;
    s.expect("event: connection\ndata: {\"status\":\"connected\"}\n\n")
        .await;
    s.expect(
        "id: {ID}\nevent: snapshot\ndata: {\"jobs\":[{\"id\":\"j1\",\"status\":\"running\"}]}\n\n",
    )
    .await;
    up.set(
        pq,
        json!([{"id": "j1", "status": "running"}, {"id": "j2", "status": "queued"}]),
    );
    s.expect(
        "id: {ID}\nevent: job_added\ndata: {\"job\":{\"id\":\"j2\",\"status\":\"queued\"}}\n\n",
    )
    .await;
    up.set(
        pq,
        json!([{"id": "j1", "status": "done"}, {"id": "j2", "status": "queued"}]),
    );
    s.expect(
        "id: {ID}\nevent: job_updated\ndata: {\"job\":{\"id\":\"j1\",\"status\":\"done\"}}\n\n",
    )
    .await;
    up.set(pq, json!([{"id": "j1", "status": "done"}]));
    s.expect("id: {ID}\nevent: job_removed\ndata: {\"job_id\":\"j2\"}\n\n")
        .await;
    // The query parameters reached the upstream, and only this feed's.
    let seen = up.seen("/api/jobs");
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|s| s.path_and_query == pq), "{seen:?}");
    pc.stop().await;
}

#[tokio::test]
async fn contract_2_activity_stream_two_feeds_one_path_with_changed_fields() {
    let up = TestUpstream::start().await;
    up.set(
        "/api/listings",
        json!([{"id": 7, "price_usd": 10, "ram_gb": 8, "cpu": "x", "updated_at": 1}]),
    );
    up.set("/api/imports", json!([]));
    let pc = pollcast::start(example("examples/contracts/2-activity-stream.toml", &up))
        .await
        .expect("start");
    let mut s = RawSse::connect(&url(&pc, "/sse/activity")).await;
    s.expect("retry: 2000\n\n").await;
    // No snapshots: one bare id per feed positions EventSource's Last-Event-ID.
    s.expect("id: {ID}\n\n").await;
    s.expect("id: {ID}\n\n").await;

    up.set(
        "/api/listings",
        json!([{"id": 7, "price_usd": 10, "ram_gb": 8, "cpu": "x", "updated_at": 1}, {"id": 1, "price_usd": 5, "ram_gb": 4, "cpu": "y", "updated_at": 1}]),
    );
    let created = s
        .expect(
            "id: {ID}\nevent: listing.created\ndata: {\"listing_id\":1,\"timestamp\":\"{TS}\"}\n\n",
        )
        .await;
    let created_id = created
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("id: "))
        .expect("id")
        .to_owned();
    assert_eq!(created_id.split(',').count(), 2, "{created_id}");

    up.set(
        "/api/listings",
        json!([{"id": 7, "price_usd": 10, "ram_gb": 8, "cpu": "x", "updated_at": 1}, {"id": 1, "price_usd": 6, "ram_gb": 16, "cpu": "y", "updated_at": 2}]),
    );
    s.expect("id: {ID}\nevent: listing.updated\ndata: {\"listing_id\":1,\"changes\":[\"price_usd\",\"ram_gb\"],\"timestamp\":\"{TS}\"}\n\n")
        .await;
    up.set("/api/imports", json!([{"id": "imp-1", "rows": 10}]));
    s.expect("id: {ID}\nevent: import.created\ndata: {\"import_id\":\"imp-1\",\"timestamp\":\"{TS}\"}\n\n")
        .await;
    up.set(
        "/api/listings",
        json!([{"id": 1, "price_usd": 6, "ram_gb": 16, "cpu": "y", "updated_at": 2}]),
    );
    s.expect(
        "id: {ID}\nevent: listing.deleted\ndata: {\"listing_id\":7,\"timestamp\":\"{TS}\"}\n\n",
    )
    .await;

    // Resume from the composite id: exactly the three later events, once each.
    let mut r = RawSse::connect_with(
        &url(&pc, "/sse/activity"),
        &[("last-event-id", &created_id)],
    )
    .await;
    r.expect("retry: 2000\n\n").await;
    let mut names = Vec::new();
    for _ in 0..3 {
        let b = r.block().await;
        assert!(b.starts_with("id: "), "{b:?}");
        names.push(b.lines().nth(1).unwrap_or_default().to_owned());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "event: import.created",
            "event: listing.deleted",
            "event: listing.updated"
        ]
    );
    pc.stop().await;
}

#[tokio::test]
async fn contract_3_unnamed_messages_with_a_type_field() {
    let up = TestUpstream::start().await;
    up.set(
        "/api/todos",
        json!([{"id": 1, "title": "a", "done": false}]),
    );
    let pc = pollcast::start(example("examples/contracts/3-typed-messages.toml", &up))
        .await
        .expect("start");
    let mut s = RawSse::connect(&url(&pc, "/sse/todos")).await;
    s.expect("retry: 2000\n\n").await;
    s.expect("data: {\"type\":\"connected\"}\n\n").await;
    s.expect("id: {ID}\ndata: {\"type\":\"snapshot\",\"todos\":[{\"done\":false,\"id\":1,\"title\":\"a\"}]}\n\n")
        .await;
    up.set(
        "/api/todos",
        json!([{"id": 1, "title": "a", "done": false}, {"id": 2, "title": "b", "done": false}]),
    );
    s.expect("id: {ID}\ndata: {\"type\":\"todo_created\",\"todo\":{\"done\":false,\"id\":2,\"title\":\"b\"}}\n\n")
        .await;
    up.set(
        "/api/todos",
        json!([{"id": 1, "title": "a", "done": true}, {"id": 2, "title": "b", "done": false}]),
    );
    s.expect("id: {ID}\ndata: {\"type\":\"todo_updated\",\"todo\":{\"done\":true,\"id\":1,\"title\":\"a\"}}\n\n")
        .await;
    up.set(
        "/api/todos",
        json!([{"id": 2, "title": "b", "done": false}]),
    );
    s.expect("id: {ID}\ndata: {\"type\":\"todo_deleted\",\"id\":1}\n\n")
        .await;
    up.mode(Mode::Status(503));
    let b = s.block().await;
    assert!(b.starts_with("id: "), "{b:?}");
    assert!(
        b.contains("\ndata: {\"type\":\"stale\",\"reason\":\"") && !b.contains("event:"),
        "{b:?}"
    );
    up.mode(Mode::Ok);
    s.expect("id: {ID}\ndata: {\"type\":\"recovered\",\"stale_since\":\"{TS}\"}\n\n")
        .await;
    pc.stop().await;
}

#[tokio::test]
async fn contract_4_trigger_messages_coalesced_and_data_keepalives() {
    let up = TestUpstream::start().await;
    up.set("/api/campaigns", json!([{"id": 1, "budget": 5}]));
    let mut cfg = example("examples/contracts/4-triggers.toml", &up);
    cfg.sse.keepalive = Duration::from_millis(150);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = RawSse::connect(&url(&pc, "/sse/campaigns")).await;
    s.expect("retry: 2000\n\n").await;
    s.expect("id: {ID}\n\n").await;
    // A quiet stream hears data keepalives, not comments.
    s.expect("data: {\"trigger\":\"ping\"}\n\n").await;
    // Three changes in one poll: one trigger.
    up.set(
        "/api/campaigns",
        json!([{"id": 1, "budget": 6}, {"id": 2}, {"id": 3}]),
    );
    let mut b = s.block().await;
    while b == "data: {\"trigger\":\"ping\"}\n\n" {
        b = s.block().await;
    }
    assert_wire(&b, "id: {ID}\ndata: {\"trigger\":\"campaign_updated\"}\n\n");
    s.expect("data: {\"trigger\":\"ping\"}\n\n").await;
    pc.stop().await;
}

#[tokio::test]
async fn contract_5_object_progress_with_path_param_appends_and_terminal_state() {
    let up = TestUpstream::start().await;
    let job = |status: &str, progress: u32, tx: serde_json::Value| json!({"id": 42, "status": status, "progress": progress, "transactions": tx});
    up.set("/api/jobs/42", job("running", 10, json!([])));
    up.set("/api/jobs/43", job("running", 0, json!([])));
    let pc = pollcast::start(example("examples/contracts/5-job-progress.toml", &up))
        .await
        .expect("start");
    let mut s = RawSse::connect(&url(&pc, "/sse/jobs/42")).await;
    s.expect("retry: 2000\n\n").await;
    s.expect("id: {ID}\nevent: progress\ndata: {\"id\":42,\"progress\":10,\"status\":\"running\",\"transactions\":[]}\n\n")
        .await;
    // The path parameter is part of the feed: job 43 is another feed.
    let mut other = RawSse::connect(&url(&pc, "/sse/jobs/43")).await;
    other.expect("retry: 2000\n\n").await;
    other
        .expect("id: {ID}\nevent: progress\ndata: {\"id\":42,\"progress\":0,\"status\":\"running\",\"transactions\":[]}\n\n")
        .await;
    assert_eq!(pc.registry.live_feeds(), 2);
    assert!(up.hits("/api/jobs/43") >= 1);

    up.set("/api/jobs/42", job("running", 50, json!([])));
    s.expect("id: {ID}\nevent: progress\ndata: {\"id\":42,\"progress\":50,\"status\":\"running\",\"transactions\":[]}\n\n")
        .await;
    // Only entries appended: a `transaction` event alone, with the new ones only.
    up.set(
        "/api/jobs/42",
        job("running", 50, json!([{"tx": "t1", "amount": 5}])),
    );
    s.expect(
        "id: {ID}\nevent: transaction\ndata: {\"transactions\":[{\"amount\":5,\"tx\":\"t1\"}]}\n\n",
    )
    .await;
    up.set(
        "/api/jobs/42",
        job(
            "running",
            80,
            json!([{"tx": "t1", "amount": 5}, {"tx": "t2", "amount": 7}, {"tx": "t3", "amount": 1}]),
        ),
    );
    s.expect("id: {ID}\nevent: progress\ndata: {\"id\":42,\"progress\":80,\"status\":\"running\",\"transactions\":[{\"amount\":5,\"tx\":\"t1\"},{\"amount\":7,\"tx\":\"t2\"},{\"amount\":1,\"tx\":\"t3\"}]}\n\n")
        .await;
    s.expect("id: {ID}\nevent: transaction\ndata: {\"transactions\":[{\"amount\":7,\"tx\":\"t2\"},{\"amount\":1,\"tx\":\"t3\"}]}\n\n")
        .await;

    let done = job("completed", 100, json!([]));
    up.set("/api/jobs/42", done.clone());
    s.expect("id: {ID}\nevent: progress\ndata: {\"id\":42,\"progress\":100,\"status\":\"completed\",\"transactions\":[]}\n\n")
        .await;
    let end = s
        .expect("id: {ID}\nevent: completed\ndata: {\"job_id\":42,\"result\":{\"id\":42,\"progress\":100,\"status\":\"completed\",\"transactions\":[]}}\n\n")
        .await;
    let end_id = end
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("id: "))
        .expect("id")
        .to_owned();
    assert!(end_id.ends_with(":end"), "{end_id}");
    assert_eq!(
        s.next_block().await,
        None,
        "the stream ends after the terminal event"
    );

    // EventSource's reconnect carries the terminal id: 204 stops it for good.
    let r = reqwest::Client::new()
        .get(url(&pc, "/sse/jobs/42"))
        .header("last-event-id", &end_id)
        .send()
        .await
        .expect("reconnect");
    assert_eq!(r.status().as_u16(), 204);

    // A new viewer of the finished job hears the final state and the end,
    // without the upstream being polled again.
    let hits = up.hits("/api/jobs/42");
    let mut late = RawSse::connect(&url(&pc, "/sse/jobs/42")).await;
    late.expect("retry: 2000\n\n").await;
    late.expect("id: {ID}\nevent: progress\ndata: {\"id\":42,\"progress\":100,\"status\":\"completed\",\"transactions\":[]}\n\n")
        .await;
    late.expect("id: {ID}\nevent: completed\ndata: {\"job_id\":42,\"result\":{\"id\":42,\"progress\":100,\"status\":\"completed\",\"transactions\":[]}}\n\n")
        .await;
    assert_eq!(late.next_block().await, None);
    assert_eq!(
        up.hits("/api/jobs/42"),
        hits,
        "a finished feed is not polled"
    );

    // The other terminal values, each with its own payload.
    up.set("/api/jobs/43", job("failed", 3, json!([])));
    other
        .expect("id: {ID}\nevent: progress\ndata: {\"id\":42,\"progress\":3,\"status\":\"failed\",\"transactions\":[]}\n\n")
        .await;
    other
        .expect("id: {ID}\nevent: failed\ndata: {\"job_id\":42,\"error\":\"job 43 failed\"}\n\n")
        .await;
    assert_eq!(other.next_block().await, None);
    up.set("/api/jobs/44", job("cancelled", 0, json!([])));
    let mut c = RawSse::connect(&url(&pc, "/sse/jobs/44")).await;
    c.expect("retry: 2000\n\n").await;
    c.block().await;
    c.expect("id: {ID}\nevent: cancelled\ndata: {\"job_id\":42}\n\n")
        .await;
    assert_eq!(c.next_block().await, None);
    pc.stop().await;
}

#[tokio::test]
async fn contract_6_chunked_snapshot_with_id_on_the_last_event_and_resend() {
    let up = TestUpstream::start().await;
    let points =
        |n: u32| -> serde_json::Value { (1..=n).map(|t| json!({"t": t, "v": t * 10})).collect() };
    up.set("/api/points", points(5));
    let mut cfg = example("examples/contracts/6-chunked-snapshot.toml", &up);
    cfg.feeds[0].events.chunk_size = 2;
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = RawSse::connect(&url(&pc, "/sse/points")).await;
    s.expect("retry: 2000\n\n").await;
    s.expect("event: interval_start\ndata: {\"total_points\":5}\n\n")
        .await;
    s.expect("event: data_chunk\ndata: {\"data_points\":[{\"t\":1,\"v\":10},{\"t\":2,\"v\":20}],\"points_sent\":2,\"total_points\":5}\n\n").await;
    s.expect("event: data_chunk\ndata: {\"data_points\":[{\"t\":3,\"v\":30},{\"t\":4,\"v\":40}],\"points_sent\":4,\"total_points\":5}\n\n").await;
    s.expect("event: data_chunk\ndata: {\"data_points\":[{\"t\":5,\"v\":50}],\"points_sent\":5,\"total_points\":5}\n\n").await;
    s.expect("id: {ID}\nevent: complete\ndata: {\"total_points\":5}\n\n")
        .await;
    // `resend = true`: a change sends the whole interval again, chunked.
    up.set("/api/points", points(3));
    s.expect("event: interval_start\ndata: {\"total_points\":3}\n\n")
        .await;
    s.expect("event: data_chunk\ndata: {\"data_points\":[{\"t\":1,\"v\":10},{\"t\":2,\"v\":20}],\"points_sent\":2,\"total_points\":3}\n\n").await;
    s.expect("event: data_chunk\ndata: {\"data_points\":[{\"t\":3,\"v\":30}],\"points_sent\":3,\"total_points\":3}\n\n").await;
    s.expect("id: {ID}\nevent: complete\ndata: {\"total_points\":3}\n\n")
        .await;
    pc.stop().await;
}

#[test]
fn every_example_config_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/contracts");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/contracts") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            pollcast::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            // And as a user checks it: `pollcast --check`.
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_pollcast"))
                .arg("--check")
                .arg("--config")
                .arg(&path)
                .output()
                .expect("run pollcast --check");
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    // The six contract patterns and one worked example per seed application.
    assert_eq!(n, 11);
}

#[test]
fn contract_mistakes_are_located_config_errors() {
    let base = "[upstream]\nurl = \"http://127.0.0.1:1\"\n\n[[feeds]]\nname = \"jobs\"\npoll = \"/api/jobs\"\n";
    let load = |extra: &str| {
        pollcast::Config::from_toml(&format!("{base}{extra}"), std::path::Path::new("c.toml"))
            .expect_err("must be rejected")
            .to_string()
    };
    let e = load("events.added = { event = \"job\\nadded\" }\n");
    assert!(
        e.starts_with("c.toml:7:1: feeds[0].events.added:") && e.contains("line break"),
        "{e}"
    );
    let e = load("events.updated = { data = { x = \"{{itme}}\" } }\n");
    assert!(
        e.starts_with("c.toml:7:1: feeds[0].events.updated:") && e.contains("{{itme}}"),
        "{e}"
    );
    let e = load("events.removed = { data = \"{{patch}}\" }\n");
    assert!(
        e.contains("feeds[0].events.removed") && e.contains("{{id}}"),
        "{e}"
    );
    let e = load("sse = \"/sse/x{id}\"\n");
    assert!(
        e.contains("feeds[0].sse") && e.contains("whole path segment"),
        "{e}"
    );
    let e = load("append = \"/tx\"\n");
    assert!(e.contains("feeds[0].append") && e.contains("object"), "{e}");
    let e = load("events.batch_of = [\"moved\"]\n");
    assert!(
        e.contains("feeds[0].events.batch_of") && e.contains("moved"),
        "{e}"
    );
    let e = load("events.append_each = true\n");
    assert!(e.contains("feeds[0].events.append_each"), "{e}");
    let e = pollcast::Config::from_toml(
        &base.replace("/api/jobs", "/api/jobs?lastEventId=1"),
        std::path::Path::new("c.toml"),
    )
    .expect_err("own parameter in the fixed query")
    .to_string();
    assert!(
        e.contains("feeds[0].poll") && e.contains("lastEventId"),
        "{e}"
    );
    let e = load("events.addded = {}\n");
    assert!(e.contains("unknown field") && e.contains("addded"), "{e}");
}

#[tokio::test]
async fn the_client_module_is_served_by_pollcast() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let r = reqwest::get(url(&pc, "/_pollcast/client.js"))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let js = r.text().await.expect("body");
    // Byte for byte the file the npm package ships (clients/js/client/dist).
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/client/dist/index.js"
    ))
    .expect("clients/js/client/dist/index.js");
    assert_eq!(js, shipped);
    assert!(js.contains("export function subscribe(url"), "{js}");
    pc.stop().await;
}
