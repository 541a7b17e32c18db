//! The seed applications' frontends, their consumption code ported line for
//! line to plain pages, in Debian's Chromium against pollcast configured by
//! the shipped `examples/contracts/seed-*.toml` alone (issue 16, items 3-9).
//!
//! The browser reaches pollcast through a loopback relay the test controls:
//! it can cut every connection (the client goes away) and point at a new
//! pollcast (a restart, on another port, behind the same origin).

mod common;
#[path = "browser/driver.rs"]
mod driver;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use driver::Browser;
use pollcast::config::Config;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay in front of pollcast: `cut` drops every connection, `point`
/// sends new ones to another pollcast.
struct Relay {
    addr: SocketAddr,
    to: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let to = Arc::new(Mutex::new(to));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (t, c) = (to.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = *t.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, to, conns }
    }

    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn point(&self, to: SocketAddr) {
        *self.to.lock().unwrap() = to;
        self.cut();
    }
}

fn seed(file: &str, up: &TestUpstream) -> Config {
    let mut c = example(&format!("examples/contracts/{file}"), up);
    c.sse.retry = Duration::from_millis(100);
    for f in &mut c.feeds {
        f.linger = Duration::from_secs(60);
    }
    c
}

fn page(up: &TestUpstream, path: &str, body: &str) {
    up.set_raw(
        path,
        &[("content-type", "text/html; charset=utf-8")],
        Bytes::from(body.to_owned()),
    );
}

struct Page {
    browser: Option<Browser>,
}

impl Page {
    fn open(dir: &std::path::Path, url: &str) -> Self {
        let mut browser = tokio::task::block_in_place(|| Browser::start(dir));
        tokio::task::block_in_place(|| browser.cmd(&format!("open {url}")));
        Self {
            browser: Some(browser),
        }
    }
    fn b(&mut self) -> &mut Browser {
        self.browser.as_mut().expect("browser")
    }
    fn wait(&mut self, what: &str, expr: &str) {
        let b = self.b();
        tokio::task::block_in_place(|| b.wait(what, expr));
    }
    fn eval(&mut self, expr: &str) -> Value {
        let b = self.b();
        tokio::task::block_in_place(|| b.eval(expr))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let b = self.browser.take();
        tokio::task::block_in_place(|| drop(b));
    }
}

/// Seed 000's hooks: `useEventStream` per dotted event, `useListingUpdates`
/// invalidating (refetching) the listings on any listing event, the
/// valuation toast and `useImportUpdates`' onComplete.
const SEED_000: &str = r#"<!doctype html><meta charset="utf-8"><title>deal brain</title>
<pre id="log"></pre>
<script>
  window.toasts = []; window.completed = []; window.listings = null; window.refetches = 0;
  const fetchListings = async () => { window.refetches += 1;
    window.listings = await (await fetch("/api/v1/listings")).json(); };
  const es = new EventSource("/api/v1/events");
  const on = (name, f) => es.addEventListener(name, (e) => f(JSON.parse(e.data)));
  for (const n of ["listing.created", "listing.updated", "listing.deleted"]) on(n, () => fetchListings());
  on("valuation.recalculated", (data) => window.toasts.push(`${data.listing_ids.length} listings updated`));
  on("import.completed", (data) => window.completed.push(`Created ${data.listings_created} listings`));
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_frontend_gets_one_toast_per_poll_import_completion_and_catches_up_after_restart()
{
    let Some(dir) = browser_tools() else { return };
    let up = TestUpstream::start().await;
    page(&up, "/app/000.html", SEED_000);
    let prices = |p: &[u64]| {
        Value::Array(
            p.iter()
                .enumerate()
                .map(|(i, p)| json!({"id": i + 1, "price_usd": p}))
                .collect(),
        )
    };
    up.set("/api/v1/listings", prices(&[10, 20, 30]));
    // Only the fixed query has an answer: import.completed proves it is used.
    let imports = "/api/v1/imports?scope=recent";
    up.set(
        imports,
        json!([{"id": 7, "status": "running", "listings_created": 0}]),
    );
    let pc = pollcast::start(seed("seed-000-activity.toml", &up))
        .await
        .expect("start");
    let relay = Relay::start(pc.addr).await;
    let mut p = Page::open(&dir, &format!("http://{}/app/000.html", relay.addr));
    p.wait(
        "the snapshot trigger refetched",
        "window.refetches >= 1 && window.listings",
    );
    up.wait_hits(imports, 2).await;

    up.set("/api/v1/listings", prices(&[11, 21, 31]));
    p.wait("the toast", "window.toasts.length === 1");
    up.set(
        imports,
        json!([{"id": 7, "status": "completed", "listings_created": 3}]),
    );
    p.wait("import completion", "window.completed.length === 1");
    assert_eq!(p.eval("window.toasts"), json!(["3 listings updated"]));
    assert_eq!(p.eval("window.completed"), json!(["Created 3 listings"]));

    // pollcast restarts; meanwhile a listing changed. The snapshot after the
    // reconnect is the page's own refresh trigger.
    pc.stop().await;
    up.set("/api/v1/listings", prices(&[11, 21, 31, 40]));
    let pc = pollcast::start(seed("seed-000-activity.toml", &up))
        .await
        .expect("restart");
    relay.point(pc.addr);
    p.wait(
        "caught up after the restart",
        "window.listings && window.listings.length === 4",
    );
    assert_eq!(
        p.eval("window.toasts.length"),
        json!(1),
        "no toast repeated"
    );
    assert_eq!(
        p.eval("window.completed.length"),
        json!(1),
        "no completion repeated"
    );
    pc.stop().await;
}

