//! `/metrics`: names and values after real traffic through a real pollcast.

mod common;

use common::{
    config, metric_value, must_series, scrape_metrics, series, wait_until, Mode, Sse, TestUpstream,
};
use serde_json::json;

#[tokio::test]
async fn metrics_count_feeds_polls_events_and_pass_through() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "owner": "{{token}}"}]));
    let p = pollcast::start(config(&up)).await.expect("start");
    let sse = format!("http://{}/sse/jobs", p.addr);

    // Never exported, before any traffic: the definition's series exist at 0.
    let m = scrape_metrics(&p).await;
    assert_eq!(must_series(&m, r#"pollcast_feeds{feed="jobs"}"#), 0.0);
    assert_eq!(must_series(&m, r#"pollcast_subscribers{feed="jobs"}"#), 0.0);
    assert_eq!(
        must_series(&m, r#"pollcast_upstream_not_modified_total{feed="jobs"}"#),
        0.0
    );
    assert_eq!(
        must_series(&m, r#"pollcast_subscribers_cut_off_total{feed="jobs"}"#),
        0.0
    );
    assert_eq!(
        must_series(&m, "pollcast_connections_write_timeout_total"),
        0.0
    );
    let info = format!(
        "pollcast_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(must_series(&m, &info), 1.0);

    // Two users: two feed instances of one definition, three subscribers.
    let mut a1 = Sse::connect_with(&sse, &[("authorization", "Bearer tok-alice")]).await;
    let mut a2 = Sse::connect_with(&sse, &[("authorization", "Bearer tok-alice")]).await;
    let mut b = Sse::connect_with(&sse, &[("authorization", "Bearer tok-bob")]).await;
    for s in [&mut a1, &mut a2, &mut b] {
        s.next_named("snapshot").await;
    }
    let m = scrape_metrics(&p).await;
    assert_eq!(must_series(&m, r#"pollcast_feeds{feed="jobs"}"#), 2.0);
    assert_eq!(must_series(&m, r#"pollcast_subscribers{feed="jobs"}"#), 3.0);
    assert_eq!(
        must_series(&m, r#"pollcast_snapshots_sent_total{feed="jobs"}"#),
        3.0
    );
    assert!(must_series(&m, r#"pollcast_polls_total{feed="jobs",outcome="ok"}"#) >= 2.0);
    assert!(must_series(&m, r#"pollcast_poll_duration_seconds_count{feed="jobs"}"#) >= 2.0);
    assert!(must_series(&m, r#"pollcast_upstream_bytes_total{feed="jobs"}"#) > 0.0);
    // The harness reads a series by name and labels, in any order.
    assert_eq!(
        metric_value(
            &m,
            "pollcast_polls_total",
            &[("outcome", "ok"), ("feed", "jobs")]
        ),
        series(&m, r#"pollcast_polls_total{feed="jobs",outcome="ok"}"#)
    );
    // Per definition, never per user: no token or identity in any label.
    assert!(!m.contains("tok-alice") && !m.contains("tok-bob"), "{m}");

    // A change: one `added` per feed instance, however many subscribers.
    up.set(
        "/api/jobs",
        json!([{"id": 1, "owner": "{{token}}"}, {"id": 2, "owner": "{{token}}"}]),
    );
    for s in [&mut a1, &mut a2, &mut b] {
        s.next_named("added").await;
    }
    let m = scrape_metrics(&p).await;
    assert_eq!(
        must_series(&m, r#"pollcast_events_total{feed="jobs",event="added"}"#),
        2.0
    );

    // An outage: failed polls by outcome, one `stale` per instance, then `recovered`.
    up.mode(Mode::Status(500));
    for s in [&mut a1, &mut a2, &mut b] {
        s.next_named("stale").await;
    }
    let m = scrape_metrics(&p).await;
    assert!(
        must_series(
            &m,
            r#"pollcast_polls_total{feed="jobs",outcome="bad_status"}"#
        ) >= 2.0
    );
    assert_eq!(
        must_series(&m, r#"pollcast_events_total{feed="jobs",event="stale"}"#),
        2.0
    );
    up.mode(Mode::Ok);
    for s in [&mut a1, &mut a2, &mut b] {
        s.next_named("recovered").await;
    }
    let m = scrape_metrics(&p).await;
    assert_eq!(
        must_series(
            &m,
            r#"pollcast_events_total{feed="jobs",event="recovered"}"#
        ),
        2.0
    );

    // Pass-through, by status class, with a latency histogram.
    for q in ["", "?status=201", "?status=404"] {
        let r = reqwest::get(format!("http://{}/echo{q}", p.addr))
            .await
            .expect("echo");
        r.bytes().await.expect("body");
    }
    let m = scrape_metrics(&p).await;
    assert_eq!(
        must_series(&m, r#"pollcast_proxy_requests_total{status="2xx"}"#),
        2.0
    );
    assert_eq!(
        must_series(&m, r#"pollcast_proxy_requests_total{status="4xx"}"#),
        1.0
    );
    assert_eq!(
        must_series(&m, r#"pollcast_proxy_duration_seconds_count{status="2xx"}"#),
        2.0
    );
    assert_eq!(
        must_series(&m, r#"pollcast_proxy_duration_seconds_count{status="4xx"}"#),
        1.0
    );
    // Scrapes are not pass-through requests.
    assert_eq!(
        series(&m, r#"pollcast_proxy_requests_total{status="5xx"}"#),
        None
    );

    // Everyone leaves: the gauges go back to zero once the feeds linger out.
    drop((a1, a2, b));
    wait_until("feeds to linger out", || p.registry.live_feeds() == 0).await;
    let m = scrape_metrics(&p).await;
    assert_eq!(must_series(&m, r#"pollcast_feeds{feed="jobs"}"#), 0.0);
    assert_eq!(must_series(&m, r#"pollcast_subscribers{feed="jobs"}"#), 0.0);
    p.stop().await;
}

/// The harness's metrics parser: exact label sets, escapes, comments.
#[test]
fn metric_value_matches_the_whole_label_set_and_unescapes_values() {
    let text = "# HELP a_total An example.\n\
                # TYPE a_total counter\n\
                a_total{x=\"1\",y=\"2\"} 3\n\
                a_total{x=\"q\\\"\\\\\",y=\"2\"} 4 1700000000\n\
                b 5\n";
    assert_eq!(
        metric_value(text, "a_total", &[("y", "2"), ("x", "1")]),
        Some(3.0)
    );
    assert_eq!(
        metric_value(text, "a_total", &[("x", "1")]),
        None,
        "a subset is not a match"
    );
    assert_eq!(
        metric_value(text, "a_total", &[("x", "q\"\\"), ("y", "2")]),
        Some(4.0)
    );
    assert_eq!(metric_value(text, "b", &[]), Some(5.0));
    assert_eq!(metric_value(text, "a", &[]), None, "names match whole");
}
