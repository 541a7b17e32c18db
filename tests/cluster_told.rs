//! `[cluster]`: what a leader tells its subscribers besides events reaches
//! every replica byte for byte (`stale`/`recovered`, an object feed's
//! terminal event), and a replica back from a partition rejoins with one
//! snapshot of the current state, never an older one.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::redis::{Cutter, RedisServer};
use common::*;
use serde_json::json;

/// The next block that is an event (comments and `retry:` hints skipped).
async fn event_block(s: &mut RawSse) -> String {
    loop {
        let b = s.block().await;
        if b.lines().any(|l| l.starts_with("data:")) {
            return b;
        }
    }
}

/// The `event:` name of a raw block (`message` without one).
fn name_of(block: &str) -> &str {
    block
        .lines()
        .find_map(|l| l.strip_prefix("event: "))
        .unwrap_or("message")
}

/// The ids of a `{"items": [...]}` snapshot block.
fn snapshot_ids(block: &str) -> Vec<serde_json::Value> {
    let data = block
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect::<String>();
    let v: serde_json::Value = serde_json::from_str(&data).expect("snapshot JSON");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].clone())
        .collect()
}

#[tokio::test]
async fn three_replicas_serve_byte_identical_streams() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}]),
    );
    // Three pollcast processes, as an operator runs them.
    let feeds = JOBS_EVERY_100MS.replace("100ms", "50ms");
    let file = child_config_with(&up, &redis, &feeds, "300ms", "100ms");
    let pcs = spawn_replicas(3, &file).await;
    let mut streams = Vec::new();
    for pc in &pcs {
        let addr = pc.addr().await;
        streams.push(RawSse::connect(&format!("http://{addr}/sse/jobs")).await);
    }
    let mut blocks = Vec::new();
    for s in &mut streams {
        blocks.push(event_block(s).await);
    }
    // Added, updated, removed: one change per poll, each told by all three.
    let lists = [
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}, {"id": 3, "s": "c"}]),
        json!([{"id": 1, "s": "z"}, {"id": 2, "s": "b"}, {"id": 3, "s": "c"}]),
        json!([{"id": 1, "s": "z"}, {"id": 3, "s": "c"}]),
    ];
    for list in lists {
        up.set("/api/jobs", list);
        for s in &mut streams {
            blocks.push(event_block(s).await);
        }
    }
    for step in blocks.chunks(3) {
        assert_eq!(step[0], step[1], "replicas 0 and 1");
        assert_eq!(step[0], step[2], "replicas 0 and 2");
    }
    let names: Vec<&str> = blocks.iter().step_by(3).map(|b| name_of(b)).collect();
    assert_eq!(names, ["snapshot", "added", "updated", "removed"]);
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}

#[tokio::test]
async fn followers_tell_stale_and_recovered_with_the_leaders_bytes() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pcs = replicas(3, &cluster_config(&up, &redis, Duration::from_millis(50))).await;
    // Replica 0 starts the feed (it leads); 1 follows; 2 gets its first
    // subscriber during the outage.
    let mut a = RawSse::connect(&url(&pcs[0], "/sse/jobs")).await;
    let snap = event_block(&mut a).await;
    assert_eq!(name_of(&snap), "snapshot");
    let mut b = RawSse::connect(&url(&pcs[1], "/sse/jobs")).await;
    assert_eq!(event_block(&mut b).await, snap, "one snapshot, one id");

    up.mode(Mode::Status(500));
    let stale = event_block(&mut a).await;
    assert_eq!(name_of(&stale), "stale", "{stale}");
    assert_eq!(
        event_block(&mut b).await,
        stale,
        "a follower tells the leader's stale, byte for byte"
    );
    let mut c = RawSse::connect(&url(&pcs[2], "/sse/jobs")).await;
    assert_eq!(event_block(&mut c).await, snap, "the last good state");
    assert_eq!(event_block(&mut c).await, stale, "then the outage");

    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    up.mode(Mode::Ok);
    let recovered = event_block(&mut a).await;
    assert_eq!(name_of(&recovered), "recovered", "{recovered}");
    let added = event_block(&mut a).await;
    assert_eq!(name_of(&added), "added", "{added}");
    for s in [&mut b, &mut c] {
        assert_eq!(event_block(s).await, recovered, "recovered, byte for byte");
        assert_eq!(event_block(s).await, added, "then the same events");
    }
    for pc in pcs {
        pc.stop().await;
    }
}

