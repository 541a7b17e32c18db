//! Upstream faults, injected on real sockets: for each one, no `removed`
//! events, the last good snapshot keeps being served, one `stale` on entering
//! and one `recovered` on leaving, and full recovery without a restart.
//! Pass-through during an outage fails fast and does not pile up.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The whole fault cycle for one `fault`; `reason_parts` say what the `stale`
/// event's reason must say (any of them, when the exact first failure depends
/// on timing, e.g. a pooled connection cut under a request).
async fn fault_cycle(
    fault: Mode,
    reason_parts: &[&str],
    tweak: impl FnOnce(&mut pollcast::Config),
) {
    fault_cycle_wrapped(fault, reason_parts, tweak, |v| v).await
}

/// [`fault_cycle`] with the upstream's good bodies shaped by `wrap`.
async fn fault_cycle_wrapped(
    fault: Mode,
    reason_parts: &[&str],
    tweak: impl FnOnce(&mut pollcast::Config),
    wrap: fn(serde_json::Value) -> serde_json::Value,
) {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", wrap(json!([{"id": 1}, {"id": 2}])));
    let mut cfg = config(&up);
    cfg.upstream.timeout = Duration::from_millis(300);
    tweak(&mut cfg);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let snap = s.next().await;
    assert_eq!(snap.event, "snapshot");

    up.mode(fault.clone());
    let e = s.next().await;
    assert_eq!(e.event, "stale", "{fault:?}: {e:?}");
    let reason = data(&e)["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason_parts.iter().any(|p| reason.contains(p)),
        "{fault:?}: reason {reason:?} has none of {reason_parts:?}"
    );
    assert_eq!(data(&e)["failures"], 1);

    // Still failing: a subscriber arriving now gets the last good list, then the status.
    let mut late = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let snap = late.next().await;
    assert_eq!(snap.event, "snapshot");
    assert_eq!(data(&snap), json!({"items": [{"id": 1}, {"id": 2}]}));
    assert_eq!(late.next().await.event, "stale");
    assert!(pc.registry.live_feeds() == 1 && pc.registry.live_pollers() == 1);

    // Recovery with a change: exactly one `recovered`, then the change itself.
    up.set("/api/jobs", wrap(json!([{"id": 1}, {"id": 2}, {"id": 3}])));
    up.mode(Mode::Ok);
    for sub in [&mut s, &mut late] {
        let mut names = Vec::new();
        while names.last().map(String::as_str) != Some("added") {
            names.push(sub.next().await.event);
        }
        assert_eq!(
            names,
            ["recovered", "added"],
            "{fault:?}: one recovery, no removals, no second stale"
        );
    }
    // Fully back: a newcomer sees the new list and no status event.
    let mut fresh = Sse::connect(&url(&pc, "/sse/jobs")).await;
    let snap = fresh.next().await;
    assert_eq!(
        data(&snap),
        json!({"items": [{"id": 1}, {"id": 2}, {"id": 3}]})
    );
    up.set("/api/jobs", wrap(json!([{"id": 1}, {"id": 3}])));
    let e = fresh.next().await;
    assert_eq!((e.event.as_str(), data(&e)), ("removed", json!({"id": 2})));
    pc.stop().await;
}

