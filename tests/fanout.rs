//! Events written by the feed itself to idle subscribers' sockets
//! (`feed::lane`): a subscriber on a plain HTTP/1.1 stream that has seen
//! everything parks in its feed, and the poll that publishes the next events
//! writes them to every parked socket in one loop, without waking the
//! subscribers' tasks. Seen here through a real SSE client library: every
//! event arrives once, in order, framed correctly, including events larger
//! than the socket takes at once (the feed writes what fits, the
//! subscriber's task the rest, before anything else), and keepalives the
//! feed writes the same way at each tick.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// One item whose `v` is `r`, padded to about `pad` bytes.
fn list(r: usize, pad: usize) -> Value {
    json!([{"id": 0, "v": r, "pad": "x".repeat(pad)}])
}

/// pollcast with keepalive ticks out of the way, `n` subscribers that have
/// read their snapshot, and the feed.
async fn parked(
    n: usize,
    pad: usize,
) -> (
    TestUpstream,
    pollcast::Running,
    Vec<Sse>,
    Arc<pollcast::feed::Feed>,
) {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", list(0, pad));
    let mut cfg = config(&up);
    cfg.sse.keepalive = Duration::from_secs(3600);
    // Bodies of several MiB, read by a debug build on a loaded machine: a
    // poll that outlived the usual 2 s would mark the feed stale, and that
    // status event is not what these tests are about.
    cfg.upstream.timeout = Duration::from_secs(60);
    cfg.feeds[0].interval = Duration::from_millis(200);
    let pc = pollcast::start(cfg).await.expect("start");
    let url = format!("http://{}/sse/jobs", pc.addr);
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut c = Sse::connect(&url).await;
        assert_eq!(c.next().await.event, "snapshot");
        clients.push(c);
    }
    let feed = pc.registry.live().pop().expect("the feed");
    wait_until("every subscriber parked", || feed.parked_lanes() == n).await;
    (up, pc, clients, feed)
}

/// The seq of an id `<epoch>:<seq>`.
fn seq(id: &str) -> u64 {
    id.rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("an id")
}

/// Every client gets round `r`'s `updated` event, its id one above the last.
async fn every_client_gets(clients: &mut [Sse], last: &mut [u64], r: usize) {
    for (c, last) in clients.iter_mut().zip(last.iter_mut()) {
        let e = c.next().await;
        assert_eq!(e.event, "updated", "round {r}");
        assert_eq!(data(&e)["item"]["v"], r, "round {r}");
        let s = seq(&e.id);
        assert!(
            *last == 0 || s == *last + 1,
            "round {r}: id {} after {last}",
            e.id
        );
        *last = s;
    }
}

#[tokio::test]
async fn idle_subscribers_get_new_events_written_by_the_feed_itself() {
    let (up, pc, mut clients, feed) = parked(3, 10).await;
    let rounds = 5;
    let mut last = vec![0; clients.len()];
    for r in 1..=rounds {
        up.set("/api/jobs", list(r, 10));
        every_client_gets(&mut clients, &mut last, r).await;
    }
    let fanned = feed.fanned_out();
    assert_eq!(
        fanned.written.load(Ordering::Relaxed),
        (clients.len() * rounds) as u64,
        "every event to every subscriber was written by the feed"
    );
    assert_eq!(fanned.partial.load(Ordering::Relaxed), 0);
    assert_eq!(feed.parked_lanes(), clients.len(), "and they stay parked");
    pc.stop().await;
}

#[tokio::test]
async fn an_event_the_socket_takes_in_part_is_finished_before_anything_else() {
    // More than the largest send buffer Linux may give the socket
    // (tcp_wmem's maximum): no single write can take the whole event.
    let wmem_max = tcp_wmem_max();
    let pad = wmem_max + (1 << 20);
    let (up, pc, mut clients, feed) = parked(2, pad).await;
    let rounds = 3;
    let mut last = vec![0; clients.len()];
    for r in 1..=rounds {
        up.set("/api/jobs", list(r, pad));
        every_client_gets(&mut clients, &mut last, r).await;
        // The next round again finds them parked (not a slow path by luck).
        wait_until("parked again", || feed.parked_lanes() == clients.len()).await;
    }
    let fanned = feed.fanned_out();
    assert!(
        fanned.partial.load(Ordering::Relaxed) > 0,
        "the socket took part of an event"
    );
    assert!(fanned.written.load(Ordering::Relaxed) > 0);
    pc.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_leaves_while_parked_is_released() {
    let (_up, pc, mut clients, feed) = parked(2, 10).await;
    clients.pop();
    wait_until("the subscriber released", || pc.registry.subscribers() == 1).await;
    wait_until("one lane parked", || feed.parked_lanes() == 1).await;
    pc.stop().await;
}

#[tokio::test]
async fn parked_subscribers_get_keepalives_from_the_feed_and_stay_parked() {
    use futures_util::StreamExt;
    let up = TestUpstream::start().await;
    up.set("/api/jobs", list(0, 10));
    let mut cfg = config(&up);
    cfg.sse.keepalive = Duration::from_millis(50);
    cfg.feeds[0].interval = Duration::from_secs(3600);
    let pc = pollcast::start(cfg).await.expect("start");
    let url = format!("http://{}/sse/jobs", pc.addr);
    let n = 3;
    let mut bodies = Vec::new();
    for _ in 0..n {
        let resp = reqwest::get(&url).await.expect("get");
        bodies.push(resp.bytes_stream());
    }
    let feed = pc.registry.live().pop().expect("the feed");
    // Each client reads its snapshot and then three keepalives, every byte
    // as it came (an SSE client library would hide the comments).
    for body in &mut bodies {
        let mut text = String::new();
        within("a snapshot, then three keepalives", async {
            while text.matches(":keepalive\n\n").count() < 3 {
                let chunk = body.next().await.expect("open").expect("chunk");
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        let snapshot = text.find("event: snapshot\n").expect("a snapshot");
        assert!(
            snapshot < text.find(":keepalive").expect("a keepalive"),
            "{text}"
        );
    }
    // Written by the feed into the parked sockets, not by woken tasks.
    wait_until("keepalives written by the feed", || {
        feed.fanned_out().keepalives.load(Ordering::Relaxed) >= (2 * n) as u64
    })
    .await;
    assert_eq!(feed.parked_lanes(), n, "and the subscribers stay parked");
    pc.stop().await;
}
