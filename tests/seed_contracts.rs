//! The seed applications' event contracts on the wire (issue 16, items 3-9),
//! each from its shipped config in `examples/contracts/seed-*.toml` (only the
//! upstream address and the intervals changed) or a config built here: a real
//! upstream whose data the test changes, pollcast, and an SSE client.

mod common;

use std::time::Duration;

use common::*;
use pollcast::config::{Config, EventSpec, FeedConfig};
use serde_json::{json, Value};

fn seed(file: &str, up: &TestUpstream) -> Config {
    example(&format!("examples/contracts/{file}"), up)
}

fn spec(event: &str, data: &str) -> Option<EventSpec> {
    let v: toml::Table = toml::from_str(&format!("v = {data}")).expect("toml");
    Some(EventSpec {
        event: Some(event.into()),
        data: Some(v["v"].clone()),
        send: None,
    })
}

fn listings(prices: &[(u64, u64)]) -> Value {
    Value::Array(
        prices
            .iter()
            .map(|(id, p)| json!({"id": id, "price_usd": p, "updated_at": "t"}))
            .collect(),
    )
}

/// Item 3 (one `valuation.recalculated` per poll with every updated id),
/// item 4 (`import.completed` on the status transition, fields by pointer),
/// item 9 (the snapshot is the frontend's `listing.updated` refresh trigger).
#[tokio::test]
async fn seed_000_batch_per_poll_transition_and_snapshot_trigger() {
    let up = TestUpstream::start().await;
    up.set("/api/v1/listings", listings(&[(1, 10), (2, 20), (3, 30)]));
    let imports = "/api/v1/imports?scope=recent";
    let import = |status: &str, created: u64| json!([{"id": 7, "status": status, "listings_created": created, "listings_updated": 1}]);
    up.set(imports, import("running", 0));
    let pc = pollcast::start(seed("seed-000-activity.toml", &up))
        .await
        .expect("start");
    let mut s = Sse::connect(&url(&pc, "/api/v1/events")).await;
    let first = s.next().await;
    assert_eq!(first.event, "listing.updated");
    assert_eq!(data(&first)["listing_id"], 0, "the refresh trigger");
    assert!(!first.id.is_empty(), "the trigger positions the client");
    up.wait_hits(imports, 2).await;

    // Three listings recalculated in one poll: three listing.updated, then one batch.
    up.set("/api/v1/listings", listings(&[(1, 11), (2, 21), (3, 31)]));
    let mut updated = Vec::new();
    let batch = loop {
        let e = s.next().await;
        match e.event.as_str() {
            "listing.updated" => updated.push(data(&e)["listing_id"].clone()),
            "valuation.recalculated" => break data(&e),
            other => panic!("unexpected {other}: {}", e.data),
        }
    };
    assert_eq!(updated, vec![json!(1), json!(2), json!(3)]);
    assert_eq!(batch["listing_ids"], json!([1, 2, 3]));
    assert!(is_iso8601(batch["timestamp"].as_str().expect("ts")));

    // The import completes: one import.completed with its fields.
    up.set(imports, import("completed", 3));
    let e = s.next().await;
    assert_eq!(e.event, "import.completed", "{}", e.data);
    let d = data(&e);
    assert_eq!(
        (
            &d["import_job_id"],
            &d["listings_created"],
            &d["listings_updated"]
        ),
        (&json!(7), &json!(3), &json!(1))
    );
    // Still completed, other fields changed: no second import.completed; an
    // added listing is not gathered (batch_of = ["updated"]).
    up.set(imports, import("completed", 4));
    up.wait_hits(imports, up.hits(imports) + 2).await;
    up.set(
        "/api/v1/listings",
        listings(&[(1, 11), (2, 21), (3, 31), (4, 40)]),
    );
    let e = s.next().await;
    assert_eq!(
        (e.event.as_str(), data(&e)["listing_id"].clone()),
        ("listing.created", json!(4))
    );
    up.set(
        "/api/v1/listings",
        listings(&[(1, 12), (2, 21), (3, 31), (4, 40)]),
    );
    assert_eq!(s.next().await.event, "listing.updated");
    let e = s.next().await;
    assert_eq!(e.event, "valuation.recalculated");
    assert_eq!(data(&e)["listing_ids"], json!([1]));
    pc.stop().await;
}