#[tokio::test]
async fn connection_refused() {
    // The pooled connection is cut too, so the first failure may be seen
    // either as a refused connect or as a connection closed under a request.
    fault_cycle(
        Mode::Refused,
        &["refused or dropped", "request failed"],
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn reset_in_the_middle_of_the_body() {
    fault_cycle(Mode::ResetMidBody, &["body broke off"], |_| {}).await;
}

#[tokio::test]
async fn body_dripping_past_the_timeout() {
    fault_cycle(
        Mode::Drip(Duration::from_millis(100)),
        &["did not answer within 300ms"],
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn no_answer_before_the_timeout() {
    fault_cycle(
        Mode::Delay(Duration::from_secs(3)),
        &["did not answer within 300ms"],
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn a_run_of_500_502_503() {
    fault_cycle(
        Mode::Statuses(vec![500, 502, 503]),
        &["upstream returned 500"],
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn status_429_with_retry_after() {
    fault_cycle(
        Mode::RetryAfter(429, "1".into()),
        &["429 Too Many Requests, retry after 1s"],
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn invalid_json() {
    fault_cycle(Mode::InvalidJson, &["not valid JSON"], |_| {}).await;
}

#[tokio::test]
async fn truncated_json() {
    fault_cycle(
        Mode::Body(r#"[{"id": 1}, {"id": 2}, {"id""#),
        &["not valid JSON"],
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn items_array_vanished() {
    // The body itself should be the array; an error object instead is a
    // failed poll, never "every item removed".
    fault_cycle(
        Mode::Body(r#"{"error": "maintenance"}"#),
        &["not an array"],
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn items_pointer_finds_nothing() {
    fault_cycle_wrapped(
        Mode::Body(r#"{"meta": {}}"#),
        &["no value at items pointer `/data`"],
        |c| c.feeds[0].items = pollcast::pointer::Pointer::parse("/data").expect("ptr"),
        |v| json!({ "data": v }),
    )
    .await;
}

#[tokio::test]
async fn body_over_max_body_with_content_length() {
    fault_cycle(
        Mode::Huge {
            bytes: 64 * 1024,
            declared: true,
        },
        &["larger than 4096 bytes"],
        |c| c.upstream.max_body = 4096,
    )
    .await;
}

#[tokio::test]
async fn body_over_max_body_chunked() {
    fault_cycle(
        Mode::Huge {
            bytes: 64 * 1024,
            declared: false,
        },
        &["larger than 4096 bytes"],
        |c| c.upstream.max_body = 4096,
    )
    .await;
}

/// The failing polls of `/api/jobs`, after the first `skip` good ones.
fn poll_times(up: &TestUpstream, skip: usize) -> Vec<Instant> {
    up.seen("/api/jobs")
        .into_iter()
        .skip(skip)
        .map(|s| s.at)
        .collect()
}

#[tokio::test]
async fn failures_back_off_exponentially_up_to_the_cap() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    let interval = Duration::from_millis(50);
    let cap = Duration::from_millis(400);
    cfg.feeds[0].interval = interval;
    cfg.feeds[0].backoff_max = cap;
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    let good = up.hits("/api/jobs");
    up.mode(Mode::Statuses(vec![500, 502, 503]));
    assert_eq!(s.next().await.event, "stale");
    up.wait_hits("/api/jobs", good + 7).await;
    let t = poll_times(&up, good);
    // After failure k the wait is in [d/2, d] with d = min(interval * 2^k, cap):
    // the lower bounds prove the growth and the jitter's floor; a loaded
    // machine can only make gaps longer, so no upper bound is asserted here
    // (the unit test `backoff_grows_is_capped_and_jittered` pins it).
    for (k, w) in t.windows(2).enumerate() {
        let full = interval.saturating_mul(1 << (k + 1)).min(cap);
        let gap = w[1] - w[0];
        assert!(
            gap >= full.mul_f32(0.5 * 0.95),
            "gap {k} is {gap:?}, expected at least half of {full:?}"
        );
    }
    // No more than one stale for the whole run.
    up.mode(Mode::Ok);
    assert_eq!(s.next().await.event, "recovered");
    pc.stop().await;
}

#[tokio::test]
async fn retry_after_sets_the_next_poll_time_and_is_capped() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    cfg.feeds[0].interval = Duration::from_millis(50);
    cfg.feeds[0].backoff_max = Duration::from_secs(4);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");

    // Seconds form: the next poll comes no sooner than asked.
    let good = up.hits("/api/jobs");
    up.mode(Mode::RetryAfter(429, "1".into()));
    up.wait_hits("/api/jobs", good + 2).await;
    let t = poll_times(&up, good);
    assert!(
        t[1] - t[0] >= Duration::from_secs(1),
        "polled again {:?} after Retry-After: 1",
        t[1] - t[0]
    );

    // HTTP-date form on a 503. The poll already scheduled (up to ~1s away)
    // is the one that reads it, and dates have whole seconds: a date 4s
    // ahead still leaves more than 1s to wait when it is read.
    let good = up.hits("/api/jobs");
    let when = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(4));
    up.mode(Mode::RetryAfter(503, when));
    up.wait_hits("/api/jobs", good + 2).await;
    let t = poll_times(&up, good);
    assert!(t[1] - t[0] >= Duration::from_secs(1), "{:?}", t[1] - t[0]);

    // An hour is cut to backoff_max (4s): the feed is polled again well before.
    let good = up.hits("/api/jobs");
    up.mode(Mode::RetryAfter(503, "3600".into()));
    up.wait_hits("/api/jobs", good + 2).await;
    let t = poll_times(&up, good);
    let gap = t[1] - t[0];
    assert!(
        gap >= Duration::from_secs(4) && gap < Duration::from_secs(14),
        "{gap:?}"
    );
    up.mode(Mode::Ok);
    assert_eq!(s.next_named("recovered").await.event, "recovered");
    pc.stop().await;
}

/// Many concurrent pass-through requests against a dead or hanging upstream:
/// each gets its 502/504 within the timeout (plus slack for a loaded
/// machine), and together they take about one timeout, not one per request.
#[tokio::test]
async fn pass_through_during_an_outage_fails_fast_and_does_not_pile_up() {
    const N: usize = 50;
    let up = TestUpstream::start().await;
    up.set("/api/other", json!([]));
    let mut cfg = config(&up);
    let timeout = Duration::from_millis(500);
    cfg.upstream.timeout = timeout;
    let pc = pollcast::start(cfg).await.expect("start");
    let client = reqwest::Client::new();

    for (fault, status) in [
        (Mode::Delay(Duration::from_secs(30)), 504),
        (Mode::Refused, 502),
    ] {
        up.mode(fault.clone());
        if matches!(fault, Mode::Refused) {
            up.wait_listening(false).await;
        }
        let start = Instant::now();
        let reqs = (0..N).map(|_| {
            let c = client.clone();
            let u = url(&pc, "/api/other");
            async move {
                let r = c.get(u).send().await.expect("pollcast answers");
                (r.status().as_u16(), Instant::now())
            }
        });
        let done = within(
            "all pass-through requests",
            futures_util::future::join_all(reqs),
        )
        .await;
        let total = start.elapsed();
        assert!(
            done.iter().all(|(s, _)| *s == status),
            "{fault:?}: {:?}",
            done.iter().map(|d| d.0).collect::<Vec<_>>()
        );
        // Serially this would take N * timeout = 25s.
        assert!(
            total < timeout * 8,
            "{fault:?}: {N} requests took {total:?}"
        );
    }
    // And once the upstream is back, pass-through works again.
    up.mode(Mode::Ok);
    up.wait_listening(true).await;
    let r = client
        .get(url(&pc, "/api/other"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    pc.stop().await;
}
