//! `[cluster]`: 10,000 reconnects with `Last-Event-ID`, each to another
//! replica (three pollcast processes), while the upstream changes: every client gets every change
//! exactly once, in order, with the same ids on every replica.
//!
//! The upstream's change log is the truth: change `n` sets item `n % ITEMS`
//! to version `n`, and the next change waits until a witness subscriber has
//! seen it, so every change is one event. A client's events after its first
//! snapshot must be exactly the changes after the ones that snapshot holds.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use serde_json::{json, Value};

const REPLICAS: usize = 3;
const WORKERS: usize = 50;
const RECONNECTS: usize = 10_000;
const ITEMS: usize = 20;
/// `jobs` every 20ms, kept 5s past its last subscriber.
const FEED: &str = r#"
[[feeds]]
name = "jobs"
poll = "/api/jobs"
sse = "/sse/jobs"
interval = "20ms"
linger = "5s"
backoff_max = "200ms"
"#;

/// The list with these versions.
fn list(versions: &[u64]) -> Value {
    let items: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": i, "v": v}))
        .collect();
    Value::Array(items)
}

/// What one client saw: the last change its first snapshot holds, then the
/// `(version, id)` of each event.
struct Seen {
    start: u64,
    events: Vec<(u64, String)>,
}

/// Where the test and its clients meet.
#[derive(Default)]
struct Board {
    /// Clients through their counted reconnects.
    through: AtomicUsize,
    /// The last change, once the upstream stopped changing.
    last: AtomicU64,
    stopped: AtomicBool,
}

async fn client(urls: Arc<Vec<String>>, worker: usize, sessions: usize, board: Arc<Board>) -> Seen {
    let http = reqwest::Client::new();
    let mut s = Sse::connect_using(&http, &urls[worker % REPLICAS], &[]).await;
    let snap = s.next().await;
    assert_eq!(snap.event, "snapshot", "{snap:?}");
    let start = data(&snap)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["v"].as_u64())
        .max()
        .unwrap_or(0);
    let mut last_id = snap.id.clone();
    let mut events: Vec<(u64, String)> = Vec::new();
    drop(s);
    // Each counted session reads one to three events, then the client goes
    // away and comes back to the next replica with its last id. A last
    // session, once the upstream stopped, reads up to the last change.
    for session in 1..=sessions + 1 {
        let last = session > sessions;
        if last {
            board.through.fetch_add(1, Ordering::AcqRel);
            while !board.stopped.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let end = board.last.load(Ordering::Acquire);
        let at = |events: &[(u64, String)]| events.last().map_or(start, |(v, _)| *v);
        if last && at(&events) == end {
            break;
        }
        let to = &urls[(worker + session) % REPLICAS];
        let mut s = Sse::connect_using(&http, to, &[("Last-Event-ID", last_id.as_str())]).await;
        let want = if last { usize::MAX } else { 1 + session % 3 };
        for _ in 0..want {
            let e = s.next().await;
            assert!(
                e.event == "updated",
                "worker {worker} session {session}: resumed with {:?} after {last_id} on {to}",
                e.event
            );
            let v = data(&e)["item"]["v"].as_u64().expect("version");
            last_id = e.id.clone();
            events.push((v, e.id));
            if last && v == end {
                break;
            }
        }
    }
    Seen { start, events }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_reconnects_to_other_replicas_miss_and_repeat_nothing() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    let mut versions = vec![0u64; ITEMS];
    up.set("/api/jobs", list(&versions));
    // A slow Redis answer on a busy machine must not look like an outage.
    let file = child_config_with(&up, &redis, FEED, "3s", "1s");
    let pcs = spawn_replicas(REPLICAS, &file).await;
    let mut urls = Vec::new();
    for pc in &pcs {
        urls.push(format!("http://{}/sse/jobs", pc.addr().await));
    }
    let urls = Arc::new(urls);
    let started = Instant::now();
    let mut witness = Sse::connect(&urls[0]).await;
    assert_eq!(witness.next().await.event, "snapshot");

    let board = Arc::new(Board::default());
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let sessions = RECONNECTS / WORKERS;
        workers.push(tokio::spawn(client(
            urls.clone(),
            w,
            sessions,
            board.clone(),
        )));
    }
    // The upstream changes, one change per event (the witness sees each
    // before the next), until every client made its reconnects.
    let mut n = 0u64;
    let mut log: HashMap<u64, String> = HashMap::new();
    while board.through.load(Ordering::Acquire) < WORKERS {
        n += 1;
        let item = (n % ITEMS as u64) as usize;
        versions[item] = n;
        up.set("/api/jobs", list(&versions));
        let e = witness.next().await;
        assert_eq!(e.event, "updated");
        assert_eq!(data(&e)["item"], json!({"id": item, "v": n}), "change {n}");
        log.insert(n, e.id);
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{RECONNECTS} reconnects took over two minutes"
        );
        if workers.iter().any(|w| w.is_finished()) {
            break;
        }
    }
    board.last.store(n, Ordering::Release);
    board.stopped.store(true, Ordering::Release);
    for (w, h) in workers.into_iter().enumerate() {
        let seen = within("a client's last session", h).await.expect("client");
        let got: Vec<u64> = seen.events.iter().map(|(v, _)| *v).collect();
        let want: Vec<u64> = (seen.start + 1..=n).collect();
        assert_eq!(got, want, "worker {w}: missed or repeated changes");
        for (v, id) in seen.events {
            assert_eq!(
                log.get(&v),
                Some(&id),
                "change {v}: the same id on every replica"
            );
        }
    }
    eprintln!(
        "{RECONNECTS} reconnects over {n} changes in {:?}",
        started.elapsed()
    );
    drop(witness);
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}