/// Item 5: `poll = "/api/imports?state=active"`: the fixed query reaches
/// every poll and wins over a client's parameter of the same name; clients
/// whose effective query is the same share one feed.
#[tokio::test]
async fn fixed_query_in_poll_is_merged_and_wins() {
    let up = TestUpstream::start().await;
    let mut c = config(&up);
    c.feeds[0] = {
        let mut f = FeedConfig::new("imports", "/api/imports?state=active");
        f.sse = Some("/sse/imports".into());
        f.interval = Duration::from_millis(50);
        f.linger = Duration::from_secs(5);
        f
    };
    up.set("/api/imports?limit=5&state=active", json!([{"id": 1}]));
    up.set("/api/imports?limit=5&state=done", json!([{"id": 99}]));
    let pc = pollcast::start(c).await.expect("start");
    let mut a = Sse::connect(&url(&pc, "/sse/imports?state=done&limit=5")).await;
    let mut b = Sse::connect(&url(&pc, "/sse/imports?limit=5")).await;
    let (ea, eb) = (
        a.next_named("snapshot").await,
        b.next_named("snapshot").await,
    );
    assert_eq!(
        data(&ea)["items"],
        json!([{"id": 1}]),
        "the fixed state wins"
    );
    assert_eq!(data(&eb)["items"], json!([{"id": 1}]));
    // One feed: the same instance epoch in both ids.
    let epoch = |id: &str| id.split(':').next().expect("epoch").to_owned();
    assert_eq!(epoch(&ea.id), epoch(&eb.id));
    let seen = up.seen("/api/imports");
    assert!(
        seen.iter()
            .all(|s| s.path_and_query == "/api/imports?limit=5&state=active"),
        "{seen:?}"
    );
    pc.stop().await;
}

/// Item 6: an added item's position (`{{index}}`, `{{after}}`), and seed
/// 002's job list with `resend` (the whole list in upstream order again).
#[tokio::test]
async fn added_items_carry_their_position_and_resend_keeps_order() {
    let up = TestUpstream::start().await;
    let mut c = config(&up);
    c.feeds[0].events.added = spec(
        "job_added",
        r#"{ job = "{{item}}", index = "{{index}}", after = "{{after}}" }"#,
    );
    let ids = |l: &[&str]| Value::Array(l.iter().map(|i| json!({"id": i})).collect());
    up.set("/api/jobs", ids(&["a", "b", "c"]));
    let pc = pollcast::start(c).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    s.next_named("snapshot").await;
    // A top-3 list: b deleted, d refills it at the bottom.
    up.set("/api/jobs", ids(&["a", "c", "d"]));
    assert_eq!(data(&s.next_named("removed").await)["id"], "b");
    let d = data(&s.next_named("job_added").await);
    assert_eq!(d, json!({"job": {"id": "d"}, "index": 2, "after": "c"}));
    up.set("/api/jobs", ids(&["x", "a", "c", "d"]));
    let d = data(&s.next_named("job_added").await);
    assert_eq!(d, json!({"job": {"id": "x"}, "index": 0, "after": null}));
    pc.stop().await;

    // Seed 002's own list hook prepends on job_added; with resend the
    // snapshot handler gets the list in upstream order on every change.
    let up = TestUpstream::start().await;
    let jobs = |l: &[&str]| Value::Array(l.iter().map(|i| json!({"job_id": i})).collect());
    up.set("/api/backtesting/jobs?limit=3", jobs(&["a", "b", "c"]));
    let pc = pollcast::start(seed("seed-002-backtest.toml", &up))
        .await
        .expect("start");
    let mut s = Sse::connect(&url(&pc, "/api/sse/backtest/jobs?limit=3&token=t")).await;
    assert_eq!(s.next().await.event, "connection");
    let e = s.next().await;
    assert_eq!(e.event, "snapshot");
    assert_eq!(data(&e)["jobs"], jobs(&["a", "b", "c"]));
    up.set("/api/backtesting/jobs?limit=3", jobs(&["a", "c", "d"]));
    let e = s.next().await;
    assert_eq!(e.event, "snapshot", "resend: {}", e.data);
    assert_eq!(data(&e)["jobs"], jobs(&["a", "c", "d"]));
    pc.stop().await;
}

fn job(status: &str, tx: std::ops::RangeInclusive<u64>) -> Value {
    let tx: Vec<Value> = tx.map(|n| json!({"n": n})).collect();
    json!({"job_id": 42, "status": status, "progress": 50, "transactions": tx,
           "result_summary": {"pnl": 7}, "error_message": null})
}

fn tx_of(e: &eventsource_stream::Event) -> u64 {
    assert_eq!(e.event, "transaction", "{}", e.data);
    let d = data(e);
    let t = d["transactions"].as_array().expect("transactions");
    assert_eq!(t.len(), 1, "one entry per event: {d}");
    t[0]["n"].as_u64().expect("n")
}

