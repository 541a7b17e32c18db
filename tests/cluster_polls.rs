//! `[cluster]`: one upstream poll per interval across three replicas (three
//! pollcast processes), over a minute, for a shared feed and for each
//! user's own feed.
//!
//! The window is a minute of real time because that is the claim; the
//! counts are compared with what the replicas themselves counted (their
//! `pollcast_polls_total`) and with the upstream's own request log, never
//! with a guess of how many intervals a minute holds.

mod common;

use std::time::Duration;

use common::child::Pollcast;
use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use serde_json::json;

const INTERVAL: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(60);
const USERS: [&str; 2] = ["Bearer alice", "Bearer bob"];

/// Every `INTERVAL`, `linger` 1s: a shared feed and one per user.
const FEEDS: &str = r#"
[[feeds]]
name = "jobs"
poll = "/api/jobs"
sse = "/sse/jobs"
interval = "200ms"
linger = "1s"
[[feeds]]
name = "mine"
poll = "/api/mine"
sse = "/sse/mine"
auth = "forward"
interval = "200ms"
linger = "1s"
"#;

/// Polls of definition `feed` this replica counted so far (every outcome).
async fn polls(pc: &Pollcast, feed: &str) -> f64 {
    let text = scrape_metrics_at(pc.admin_addr().await).await;
    ["ok", "not_modified"]
        .iter()
        .filter_map(|o| {
            metric_value(
                &text,
                "pollcast_polls_total",
                &[("feed", feed), ("outcome", o)],
            )
        })
        .sum()
}

/// The gaps between consecutive requests, in order.
fn gaps(seen: &[Seen]) -> Vec<Duration> {
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_poll_per_interval_across_three_replicas_over_a_minute() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    up.set("/api/mine", json!([{"id": 1, "owner": "{{token}}"}]));
    assert_eq!(INTERVAL, Duration::from_millis(200), "FEEDS says 200ms");
    // A minute on a shared machine: a slow Redis answer must not look like
    // an outage (which would rightly make every replica poll).
    let file = child_config_with(&up, &redis, FEEDS, "3s", "1s");
    let pcs = spawn_replicas(3, &file).await;
    // Every replica has subscribers of every feed instance: each would poll
    // on its own without the cluster.
    let mut subs = Vec::new();
    for pc in &pcs {
        let base = format!("http://{}", pc.addr().await);
        let mut s = Sse::connect(&format!("{base}/sse/jobs")).await;
        assert_eq!(s.next().await.event, "snapshot");
        subs.push(s);
        for user in USERS {
            let mut s =
                Sse::connect_with(&format!("{base}/sse/mine"), &[("Authorization", user)]).await;
            let snap = s.next().await;
            assert_eq!(snap.event, "snapshot");
            assert_eq!(data(&snap)["items"][0]["owner"], user, "one's own feed");
            subs.push(s);
        }
    }

    // The window runs from one observed point to another: the replicas'
    // counters and the upstream's log, read at both ends.
    let mut before = Vec::new();
    for pc in &pcs {
        before.push((polls(pc, "jobs").await, polls(pc, "mine").await));
    }
    let (jobs0, mine0) = (up.hits("/api/jobs"), up.hits("/api/mine"));
    let users0: Vec<usize> = USERS
        .iter()
        .map(|u| up.seen_with("/api/mine", u).len())
        .collect();
    tokio::time::sleep(WINDOW).await;
    let (jobs1, mine1) = (up.hits("/api/jobs"), up.hits("/api/mine"));
    let mut counted = Vec::new();
    for (pc, (j0, m0)) in pcs.iter().zip(&before) {
        counted.push((polls(pc, "jobs").await - j0, polls(pc, "mine").await - m0));
    }
    eprintln!(
        "per replica (jobs, mine): {counted:?}; upstream: jobs {}, mine {}",
        jobs1 - jobs0,
        mine1 - mine0
    );

    // The shared feed: one replica polled it, one poll per interval of its
    // own loop; the upstream saw exactly those (±1 for a poll in flight at
    // either end of the window).
    let pollers: Vec<_> = counted.iter().filter(|(j, _)| *j > 0.0).collect();
    assert_eq!(pollers.len(), 1, "one replica polls the feed: {counted:?}");
    let leader = pollers[0].0;
    let seen = (jobs1 - jobs0) as f64;
    assert!(
        (seen - leader).abs() <= 1.0,
        "upstream saw {seen} polls, the leader made {leader}"
    );
    // Its loop kept its interval: at most one poll per interval, and not
    // stalled (at least one per two intervals).
    let intervals = WINDOW.as_secs_f64() / INTERVAL.as_secs_f64();
    assert!(
        seen <= intervals + 1.0,
        "{seen} polls in {intervals} intervals"
    );
    assert!(
        seen >= intervals / 2.0,
        "{seen} polls in {intervals} intervals"
    );

    // Per-user feeds: each user's feed is one feed cluster-wide, polled once
    // per interval whichever replica leads it.
    let mine_counted: f64 = counted.iter().map(|(_, m)| m).sum();
    let mine_seen = (mine1 - mine0) as f64;
    assert!(
        (mine_seen - mine_counted).abs() <= 2.0,
        "upstream saw {mine_seen} per-user polls, the replicas made {mine_counted}"
    );
    for (user, n0) in USERS.iter().zip(users0) {
        let log = up.seen_with("/api/mine", user);
        let window = &log[n0..];
        let n = window.len() as f64;
        assert!(
            n <= intervals + 1.0 && n >= intervals / 2.0,
            "{user}: {n} polls in {intervals} intervals"
        );
        // No two replicas polled this user's feed within one interval.
        let shortest = gaps(window).into_iter().min().expect("polls");
        assert!(
            shortest >= INTERVAL * 3 / 4,
            "{user}: polls {shortest:?} apart"
        );
    }
    let log = up.seen("/api/jobs");
    let shortest = gaps(&log[jobs0..]).into_iter().min().expect("polls");
    assert!(
        shortest >= INTERVAL * 3 / 4,
        "shared feed polled {shortest:?} apart"
    );
    drop(subs);
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}
