//! The npm packages in a real app, in real Chromium: the Vite + React example
//! (`clients/js/example/`) is built with Vite against `@pollcast/react` and
//! `@pollcast/client` as a bundler resolves them, served by the test upstream
//! through pollcast's pass-through, and driven in Debian's chromium.
//!
//! Checked: snapshot/added/updated/removed render in two components using
//! `usePollcast` and in a TanStack Query list kept in sync by
//! `usePollcastQuery`; under StrictMode the page constructs one EventSource
//! for the URL and pollcast counts one subscriber; the page converges to the
//! upstream's list after pollcast restarts; the bundled plain-script page
//! renders too. Screenshot: `target/browser-frontend.png`.

mod common;
#[path = "browser/driver.rs"]
mod driver;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use driver::Browser;
use pollcast::config::{Config, FeedConfig};
use serde_json::{json, Value};

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js")
}

/// `clients/js/node_modules` (npm ci --prefix clients/js) besides the browser
/// tools; skip on a developer machine without it, fail under `CI=true`.
fn frontend_tools() -> Option<PathBuf> {
    let browser = browser_tools()?;
    if js_dir().join("node_modules/vite").exists() {
        return Some(browser);
    }
    let what = format!("vite (npm ci --prefix {})", js_dir().display());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("frontend browser test cannot run: missing {what}; .ci/run installs it");
    }
    eprintln!("skipped: missing {what}");
    None
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Build `@pollcast/react` (its dist is not committed) and the example app
/// into `target/frontend-example`; returns that directory.
fn build_example() -> PathBuf {
    let js = js_dir();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/frontend-example");
    run(
        "tsc -p react",
        Command::new("node").current_dir(&js).args([
            "node_modules/typescript/bin/tsc",
            "-p",
            "react",
        ]),
    );
    run(
        "vite build",
        Command::new("node").current_dir(js.join("example")).args([
            "../node_modules/vite/bin/vite.js",
            "build",
            "--logLevel",
            "warn",
            "--emptyOutDir",
            "--outDir",
            &out.display().to_string(),
        ]),
    );
    out
}

/// Serve every built file at `/app/<path>` from the test upstream.
fn serve(up: &TestUpstream, dir: &Path, under: &Path) {
    for entry in std::fs::read_dir(dir).expect("built app") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            serve(up, &path, under);
            continue;
        }
        let rel = path.strip_prefix(under).expect("under dist");
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            _ => "application/octet-stream",
        };
        let body = std::fs::read(&path).expect("built file");
        up.set_raw(
            &format!("/app/{}", rel.display()),
            &[("content-type", kind)],
            Bytes::from(body),
        );
    }
}

fn config(up: &TestUpstream) -> Config {
    let mut c = common::config(up);
    let mut items = FeedConfig::new("items", "/api/items");
    items.sse = Some("/sse/items".into());
    items.interval = Duration::from_millis(50);
    items.linger = Duration::from_secs(5);
    items.backoff_max = Duration::from_millis(200);
    c.feeds = vec![items];
    c.sse.retry = Duration::from_millis(200);
    c
}

/// A JS expression: every list on the page shows exactly `names`.
fn lists_show(names: &[&str]) -> String {
    let want = serde_json::to_string(names).expect("json");
    format!(
        "['hook','hook-again','query'].every((l) => JSON.stringify([...document.querySelectorAll(`[data-list=\"${{l}}\"] li`)].map((li) => li.textContent)) === '{want}')"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_app_built_with_vite_stays_in_sync_through_pollcast() {
    let Some(dir) = frontend_tools() else { return };
    let dist = tokio::task::block_in_place(build_example);
    let up = TestUpstream::start().await;
    serve(&up, &dist, &dist);
    let item = |id: u32, name: &str| json!({"id": id, "name": name});
    up.set("/api/items", json!([item(1, "one"), item(2, "two")]));

    let cfg = config(&up);
    let pc = pollcast::start(cfg.clone()).await.expect("start");
    let base = format!("http://{}", pc.addr);
    let mut b = tokio::task::block_in_place(|| Browser::start(&dir));
    let on = |b: &mut Browser, f: &dyn Fn(&mut Browser)| tokio::task::block_in_place(|| f(b));

    // Count every EventSource the page constructs, before its scripts run.
    on(&mut b, &|b| {
        b.cmd("init window.__es = []; const N = window.EventSource; window.EventSource = class extends N { constructor(u, o) { super(u, o); window.__es.push(String(u)); } };");
        b.cmd(&format!(
            "open {base}/app/index.html?feed=/sse/items&api=/api/items"
        ));
        b.wait(
            "the snapshot in all three lists",
            &lists_show(&["one", "two"]),
        );
        b.wait(
            "state open",
            "document.getElementById('state').textContent === 'open'",
        );
    });
    // StrictMode mounted every component twice; four users of one URL.
    let opened = on_eval(&mut b, "window.__es");
    assert_eq!(opened, json!(["/sse/items"]), "EventSources constructed");
    assert_eq!(
        scrape_stats(&pc).await["subscribers"],
        1,
        "pollcast's open streams"
    );

    up.set(
        "/api/items",
        json!([item(1, "one"), item(2, "two"), item(3, "three")]),
    );
    on(&mut b, &|b| {
        b.wait("added", &lists_show(&["one", "two", "three"]))
    });
    up.set(
        "/api/items",
        json!([item(1, "ONE"), item(2, "two"), item(3, "three")]),
    );
    on(&mut b, &|b| {
        b.wait("updated", &lists_show(&["ONE", "two", "three"]))
    });
    up.set("/api/items", json!([item(1, "ONE"), item(3, "three")]));
    on(&mut b, &|b| {
        b.wait("removed", &lists_show(&["ONE", "three"]))
    });

    // Restart pollcast on the same address while the upstream changes: the
    // page's one EventSource reconnects by itself and every list converges.
    let addr = pc.addr;
    pc.stop().await;
    on(&mut b, &|b| {
        b.wait(
            "the banner while pollcast is down",
            "document.getElementById('state').textContent === 'connecting'",
        )
    });
    up.set("/api/items", json!([item(1, "ONE"), item(4, "four")]));
    let mut cfg2 = cfg.clone();
    cfg2.server.listen = addr;
    let pc = pollcast::start(cfg2)
        .await
        .expect("restart on the same address");
    on(&mut b, &|b| {
        b.wait("the list after the restart", &lists_show(&["ONE", "four"]));
        b.wait(
            "state open again",
            "document.getElementById('state').textContent === 'open'",
        );
    });
    assert_eq!(on_eval(&mut b, "window.__es"), json!(["/sse/items"]));
    assert_eq!(
        scrape_stats(&pc).await["subscribers"],
        1,
        "one stream after the restart"
    );
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-frontend.png");
    on(&mut b, &|b| {
        b.cmd(&format!("shot {}", shot.display()));
    });

    // The bundled plain-script page (no framework).
    on(&mut b, &|b| {
        b.cmd(&format!(
            "open {base}/app/plain.html?feed=/sse/items&api=/api/items"
        ));
        b.wait(
            "the plain page's list",
            "JSON.stringify([...document.querySelectorAll('#list li')].map((li) => li.textContent)) === '[\"ONE\",\"four\"]' && document.getElementById('state').textContent === 'open'",
        );
    });
    tokio::task::block_in_place(|| drop(b));
    pc.stop().await;
}

fn on_eval(b: &mut Browser, expr: &str) -> Value {
    tokio::task::block_in_place(|| b.eval(expr))
}
