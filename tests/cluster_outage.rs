//! `[cluster]` without Redis, three pollcast processes: Redis cut by a TCP
//! proxy (a partition: no reset, no answer) and restored, and Redis killed
//! and restarted empty. Every replica falls back to polling on its own
//! within 2 s, says so (`pollcast_cluster_up`, `/readyz`), keeps every
//! stream open, and rejoins with one snapshot of the current state; after a
//! restart the epoch rotates and ids from before it get snapshots.

mod common;

use std::time::{Duration, Instant};

use common::child::Pollcast;
use common::cluster::*;
use common::redis::{Cutter, RedisServer};
use common::*;
use serde_json::{json, Value};

/// The ids in a snapshot's `items`.
fn snapshot_ids(e: &eventsource_stream::Event) -> Vec<Value> {
    data(e)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].clone())
        .collect()
}

/// Read until an event that shows item `id` (a snapshot holding it, or its `added`).
async fn until_item(s: &mut Sse, id: u64) {
    loop {
        let e = s.next().await;
        let shows = match e.event.as_str() {
            "snapshot" => snapshot_ids(&e).contains(&json!(id)),
            "added" => data(&e)["item"]["id"] == json!(id),
            _ => false,
        };
        if shows {
            return;
        }
    }
}

/// Every replica falls back (its `pollcast_cluster_up` reads 0) within 2 s
/// of `since`, and its `/readyz` stays ready, saying it polls locally.
async fn all_fall_back(pcs: &[Pollcast], since: Instant) {
    for pc in pcs {
        wait_cluster_up(pc, 0.0).await;
    }
    let took = since.elapsed();
    eprintln!("three replicas fell back after {took:?}");
    assert!(took < Duration::from_secs(2), "fell back after {took:?}");
    for pc in pcs {
        let url = format!("http://{}/_pollcast/readyz", pc.admin_addr().await);
        let r = within("readyz", reqwest::get(url)).await.expect("readyz");
        assert_eq!(r.status(), 200, "a replica without Redis still serves");
        let text = r.text().await.expect("body");
        assert!(text.contains("polling locally"), "{text}");
    }
}

/// The next change (item 3 added) reaches every stream as one `added`,
/// with the same id and data on every replica.
async fn one_more_change_told_alike(up: &TestUpstream, streams: &mut [Sse]) -> String {
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    let mut told = Vec::new();
    for s in streams.iter_mut() {
        let e = s.next().await;
        assert_eq!(e.event, "added", "one snapshot per rejoin: {e:?}");
        assert_eq!(data(&e)["id"], json!(3), "{e:?}");
        told.push((e.id, e.data));
    }
    assert!(told.iter().all(|t| *t == told[0]), "{told:?}");
    told.swap_remove(0).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_and_restored_three_replicas_fall_back_and_rejoin_with_the_current_state() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let proxy = Cutter::start(redis.port).await;
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = child_config_on(&up, &proxy.url(), JOBS_EVERY_100MS, "300ms", "100ms");
    let pcs = spawn_replicas(3, &file).await;
    let mut streams = Vec::new();
    for pc in &pcs {
        let mut s = connect(pc, "/sse/jobs", &[]).await;
        assert_eq!(s.next().await.event, "snapshot");
        streams.push(s);
        wait_cluster_up(pc, 1.0).await;
    }

    // Cut: Redis keeps the state from before; the replicas poll on their
    // own, and every stream sees item 2 arrive.
    proxy.cut(true);
    all_fall_back(&pcs, Instant::now()).await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    for s in &mut streams {
        until_item(s, 2).await;
    }

    // Restored: each stream's next event is one snapshot of the current
    // state (item 2 included: nothing seen disappears), then the same events.
    proxy.cut(false);
    for s in &mut streams {
        let e = s.next().await;
        assert_eq!(e.event, "snapshot", "{e:?}");
        assert_eq!(
            snapshot_ids(&e),
            [json!(1), json!(2)],
            "the current state, not the one stored before the cut"
        );
    }
    for pc in &pcs {
        wait_cluster_up(pc, 1.0).await;
    }
    one_more_change_told_alike(&up, &mut streams).await;
    drop(streams);
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_rotates_the_epoch_and_old_ids_get_snapshots() {
    let Some(mut redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = child_config(&up, &redis);
    let pcs = spawn_replicas(3, &file).await;
    let mut streams = Vec::new();
    let mut snaps = Vec::new();
    for pc in &pcs {
        let mut s = connect(pc, "/sse/jobs", &[]).await;
        let snap = s.next().await;
        assert_eq!(snap.event, "snapshot");
        snaps.push(snap.id);
        streams.push(s);
    }
    assert!(snaps.iter().all(|id| *id == snaps[0]), "{snaps:?}");
    let old_id = snaps.swap_remove(0);
    let (old_epoch, _) = old_id.split_once(':').expect("id");

    // Redis dies: every replica polls on its own under a local epoch, and
    // the streams stay open.
    redis.stop();
    all_fall_back(&pcs, Instant::now()).await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    for s in &mut streams {
        until_item(s, 2).await;
    }

    // Back, empty: the first leader writes a new epoch, and each stream is
    // told the state under it (one snapshot).
    redis.restart().await;
    let epoch = stored_epoch(&redis).await;
    assert_ne!(epoch, old_epoch, "the epoch rotates");
    for s in &mut streams {
        loop {
            let e = s.next().await;
            if e.id.starts_with(&epoch) {
                assert_eq!(e.event, "snapshot", "{e:?}");
                assert_eq!(snapshot_ids(&e), [json!(1), json!(2)]);
                break;
            }
        }
    }
    for pc in &pcs {
        wait_cluster_up(pc, 1.0).await;
    }
    let new_id = one_more_change_told_alike(&up, &mut streams).await;
    assert!(new_id.starts_with(&epoch), "{new_id} under {epoch}");

    // An id from before the restart is never replayed from, on any
    // replica: a snapshot under the new epoch.
    for pc in &pcs {
        let mut c = connect(pc, "/sse/jobs", &[("Last-Event-ID", &old_id)]).await;
        let e = c.next().await;
        assert_eq!(e.event, "snapshot", "{e:?}");
        assert!(e.id.starts_with(&epoch), "{} under {epoch}", e.id);
        assert_eq!(snapshot_ids(&e), [json!(1), json!(2), json!(3)]);
    }
    drop(streams);
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}