/// Item 7 (each entry of the growing `transactions` array its own event:
/// those present at open, those added live, those added while the client was
/// away, in order, exactly once) and item 8 (`completed` leaves the stream open).
#[tokio::test]
async fn seed_002_progress_entries_once_in_order_and_terminal_keeps_stream_open() {
    let up = TestUpstream::start().await;
    let path = "/api/backtesting/jobs/42";
    up.set(path, job("running", 1..=2));
    let pc = pollcast::start(seed("seed-002-backtest.toml", &up))
        .await
        .expect("start");
    let sse = url(&pc, "/api/sse/backtest/42?token=t");
    let mut s = Sse::connect(&sse).await;
    assert_eq!(s.next().await.event, "connection");
    assert_eq!(s.next().await.event, "progress");
    assert_eq!(tx_of(&s.next().await), 1, "entries present at open");
    let e = s.next().await;
    assert_eq!(tx_of(&e), 2);
    assert!(!e.id.is_empty(), "the id is on the last opening event");
    up.set(path, job("running", 1..=4));
    assert_eq!(tx_of(&s.next().await), 3);
    let last = s.next().await;
    assert_eq!(tx_of(&last), 4);

    // Away while two more arrive; the resume replays exactly those.
    drop(s);
    up.set(path, job("running", 1..=6));
    up.wait_hits(path, up.hits(path) + 2).await;
    let mut s = Sse::connect_with(&sse, &[("last-event-id", &last.id)]).await;
    assert_eq!(s.next().await.event, "connection");
    assert_eq!(tx_of(&s.next().await), 5);
    assert_eq!(tx_of(&s.next().await), 6);

    // Completed: the event, and the stream stays open for what follows.
    up.set(path, job("completed", 1..=6));
    let e = s.next().await;
    assert_eq!(
        data(&e)["status"],
        "completed",
        "the progress first: {}",
        e.data
    );
    let e = s.next().await;
    assert_eq!(e.event, "completed", "{}", e.data);
    assert_eq!(data(&e)["result_summary"], json!({"pnl": 7}));
    assert!(!e.id.ends_with(":end"), "{}", e.id);
    up.set(path, job("completed", 1..=7));
    assert_eq!(tx_of(&s.next().await), 7, "the stream is still open");
    // A new viewer: progress, every entry once, then completed.
    let mut v = Sse::connect(&sse).await;
    assert_eq!(v.next().await.event, "connection");
    assert_eq!(v.next().await.event, "progress");
    for n in 1..=7 {
        assert_eq!(tx_of(&v.next().await), n);
    }
    assert_eq!(v.next().await.event, "completed");
    pc.stop().await;
}

/// Item 7 across a pollcast restart: the new process numbers its ids in a new
/// epoch, so the client's `Last-Event-ID` cannot be replayed; it gets the
/// progress again and then only the entries it does not hold (those added
/// while pollcast was down), each once, in order. The id says how many
/// entries it holds (`<epoch>:<seq>.<held>`); an id without that count (an
/// older version's) gets every entry, as before.
#[tokio::test]
async fn seed_002_entries_once_in_order_across_a_pollcast_restart() {
    let up = TestUpstream::start().await;
    let path = "/api/backtesting/jobs/42";
    up.set(path, job("running", 1..=3));
    let pc = pollcast::start(seed("seed-002-backtest.toml", &up))
        .await
        .expect("start");
    let sse = |pc: &pollcast::Running| url(pc, "/api/sse/backtest/42?token=t");
    let mut s = Sse::connect(&sse(&pc)).await;
    assert_eq!(s.next().await.event, "connection");
    assert_eq!(s.next().await.event, "progress");
    for n in 1..=3 {
        assert_eq!(tx_of(&s.next().await), n, "entries present at open");
    }
    up.set(path, job("running", 1..=4));
    let last = s.next().await;
    assert_eq!(tx_of(&last), 4);
    assert!(
        last.id.ends_with(".4"),
        "the id counts the entries held: {}",
        last.id
    );
    drop(s);
    pc.stop().await;

    // Two entries arrive while pollcast is down.
    up.set(path, job("running", 1..=6));
    let pc = pollcast::start(seed("seed-002-backtest.toml", &up))
        .await
        .expect("restart");
    let mut s = Sse::connect_with(&sse(&pc), &[("last-event-id", &last.id)]).await;
    assert_eq!(s.next().await.event, "connection");
    let e = s.next().await;
    assert_eq!(e.event, "progress", "{}", e.data);
    assert_eq!(
        tx_of(&s.next().await),
        5,
        "only the entries the client lacks"
    );
    let e = s.next().await;
    assert_eq!(tx_of(&e), 6);
    assert!(e.id.ends_with(".6") && e.id != last.id, "{}", e.id);
    // What follows is the next entry: nothing was sent twice in between.
    up.set(path, job("running", 1..=7));
    let e = s.next().await;
    assert_eq!(tx_of(&e), 7);

    // The same resume again (EventSource retries with the id it holds):
    // the same catch-up, nothing more.
    let mut again = Sse::connect_with(&sse(&pc), &[("last-event-id", &last.id)]).await;
    assert_eq!(again.next().await.event, "connection");
    assert_eq!(again.next().await.event, "progress");
    for n in 5..=7 {
        assert_eq!(tx_of(&again.next().await), n);
    }
    // An id without a count (from an older version) holds nothing known:
    // every entry, as a new viewer gets them.
    let (old, _) = last.id.split_once('.').expect("count");
    let mut v = Sse::connect_with(&sse(&pc), &[("last-event-id", old)]).await;
    assert_eq!(v.next().await.event, "connection");
    assert_eq!(v.next().await.event, "progress");
    for n in 1..=7 {
        assert_eq!(tx_of(&v.next().await), n);
    }
    up.set(path, job("running", 1..=8));
    assert_eq!(tx_of(&s.next().await), 8);
    assert_eq!(tx_of(&again.next().await), 8);
    assert_eq!(tx_of(&v.next().await), 8);
    pc.stop().await;
}

