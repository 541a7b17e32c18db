//! The npm packages in `clients/js/` against the crate: their versions are the
//! crate's, and the patches the client's unit tests apply
//! (`clients/js/client/test/server-patches.json`) are exactly the ones
//! pollcast sends today (recorded here from a real stream; a change in the
//! server's patches fails this test until the fixture is regenerated with
//! `UPDATE_FIXTURES=1`, and then the vitest suite applies the new ones); and
//! the package follows a real pollcast from Node with the `eventsource`
//! package injected (server-side use).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn package_versions_are_the_crate_version() {
    let crate_version = env!("CARGO_PKG_VERSION");
    for dir in ["client", "react", "example"] {
        let path = root().join("clients/js").join(dir).join("package.json");
        let text = std::fs::read_to_string(&path).expect("package.json");
        let pkg: Value = serde_json::from_str(&text).expect("package.json is JSON");
        assert_eq!(pkg["version"], crate_version, "{}", path.display());
        // The packages depend on each other at exactly this version.
        for deps in ["dependencies", "devDependencies"] {
            if let Some(map) = pkg[deps].as_object() {
                for (name, v) in map.iter().filter(|(n, _)| n.starts_with("@pollcast/")) {
                    assert_eq!(v, crate_version, "{} {deps}.{name}", path.display());
                }
            }
        }
    }
}

/// (name, item before, item after): the shapes of change a list item goes through.
fn cases() -> Vec<(&'static str, Value, Value)> {
    vec![
        (
            "replace a field",
            json!({"name": "a", "n": 1}),
            json!({"name": "b", "n": 1}),
        ),
        (
            "add a field",
            json!({"name": "a"}),
            json!({"name": "a", "owner": {"login": "x"}}),
        ),
        (
            "remove a field",
            json!({"name": "a", "tmp": true}),
            json!({"name": "a"}),
        ),
        (
            "nested object",
            json!({"s": {"a": {"b": 1, "c": [1, 2]}}}),
            json!({"s": {"a": {"b": 2, "c": [1, 2], "d": null}}}),
        ),
        (
            "array append",
            json!({"tags": ["x"]}),
            json!({"tags": ["x", "y", "z"]}),
        ),
        (
            "array remove tail",
            json!({"tags": ["x", "y", "z"]}),
            json!({"tags": ["x"]}),
        ),
        (
            "array insert front",
            json!({"tags": ["b", "c"]}),
            json!({"tags": ["a", "b", "c"]}),
        ),
        (
            "array remove middle",
            json!({"tags": ["a", "b", "c", "d"]}),
            json!({"tags": ["a", "d"]}),
        ),
        (
            "array of objects",
            json!({"steps": [{"n": 1, "ok": false}, {"n": 2, "ok": false}]}),
            json!({"steps": [{"n": 1, "ok": true}, {"n": 2, "ok": false}, {"n": 3, "ok": false}]}),
        ),
        (
            "keys with / and ~",
            json!({"a/b": 1, "c~d": {"e/f~g": 2}}),
            json!({"a/b": 2, "c~d": {"e/f~g": 3, "h": 4}}),
        ),
        (
            "numeric keys",
            json!({"m": {"0": "zero", "10": "ten"}}),
            json!({"m": {"0": "ZERO", "2": "two"}}),
        ),
        (
            "type changes",
            json!({"v": "text", "w": [1], "x": {"y": 1}}),
            json!({"v": {"now": "object"}, "w": "flat", "x": null}),
        ),
        (
            "unicode and escapes",
            json!({"t": "plain"}),
            json!({"t": "naïve \u{1F600} \"quoted\" \\ \n"}),
        ),
        (
            "empty containers",
            json!({"a": [], "o": {}}),
            json!({"a": [{}], "o": {"k": []}}),
        ),
        (
            "nested arrays",
            json!({"grid": [[1, 2], [3, 4]]}),
            json!({"grid": [[1, 2, 5], [4], []]}),
        ),
    ]
}

#[tokio::test]
async fn the_client_tests_apply_the_servers_own_patches() {
    let cases = cases();
    let up = TestUpstream::start().await;
    let with = |i: usize, v: &Value| {
        let mut o = v.clone();
        o["id"] = json!(i);
        o
    };
    let before: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| with(i, &c.1))
        .collect();
    let after: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| with(i, &c.2))
        .collect();
    up.set("/api/jobs", Value::Array(before.clone()));
    let pc = pollcast::start(config(&up)).await.expect("start");
    let mut sse = Sse::connect(&format!("http://{}/sse/jobs", pc.addr)).await;
    assert_eq!(
        data(&sse.next_named("snapshot").await)["items"],
        json!(before)
    );
    up.set("/api/jobs", Value::Array(after.clone()));
    let mut recorded = vec![Value::Null; cases.len()];
    for _ in 0..cases.len() {
        let d = data(&sse.next_named("updated").await);
        let i = d["id"].as_u64().expect("numeric id") as usize;
        assert_eq!(d["item"], after[i]);
        recorded[i] = json!({
            "name": cases[i].0,
            "before": before[i],
            "after": after[i],
            "patch": d["patch"],
        });
    }
    pc.stop().await;

    let text = serde_json::to_string_pretty(&recorded).expect("json") + "\n";
    let path = root().join("clients/js/client/test/server-patches.json");
    if std::env::var("UPDATE_FIXTURES").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).expect("write fixture");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is not what pollcast sends now; regenerate it with \
         UPDATE_FIXTURES=1 cargo test --test frontend_packages, then run the vitest suite",
        path.display()
    );
}