#[tokio::test]
async fn followers_tell_an_object_feeds_terminal_event_and_end_the_stream() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    let job = |status: &str, progress: u32| json!({"id": 42, "status": status, "progress": progress, "transactions": []});
    up.set("/api/jobs/42", job("running", 10));
    let mut c = example("examples/contracts/5-job-progress.toml", &up);
    with_cluster(&mut c, &redis.url());
    let pcs = replicas(2, &c).await;
    let mut a = RawSse::connect(&url(&pcs[0], "/sse/jobs/42")).await;
    let first = event_block(&mut a).await;
    let mut b = RawSse::connect(&url(&pcs[1], "/sse/jobs/42")).await;
    assert_eq!(event_block(&mut b).await, first);

    up.set("/api/jobs/42", job("completed", 100));
    let progress = event_block(&mut a).await;
    let end = event_block(&mut a).await;
    assert_eq!(name_of(&end), "completed", "{end}");
    assert!(end.contains(":end\n"), "{end}");
    assert_eq!(a.next_block().await, None, "the leader's stream ends");
    assert_eq!(event_block(&mut b).await, progress);
    assert_eq!(
        event_block(&mut b).await,
        end,
        "a follower tells the terminal event, byte for byte"
    );
    assert_eq!(b.next_block().await, None, "and ends the stream");
    // A late viewer on the follower hears the final state and the end too.
    let mut late = RawSse::connect(&url(&pcs[1], "/sse/jobs/42")).await;
    let last = event_block(&mut late).await;
    assert!(last.contains("\"completed\""), "{last}");
    assert_eq!(event_block(&mut late).await, end);
    assert_eq!(late.next_block().await, None);
    for pc in pcs {
        pc.stop().await;
    }
}

#[tokio::test]
async fn a_replica_back_from_a_partition_rejoins_with_one_snapshot_of_the_current_state() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let proxy = Cutter::start(redis.port).await;
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut c = cluster_config(&up, &redis, Duration::from_millis(50));
    with_cluster(&mut c, &proxy.url());
    let pcs = replicas(2, &c).await;
    let mut a = RawSse::connect(&url(&pcs[0], "/sse/jobs")).await;
    assert_eq!(name_of(&event_block(&mut a).await), "snapshot");
    let mut b = RawSse::connect(&url(&pcs[1], "/sse/jobs")).await;
    assert_eq!(name_of(&event_block(&mut b).await), "snapshot");

    // Partitioned: Redis keeps the state from before; the replicas poll on
    // their own and see item 2 arrive.
    proxy.cut(true);
    for pc in &pcs {
        wait_metric(pc, "pollcast_cluster_up", 0.0).await;
    }
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    for s in [&mut a, &mut b] {
        loop {
            let e = event_block(s).await;
            let has_2 = match name_of(&e) {
                "snapshot" => snapshot_ids(&e).contains(&json!(2)),
                "added" => true,
                _ => false,
            };
            if has_2 {
                break;
            }
        }
    }

    // Healed: each stream's next event is one snapshot of the current state
    // (item 2 included: nothing seen disappears), then the same events.
    proxy.cut(false);
    for s in [&mut a, &mut b] {
        let e = event_block(s).await;
        assert_eq!(name_of(&e), "snapshot", "{e}");
        assert_eq!(
            snapshot_ids(&e),
            vec![json!(1), json!(2)],
            "the current state, not the one stored before the partition"
        );
    }
    for pc in &pcs {
        wait_metric(pc, "pollcast_cluster_up", 1.0).await;
    }
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    let (ea, eb) = (event_block(&mut a).await, event_block(&mut b).await);
    assert_eq!(name_of(&ea), "added", "one snapshot per rejoin: {ea}");
    assert_eq!(ea, eb, "the same id and data on both replicas");
    for pc in pcs {
        pc.stop().await;
    }
}

/// Wait until this replica's metric `name` reads `value`.
async fn wait_metric(pc: &pollcast::Running, name: &str, value: f64) {
    within(name, async {
        while metric(pc, name).await != value {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
