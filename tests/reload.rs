//! SIGHUP reload with a real child process and a real signal: feeds added,
//! removed and changed take effect; subscribers of unchanged feeds keep
//! their streams; an invalid config is rejected and the old one keeps running.
//! (`[reload] watch = false` here, so only the signal reloads; the watch is
//! tested in `reload_watch.rs`.)

mod common;

use common::child::{config_file, rewrite, Pollcast};
use common::{data, metric_value, scrape_metrics_at, Sse, TestUpstream, DEADLINE};
use futures_util::StreamExt;
use serde_json::json;

/// A raw SSE response body, for what an event parser hides (`retry:` alone,
/// the end of the stream).
struct Raw {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    text: String,
}

impl Raw {
    async fn connect(url: &str) -> Self {
        let r = reqwest::get(url).await.expect("connect");
        assert_eq!(r.status().as_u16(), 200, "{url}");
        Self {
            body: Box::pin(r.bytes_stream()),
            text: String::new(),
        }
    }

    async fn wait_for(&mut self, part: &str) {
        common::within(part, async {
            while !self.text.contains(part) {
                let chunk = self.body.next().await.expect("stream ended").expect("read");
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
    }

    /// Everything until the server ends the stream.
    async fn until_end(&mut self) -> &str {
        let rest = tokio::time::timeout(DEADLINE, async {
            let mut s = String::new();
            while let Some(chunk) = self.body.next().await {
                let Ok(chunk) = chunk else { break };
                s.push_str(&String::from_utf8_lossy(&chunk));
            }
            s
        })
        .await
        .expect("the stream did not end");
        self.text.push_str(&rest);
        &self.text
    }
}

fn config(feeds: &str, extra: &str, up: &TestUpstream) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
drain_timeout = "2s"
[upstream]
url = "http://{}"
[sse]
retry = "1500ms"
[reload]
watch = false
{extra}
{feeds}"#,
        up.addr
    )
}

fn feed(name: &str, poll: &str) -> String {
    format!("[[feeds]]\nname = \"{name}\"\npoll = \"{poll}\"\ninterval = \"50ms\"\nlinger = \"100ms\"\nbackoff_max = \"100ms\"\n")
}

#[tokio::test]
async fn sighup_applies_feed_changes_and_keeps_unchanged_subscribers() {
    let up = TestUpstream::start().await;
    up.set("/api/a", json!([{"id": 1}]));
    up.set("/api/b", json!([{"id": "b"}]));
    up.set("/api/c", json!([{"id": "c-old"}]));
    up.set("/api/c2", json!([{"id": "c-new"}]));
    up.set("/api/d", json!([{"id": "d"}]));
    let v1 = config(
        &[
            feed("a", "/api/a"),
            feed("b", "/api/b"),
            feed("c", "/api/c"),
        ]
        .concat(),
        "",
        &up,
    );
    let f = config_file(&v1);
    let p = Pollcast::spawn(&["--config", f.path().to_str().expect("path")], &[]);
    let addr = p.addr().await;
    let url = |path: &str| format!("http://{addr}{path}");

    let mut a = Sse::connect(&url("/sse/a")).await;
    a.next_named("snapshot").await;
    let mut b = Raw::connect(&url("/sse/b")).await;
    b.wait_for("event: snapshot").await;
    let mut c = Raw::connect(&url("/sse/c")).await;
    c.wait_for("c-old").await;

    // b removed, c changed, d added, a untouched; debug logs from now on.
    let v2 = config(
        &[
            feed("a", "/api/a"),
            feed("c", "/api/c2"),
            feed("d", "/api/d"),
        ]
        .concat(),
        "[log]\nlevel = \"debug\"",
        &up,
    );
    rewrite(&f, &v2);
    p.signal(libc::SIGHUP);
    let line = p.wait_line(&["config reloaded"]).await;
    for part in [
        r#"added=["d"]"#,
        r#"removed=["b"]"#,
        r#"changed=["c"]"#,
        "unchanged=1",
        "ended_subscribers=2",
    ] {
        assert!(line.contains(part), "{part} not in: {line}");
    }

    // Subscribers of the removed and the changed definition are sent away
    // with a retry: hint, so EventSource reconnects to what serves the path now.
    for (name, s) in [("b", &mut b), ("c", &mut c)] {
        let text = s.until_end().await;
        let after = text.rsplit("event: snapshot").next().unwrap_or_default();
        assert!(after.contains("retry: 1500\n\n"), "{name}: {text}");
    }
    // The unchanged feed's subscriber kept its stream: the next change
    // arrives on the same connection.
    up.set("/api/a", json!([{"id": 1}, {"id": 2}]));
    let added = a.next_named("added").await;
    assert_eq!(data(&added)["id"], 2);

    // The changed definition polls its new path; the new one is routed.
    let mut c = Sse::connect(&url("/sse/c")).await;
    let snap = c.next_named("snapshot").await;
    assert_eq!(data(&snap)["items"][0]["id"], "c-new");
    let mut d = Sse::connect(&url("/sse/d")).await;
    d.next_named("snapshot").await;
    // The removed one is no longer pollcast's: it passes through.
    let r = reqwest::get(url("/sse/b")).await.expect("b");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(up.hits("/sse/b"), 1);
    // The new log level is in force.
    p.wait_line(&["DEBUG", "feed started", "feed=d"]).await;
    // Cut-offs are counted per definition.
    let admin = p.admin_addr().await;
    let m = scrape_metrics_at(admin).await;
    for feed in ["b", "c"] {
        assert_eq!(
            metric_value(&m, "pollcast_subscribers_cut_off_total", &[("feed", feed)]),
            Some(1.0),
            "cut-offs of {feed} in:\n{m}"
        );
    }

    // An invalid config is rejected with its location; everything keeps running.
    rewrite(
        &f,
        &v2.replace("poll = \"/api/d\"", "poll = \"/api/d\"\nintervall = \"1s\""),
    );
    p.signal(libc::SIGHUP);
    let line = p.wait_line(&["config reload rejected"]).await;
    let located = format!("{}:", f.path().display());
    assert!(
        line.contains(&located) && line.contains("intervall"),
        "{line}"
    );
    up.set("/api/a", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    let added = a.next_named("added").await;
    assert_eq!(data(&added)["id"], 3);
    up.set("/api/d", json!([{"id": "d"}, {"id": "d2"}]));
    let added = d.next_named("added").await;
    assert_eq!(data(&added)["id"], "d2");

    // A change that needs a restart is reported, and the rest still applies.
    let v3 = v2.replace("drain_timeout = \"2s\"", "drain_timeout = \"3s\"");
    rewrite(&f, &v3);
    p.signal(libc::SIGHUP);
    let line = p.wait_line(&["only take effect after a restart"]).await;
    assert!(line.contains("server"), "{line}");
    p.wait_line_n(&["config reloaded"], 2).await;

    assert!(p.stop().await.success());
}
