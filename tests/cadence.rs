//! The poll cadence end to end (`src/feed/cadence.rs` has the exact numbers):
//! the adaptive interval (`interval_min`/`interval_max`), `Cache-Control:
//! max-age`, `Retry-After` on top of it, refreshes, and the fixed interval
//! without the keys. Timing is read from the upstream's own request log, and
//! asserted as lower bounds (a sleep never ends early) or as ratios within
//! one run; the decided delay is read from the `pollcast_poll_delay_seconds`
//! gauge, which is exact.

mod common;

use std::time::Duration;

use common::*;
use pollcast::config::FeedConfig;
use serde_json::json;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A feed polling `/api/<name>`, served at `/sse/<name>`.
fn feed(name: &str, interval: u64, range: Option<(u64, u64)>, backoff_max: u64) -> FeedConfig {
    let mut f = FeedConfig::new(name, &format!("/api/{name}"));
    f.interval = ms(interval);
    f.interval_min = range.map(|r| ms(r.0));
    f.interval_max = range.map(|r| ms(r.1));
    f.backoff_max = ms(backoff_max);
    f.linger = ms(500);
    f
}

fn with_feeds(up: &TestUpstream, feeds: Vec<FeedConfig>) -> pollcast::Config {
    let mut c = config(up);
    c.feeds = feeds;
    c
}

async fn subscribe(pc: &pollcast::Running, name: &str) -> Sse {
    let mut s = Sse::connect(&format!("http://{}/sse/{name}", pc.addr)).await;
    assert_eq!(s.next().await.event, "snapshot");
    s
}

/// `pollcast_poll_delay_seconds{feed=...}` as scraped now.
async fn delay(pc: &pollcast::Running, name: &str) -> Option<f64> {
    let text = scrape_metrics(pc).await;
    metric_value(&text, "pollcast_poll_delay_seconds", &[("feed", name)])
}

