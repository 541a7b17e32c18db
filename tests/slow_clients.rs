//! Slow, dead and half-open subscribers. pollcast's policy: no queue per
//! subscriber; a subscriber that stops reading stays a cursor into the feed's
//! bounded history, and when it drains after falling out of that history it is
//! resynced with a fresh `snapshot`. One whose writes make no progress for
//! `sse.write_timeout` (it never reads again, or vanished without a FIN) is
//! cut off, as the last resort.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{self, Pollcast};
use common::procstat;
use common::*;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A client that sends its request and then never reads: a tiny receive
/// buffer so its TCP window fills after a few kilobytes.
async fn non_reader(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    s
}

/// The item list of round `r`: `n` items of about `size` bytes each; only
/// item 0 changes (its `version`) from round to round. So the snapshot is
/// large (`n * size`) and each round is one `updated` event of about `size`.
fn list(r: usize, n: usize, size: usize) -> Value {
    let pad = "x".repeat(size);
    let items: Vec<Value> = (0..n)
        .map(|i| {
            if i == 0 {
                json!({"id": i, "pad": pad, "version": r})
            } else {
                json!({"id": i, "pad": pad})
            }
        })
        .collect();
    Value::Array(items)
}

async fn next_event<S>(events: &mut S) -> eventsource_stream::Event
where
    S: futures_util::Stream<
            Item = Result<
                eventsource_stream::Event,
                eventsource_stream::EventStreamError<reqwest::Error>,
            >,
        > + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("reader: {other:?}"),
    }
}

/// Where `needle` occurs in `hay`. glibc's `memmem`, because the 50
/// non-readers drain some 300 MiB and this build of the tests is not
/// optimized: the memchr crate's search is then several times slower.
fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let rest = hay.get(from..)?;
        // SAFETY: both pointers and lengths come from live slices; memmem
        // only reads them and returns null or a pointer into `rest`.
        let p = unsafe {
            libc::memmem(
                rest.as_ptr().cast(),
                rest.len(),
                needle.as_ptr().cast(),
                needle.len(),
            )
        };
        if p.is_null() {
            return None;
        }
        let at = from + (p as usize - rest.as_ptr() as usize);
        from = at + 1;
        Some(at)
    })
}

/// What a raw non-reader saw once it drained: read until `newest` arrived
/// (in a resync snapshot, or in an event), scanning each chunk once (megabytes).
/// Returns (snapshots seen, `updated` events seen, `updated` after the last snapshot).
async fn drain_to(s: &mut TcpStream, newest: &str) -> (usize, usize, usize) {
    // It reads from now on: a receive buffer larger than the 4 KiB it was
    // stuck with lets it drain in far fewer reads.
    let _ = socket2::SockRef::from(&*s).set_recv_buffer_size(1 << 20);
    let (mut snapshots, mut updates, mut updates_after) = (0, 0, 0);
    let mut in_snapshot = false;
    let mut window = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "stream ended early");
        // The last 64 bytes of the previous read, then this one: markers split
        // between reads are found, and counted once, by where they end.
        let fresh = window.len();
        window.extend_from_slice(&buf[..n]);
        let mut marks: Vec<(usize, bool)> = find_all(&window, b"event: snapshot")
            .map(|i| (i, true))
            .chain(find_all(&window, b"event: updated").map(|i| (i, false)))
            .filter(|&(i, snap)| i + if snap { 15 } else { 14 } > fresh)
            .collect();
        marks.sort_unstable();
        for (_, snap) in marks {
            if snap {
                snapshots += 1;
                updates_after = 0;
            } else {
                updates += 1;
                updates_after += 1;
            }
            in_snapshot = snap;
        }
        // Caught up: the newest state arrived, in a resync snapshot or in
        // the last of the events it missed (when they were still in the history).
        if (!in_snapshot || snapshots >= 2) && find_all(&window, newest.as_bytes()).next().is_some()
        {
            return (snapshots, updates, updates_after);
        }
        let keep = window.len().saturating_sub(64);
        window.drain(..keep);
    }
}