/// Item 7 for a client away longer than the history holds: its resume falls
/// back to the progress, followed only by the entries it does not hold.
#[tokio::test]
async fn seed_002_entries_once_in_order_after_a_resume_older_than_the_history() {
    let up = TestUpstream::start().await;
    let path = "/api/backtesting/jobs/42";
    up.set(path, job("running", 1..=2));
    let mut config = seed("seed-002-backtest.toml", &up);
    config.sse.history = 1;
    let pc = pollcast::start(config).await.expect("start");
    let sse = url(&pc, "/api/sse/backtest/42?token=t");
    let mut s = Sse::connect(&sse).await;
    assert_eq!(s.next().await.event, "connection");
    assert_eq!(s.next().await.event, "progress");
    assert_eq!(tx_of(&s.next().await), 1);
    let last = s.next().await;
    assert_eq!(tx_of(&last), 2);
    drop(s);

    // Away for two polls of two entries each: more than the history holds.
    for upto in [4, 6] {
        up.set(path, job("running", 1..=upto));
        up.wait_hits(path, up.hits(path) + 2).await;
    }
    let mut s = Sse::connect_with(&sse, &[("last-event-id", &last.id)]).await;
    assert_eq!(s.next().await.event, "connection");
    assert_eq!(
        s.next().await.event,
        "progress",
        "the history no longer reaches"
    );
    for n in 3..=6 {
        assert_eq!(tx_of(&s.next().await), n, "only the entries it lacks");
    }
    up.set(path, job("running", 1..=7));
    assert_eq!(tx_of(&s.next().await), 7, "nothing twice in between");
    pc.stop().await;
}

/// Item 9: the snapshot as each frontend's own refresh trigger, so a page that
/// refetches on it catches up after pollcast restarts (its Last-Event-ID from
/// the old instance gets a fresh snapshot, that is, the trigger).
#[tokio::test]
async fn seed_triggers_are_the_snapshot_and_come_again_after_a_restart() {
    let up = TestUpstream::start().await;
    up.set("/api/v1/web/campaigns", json!([{"id": 1}]));
    up.set("/api/todos", json!([{"id": 1, "title": "a"}]));
    up.set("/api/v1/listings", listings(&[(1, 10)]));
    up.set("/api/v1/imports?scope=recent", json!([]));
    let cases = [
        (
            "seed-003-campaigns.toml",
            "/api/v1/web/live/campaigns",
            "message",
            json!({"trigger": "campaign_updated"}),
        ),
        (
            "seed-004-todos.toml",
            "/api/todos/events",
            "message",
            json!({"type": "todo_created"}),
        ),
        (
            "seed-001-orders.toml",
            "/sse/orders",
            "message",
            Value::Null,
        ),
    ];
    up.set("/api/orders", json!([{"id": "o1", "status": "placed"}]));
    for (file, path, name, want) in cases {
        let mut last = String::new();
        for round in 0..2 {
            let pc = pollcast::start(seed(file, &up)).await.expect("start");
            let mut s = if last.is_empty() {
                Sse::connect(&url(&pc, path)).await
            } else {
                Sse::connect_with(&url(&pc, path), &[("last-event-id", &last)]).await
            };
            let mut e = s.next().await;
            if data(&e) == json!({"type": "connected"}) {
                e = s.next().await;
            }
            assert_eq!(e.event, name, "{file} round {round}");
            let d = data(&e);
            if want.is_null() {
                assert_eq!(d["type"], "order_status_changed", "{file}");
            } else {
                assert_eq!(d, want, "{file} round {round}");
            }
            assert!(!e.id.is_empty() && e.id != last, "{file}: a new position");
            last = e.id.clone();
            pc.stop().await;
        }
    }
}