/// Node and `clients/js/node_modules` (npm ci --prefix clients/js): skip on a
/// developer machine without them, fail under `CI=true`.
fn node_packages() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let installed = root().join("clients/js/node_modules/eventsource").exists();
    if node && installed {
        return true;
    }
    let what = if node {
        "clients/js/node_modules (npm ci --prefix clients/js)"
    } else {
        "node (apt-get install -y nodejs npm)"
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot run: missing {what}; .ci/run installs it");
    }
    eprintln!("skipped: missing {what}");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_package_follows_pollcast_from_node() {
    if !node_packages() {
        return;
    }
    let up = TestUpstream::start().await;
    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}]),
    );
    let pc = pollcast::start(config(&up)).await.expect("start");
    let (mut child, mut rx) = follow(&format!("http://{}/sse/jobs", pc.addr), "{}");
    until(
        &mut rx,
        "the snapshot",
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}]),
    )
    .await;
    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "A"}, {"id": 3, "s": "c"}]),
    );
    let last = until(
        &mut rx,
        "the changes",
        json!([{"id": 1, "s": "A"}, {"id": 3, "s": "c"}]),
    )
    .await;
    assert_ne!(last["change"]["type"], "snapshot", "{last}");
    drop(child.stdin.take());
    let status = tokio::task::block_in_place(|| child.wait()).expect("node exit");
    assert!(status.success(), "node: {status}");
    pc.stop().await;
}

/// `clients/js/scripts/node-follow.mjs` following `url` with `options`
/// (JSON): the child and its change lines.
fn follow(
    url: &str,
    options: &str,
) -> (
    std::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
) {
    let mut child = Command::new("node")
        .arg(root().join("clients/js/scripts/node-follow.mjs"))
        .args([url, options])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Lines from the Node follower until one shows `want` with state `open`.
async fn until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    what: &str,
    want: Value,
) -> Value {
    within(what, async {
        loop {
            let line = rx.recv().await.expect("node exited");
            if line["items"] == want && line["state"] == "open" {
                return line;
            }
        }
    })
    .await
}

/// Lines from the Node follower until `pred` holds for one.
async fn until_line(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    within(what, async {
        loop {
            let line = rx.recv().await.expect("node exited");
            if pred(&line) {
                return line;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_feed_appends_and_ends_in_the_client_package() {
    if !node_packages() {
        return;
    }
    let up = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("object.toml");
    std::fs::write(
        &path,
        r#"
[upstream]
url = "http://127.0.0.1:1"

[[feeds]]
name = "job"
poll = "/api/jobs/{job_id}"
sse = "/sse/jobs/{job_id}"
object = true
append = "/transactions"

[feeds.terminal]
field = "/status"
values.completed = {}
"#,
    )
    .expect("config");
    let mut cfg = example(&path.display().to_string(), &up);
    cfg.feeds[0].linger = std::time::Duration::from_millis(200);
    let job = |status: &str, tx: &[u32]| json!({"id": 7, "status": status, "transactions": tx.iter().map(|n| json!({"n": n})).collect::<Vec<_>>()});
    up.set("/api/jobs/7", job("running", &[1]));
    let pc = pollcast::start(cfg).await.expect("start");
    let (mut child, mut rx) = follow(
        &format!("http://{}/sse/jobs/7", pc.addr),
        r#"{"append": "/transactions", "terminal": ["completed"]}"#,
    );
    let first = job("running", &[1]);
    until_line(&mut rx, "the object", |l| {
        l["item"] == first && l["state"] == "open"
    })
    .await;
    up.set("/api/jobs/7", job("running", &[1, 2, 3]));
    let appended = job("running", &[1, 2, 3]);
    let l = until_line(&mut rx, "appended entries", |l| l["item"] == appended).await;
    assert_eq!(l["change"]["type"], "appended", "{l}");
    up.set("/api/jobs/7", job("completed", &[1, 2, 3]));
    let l = until_line(&mut rx, "the terminal event", |l| l["state"] == "ended").await;
    assert_eq!(l["ended"]["event"], "completed", "{l}");
    assert_eq!(l["item"], job("completed", &[1, 2, 3]), "{l}");
    drop(child.stdin.take());
    let status = tokio::task::block_in_place(|| child.wait()).expect("node exit");
    assert!(status.success(), "node: {status}");
    pc.stop().await;
}
