//! Churn: 10,000 connect/disconnect cycles over many feeds, some cut before
//! the snapshot, some in the middle of it, some in the middle of a resume,
//! leave nothing behind: no feeds, poll loops, subscribers, tasks or file
//! descriptors (the counts `/_pollcast/stats` shows return to their baseline).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CYCLES: usize = 10_000;
const FEEDS: usize = 40;
const CONCURRENCY: usize = 64;

fn list(n: usize) -> Value {
    // About 40 KiB: big enough that a client can leave in the middle of it.
    Value::Array(
        (0..200)
            .map(|i| json!({"id": i, "feed": n, "pad": "x".repeat(180)}))
            .collect(),
    )
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// One cycle: connect, ask, and leave at a point chosen by `i`.
async fn cycle(addr: std::net::SocketAddr, i: usize, resume_id: &str) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        panic!("cycle {i}: connect refused");
    };
    let feed = i % FEEDS;
    let resume = if i % 3 == 2 {
        format!("last-event-id: {resume_id}\r\n")
    } else {
        String::new()
    };
    let req = format!("GET /sse/jobs?f={feed} HTTP/1.1\r\nhost: x\r\n{resume}\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 8192];
    match i % 3 {
        // Gone before the answer.
        0 => {}
        // Gone in the middle of the snapshot: the head and a few KiB.
        1 => {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        }
        // Gone in the middle of a resume (a known or unknown id).
        _ => {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connects_and_disconnects_leave_nothing_behind() {
    let up = TestUpstream::start().await;
    for f in 0..FEEDS {
        up.set(&format!("/api/jobs?f={f}"), list(f));
    }
    let mut cfg = config(&up);
    cfg.feeds[0].interval = Duration::from_millis(20);
    cfg.feeds[0].linger = Duration::from_millis(50);
    // Idle pooled upstream connections go quickly, so the fd count settles.
    cfg.upstream.pool_idle_timeout = Duration::from_millis(200);
    // Every client here is 127.0.0.1.
    cfg.limits.max_subscribers_per_client = 0;
    let pc = pollcast::start(cfg).await.expect("start");
    let stats = || pc.shared.stats();
    let base = stats();
    let base_tasks = alive_tasks();
    assert_eq!((base.feeds, base.pollers, base.subscribers), (0, 0, 0));

    // A real id of a live feed instance, for resumes that replay (the others
    // carry ids of instances that are gone by then: a fresh snapshot).
    let mut s = Sse::connect(&format!("http://{}/sse/jobs?f=0", pc.addr)).await;
    let resume_id = s.next().await.id;
    drop(s);

    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, resume_id, addr) = (next.clone(), resume_id.clone(), pc.addr);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CYCLES {
                        break;
                    }
                    cycle(addr, i, &resume_id).await;
                }
            })
        })
        .collect();
    tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::future::join_all(workers),
    )
    .await
    .expect("10,000 cycles within two minutes");
    let busy = stats();
    eprintln!("right after the churn: {busy:?}");

    let mut last = stats();
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            last = stats();
            if (last.feeds, last.pollers, last.subscribers) == (0, 0, 0)
                && last.open_fds == base.open_fds
                && alive_tasks() == base_tasks
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "left behind after churn: {last:?} (tasks {} vs {base_tasks}); baseline {base:?}",
        alive_tasks()
    );
    // Everything still works after the churn.
    let mut s = Sse::connect(&format!("http://{}/sse/jobs?f=1", pc.addr)).await;
    let e = s.next().await;
    assert_eq!(e.event, "snapshot");
    assert_eq!(data(&e)["items"][0]["feed"], 1);
    pc.stop().await;
}
