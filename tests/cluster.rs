//! `[cluster]` end to end: several pollcast replicas on one private
//! `redis-server` (ephemeral port, no persistence) and one real upstream
//! that counts its polls. Replicas run in-process, except where a replica
//! must die without a goodbye (SIGKILL): those run as child processes.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use serde_json::json;

async fn connect_resume(pc: &pollcast::Running, id: &str) -> Sse {
    Sse::connect_with(&url(pc, "/sse/jobs"), &[("Last-Event-ID", id)]).await
}

#[tokio::test]
async fn replicas_share_one_poll_per_interval() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let interval = Duration::from_millis(100);
    let pcs = replicas(3, &cluster_config(&up, &redis, interval)).await;
    let mut subs = Vec::new();
    for pc in &pcs {
        for _ in 0..3 {
            let mut s = Sse::connect(&url(pc, "/sse/jobs")).await;
            assert_eq!(s.next().await.event, "snapshot");
            subs.push(s);
        }
    }
    // Over a window, the upstream sees one poll per interval, not three.
    let before = up.hits("/api/jobs");
    let window = Duration::from_secs(2);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let polls = up.hits("/api/jobs") - before;
    let took = start.elapsed();
    let per_interval = took.as_secs_f64() / interval.as_secs_f64();
    eprintln!("{polls} polls in {took:?} across 3 replicas ({per_interval:.1} intervals)");
    assert!(
        (polls as f64) <= per_interval + 3.0,
        "{polls} polls in {per_interval:.1} intervals: replicas poll on their own"
    );
    assert!(
        polls as f64 >= per_interval / 2.0,
        "{polls} polls: nobody polls"
    );
    for pc in pcs {
        pc.stop().await;
    }
}

#[tokio::test]
async fn every_replica_serves_the_same_ids_and_resume_works_on_any() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "a"}]));
    let pcs = replicas(3, &cluster_config(&up, &redis, Duration::from_millis(50))).await;
    let mut a = Sse::connect(&url(&pcs[0], "/sse/jobs")).await;
    let mut b = Sse::connect(&url(&pcs[1], "/sse/jobs")).await;
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
    let mut c = connect_resume(&pcs[2], &resume_from).await;
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
        let mut d = connect_resume(&pcs[1], &id).await;
        assert_eq!(d.next().await.event, "snapshot", "{id}");
    }
    for pc in pcs {
        pc.stop().await;
    }
}

#[tokio::test]
async fn a_new_leader_takes_over_with_a_304_and_no_resync() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.validators(true);
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = child_config(&up, &redis);
    let path = file.path().to_str().expect("path").to_owned();
    let secret = std::str::from_utf8(SECRET).expect("utf8");
    let env = [("POLLCAST_CLUSTER_SECRET", secret)];
    let p1 = child::Pollcast::spawn(&["--config", &path], &env);
    let a1 = p1.addr().await;
    let mut s1 = Sse::connect(&format!("http://{a1}/sse/jobs")).await;
    let snap = s1.next().await;
    assert_eq!(snap.event, "snapshot");
    // The second replica joins: it takes the snapshot from Redis.
    let p2 = child::Pollcast::spawn(&["--config", &path], &env);
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

