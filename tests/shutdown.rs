//! Shutdown and restart with the real binary and real signals: stop
//! accepting, finish the in-flight pass-through request, tell SSE
//! subscribers to come back (`retry:`) and end their streams, exit 0 within
//! `server.drain_timeout`; after a restart an old `Last-Event-ID` gets a
//! fresh snapshot, never a replay from another instance.

mod common;

use std::time::{Duration, Instant};

use common::child::{config_file, Pollcast};
use common::*;
use futures_util::StreamExt;
use serde_json::json;

const DRAIN: Duration = Duration::from_secs(5);

fn config_text(up: &TestUpstream, listen: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
drain_timeout = "5s"
[upstream]
url = "http://{}"
[sse]
retry = "1500ms"
[[feeds]]
name = "jobs"
poll = "/api/jobs"
interval = "100ms"
"#,
        up.addr
    )
}

async fn shutdown_on(signal: i32) {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    let file = config_file(&config_text(&up, "127.0.0.1:0"));
    let path = file.path().to_str().expect("utf-8 path").to_owned();
    let mut pc = Pollcast::spawn(&["--config", &path], &[]);
    let addr = pc.addr().await;

    // An SSE subscriber, read as raw bytes to see exactly how the stream ends.
    let resp = reqwest::get(format!("http://{addr}/sse/jobs"))
        .await
        .expect("sse");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    within("the snapshot", async {
        while !text.contains("event: snapshot") {
            let chunk = body.next().await.expect("open").expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    let snapshot_id = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("snapshot id")
        .to_owned();

    // A pass-through request the upstream answers only after 1.5 s.
    up.mode(Mode::Delay(Duration::from_millis(1500)));
    let in_flight = tokio::spawn(async move {
        let r = reqwest::get(format!("http://{addr}/api/jobs"))
            .await
            .expect("in-flight pass-through is answered");
        (r.status().as_u16(), r.text().await.expect("body"))
    });
    let forwarded = |up: &TestUpstream| {
        up.seen("/api/jobs")
            .iter()
            .filter(|s| s.headers.contains_key("x-forwarded-for"))
            .count()
    };
    wait_until("the pass-through request reached the upstream", || {
        forwarded(&up) == 1
    })
    .await;

    let t0 = Instant::now();
    pc.signal(signal);

    // The subscriber is told to come back, and its stream ends.
    let mut rest = String::new();
    within("the SSE stream ends", async {
        while let Some(Ok(chunk)) = body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(rest.ends_with("retry: 1500\n\n"), "{rest:?}");
    // New connections are refused while the in-flight request finishes.
    within("the listener closes", async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (status, answer) = within("the in-flight request", in_flight)
        .await
        .expect("join");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer).expect("json"),
        json!([{"id": 1}, {"id": 2}])
    );
    let exit = pc.exit().await;
    let took = t0.elapsed();
    assert!(exit.success(), "{exit:?}\n{}", pc.log());
    assert!(took < DRAIN + Duration::from_secs(2), "exit took {took:?}");

    // Restart on the same port; the old id belongs to a gone instance.
    up.mode(Mode::Ok);
    let file = config_file(&config_text(&up, &addr.to_string()));
    let path = file.path().to_str().expect("utf-8 path").to_owned();
    let pc2 = Pollcast::spawn(&["--config", &path], &[]);
    assert_eq!(pc2.addr().await, addr);
    let mut s = Sse::connect_with(
        &format!("http://{addr}/sse/jobs"),
        &[("last-event-id", &snapshot_id)],
    )
    .await;
    let e = s.next().await;
    assert_eq!(e.event, "snapshot", "a fresh snapshot, not a replay");
    assert_eq!(data(&e), json!({"items": [{"id": 1}, {"id": 2}]}));
    assert_ne!(
        e.id.split(':').next(),
        snapshot_id.split(':').next(),
        "a new instance has a new epoch"
    );
    let exit = pc2.stop().await;
    assert!(exit.success());
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_then_a_restart_resyncs() {
    shutdown_on(libc::SIGTERM).await;
}

#[tokio::test]
async fn sigint_drains_and_exits_zero_then_a_restart_resyncs() {
    shutdown_on(libc::SIGINT).await;
}

/// Both stop signals find their handler from the moment pollcast says it
/// listens: one sent right then still stops it gracefully (exit 0), never
/// by the signal's default action. (SIGINT's handler was once installed
/// only when the main loop first waited, after the config watch was set
/// up: a SIGINT in between killed the process, cutting streams and
/// in-flight requests.)
#[tokio::test]
async fn a_stop_signal_right_after_listening_is_a_graceful_stop() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let file = config_file(&config_text(&up, "127.0.0.1:0"));
        let path = file.path().to_str().expect("utf-8 path").to_owned();
        let mut pc = Pollcast::spawn(&["--config", &path], &[]);
        pc.addr().await;
        pc.signal(signal);
        let exit = pc.exit().await;
        assert!(exit.success(), "signal {signal}: {exit:?}\n{}", pc.log());
    }
}

/// A pass-through request slower than `drain_timeout` does not hold the
/// process: it exits 0 when the drain timeout is up.
#[tokio::test]
async fn the_drain_timeout_bounds_shutdown() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    up.mode(Mode::Delay(Duration::from_secs(60)));
    let text = config_text(&up, "127.0.0.1:0")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"1s\"")
        .replace("[upstream]", "[upstream]\ntimeout = \"60s\"");
    let file = config_file(&text);
    let path = file.path().to_str().expect("utf-8 path").to_owned();
    let mut pc = Pollcast::spawn(&["--config", &path], &[]);
    let addr = pc.addr().await;
    let stuck = tokio::spawn(reqwest::get(format!("http://{addr}/api/jobs")));
    wait_until("the request reached the upstream", || {
        up.seen("/api/jobs")
            .iter()
            .any(|s| s.headers.contains_key("x-forwarded-for"))
    })
    .await;
    let t0 = Instant::now();
    pc.signal(libc::SIGTERM);
    let exit = pc.exit().await;
    let took = t0.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exit after {took:?} with a 1s drain timeout"
    );
    // The abandoned client sees its connection end, not a hang.
    let r = within("the abandoned request ends", stuck)
        .await
        .expect("join");
    assert!(r.is_err() || r.is_ok_and(|r| r.status().is_server_error()));
}
