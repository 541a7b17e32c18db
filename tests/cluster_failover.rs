//! `[cluster]`: a leader killed without a goodbye is replaced in time,
//! Redis restarted empty rotates the epoch, and a `Last-Event-ID` of
//! another user's feed never replays that feed.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use pollcast::config::AuthMode;
use serde_json::json;

/// `child_config`'s poll interval.
const CHILD_INTERVAL: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_sigkilled_leaders_next_event_comes_within_lease_plus_interval_plus_half_a_second() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = child_config(&up, &redis);
    let mut p1 = spawn_replica(&file);
    let mut s1 = Sse::connect(&format!("http://{}/sse/jobs", p1.addr().await)).await;
    assert_eq!(s1.next().await.event, "snapshot");
    let p2 = spawn_replica(&file);
    let mut s2 = Sse::connect(&format!("http://{}/sse/jobs", p2.addr().await)).await;
    assert_eq!(s2.next().await.event, "snapshot");
    // p1 started the feed: it leads. A change it sees is told by p2 too.
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    let e1 = s1.next().await;
    assert_eq!(
        (e1.event.as_str(), e1.id.as_str()),
        ("added", s2.next().await.id.as_str())
    );

    // Killed without a goodbye; the next change is p2's to find.
    p1.signal(libc::SIGKILL);
    let killed = Instant::now();
    let _ = p1.exit().await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    let e = s2.next().await;
    let took = killed.elapsed();
    assert_eq!(e.event, "added", "{e:?}");
    assert_eq!(data(&e)["id"], 3);
    let bound = LEASE + CHILD_INTERVAL + Duration::from_millis(500);
    eprintln!("next event {took:?} after the leader's SIGKILL (bound {bound:?})");
    assert!(took <= bound, "{took:?} > lease + interval + 0.5 s");
    p2.stop().await;
}

#[tokio::test]
async fn redis_restarted_empty_rotates_the_epoch_and_old_ids_get_snapshots() {
    let Some(mut redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pcs = replicas(2, &cluster_config(&up, &redis, Duration::from_millis(50))).await;
    let mut a = Sse::connect(&url(&pcs[0], "/sse/jobs")).await;
    let snap = a.next().await;
    let mut b = Sse::connect(&url(&pcs[1], "/sse/jobs")).await;
    assert_eq!(b.next().await.id, snap.id);
    let (old_epoch, _) = snap.id.split_once(':').expect("id");

    redis.restart().await;
    // The replicas may poll on their own for a moment (a local epoch each);
    // then the first leader writes a new epoch, and each stream is told the
    // state under it (one snapshot).
    let epoch = stored_epoch(&redis).await;
    assert_ne!(epoch, old_epoch, "the epoch rotates");
    for s in [&mut a, &mut b] {
        loop {
            let e = s.next().await;
            if e.id.starts_with(&epoch) {
                assert_eq!(e.event, "snapshot", "{e:?}");
                break;
            }
        }
    }
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    let (ea, eb) = (a.next().await, b.next().await);
    assert_eq!(ea.event, "added", "{ea:?}");
    assert_eq!((&ea.id, &ea.data), (&eb.id, &eb.data), "one id on both");
    let new_epoch = epoch.as_str();
    // An id from before the restart is never replayed from: a snapshot.
    for pc in &pcs {
        let mut c = Sse::connect_with(&url(pc, "/sse/jobs"), &[("Last-Event-ID", &snap.id)]).await;
        let e = c.next().await;
        assert_eq!(e.event, "snapshot", "{e:?}");
        assert!(e.id.starts_with(new_epoch), "{} under {new_epoch}", e.id);
    }
    for pc in pcs {
        pc.stop().await;
    }
}

#[tokio::test]
async fn another_users_id_gives_a_snapshot_of_ones_own_feed() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "owner": "{{token}}"}]));
    let mut c = cluster_config(&up, &redis, Duration::from_millis(50));
    c.feeds[0].auth = AuthMode::Forward;
    let pcs = replicas(2, &c).await;
    let (alice, bob) = ("Bearer alice", "Bearer bob");
    let mut a = Sse::connect_with(&url(&pcs[0], "/sse/jobs"), &[("Authorization", alice)]).await;
    assert_eq!(a.next().await.event, "snapshot");
    let mut b0 = Sse::connect_with(&url(&pcs[0], "/sse/jobs"), &[("Authorization", bob)]).await;
    let bob_snap = b0.next().await;
    assert_eq!(data(&bob_snap)["items"][0]["owner"], bob);
    up.set(
        "/api/jobs",
        json!([{"id": 1, "owner": "{{token}}"}, {"id": 2, "owner": "{{token}}"}]),
    );
    let added = a.next().await;
    assert_eq!(added.event, "added");
    assert_eq!(data(&added)["item"]["owner"], alice);
    b0.next_named("added").await;

    // Bob presents Alice's id, on the other replica and on the same one:
    // a snapshot of his own feed, never a replay of hers.
    for pc in &pcs {
        let mut b = Sse::connect_with(
            &url(pc, "/sse/jobs"),
            &[("Authorization", bob), ("Last-Event-ID", &added.id)],
        )
        .await;
        let e = b.next().await;
        assert_eq!(e.event, "snapshot", "{e:?}");
        let items = data(&e)["items"].clone();
        assert_eq!(items.as_array().map(Vec::len), Some(2), "{items}");
        for item in items.as_array().into_iter().flatten() {
            assert_eq!(item["owner"], bob, "only Bob's data");
        }
        assert_ne!(
            e.id.split(':').next(),
            added.id.split(':').next(),
            "his own epoch"
        );
    }
    for pc in pcs {
        pc.stop().await;
    }
}

/// The epoch the cluster's feed is in, once a leader wrote one.
async fn stored_epoch(redis: &RedisServer) -> String {
    let mut conn = redis.conn().await;
    within("a leader writes an epoch", async {
        loop {
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg("*:state")
                .query_async(&mut conn)
                .await
                .expect("keys");
            for k in keys {
                let epoch: Option<String> = ::redis::cmd("HGET")
                    .arg(&k)
                    .arg("epoch")
                    .query_async(&mut conn)
                    .await
                    .expect("hget");
                if let Some(e) = epoch.filter(|e| !e.is_empty()) {
                    return e;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
