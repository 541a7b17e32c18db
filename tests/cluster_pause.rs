//! `[cluster]`: a leader paused (SIGSTOP) for longer than its lease, three
//! pollcast processes. A follower takes over and the events go on; when the
//! paused leader wakes up (SIGCONT) with a poll it made before the pause, its
//! late write is refused by the fence, and every replica's clients see one
//! stream: nothing repeated, nothing reordered, ids strictly increasing, the
//! changes the upstream served to the leaders and nothing else.

mod common;

use std::time::Duration;

use common::child::Pollcast;
use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use serde_json::{json, Value};

/// The upstream holds the paused leader's poll this long: its answer is
/// already in the leader's socket when the leader wakes up.
const HELD: Duration = Duration::from_millis(700);

/// `jobs` every 100ms, with a lease of 1s (a busy machine's slow Redis
/// answer must not look like an outage).
fn config(up: &TestUpstream, redis: &RedisServer) -> tempfile::NamedTempFile {
    child_config_with(up, redis, JOBS_EVERY_100MS, "1s", "300ms")
}

/// The `(seq)` of an `epoch:seq` id, and its epoch.
fn split(id: &str) -> (&str, u64) {
    let (epoch, seq) = id.split_once(':').expect("epoch:seq id");
    (epoch, seq.parse().expect("seq"))
}

/// `(event, id, item)` of the next event that is not a keepalive.
async fn next(s: &mut Sse) -> (String, String, Value) {
    let e = s.next().await;
    let item = data(&e)["item"].clone();
    (e.event, e.id, item)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_wakes_up_fenced_off_and_serves_the_new_leaders_ids() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = config(&up, &redis);
    let pcs = spawn_replicas(3, &file).await;
    let mut clients = Vec::new();
    let mut snaps = Vec::new();
    for pc in &pcs {
        let mut s = Sse::connect(&format!("{}/sse/jobs", base_of(pc).await)).await;
        let snap = s.next().await;
        assert_eq!(snap.event, "snapshot", "{snap:?}");
        snaps.push(snap.id);
        clients.push(s);
    }
    assert!(snaps.iter().all(|id| *id == snaps[0]), "{snaps:?}");
    let old = leader_of(&pcs).await;
    for pc in &pcs {
        assert_eq!(counter(pc, REJECTED).await, 0.0, "no refused write yet");
    }

    // The change log: what the upstream served, and what each replica's
    // client must see for it.
    let two = json!({"id": 2, "v": "a"});
    let late = json!({"id": 3, "v": "late"});
    let three = json!({"id": 3, "v": "b"});
    let four = json!({"id": 4, "v": "c"});
    up.set("/api/jobs", json!([{"id": 1}, two]));
    let mut seen: Vec<Vec<(String, String, Value)>> = vec![Vec::new(); 3];
    for (i, s) in clients.iter_mut().enumerate() {
        seen[i].push(next(s).await);
    }

    // The leader's next poll is held by the upstream, holding `late`; the
    // leader is stopped while it waits for the answer.
    up.mode(Mode::Delay(HELD));
    up.set("/api/jobs", json!([{"id": 1}, two, late]));
    let held = up.hits("/api/jobs");
    up.wait_hits("/api/jobs", held + 1).await;
    pcs[old].signal(libc::SIGSTOP);
    up.set("/api/jobs", json!([{"id": 1}, two, three]));
    up.mode(Mode::Ok);

    // A follower takes the lease once it expires and tells the next change.
    for (i, s) in clients.iter_mut().enumerate() {
        if i != old {
            seen[i].push(next(s).await);
        }
    }
    eprintln!("old leader {old}; told during the pause: {seen:?}");
    let new = leader_of_among(&pcs, old).await;

    // The old leader wakes up with `late` in hand: the cluster refuses it.
    pcs[old].signal(libc::SIGCONT);
    within("the late write refused", async {
        while counter(&pcs[old], REJECTED).await < 1.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    pcs[old].wait_line(&["publish refused"]).await;
    seen[old].push(next(&mut clients[old]).await);

    up.set("/api/jobs", json!([{"id": 1}, two, three, four]));
    for (i, s) in clients.iter_mut().enumerate() {
        seen[i].push(next(s).await);
    }

    // Every replica's client: exactly the changes the leaders served, once
    // each, in order, with the same ids, strictly increasing in one epoch.
    let want = [two.clone(), three.clone(), four.clone()];
    let (epoch, first) = split(&snaps[0]);
    for (i, events) in seen.iter().enumerate() {
        let items: Vec<&Value> = events.iter().map(|(_, _, item)| item).collect();
        assert_eq!(items, want.iter().collect::<Vec<_>>(), "replica {i}");
        assert!(events.iter().all(|(e, _, _)| e == "added"), "{events:?}");
        let mut at = first;
        for (_, id, _) in events {
            let (e, seq) = split(id);
            assert_eq!(e, epoch, "replica {i}: one epoch through the takeover");
            assert_eq!(seq, at + 1, "replica {i}: ids go up one by one");
            at = seq;
        }
        assert_eq!(events, &seen[new], "replica {i} and the new leader");
    }
    // Nobody ever told the late write.
    for pc in &pcs {
        let mut s = Sse::connect(&format!("{}/sse/jobs", base_of(pc).await)).await;
        let snap = s.next().await;
        assert!(!snap.data.contains("late"), "{}", snap.data);
    }
    // A client that resumes on the old leader from before the pause is
    // replayed the new leader's events, with its ids.
    let mut r = Sse::connect_with(
        &format!("{}/sse/jobs", base_of(&pcs[old]).await),
        &[("Last-Event-ID", &seen[new][0].1)],
    )
    .await;
    for want in &seen[new][1..] {
        assert_eq!(&next(&mut r).await, want, "replayed on the old leader");
    }
    assert_eq!(counter(&pcs[new], REJECTED).await, 0.0);
    drop((clients, r));
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}

/// The replica (other than `old`) that published since the takeover.
async fn leader_of_among(pcs: &[Pollcast], old: usize) -> usize {
    let start = tokio::time::Instant::now();
    loop {
        for (i, pc) in pcs.iter().enumerate() {
            if i != old && counter(pc, PUBLISHES).await > 0.0 {
                return i;
            }
        }
        if start.elapsed() > DEADLINE {
            let logs: Vec<String> = pcs.iter().map(Pollcast::log).collect();
            panic!(
                "no new leader published; old {old}; logs:\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
