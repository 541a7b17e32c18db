//! `[cluster]`: a leader killed without a goodbye (SIGKILL) is replaced in
//! time. Its pause (SIGSTOP) is `cluster_pause`'s; Redis restarted empty is
//! `cluster_outage`'s.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::RedisServer;
use common::*;
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
