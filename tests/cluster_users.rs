//! `[cluster]` and per-user feeds (`auth = "forward"`), three pollcast
//! processes: a `Last-Event-ID` of another user's feed never replays that
//! feed on any replica, and no credential reaches Redis (a scan of every
//! key, its name and its dumped value).

mod common;

use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use serde_json::json;

/// `jobs` every 100ms, each user's own.
const PER_USER: &str = r#"
[[feeds]]
name = "jobs"
poll = "/api/jobs"
sse = "/sse/jobs"
auth = "forward"
interval = "100ms"
linger = "1s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_id_gives_a_snapshot_of_ones_own_feed_on_every_replica() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "owner": "{{token}}"}]));
    let file = child_config_with(&up, &redis, PER_USER, "300ms", "100ms");
    let pcs = spawn_replicas(3, &file).await;
    let (alice, bob) = ("Bearer alice", "Bearer bob");
    let mut a = connect(&pcs[0], "/sse/jobs", &[("Authorization", alice)]).await;
    assert_eq!(a.next().await.event, "snapshot");
    let mut b = connect(&pcs[1], "/sse/jobs", &[("Authorization", bob)]).await;
    let bob_snap = b.next().await;
    assert_eq!(data(&bob_snap)["items"][0]["owner"], bob);
    up.set(
        "/api/jobs",
        json!([{"id": 1, "owner": "{{token}}"}, {"id": 2, "owner": "{{token}}"}]),
    );
    let added = a.next().await;
    assert_eq!(added.event, "added");
    assert_eq!(data(&added)["item"]["owner"], alice);
    let bob_added = b.next_named("added").await;

    // Bob presents Alice's id on every replica (the one serving her, the
    // one serving him, one serving neither): a snapshot of his own feed,
    // under his feed's epoch, never a replay of hers.
    let epoch_of = |id: &str| id.split(':').next().map(str::to_owned);
    for pc in &pcs {
        let mut s = connect(
            pc,
            "/sse/jobs",
            &[("Authorization", bob), ("Last-Event-ID", &added.id)],
        )
        .await;
        let e = s.next().await;
        assert_eq!(e.event, "snapshot", "{e:?}");
        let items = data(&e)["items"].clone();
        assert_eq!(items.as_array().map(Vec::len), Some(2), "{items}");
        for item in items.as_array().into_iter().flatten() {
            assert_eq!(item["owner"], bob, "only Bob's data");
        }
        assert_ne!(epoch_of(&e.id), epoch_of(&added.id), "not her epoch");
        assert_eq!(epoch_of(&e.id), epoch_of(&bob_added.id), "his own");
    }
    drop((a, b));
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_redis_shows_no_token() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = child_config_with(&up, &redis, PER_USER, "300ms", "100ms");
    let pcs = spawn_replicas(3, &file).await;
    let tokens = ["very-secret-token-of-alice", "very-secret-token-of-bob"];
    // Each user on every replica: leaders, followers, announcements and
    // refresh requests all went through Redis.
    let mut subs = Vec::new();
    for pc in &pcs {
        for t in tokens {
            let auth = format!("Bearer {t}");
            let mut s = connect(pc, "/sse/jobs", &[("Authorization", &auth)]).await;
            assert_eq!(s.next().await.event, "snapshot");
            subs.push(s);
        }
    }
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    for s in &mut subs {
        assert_eq!(s.next().await.event, "added");
    }

    let mut conn = redis.conn().await;
    // DUMP would compress a long value (LZF): a token inside would not show.
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdbcompression")
        .arg("no")
        .query_async(&mut conn)
        .await
        .expect("config set");
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(100)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(keys.len() >= 2, "each user's feed keeps keys: {keys:?}");
    for k in &keys {
        for needle in ["secret", "alice", "bob", "Bearer"] {
            assert!(!k.contains(needle), "{k} names {needle}");
        }
        let dump: Vec<u8> = ::redis::cmd("DUMP")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("dump");
        for t in tokens {
            assert!(
                !dump.windows(t.len()).any(|w| w == t.as_bytes()),
                "{k} holds a token"
            );
        }
        // Per-user feeds' keys expire (user_ttl).
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("pttl");
        assert!(ttl > 0, "{k} has no TTL");
    }
    drop(subs);
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}
