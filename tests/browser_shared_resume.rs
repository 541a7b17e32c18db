//! Chromium's native EventSource on an SSE path shared by two feeds, cut off
//! again and again while the feeds change in turn, some changes made while
//! the browser is away: every change arrives exactly once, and no resume
//! falls back to a snapshot (composite ids carry every feed's position,
//! including a feed that sent nothing since the previous resume).
//!
//! The browser reaches pollcast through a loopback relay the test controls:
//! `cut` drops every connection and refuses new ones until `open`, so a
//! change is published while the browser is certainly away.

mod common;
#[path = "browser/driver.rs"]
mod driver;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use driver::Browser;
use pollcast::config::FeedConfig;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay in front of pollcast that the test can cut and reopen.
struct Relay {
    addr: SocketAddr,
    open: Arc<tokio::sync::watch::Sender<bool>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(tokio::sync::watch::channel(true).0);
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (o, c) = (open.subscribe(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*o.borrow() {
                    // Away: the browser's reconnect fails and it tries again.
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, open, conns }
    }

    /// Drop every connection and refuse new ones.
    fn cut(&self) {
        self.open.send_replace(false);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn reopen(&self) {
        self.open.send_replace(true);
    }
}

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>shared</title>
<pre id="log"></pre>
<script>
  window.ev = []; window.opens = 0;
  const es = new EventSource("/sse/both");
  es.onopen = () => { window.opens += 1; };
  for (const name of ["snapshot", "added", "updated", "removed"]) {
    es.addEventListener(name, (e) => {
      window.ev.push({ name, id: e.lastEventId, data: JSON.parse(e.data) });
      document.getElementById("log").textContent += name + " " + e.lastEventId + "\n";
    });
  }
</script>"#;

fn list(prefix: &str, n: usize) -> Value {
    Value::Array(
        (1..=n)
            .map(|i| json!({"id": format!("{prefix}{i}")}))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_eventsource_resumes_a_shared_path_without_loss_or_repeat() {
    let Some(dir) = browser_tools() else { return };
    let up = TestUpstream::start().await;
    up.set_raw(
        "/app/shared.html",
        &[("content-type", "text/html; charset=utf-8")],
        Bytes::from_static(PAGE.as_bytes()),
    );
    let mut c = config(&up);
    let mut b_feed = FeedConfig::new("b", "/api/b");
    b_feed.sse = Some("/sse/both".into());
    c.feeds[0].sse = Some("/sse/both".into());
    for f in [&mut c.feeds[0]].into_iter().chain([&mut b_feed]) {
        f.interval = Duration::from_millis(50);
        // Feeds outlive the browser's absences: resumes stay within one instance.
        f.linger = Duration::from_secs(60);
    }
    c.feeds.push(b_feed);
    c.sse.retry = Duration::from_millis(100);
    let (mut a, mut b) = (1, 1);
    up.set("/api/jobs", list("a", a));
    up.set("/api/b", list("b", b));
    let pc = pollcast::start(c).await.expect("start");
    let relay = Relay::start(pc.addr).await;
    let base = format!("http://{}", relay.addr);

    let mut browser = tokio::task::block_in_place(|| Browser::start(&dir));
    let wait = |br: &mut Browser, what: &str, expr: &str| {
        tokio::task::block_in_place(|| br.wait(what, expr));
    };
    tokio::task::block_in_place(|| browser.cmd(&format!("open {base}/app/shared.html")));
    wait(
        &mut browser,
        "both snapshots",
        "window.ev.filter(e => e.name === 'snapshot').length === 2",
    );

    // Rounds: change one feed (live or while the browser is away), cut, and
    // now and then change only the other one, so one feed sends nothing
    // between two resumes.
    let mut rng = fastrand::Rng::with_seed(16);
    let mut expected = 0;
    for round in 0..12 {
        let away = rng.bool();
        let opens: u64 = tokio::task::block_in_place(|| browser.eval("window.opens"))
            .as_u64()
            .expect("opens");
        if away {
            relay.cut();
        }
        let (path, prefix, n) = if rng.bool() {
            a += 1;
            ("/api/jobs", "a", a)
        } else {
            b += 1;
            ("/api/b", "b", b)
        };
        let hits = up.hits(path);
        up.set(path, list(prefix, n));
        expected += 1;
        if away {
            // Polled (and published) at least twice while nobody could listen.
            up.wait_hits(path, hits + 2).await;
            relay.reopen();
            wait(
                &mut browser,
                "the reconnect",
                &format!("window.opens > {opens}"),
            );
        }
        wait(
            &mut browser,
            &format!("round {round}: {prefix}{n} added"),
            &format!("window.ev.some(e => e.name === 'added' && e.data.id === '{prefix}{n}')"),
        );
        if !away && rng.bool() {
            // Cut right after an event, while nothing is pending.
            relay.cut();
            relay.reopen();
            wait(
                &mut browser,
                "the reconnect after a cut",
                &format!("window.opens > {opens}"),
            );
        }
    }
    let ev = tokio::task::block_in_place(|| browser.eval("window.ev"));
    let ev = ev.as_array().expect("events");
    let snapshots = ev.iter().filter(|e| e["name"] == "snapshot").count();
    assert_eq!(snapshots, 2, "a resume fell back to a snapshot: {ev:?}");
    let mut added: Vec<&str> = ev
        .iter()
        .filter(|e| e["name"] == "added")
        .filter_map(|e| e["data"]["id"].as_str())
        .collect();
    assert_eq!(added.len(), expected, "lost or repeated: {added:?}");
    added.sort_unstable();
    added.dedup();
    assert_eq!(added.len(), expected, "repeated: {added:?}");
    // After the two opening snapshots, every id names both feeds' positions.
    for e in &ev[2..] {
        let id = e["id"].as_str().expect("id");
        assert!(
            id.split(',').count() == 2 && !id.contains('-'),
            "{id}: a composite id without every feed's position"
        );
    }
    tokio::task::block_in_place(|| drop(browser));
    pc.stop().await;
}