/// Seed 002's `useBacktestProgressSSE` and `useBacktestJobsSSE`, handler for
/// handler (React state as plain variables).
const SEED_002: &str = r#"<!doctype html><meta charset="utf-8"><title>backtest</title>
<pre id="log"></pre>
<script>
  window.s = { progress: null, transactions: [], result: null, error: null, jobs: [] };
  const s = window.s;
  const es = new EventSource(`/api/sse/backtest/42?token=t`);
  es.addEventListener('progress', (e) => { s.progress = JSON.parse(e.data); });
  es.addEventListener('transaction', (e) => {
    const data = JSON.parse(e.data);
    s.transactions = [...s.transactions, ...data.transactions];
  });
  es.addEventListener('completed', (e) => {
    const data = JSON.parse(e.data);
    s.result = data.result_summary || data;
    s.progress = s.progress ? { ...s.progress, status: 'completed', progress: 100 } : null;
  });
  es.addEventListener('failed', (e) => { s.error = JSON.parse(e.data).error_message || 'Job failed'; });
  es.onerror = () => { s.error = 'Failed to connect to job progress'; };
  window.opens = 0; es.onopen = () => { window.opens += 1; };  // the test's counter

  const jobs = new EventSource(`/api/sse/backtest/jobs?token=t&limit=3`);
  jobs.addEventListener('snapshot', (e) => { s.jobs = JSON.parse(e.data).jobs || []; });
  jobs.addEventListener('job_added', (e) => { const data = JSON.parse(e.data); s.jobs = [data.job, ...s.jobs]; });
  jobs.addEventListener('job_updated', (e) => { const data = JSON.parse(e.data);
    s.jobs = s.jobs.map(job => job.job_id === data.job.job_id ? data.job : job); });
  jobs.addEventListener('job_removed', (e) => { const data = JSON.parse(e.data);
    s.jobs = s.jobs.filter(job => job.job_id !== data.job_id); });
</script>"#;