/// Wait until the feed's decided delay is exactly `want`.
async fn wait_delay(pc: &pollcast::Running, name: &str, want: Duration) {
    let mut last = None;
    let reached = tokio::time::timeout(DEADLINE, async {
        loop {
            last = delay(pc, name).await;
            if last == Some(want.as_secs_f64()) {
                return;
            }
            tokio::time::sleep(ms(5)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{name}: delay {last:?}, want {want:?}");
}

/// The time between consecutive polls of `path`, as the upstream saw them.
fn gaps(up: &TestUpstream, path: &str) -> Vec<Duration> {
    up.seen(path)
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn a_quiet_feed_slows_down_to_interval_max_while_a_changing_one_polls_at_interval_min() {
    let up = TestUpstream::start().await;
    up.set("/api/quiet", json!([{"id": 1}]));
    up.ticking("/api/busy");
    let range = Some((20, 640));
    let pc = pollcast::start(with_feeds(
        &up,
        vec![
            feed("quiet", 40, range, 2000),
            feed("busy", 40, range, 2000),
        ],
    ))
    .await
    .expect("start");
    let _quiet = subscribe(&pc, "quiet").await;
    let _busy = subscribe(&pc, "busy").await;

    // The quiet feed's delay grows by half per unchanged poll to the max...
    wait_delay(&pc, "quiet", ms(640)).await;
    let at_max = up.hits("/api/quiet");
    up.wait_hits("/api/quiet", at_max + 2).await;
    let quiet_polls = up.hits("/api/quiet");
    let busy_polls = up.hits("/api/busy");
    let quiet = gaps(&up, "/api/quiet");
    let mut want = ms(40);
    for (i, gap) in quiet.iter().enumerate() {
        want = (want + want / 2).min(ms(640));
        assert!(
            *gap >= want,
            "gap {i} of the quiet feed: {gap:?} < {want:?}"
        );
    }
    let (first, last) = (&quiet[..2], &quiet[quiet.len() - 2..]);
    let mean = |g: &[Duration]| g.iter().sum::<Duration>() / g.len() as u32;
    assert!(
        mean(last) >= mean(first) * 3,
        "quiet gaps did not grow: {quiet:?}"
    );

    // ...while the feed whose list changes on every poll stays at the min.
    assert_eq!(delay(&pc, "busy").await, Some(0.02));
    for gap in &gaps(&up, "/api/busy")[1..] {
        assert!(*gap >= ms(20), "{gap:?}");
    }
    assert!(
        busy_polls >= 2 * quiet_polls,
        "busy {busy_polls} polls, quiet {quiet_polls} over the same time"
    );
    pc.stop().await;
}

#[tokio::test]
async fn without_the_keys_the_interval_stays_fixed() {
    let up = TestUpstream::start().await;
    up.set("/api/fixed", json!([{"id": 1}]));
    up.validators(true);
    let pc = pollcast::start(with_feeds(&up, vec![feed("fixed", 50, None, 2000)]))
        .await
        .expect("start");
    let _s = subscribe(&pc, "fixed").await;
    up.wait_hits("/api/fixed", 16).await;
    assert!(up.not_modified() >= 10);
    assert_eq!(delay(&pc, "fixed").await, Some(0.05));
    let g = gaps(&up, "/api/fixed");
    assert!(g.iter().all(|gap| *gap >= ms(50)), "{g:?}");
    // An adaptive feed would be ~50 times slower by now (1.5^10).
    let (early, late) = (median(g[..5].to_vec()), median(g[g.len() - 5..].to_vec()));
    assert!(late <= early * 3, "the interval grew: {g:?}");
    pc.stop().await;
}

#[tokio::test]
async fn cache_control_max_age_stretches_the_gap_and_no_cache_or_zero_do_not() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    up.validators(true);
    up.list_headers("/api/jobs", &[("cache-control", "public, max-age=1")]);
    let pc = pollcast::start(with_feeds(&up, vec![feed("jobs", 50, None, 5000)]))
        .await
        .expect("start");
    let _s = subscribe(&pc, "jobs").await;

    // 200 and then 304s, each fresh for 1s: no poll before that second is over.
    up.wait_hits("/api/jobs", 4).await;
    assert!(up.not_modified() >= 2);
    assert_eq!(delay(&pc, "jobs").await, Some(1.0));
    let g = gaps(&up, "/api/jobs");
    assert!(g.iter().all(|gap| *gap >= ms(1000)), "{g:?}");

    // `no-cache` wins over max-age: back to the interval. 30 polls would take
    // at least 30s (far past the deadline) if the 60s were honoured even capped.
    up.list_headers("/api/jobs", &[("cache-control", "no-cache, max-age=60")]);
    let n = up.hits("/api/jobs");
    up.wait_hits("/api/jobs", n + 30).await;
    assert_eq!(delay(&pc, "jobs").await, Some(0.05));

    // max-age=0 changes nothing either.
    up.list_headers("/api/jobs", &[("cache-control", "max-age=0")]);
    let n = up.hits("/api/jobs");
    up.wait_hits("/api/jobs", n + 30).await;
    assert_eq!(delay(&pc, "jobs").await, Some(0.05));
    pc.stop().await;
}

#[tokio::test]
async fn max_age_is_capped_by_interval_max_or_else_backoff_max() {
    let up = TestUpstream::start().await;
    up.set("/api/adaptive", json!([{"id": 1}]));
    up.set("/api/fixed", json!([{"id": 1}]));
    for path in ["/api/adaptive", "/api/fixed"] {
        up.list_headers(path, &[("cache-control", "max-age=3600")]);
    }
    let pc = pollcast::start(with_feeds(
        &up,
        vec![
            feed("adaptive", 50, Some((50, 300)), 3_600_000),
            feed("fixed", 50, None, 400),
        ],
    ))
    .await
    .expect("start");
    let _a = subscribe(&pc, "adaptive").await;
    let _f = subscribe(&pc, "fixed").await;
    // Polling goes on (an hour's wait would time out), no faster than the cap.
    up.wait_hits("/api/adaptive", 5).await;
    up.wait_hits("/api/fixed", 5).await;
    assert_eq!(delay(&pc, "adaptive").await, Some(0.3));
    assert_eq!(delay(&pc, "fixed").await, Some(0.4));
    for (path, cap) in [("/api/adaptive", ms(300)), ("/api/fixed", ms(400))] {
        let g = gaps(&up, path);
        assert!(g.iter().all(|gap| *gap >= cap), "{path}: {g:?}");
    }
    pc.stop().await;
}

#[tokio::test]
async fn a_refresh_polls_at_once_and_a_change_drops_the_cadence_to_interval_min() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    up.list_headers("/api/jobs", &[("cache-control", "max-age=3600")]);
    let pc = pollcast::start(with_feeds(
        &up,
        vec![feed("jobs", 30_000, Some((20, 3_600_000)), 3_600_000)],
    ))
    .await
    .expect("start");
    let mut s = subscribe(&pc, "jobs").await;
    let http = reqwest::Client::new();
    let refresh = || async {
        let r = http
            .post(admin_url(&pc, "/_pollcast/refresh/jobs"))
            .send()
            .await
            .expect("refresh");
        assert_eq!(r.status(), 202);
    };
    wait_delay(&pc, "jobs", ms(3_600_000)).await;

    // The answer is fresh for an hour, yet a refresh polls now.
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    refresh().await;
    assert_eq!(s.next().await.event, "added");
    assert_eq!(up.hits("/api/jobs"), 2);

    // Without max-age, the change found by a refresh sets the cadence to
    // interval_min, from where it grows again: many polls, no 30s interval.
    up.list_headers("/api/jobs", &[]);
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    refresh().await;
    assert_eq!(s.next().await.event, "added");
    up.wait_hits("/api/jobs", 3 + 5).await;
    let g = gaps(&up, "/api/jobs");
    let mut want = ms(20);
    for (i, gap) in g[2..].iter().enumerate() {
        assert!(*gap >= want, "gap {i} after the change: {gap:?} < {want:?}");
        want += want / 2;
    }
    pc.stop().await;
}

#[tokio::test]
async fn retry_after_composes_with_the_adaptive_delay() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let pc = pollcast::start(with_feeds(
        &up,
        vec![feed("jobs", 100, Some((50, 400)), 5000)],
    ))
    .await
    .expect("start");
    let mut s = subscribe(&pc, "jobs").await;
    wait_delay(&pc, "jobs", ms(400)).await;

    // `Retry-After: 0` does not make a quiet feed poll sooner than its delay.
    up.mode(Mode::RetryAfter(503, "0".into()));
    let n = up.hits("/api/jobs");
    assert_eq!(s.next().await.event, "stale");
    up.wait_hits("/api/jobs", n + 3).await;
    let failing = gaps(&up, "/api/jobs");
    for gap in &failing[failing.len() - 2..] {
        assert!(*gap >= ms(400), "{failing:?}");
    }

    // A longer Retry-After is honoured in full (within backoff_max).
    up.mode(Mode::RetryAfter(429, "1".into()));
    let n = up.hits("/api/jobs");
    up.wait_hits("/api/jobs", n + 3).await;
    let failing = gaps(&up, "/api/jobs");
    for gap in &failing[failing.len() - 2..] {
        assert!(*gap >= ms(1000), "{failing:?}");
    }

    // After recovery the cadence continues where it was, at the max.
    up.mode(Mode::Ok);
    assert_eq!(s.next().await.event, "recovered");
    wait_delay(&pc, "jobs", ms(400)).await;
    pc.stop().await;
}
