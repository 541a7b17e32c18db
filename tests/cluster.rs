//! `[cluster]` end to end: several pollcast replicas on one private
//! `redis-server` (ephemeral port, no persistence) and one real upstream
//! that counts its polls. Replicas run as pollcast processes, as an
//! operator runs them. The rest of the list: `cluster_polls`,
//! `cluster_told`, `cluster_reconnects`, `cluster_failover`,
//! `cluster_pause`, `cluster_outage`, `cluster_users`.

mod common;

use std::time::Instant;

use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_serves_the_same_ids_and_resume_works_on_any() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "a"}]));
    let file = child_config(&up, &redis);
    let pcs = spawn_replicas(3, &file).await;
    let mut a = connect(&pcs[0], "/sse/jobs", &[]).await;
    let mut b = connect(&pcs[1], "/sse/jobs", &[]).await;
    let (sa, sb) = (a.next().await, b.next().await);
    assert_eq!(sa.event, "snapshot");
    assert_eq!(
        (&sa.id, &sa.data),
        (&sb.id, &sb.data),
        "one snapshot, one id"
    );

    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}]),
    );
    let (ea, eb) = (a.next().await, b.next().await);
    assert_eq!(ea.event, "added");
    assert_eq!(
        (&ea.event, &ea.id, &ea.data),
        (&eb.event, &eb.id, &eb.data),
        "byte-identical events"
    );
    let resume_from = ea.id.clone();

    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "z"}, {"id": 2, "s": "b"}, {"id": 3, "s": "c"}]),
    );
    let mut missed = Vec::new();
    while missed.len() < 2 {
        let e = a.next().await;
        missed.push((e.event, e.id, e.data));
    }
    // A client of replica 0 reconnects to replica 2 (no feed live there yet):
    // it is replayed exactly what it missed, with the same ids.
    let mut c = connect(&pcs[2], "/sse/jobs", &[("Last-Event-ID", &resume_from)]).await;
    for want in &missed {
        let e = c.next().await;
        assert_eq!(
            &(e.event, e.id, e.data),
            want,
            "replayed on another replica"
        );
    }
    // An id of another epoch (or from the future) gets a snapshot.
    let epoch = resume_from.split(':').next().expect("epoch").to_owned();
    for id in ["0123456789ab:1".to_owned(), format!("{epoch}:999999")] {
        let mut d = connect(&pcs[1], "/sse/jobs", &[("Last-Event-ID", &id)]).await;
        assert_eq!(d.next().await.event, "snapshot", "{id}");
    }
    drop((a, b, c));
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_with_a_304_and_no_resync() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.validators(true);
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = child_config(&up, &redis);
    let p1 = spawn_replica(&file);
    let a1 = p1.addr().await;
    let mut s1 = Sse::connect(&format!("http://{a1}/sse/jobs")).await;
    let snap = s1.next().await;
    assert_eq!(snap.event, "snapshot");
    // The second replica joins: it takes the snapshot from Redis.
    let p2 = spawn_replica(&file);
    let a2 = p2.addr().await;
    let mut s2 = Sse::connect(&format!("http://{a2}/sse/jobs")).await;
    let snap2 = s2.next().await;
    assert_eq!((&snap2.id, &snap2.data), (&snap.id, &snap.data));
    // p1 started the feed first: it leads. It dies without a goodbye.
    let mut p1 = p1;
    let not_modified = up.not_modified();
    p1.signal(libc::SIGKILL);
    let _ = p1.exit().await;
    let killed = Instant::now();
    // p2 takes the lease once it expires; its first poll is conditional.
    wait_until("the new leader's 304", || up.not_modified() > not_modified).await;
    eprintln!("takeover 304 after {:?}", killed.elapsed());
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    let e = s2.next().await;
    assert_eq!(e.event, "added", "a takeover is not a resync: {e:?}");
    let (epoch, seq) = e.id.split_once(':').expect("id");
    let (epoch0, seq0) = snap.id.split_once(':').expect("id");
    assert_eq!(epoch, epoch0, "same epoch");
    assert_eq!(
        seq.parse::<u64>().ok(),
        seq0.parse::<u64>().ok().map(|s| s + 1)
    );
    p2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_any_replica_reaches_the_feeds_leader() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "a"}]));
    up.set("/api/jobs/1", json!({"id": 1}));
    // An hour between polls: only a refresh can re-poll.
    let feeds = JOBS_EVERY_100MS.replace("100ms", "1h") + "backoff_max = \"1h\"\n";
    let file = child_config_with(&up, &redis, &feeds, "300ms", "100ms");
    let pcs = spawn_replicas(3, &file).await;
    let mut a = connect(&pcs[0], "/sse/jobs", &[]).await;
    assert_eq!(a.next().await.event, "snapshot");
    let mut b = connect(&pcs[1], "/sse/jobs", &[]).await;
    assert_eq!(b.next().await.event, "snapshot");
    let http = reqwest::Client::new();
    // Replica 0 leads (it started the feed); the writes go through replica
    // 1 (a follower) and replica 2 (no live feed at all).
    for (round, via) in [("b", 1), ("c", 2)] {
        up.set("/api/jobs", json!([{"id": 1, "s": round}]));
        let r = http
            .patch(format!("{}/api/jobs/1", base_of(&pcs[via]).await))
            .body("{}")
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), 200);
        for s in [&mut a, &mut b] {
            let e = s.next().await;
            assert_eq!(e.event, "updated", "{e:?}");
            assert_eq!(data(&e)["item"]["s"], round);
        }
    }
    // The refresh endpoint of a replica that does not lead, too.
    up.set("/api/jobs", json!([{"id": 1, "s": "d"}]));
    let r = http
        .post(format!(
            "http://{}/_pollcast/refresh/jobs",
            pcs[2].admin_addr().await
        ))
        .send()
        .await
        .expect("refresh");
    assert!(r.status().is_success(), "{}", r.status());
    let e = a.next().await;
    assert_eq!(data(&e)["item"]["s"], "d", "{e:?}");
    drop((a, b));
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}
