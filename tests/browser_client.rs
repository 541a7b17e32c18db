//! Real Chromium against pollcast in front of a real test upstream: the
//! client module (`/_pollcast/client.js`) keeps a list in sync, the page's
//! native EventSource reconnects by itself after pollcast restarts, and two of
//! the example contracts are consumed by pages written the way their
//! frontends are (addEventListener per named event; onmessage with a switch).
//! The pages come from `examples/client/`, served by the upstream through
//! pollcast. Screenshots: `target/browser-client.png`, `target/browser-contracts.png`.

mod common;
#[path = "browser/driver.rs"]
mod driver;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use driver::Browser;
use pollcast::config::Config;
use serde_json::json;

fn page(upstream: &TestUpstream, path: &str, file: &str) {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let html = std::fs::read(&file).expect("example page");
    upstream.set_raw(
        path,
        &[("content-type", "text/html; charset=utf-8")],
        Bytes::from(html),
    );
}

/// Contract 1 and 3 from `examples/contracts/`, plus a default-contract feed.
fn config(up: &TestUpstream) -> Config {
    let mut c = example("examples/contracts/1-job-list.toml", up);
    let todos = example("examples/contracts/3-typed-messages.toml", up);
    c.feeds.extend(todos.feeds);
    let mut items = pollcast::config::FeedConfig::new("items", "/api/items");
    items.interval = Duration::from_millis(50);
    items.linger = Duration::from_secs(5);
    items.backoff_max = Duration::from_millis(200);
    c.feeds.push(items);
    c.sse.retry = Duration::from_millis(200);
    c
}

fn screenshot(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).expect("target/");
    dir.join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_client_module_restart_and_two_contracts() {
    let Some(dir) = browser_tools() else { return };
    let up = TestUpstream::start().await;
    page(&up, "/app/plain.html", "examples/client/plain.html");
    page(&up, "/app/jobs.html", "examples/client/job-list.html");
    page(&up, "/app/todos.html", "examples/client/todos.html");
    up.set(
        "/api/items",
        json!([{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]),
    );
    let jobs_pq = "/api/jobs?limit=10&status_filter=all&token=t1";
    up.set(jobs_pq, json!([{"id": "j1", "status": "running"}]));
    up.set(
        "/api/todos",
        json!([{"id": 1, "title": "write", "done": false}]),
    );

    let cfg = config(&up);
    let pc = pollcast::start(cfg.clone()).await.expect("start");
    let base = format!("http://{}", pc.addr);
    let mut b = tokio::task::block_in_place(|| Browser::start(&dir));
    let run = |b: &mut Browser, f: &dyn Fn(&mut Browser)| tokio::task::block_in_place(|| f(b));

    // The client module: snapshot, added, updated, removed rendered.
    run(&mut b, &|b| {
        b.cmd(&format!("open {base}/app/plain.html"));
        b.wait(
            "the snapshot",
            "document.querySelectorAll('#list li').length === 2 && document.getElementById('state').textContent === 'open'",
        );
    });
    up.set(
        "/api/items",
        json!([{"id": 1, "name": "one"}, {"id": 2, "name": "two"}, {"id": 3, "name": "three"}]),
    );
    run(&mut b, &|b| {
        b.wait("added", "document.querySelector('#list li[data-id=\"3\"]') !== null && window.seen.includes('added')")
    });
    up.set(
        "/api/items",
        json!([{"id": 1, "name": "ONE"}, {"id": 2, "name": "two"}, {"id": 3, "name": "three"}]),
    );
    run(&mut b, &|b| {
        b.wait("updated", "document.querySelector('#list li[data-id=\"1\"]').textContent.includes('ONE') && window.seen.includes('updated')")
    });
    up.set(
        "/api/items",
        json!([{"id": 1, "name": "ONE"}, {"id": 3, "name": "three"}]),
    );
    run(&mut b, &|b| {
        b.wait("removed", "document.querySelector('#list li[data-id=\"2\"]') === null && window.seen.includes('removed')")
    });

    // Restart pollcast on the same address while the upstream changes: the
    // page's own EventSource reconnects and ends with the upstream's list.
    let addr = pc.addr;
    pc.stop().await;
    let final_items = json!([{"id": 1, "name": "ONE"}, {"id": 4, "name": "four"}]);
    up.set("/api/items", final_items.clone());
    let mut cfg2 = cfg.clone();
    cfg2.server.listen = addr;
    let pc = pollcast::start(cfg2)
        .await
        .expect("restart on the same address");
    run(&mut b, &|b| {
        b.wait(
            "the list after the restart",
            "window.opens >= 2 && JSON.stringify(window.pollcastItems.items()) === JSON.stringify([{id:1,name:'ONE'},{id:4,name:'four'}])",
        )
    });
    let shown = run_eval(&mut b, "window.pollcastItems.items()");
    assert_eq!(shown, final_items);
    let shot = screenshot("browser-client.png");
    run(&mut b, &|b| {
        b.cmd(&format!("shot {shot}"));
    });

    // Contract 1: addEventListener per named event.
    run(&mut b, &|b| {
        b.cmd(&format!("open {base}/app/jobs.html"));
        b.wait("connection and snapshot", "document.getElementById('conn').textContent === 'connected' && document.querySelectorAll('#jobs li').length === 1");
    });
    up.set(
        jobs_pq,
        json!([{"id": "j1", "status": "done"}, {"id": "j2", "status": "queued"}]),
    );
    run(&mut b, &|b| {
        b.wait("job_added and job_updated", "document.querySelector('#jobs li[data-id=\"j2\"]') !== null && document.querySelector('#jobs li[data-id=\"j1\"]').textContent === 'j1: done'")
    });
    up.set(jobs_pq, json!([{"id": "j2", "status": "queued"}]));
    run(&mut b, &|b| {
        b.wait("job_removed", "document.querySelectorAll('#jobs li').length === 1 && document.querySelector('#jobs li[data-id=\"j1\"]') === null")
    });

    // Contract 3: onmessage with a switch on `type`.
    run(&mut b, &|b| {
        b.cmd(&format!("open {base}/app/todos.html"));
        b.wait("connected and snapshot", "document.getElementById('conn').textContent === 'connected' && document.querySelectorAll('#todos li').length === 1");
    });
    up.set(
        "/api/todos",
        json!([{"id": 1, "title": "write", "done": true}, {"id": 2, "title": "test", "done": false}]),
    );
    run(&mut b, &|b| {
        b.wait("todo_created and todo_updated", "document.querySelectorAll('#todos li').length === 2 && document.querySelector('#todos li[data-id=\"1\"]').textContent === '[x] write'")
    });
    let shot = screenshot("browser-contracts.png");
    run(&mut b, &|b| {
        b.cmd(&format!("shot {shot}"));
    });
    tokio::task::block_in_place(|| drop(b));
    pc.stop().await;
}

fn run_eval(b: &mut Browser, expr: &str) -> serde_json::Value {
    let out = tokio::task::block_in_place(|| b.cmd(&format!("eval {expr}")));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("eval {expr}: {e}: {out}"))
}