/// Events this large fill a stuck client's whole path quickly: Linux grows a
/// socket's send buffer up to `tcp_wmem`'s maximum (4 MiB here), plus hyper's 64 KiB.
const HUGE: usize = 2 * 1024 * 1024;

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

/// The non-readers' list of round `r`, serialized once (not on every poll).
fn huge(r: usize) -> bytes::Bytes {
    bytes::Bytes::from(list(r, 1, HUGE).to_string())
}

fn seq(id: &str) -> u64 {
    id.rsplit_once(':')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or_else(|| panic!("event id {id:?} is not <epoch>:<seq>"))
}

/// 1,000 subscribers read normally while 50 never read. The 50 follow a
/// feed of their own (`huge`, whose events are 2 MiB each): that fills
/// their TCP windows and Linux's send buffers for real, which events small enough for 1,000 parsing
/// readers cannot. Every reader gets every event in order, rounds are not
/// held up, RSS stays under the stated bound, and each non-reader, when it
/// finally drains, is resynced with one fresh snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_readers_get_every_event_while_fifty_never_read() {
    const READERS: usize = 1000;
    const DEAD: usize = 50;
    const HISTORY: usize = 4;
    const ROUNDS: usize = 12;
    // The readers' feed: one item of about 3 KiB whose version changes each round.
    const SIZE: usize = 3072;
    // Stated bound: see docs/failure-modes.md "Slow and dead subscribers".
    const RSS_BOUND_KIB: u64 = 160 * 1024;

    let up = TestUpstream::start().await;
    up.set("/api/big", list(0, 1, SIZE));
    let config = child::config_file(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://{}"
# The upstream shares the test's busy process; a slow poll is not what this test is about.
timeout = "30s"
[limits]
# Every client here is 127.0.0.1.
max_subscribers_per_client = 0
[sse]
history = {HISTORY}
write_timeout = "120s"
[[feeds]]
name = "big"
poll = "/api/big"
interval = "100ms"
[[feeds]]
name = "huge"
poll = "/api/huge"
interval = "100ms"
"#,
        up.addr
    ));
    let path = config.path().to_str().expect("utf-8 path");
    let pc = Pollcast::spawn(&["--config", path], &[]);
    let addr = pc.addr().await;
    let admin = pc.admin_addr().await;
    up.set_raw("/api/huge", JSON, huge(0));
    let rss_idle = procstat::rss_kib(pc.pid());
    let url = format!("http://{addr}/sse/big");

    // Normal readers: a real SSE parser each, checking that every event
    // arrives, in order, with consecutive ids. `received` counts events over
    // all readers, so "READERS * n" means every reader has its first n.
    let received = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let mut readers = Vec::new();
    let t0 = Instant::now();
    let all_have = |n: usize| {
        let received = received.clone();
        async move {
            let start = Instant::now();
            while received.load(Ordering::SeqCst) < READERS * n {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "after 30s only {} of {} events were received",
                    received.load(Ordering::SeqCst),
                    READERS * n
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    for n in 0..READERS {
        // In batches, so a loaded machine is not asked for 1,000 handshakes at once.
        if n % 100 == 0 {
            let start = Instant::now();
            while received.load(Ordering::SeqCst) < n {
                assert!(start.elapsed() < DEADLINE, "readers cannot connect");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let (client, url, received) = (client.clone(), url.clone(), received.clone());
        readers.push(tokio::spawn(async move {
            let resp = client.get(&url).send().await.expect("connect");
            let mut events = resp.bytes_stream().eventsource();
            let snap = next_event(&mut events).await;
            assert_eq!(snap.event, "snapshot");
            received.fetch_add(1, Ordering::SeqCst);
            let first = seq(&snap.id);
            for r in 1..=ROUNDS {
                let e = next_event(&mut events).await;
                assert_eq!(e.event, "updated", "round {r}: a normal reader got {e:?}");
                assert_eq!(
                    seq(&e.id),
                    first + r as u64,
                    "round {r}: ids are consecutive"
                );
                let d: Value = serde_json::from_str(&e.data).expect("json");
                assert_eq!(d["item"]["version"], r);
                received.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    all_have(1).await;
    eprintln!("{READERS} readers joined in {:?}", t0.elapsed());
    let mut dead = Vec::new();
    for _ in 0..DEAD {
        dead.push(non_reader(addr, "/sse/huge").await);
    }
    let want = READERS + DEAD;
    let start = Instant::now();
    while scrape_stats_at(admin).await["subscribers"] != want {
        assert!(
            start.elapsed() < DEADLINE,
            "{want} subscribers never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Rounds: change the list, wait until all readers have the event.
    let mut took = Vec::new();
    let mut huge_polls = 0;
    for r in 1..=ROUNDS {
        let t = Instant::now();
        up.set("/api/big", list(r, 1, SIZE));
        up.set_raw("/api/huge", JSON, huge(r));
        huge_polls = up.hits("/api/huge");
        all_have(1 + r).await;
        took.push(t.elapsed());
    }
    // The huge feed has published the last round too: a poll that started
    // after it was set, and then the next one (polls of a feed run one after
    // another, each after the previous one's events are out). Otherwise a
    // non-reader could drain before that and be resynced to the round before.
    up.wait_hits("/api/huge", huge_polls + 2).await;
    let rss_loaded = procstat::rss_kib(pc.pid());
    took.sort();
    eprintln!(
        "rounds to all {READERS} readers: median {:?}, max {:?}; RSS idle {rss_idle} KiB, with {want} subscribers {rss_loaded} KiB",
        took[ROUNDS / 2],
        took[ROUNDS - 1]
    );
    assert!(
        rss_loaded < RSS_BOUND_KIB,
        "RSS {rss_loaded} KiB over the stated bound {RSS_BOUND_KIB} KiB"
    );
    for r in readers {
        r.await.expect("reader saw every event");
    }
    // The readers are gone (pollcast notices each closed connection soon);
    // the non-readers are all still there, and none has drained yet.
    let start = Instant::now();
    while scrape_stats_at(admin).await["subscribers"] != DEAD {
        assert!(
            start.elapsed() < DEADLINE,
            "readers' subscriptions left behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(scrape_stats_at(admin).await["resyncs"], 0);

    // The non-readers drain now. One stuck far behind the history is
    // resynced: one fresh snapshot of the newest list, nothing after it. One
    // whose kernel buffers happened to hold enough that the events it missed
    // are still in the history gets exactly those events instead.
    let newest = format!("\"version\":{ROUNDS}}}");
    let resynced = Arc::new(AtomicUsize::new(0));
    let drains = dead.into_iter().map(|mut s| {
        let (newest, resynced) = (newest.clone(), resynced.clone());
        async move {
            let (snapshots, updates, after) = drain_to(&mut s, &newest).await;
            match snapshots {
                2 => {
                    assert_eq!(after, 0, "nothing stale after the resync");
                    resynced.fetch_add(1, Ordering::SeqCst);
                }
                1 => assert_eq!(updates, ROUNDS, "no resync, so every event"),
                n => panic!("{n} snapshots"),
            }
            s
        }
    });
    // Minutes of margin: 50 clients drain about 6 MiB each on a shared machine.
    let dead = tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::future::join_all(drains),
    )
    .await
    .expect("every non-reader caught up");
    let resynced = resynced.load(Ordering::SeqCst);
    eprintln!("{resynced} of {DEAD} non-readers were resynced");
    assert!(resynced > 0, "none of the non-readers was ever stuck");
    assert_eq!(scrape_stats_at(admin).await["resyncs"], resynced);

    let stats = scrape_stats_at(admin).await;
    assert_eq!(stats["subscribers"], DEAD, "{stats}");
    eprintln!("after the non-readers drained: {stats}");
    drop(dead);
    let start = Instant::now();
    while scrape_stats_at(admin).await["subscribers"] != 0 {
        assert!(start.elapsed() < DEADLINE, "subscribers left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that never reads again while events keep coming is cut off after
/// `sse.write_timeout`, and everything it held is released. (A peer that
/// vanished without a FIN is caught by `TCP_USER_TIMEOUT` instead: see
/// tests/half_open.rs.)
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", list(0, 16, 8192));
    let mut cfg = config(&up);
    cfg.sse.write_timeout = Duration::from_millis(500);
    cfg.sse.history = 4;
    let pc = pollcast::start(cfg).await.expect("start");

    let mut reader = Sse::connect(&format!("http://{}/sse/jobs", pc.addr)).await;
    assert_eq!(reader.next().await.event, "snapshot");
    let stuck = non_reader(pc.addr, "/sse/jobs").await;
    wait_until("two subscribers", || pc.registry.subscribers() == 2).await;

    // Keep changing the list until the stuck client is cut off; the reader
    // keeps getting every change meanwhile.
    let mut r = 0;
    within("the stuck client is cut off", async {
        while pc.registry.subscribers() > 1 {
            r += 1;
            up.set("/api/jobs", list(r, 16, 8192));
            let e = reader.next().await;
            assert_eq!(e.event, "updated");
            assert_eq!(data(&e)["item"]["version"], r);
        }
    })
    .await;
    let stats = pc.shared.stats();
    assert_eq!(stats.write_timeouts, 1, "{stats:?}");
    assert_eq!(stats.subscribers, 1);
    let metrics = pc.shared.metrics_text();
    assert!(
        metrics.contains("\npollcast_connections_write_timeout_total 1\n"),
        "{metrics}"
    );

    // Its socket was closed by pollcast: reading what is left ends in EOF or a reset.
    let mut stuck = stuck;
    let mut buf = vec![0u8; 64 * 1024];
    within("the stuck client's connection is closed", async {
        loop {
            match stuck.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;

    drop(reader);
    wait_until("nothing left", || {
        pc.registry.subscribers() == 0
            && pc.registry.live_feeds() == 0
            && pc.registry.live_pollers() == 0
    })
    .await;
    pc.stop().await;
}

/// The policy itself, with few clients and large events: a subscriber that
/// stopped reading falls out of the history while it is stuck, and when it
/// drains it gets one fresh `snapshot` of the newest list (not the events it
/// missed, which are gone); a reading subscriber on the same feed meanwhile
/// gets every event.
#[tokio::test]
async fn a_stuck_subscriber_is_resynced_with_a_fresh_snapshot_when_it_drains() {
    // Enough 2 MiB events to overflow the largest send buffer Linux may give
    // the socket (tcp_wmem's maximum) twice over, plus the history.
    let wmem_max = tcp_wmem_max();
    let rounds = 4 + 2 * wmem_max.div_ceil(HUGE) + 2;
    let up = TestUpstream::start().await;
    up.set("/api/jobs", list(0, 1, HUGE));
    let mut cfg = config(&up);
    cfg.sse.history = 4;
    cfg.sse.write_timeout = Duration::from_secs(60);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut reader = Sse::connect(&format!("http://{}/sse/jobs", pc.addr)).await;
    assert_eq!(reader.next().await.event, "snapshot");
    let mut stuck = non_reader(pc.addr, "/sse/jobs").await;
    wait_until("two subscribers", || pc.registry.subscribers() == 2).await;

    for r in 1..=rounds {
        up.set("/api/jobs", list(r, 1, HUGE));
        let e = reader.next().await;
        assert_eq!(e.event, "updated");
        assert_eq!(data(&e)["item"]["version"], r);
    }
    assert_eq!(pc.shared.counters.resyncs.load(Ordering::Relaxed), 0);

    let newest = format!("\"version\":{rounds}}}");
    let (snapshots, updates, after) = within(
        "the stuck client drains to a fresh snapshot",
        drain_to(&mut stuck, &newest),
    )
    .await;
    assert_eq!(snapshots, 2, "its first snapshot, then one resync");
    assert_eq!(after, 0, "nothing stale after the resync");
    assert!(
        updates < rounds,
        "it missed events ({updates} of {rounds}): that is why it was resynced"
    );
    assert_eq!(pc.shared.counters.resyncs.load(Ordering::Relaxed), 1);
    pc.stop().await;
}