#[tokio::test]
async fn without_redis_replicas_poll_on_their_own_and_rejoin() {
    let Some(mut redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pcs = replicas(2, &cluster_config(&up, &redis, Duration::from_millis(50))).await;
    let mut a = Sse::connect(&url(&pcs[0], "/sse/jobs")).await;
    let mut b = Sse::connect(&url(&pcs[1], "/sse/jobs")).await;
    assert_eq!(a.next().await.event, "snapshot");
    assert_eq!(b.next().await.event, "snapshot");
    assert_eq!(metric(&pcs[0], "pollcast_cluster_up").await, 1.0);

    redis.stop();
    let cut = Instant::now();
    for pc in &pcs {
        within("fallback", async {
            while metric(pc, "pollcast_cluster_up").await != 0.0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    let fell_back = cut.elapsed();
    eprintln!("both replicas fell back after {fell_back:?}");
    assert!(fell_back < Duration::from_secs(2), "{fell_back:?}");
    let ready = reqwest::get(admin_url(&pcs[0], "/_pollcast/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "a replica without Redis still serves");
    let text = ready.text().await.expect("body");
    assert!(text.contains("polling locally"), "{text}");

    // The streams stay open: one snapshot under the local epoch, then changes.
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    for s in [&mut a, &mut b] {
        loop {
            let e = s.next().await;
            if e.event == "added" || (e.event == "snapshot" && e.data.contains("2")) {
                break;
            }
        }
    }

    redis.restart().await;
    for pc in &pcs {
        within("rejoin", async {
            while metric(pc, "pollcast_cluster_up").await != 1.0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    // Rejoined (Redis came back empty: a new epoch): one snapshot each, then
    // the same ids on both replicas again.
    let (ra, rb) = (
        a.next_named("snapshot").await,
        b.next_named("snapshot").await,
    );
    let _ = (ra, rb);
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    let (ea, eb) = (a.next_named("added").await, b.next_named("added").await);
    assert_eq!((&ea.id, &ea.data), (&eb.id, &eb.data));
    for pc in pcs {
        pc.stop().await;
    }
}

#[tokio::test]
async fn a_write_through_any_replica_reaches_the_feeds_leader() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "a"}]));
    up.set("/api/jobs/1", json!({"id": 1}));
    // An hour between polls: only a refresh can re-poll.
    let pcs = replicas(3, &cluster_config(&up, &redis, Duration::from_secs(3600))).await;
    let mut a = Sse::connect(&url(&pcs[0], "/sse/jobs")).await;
    assert_eq!(a.next().await.event, "snapshot");
    let mut b = Sse::connect(&url(&pcs[1], "/sse/jobs")).await;
    assert_eq!(b.next().await.event, "snapshot");
    let http = reqwest::Client::new();
    // Replica 0 leads (it started the feed); the writes go through replica
    // 1 (a follower) and replica 2 (no live feed at all).
    for (round, via) in [("b", 1), ("c", 2)] {
        up.set("/api/jobs", json!([{"id": 1, "s": round}]));
        let r = http
            .patch(url(&pcs[via], "/api/jobs/1"))
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
        .post(admin_url(&pcs[2], "/_pollcast/refresh/jobs"))
        .send()
        .await
        .expect("refresh");
    assert!(r.status().is_success(), "{}", r.status());
    let e = a.next().await;
    assert_eq!(data(&e)["item"]["s"], "d", "{e:?}");
    for pc in pcs {
        pc.stop().await;
    }
}

#[tokio::test]
async fn no_credential_reaches_redis() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut c = cluster_config(&up, &redis, Duration::from_millis(50));
    c.feeds[0].auth = pollcast::config::AuthMode::Forward;
    let pcs = replicas(2, &c).await;
    let token = "Bearer very-secret-user-token";
    let mut s = Sse::connect_with(&url(&pcs[0], "/sse/jobs"), &[("Authorization", token)]).await;
    assert_eq!(s.next().await.event, "snapshot");
    let mut s2 = Sse::connect_with(&url(&pcs[1], "/sse/jobs"), &[("Authorization", token)]).await;
    assert_eq!(s2.next().await.event, "snapshot");
    let mut conn = redis.conn().await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(!k.contains("secret"), "{k}");
        let dump: Vec<u8> = ::redis::cmd("DUMP")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("dump");
        assert!(
            !dump
                .windows(b"very-secret".len())
                .any(|w| w == b"very-secret"),
            "{k} holds the token"
        );
        // Per-user feeds' keys expire (user_ttl).
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("pttl");
        assert!(ttl > 0, "{k} has no TTL");
    }
    for pc in pcs {
        pc.stop().await;
    }
}

#[tokio::test]
async fn a_paused_leader_wakes_up_as_a_follower_serving_the_new_leaders_ids() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.validators(true);
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = child_config(&up, &redis);
    let path = file.path().to_str().expect("path").to_owned();
    let secret = std::str::from_utf8(SECRET).expect("utf8");
    let env = [("POLLCAST_CLUSTER_SECRET", secret)];
    let p1 = child::Pollcast::spawn(&["--config", &path], &env);
    let mut s1 = Sse::connect(&format!("http://{}/sse/jobs", p1.addr().await)).await;
    assert_eq!(s1.next().await.event, "snapshot");
    let p2 = child::Pollcast::spawn(&["--config", &path], &env);
    let mut s2 = Sse::connect(&format!("http://{}/sse/jobs", p2.addr().await)).await;
    assert_eq!(s2.next().await.event, "snapshot");

    // The leader stops (SIGSTOP) for longer than its lease: p2 takes over.
    let not_modified = up.not_modified();
    p1.signal(libc::SIGSTOP);
    wait_until("p2's takeover 304", || up.not_modified() > not_modified).await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    let missed = s2.next().await;
    assert_eq!(missed.event, "added");

    // p1 wakes up: whatever it polled or renews is refused; it follows, and
    // its subscriber gets what it missed with p2's ids, then the same events.
    p1.signal(libc::SIGCONT);
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    let next = s2.next().await;
    for want in [&missed, &next] {
        let e = s1.next().await;
        assert_eq!(
            (&e.event, &e.id, &e.data),
            (&want.event, &want.id, &want.data),
            "the ex-leader serves the new leader's ids"
        );
    }
    p1.stop().await;
    p2.stop().await;
}

#[tokio::test]
async fn a_partition_from_redis_falls_back_within_two_seconds_and_heals() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let proxy = common::redis::Cutter::start(redis.port).await;
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut c = cluster_config(&up, &redis, Duration::from_millis(50));
    if let Some(cl) = &mut c.cluster {
        cl.redis = proxy.url();
    }
    let pcs = replicas(2, &c).await;
    let mut a = Sse::connect(&url(&pcs[0], "/sse/jobs")).await;
    let mut b = Sse::connect(&url(&pcs[1], "/sse/jobs")).await;
    assert_eq!(a.next().await.event, "snapshot");
    assert_eq!(b.next().await.event, "snapshot");

    // Cut: no reset, Redis just stops answering.
    proxy.cut(true);
    let cut = Instant::now();
    for pc in &pcs {
        within("fallback", async {
            while metric(pc, "pollcast_cluster_up").await != 0.0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    let fell_back = cut.elapsed();
    eprintln!("partition: both replicas fell back after {fell_back:?}");
    assert!(fell_back < Duration::from_secs(2), "{fell_back:?}");
    // Streams stay open and keep getting the upstream's changes.
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    for s in [&mut a, &mut b] {
        loop {
            let e = s.next().await;
            if e.data.contains('2') {
                break;
            }
        }
    }

    // Healed: back in the cluster with one snapshot, the same ids again.
    proxy.cut(false);
    for pc in &pcs {
        within("rejoin", async {
            while metric(pc, "pollcast_cluster_up").await != 1.0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    // Each stream gets one snapshot of the cluster's state (a replica that
    // rejoins before the leader's next poll gets the stored one, then its
    // events), and from then on the same ids on both replicas.
    a.next_named("snapshot").await;
    b.next_named("snapshot").await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    let mut third = Vec::new();
    for s in [&mut a, &mut b] {
        loop {
            let e = s.next().await;
            assert_ne!(e.event, "snapshot", "one snapshot per rejoin: {e:?}");
            if e.event == "added" && data(&e)["id"] == json!(3) {
                third.push((e.id, e.data));
                break;
            }
        }
    }
    assert_eq!(third[0], third[1], "the same id and data on both replicas");
    for pc in pcs {
        pc.stop().await;
    }
}
