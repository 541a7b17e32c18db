//! `token_param`: the upstream sees `Authorization: Bearer <token>`, and the
//! token appears nowhere in the log output of the whole run, at every level.
//!
//! Its own test binary: the log capture is process-wide.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pollcast::config::{AuthMode, FeedConfig, Secret};
use serde_json::json;

/// Everything every thread logs, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_param_reaches_the_upstream_as_bearer_and_never_the_logs() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .init();

    const TOKEN: &str = "s3cr3t-T0KEN-4f9a";
    const COOKIE: &str = "sid=c00kie-9b1e";
    const SHARE: &str = "sh4re-T0KEN-77c1";
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "owner": "{{token}}"}]));
    up.set("/api/shared", json!([{"id": 1}]));
    up.guard("/api/me", &[&format!("Bearer {TOKEN}")]);
    let mut cfg = config(&up);
    cfg.feeds[0].token_param = Some("token".into());
    let mut checked = FeedConfig::new("checked", "/api/shared");
    checked.interval = Duration::from_millis(50);
    checked.auth = AuthMode::Check;
    checked.check = Some("/api/me".into());
    checked.recheck = Duration::from_millis(100);
    checked.token_param = Some("token".into());
    checked.credentials = Secret::new("Bearer service-S3CRET");
    cfg.feeds.push(checked);
    // A secret in the path: a share link's token.
    let mut share = FeedConfig::new("share", "/api/share/{share_token}/items");
    share.sse = Some("/sse/share/{share_token}".into());
    share.interval = Duration::from_millis(50);
    cfg.feeds.push(share);
    // A per-team feed whose check is not scoped to the team: pointed out.
    let mut team = FeedConfig::new("team", "/api/teams/{team}/jobs");
    team.sse = Some("/sse/teams/{team}/jobs".into());
    team.auth = AuthMode::Check;
    team.check = Some("/api/me".into());
    cfg.feeds.push(team);
    up.set(&format!("/api/share/{SHARE}/items"), json!([{"id": 1}]));
    let pc = pollcast::start(cfg).await.expect("start");
    let base = format!("http://{}", pc.addr);

    // Forward mode: the token becomes the poll's Authorization.
    let mut s = Sse::connect_with(
        &format!("{base}/sse/jobs?token={TOKEN}&lastEventId=x"),
        &[("cookie", COOKIE)],
    )
    .await;
    assert_eq!(s.status, 200);
    let e = s.next().await;
    assert_eq!(
        data(&e),
        json!({"items": [{"id": 1, "owner": format!("Bearer {TOKEN}")}]})
    );
    let polls = up.seen("/api/jobs");
    assert!(!polls.is_empty());
    for p in &polls {
        assert_eq!(
            p.headers["authorization"],
            format!("Bearer {TOKEN}").as_str()
        );
        assert_eq!(
            p.path_and_query, "/api/jobs",
            "the token is not a parameter upstream"
        );
    }
    let mut sh = Sse::connect(&format!("{base}/sse/share/{SHARE}")).await;
    assert_eq!(sh.status, 200);
    assert_eq!(sh.next().await.event, "snapshot");
    // Failures get logged with the feed's label.
    up.mode(Mode::Status(500));
    assert_eq!(s.next_named("stale").await.event, "stale");
    assert_eq!(sh.next_named("stale").await.event, "stale");
    up.mode(Mode::Ok);

    // Check mode: admitted with the token, then revoked (logged), refused.
    let mut c = Sse::connect(&format!("{base}/sse/checked?token={TOKEN}")).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.next().await.event, "snapshot");
    assert_eq!(
        up.seen("/api/me")[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
    up.revoke("/api/me", &format!("Bearer {TOKEN}"));
    while c.next_or_end().await.is_some() {}
    let r = reqwest::get(format!("{base}/sse/checked?token={TOKEN}"))
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    // A refused parameter next to the token.
    let r = reqwest::get(format!("{base}/sse/jobs?token={TOKEN}&token=again"))
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    assert!(!r.text().await.expect("body").contains(TOKEN));
    drop((s, sh));
    pc.stop().await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    // The capture worked: these lines are there...
    for line in [
        "feed started",
        "poll failed",
        "admission revoked",
        "jobs [credentials]",
        // The share feed's label, its token redacted.
        "share(<redacted>)",
        // A feed without a `query` allowlist is pointed out at startup.
        "any query parameter is forwarded",
        "the `check` path names none of the SSE path's parameters",
    ] {
        assert!(text.contains(line), "no {line:?} in the captured logs");
    }
    // ...and no secret is.
    for secret in [TOKEN, "c00kie-9b1e", "service-S3CRET", SHARE] {
        assert!(
            !text.contains(secret),
            "{secret} appears in the logs:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