fn job(status: &str, n: u64) -> Value {
    let tx: Vec<Value> = (1..=n).map(|n| json!({"n": n})).collect();
    json!({"job_id": 42, "status": status, "progress": 50, "transactions": tx,
           "result_summary": {"pnl": 7}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_frontend_gets_each_transaction_once_keeps_its_result_and_list_order() {
    // Also across a pollcast restart (item 7: an id of the old instance).
    let Some(dir) = browser_tools() else { return };
    let up = TestUpstream::start().await;
    page(&up, "/app/002.html", SEED_002);
    let path = "/api/backtesting/jobs/42";
    up.set(path, job("running", 2));
    let list = |l: &[&str]| Value::Array(l.iter().map(|i| json!({"job_id": i})).collect());
    up.set("/api/backtesting/jobs?limit=3", list(&["a", "b", "c"]));
    let pc = pollcast::start(seed("seed-002-backtest.toml", &up))
        .await
        .expect("start");
    let relay = Relay::start(pc.addr).await;
    let mut p = Page::open(&dir, &format!("http://{}/app/002.html", relay.addr));
    let tx = |n: u64| format!("window.s.transactions.length === {n}");
    p.wait("the entries present at open", &tx(2));
    up.set(path, job("running", 4));
    p.wait("entries added live", &tx(4));
    // The browser is cut off while two more arrive; EventSource resumes.
    let opens = p.eval("window.opens").as_u64().expect("opens");
    relay.cut();
    up.set(path, job("running", 6));
    up.wait_hits(path, up.hits(path) + 2).await;
    p.wait("the reconnect", &format!("window.opens > {opens}"));
    p.wait("entries added while away", &tx(6));
    // The cut set the hook's error (as it would); watch what completion does.
    p.eval("window.s.error = null");
    up.set(path, job("completed", 6));
    p.wait("the result", "window.s.result && window.s.result.pnl === 7");
    // The stream stays open: what follows still arrives, the result stays.
    up.set(path, job("completed", 7));
    p.wait("an entry after completion", &tx(7));
    let s = p.eval("window.s");
    let ns: Vec<u64> = s["transactions"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["n"].as_u64())
        .collect();
    assert_eq!(ns, (1..=7).collect::<Vec<_>>(), "once each, in order");
    assert_eq!(
        s["error"],
        Value::Null,
        "no connection error over the result"
    );
    assert_eq!(s["progress"]["status"], "completed");

    // The job list: b deleted, d refills the top 3 at the bottom; the hook's
    // prepend would misplace it, the resent snapshot keeps upstream order.
    p.wait("the job list", "window.s.jobs.length === 3");
    up.set("/api/backtesting/jobs?limit=3", list(&["a", "c", "d"]));
    p.wait(
        "the list in upstream order",
        "window.s.jobs.map(j => j.job_id).join() === 'a,c,d'",
    );

    // pollcast restarts while two more entries arrive. EventSource resumes
    // with an id of the old instance: the page, whose list only appends,
    // gets the progress and just the entries it lacks.
    pc.stop().await;
    up.set(path, job("completed", 9));
    let pc = pollcast::start(seed("seed-002-backtest.toml", &up))
        .await
        .expect("restart");
    relay.point(pc.addr);
    p.wait("entries added while pollcast was down", &tx(9));
    up.set(path, job("completed", 10));
    p.wait(
        "the next entry",
        "window.s.transactions.some(t => t.n === 10)",
    );
    let ns = p.eval("window.s.transactions.map(t => t.n)");
    assert_eq!(
        ns,
        json!((1..=10).collect::<Vec<_>>()),
        "once each, in order, across the restart"
    );
    assert_eq!(p.eval("window.s.result"), json!({"pnl": 7}));
    drop(p);
    pc.stop().await;
}

/// Seed 003's SSEService (`trigger`, pings filtered) and seed 004's TodoList
/// (`type`), both refetching on a message.
const SEED_003_004: &str = r#"<!doctype html><meta charset="utf-8"><title>triggers</title>
<pre id="log"></pre>
<script>
  window.campaigns = null; window.todos = null; window.connected = false; window.pings = 0;
  const updateCampaignData = async () => {
    window.campaigns = await (await fetch("/api/v1/web/campaigns")).json(); };
  const a = new EventSource('/api/v1/web/live/campaigns', { withCredentials: true });
  a.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.trigger !== 'ping') { if (data.trigger === 'campaign_updated') updateCampaignData(); }
    else window.pings += 1;
  };
  const fetchTodos = async () => { window.todos = await (await fetch("/api/todos")).json(); };
  const b = new EventSource('/api/todos/events');
  b.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === 'connected') window.connected = true;
    else if (data.type === 'todo_created') fetchTodos();
  };
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_and_004_frontends_refetch_on_the_snapshot_and_catch_up_after_restart() {
    let Some(dir) = browser_tools() else { return };
    let up = TestUpstream::start().await;
    page(&up, "/app/triggers.html", SEED_003_004);
    up.set("/api/v1/web/campaigns", json!([{"id": 1}]));
    up.set("/api/todos", json!([{"id": 1, "title": "a"}]));
    let config = |up: &TestUpstream| {
        let mut c = seed("seed-003-campaigns.toml", up);
        let mut todos = seed("seed-004-todos.toml", up);
        c.feeds.append(&mut todos.feeds);
        c.sse.keepalive = Duration::from_millis(200);
        c
    };
    let pc = pollcast::start(config(&up)).await.expect("start");
    let relay = Relay::start(pc.addr).await;
    let mut p = Page::open(&dir, &format!("http://{}/app/triggers.html", relay.addr));
    p.wait(
        "both lists fetched on the snapshot",
        "window.campaigns && window.todos && window.connected",
    );
    p.wait("a ping, filtered", "window.pings > 0");
    up.set("/api/v1/web/campaigns", json!([{"id": 1}, {"id": 2}]));
    p.wait("a live trigger", "window.campaigns.length === 2");
    up.set(
        "/api/todos",
        json!([{"id": 1, "title": "a"}, {"id": 2, "title": "b"}]),
    );
    p.wait("a live todo_created", "window.todos.length === 2");

    pc.stop().await;
    up.set(
        "/api/v1/web/campaigns",
        json!([{"id": 1}, {"id": 2}, {"id": 3}]),
    );
    up.set("/api/todos", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    let pc = pollcast::start(config(&up)).await.expect("restart");
    relay.point(pc.addr);
    p.wait(
        "both caught up after the restart",
        "window.campaigns.length === 3 && window.todos.length === 3",
    );
    drop(p);
    pc.stop().await;
}

/// Seed 001's `useSSE` in the partner dashboard: unnamed messages, the
/// orders query invalidated on `order_status_changed`, a toast on `new_order`.
const SEED_001: &str = r#"<!doctype html><meta charset="utf-8"><title>orders</title>
<pre id="log"></pre>
<script>
  window.orders = null; window.fetches = 0; window.toasts = 0;
  const invalidate = async () => { window.fetches += 1;
    window.orders = await (await fetch("/api/orders")).json(); };
  const es = new EventSource(`/sse/orders`, { withCredentials: true });
  es.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "order_status_changed") invalidate();
    if (data.type === "new_order") window.toasts += 1;
  };
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_frontend_invalidates_on_status_changes_only() {
    let Some(dir) = browser_tools() else { return };
    let up = TestUpstream::start().await;
    page(&up, "/app/001.html", SEED_001);
    let order =
        |id: &str, status: &str, at: u64| json!({"id": id, "status": status, "updated_at": at});
    up.set("/api/orders", json!([order("o1", "placed", 1)]));
    let pc = pollcast::start(seed("seed-001-orders.toml", &up))
        .await
        .expect("start");
    let mut p = Page::open(&dir, &url(&pc, "/app/001.html"));
    p.wait(
        "fetched on the snapshot",
        "window.orders && window.fetches === 1",
    );
    up.set(
        "/api/orders",
        json!([order("o1", "placed", 1), order("o2", "placed", 1)]),
    );
    p.wait("a new order toast", "window.toasts === 1");
    // Only updated_at changes: no message. Then a status change: one refetch.
    up.set(
        "/api/orders",
        json!([order("o1", "placed", 2), order("o2", "placed", 1)]),
    );
    up.wait_hits("/api/orders", up.hits("/api/orders") + 2)
        .await;
    up.set(
        "/api/orders",
        json!([order("o1", "confirmed", 2), order("o2", "placed", 1)]),
    );
    p.wait(
        "the refetch after the status change",
        "window.orders && window.orders[0].status === 'confirmed'",
    );
    assert_eq!(
        p.eval("window.fetches"),
        json!(2),
        "one refetch per status change"
    );
    drop(p);
    pc.stop().await;
}
