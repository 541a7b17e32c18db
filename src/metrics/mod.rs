//! `/metrics`: pollcast's counters, gauges and histograms in the Prometheus
//! (OpenMetrics) text format, via `prometheus-client`.
//!
//! This module owns every metric name and label. Labels are bounded by the
//! config: a feed *definition* name (`feed="jobs"`), an outcome, an event
//! name, a status class. It must never label by user, token, query string or
//! client address: those are unbounded and some are secrets.
//!
//! Counters are updated where things happen (poller, subscriber, router);
//! the gauges of live feeds and subscribers are read from a snapshot of the feed registry
//! at scrape time, so they can never drift from the truth. Beside them, the
//! standard `process_*` metrics every Prometheus client library exports
//! (unprefixed, so stock dashboards and alerts find them), read from
//! `/proc/self` at scrape time (`process.rs`). A scrape is answered in
//! OpenMetrics, or in Prometheus' classic text format for scrapers that
//! accept only that ([`Format`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

mod format;
mod process;

use format::prometheus_text;
pub use format::Format;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabel {
    feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    feed: String,
    outcome: PollOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    feed: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    /// The `[limits]` key that refused (`max_subscribers_per_client`, ...).
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// How one poll ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PollOutcome {
    /// 2xx with a usable body (changed or not).
    ok,
    /// 304: the upstream confirmed nothing changed (conditional polling).
    not_modified,
    /// No complete answer within `[upstream] timeout`.
    timeout,
    /// Connection refused, reset or not established.
    unreachable,
    /// A non-2xx status.
    bad_status,
    /// The body exceeded `[upstream] max_body`.
    too_large,
    /// 2xx, but the body was not the configured list shape.
    invalid_body,
    /// 2xx, but keeping it would pass `[limits] max_feed_memory`.
    over_budget,
    /// Anything else (the body broke off, ...).
    error,
}

/// How one `auth = "check"` admission request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CheckOutcome {
    /// 2xx: admitted.
    admit,
    /// 401/403: refused (or revoked).
    deny,
    /// Anything else, or no answer: refused with 502 (fail closed).
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    feed: String,
    outcome: CheckOutcome,
}

/// `2xx`, `3xx`, ... of a pass-through response.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct StatusClass(u8);

impl EncodeLabelValue for StatusClass {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(e, "{}xx", self.0)
    }
}

impl StatusClass {
    fn of(s: StatusCode) -> Self {
        // StatusCode is always 100..=999; classes above 5 are not HTTP's.
        Self((s.as_u16() / 100).min(5) as u8)
    }
}

fn latency_histogram() -> Histogram {
    // 1ms .. ~16s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// All of pollcast's metrics; one per running instance, shared by `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Serialises scrapes: the gauges are rebuilt from the feed registry.
    scrape: Mutex<()>,
    subscribers: Family<FeedLabel, Gauge>,
    feeds: Family<FeedLabel, Gauge>,
    poll_loops: Gauge,
    /// Bytes charged to `[limits] max_feed_memory` now.
    feed_memory: Gauge,
    poll_delay: Family<FeedLabel, Gauge<f64, AtomicU64>>,
    polls: Family<PollLabels, Counter>,
    poll_duration: Family<FeedLabel, Histogram, fn() -> Histogram>,
    upstream_bytes: Family<FeedLabel, Counter>,
    not_modified: Family<FeedLabel, Counter>,
    events: Family<EventLabels, Counter>,
    snapshots_sent: Family<FeedLabel, Counter>,
    resynced: Family<FeedLabel, Counter>,
    cut_off: Family<FeedLabel, Counter>,
    /// Mirrors `stats::Counters::write_timeouts` (counted by the listener).
    write_timeouts: Counter,
    proxy_requests: Family<StatusLabel, Counter>,
    proxy_duration: Family<StatusLabel, Histogram, fn() -> Histogram>,
    /// The two series above per status class (index `1..=5`), taken from
    /// their families on first use: every pass-through request records
    /// both, and a family lookup (lock, hash of the label) each time was a
    /// visible share of it. Lazily, so a class shows only once it occurred.
    proxy_by_class: [OnceLock<(Counter, Histogram)>; 6],
    limit_refusals: Family<LimitLabel, Counter>,
    stragglers: Family<AnsweredLabels, Counter>,
    stragglers_bytes: Family<FeedLabel, Counter>,
    auth_checks: Family<CheckLabels, Counter>,
    auth_checks_shared: Family<FeedLabel, Counter>,
    /// `[cluster]` only: 1 while Redis answers, 0 while this replica polls
    /// on its own (see [`Metrics::with_cluster`]).
    cluster_up: Gauge,
    cluster_fallbacks: Counter,
    cluster_publishes: Counter,
    cluster_rejected: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnsweredLabels {
    feed: String,
    /// `200` or `304`.
    status: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("pollcast");
        let m = Self {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            subscribers: Family::default(),
            feeds: Family::default(),
            poll_loops: Gauge::default(),
            feed_memory: Gauge::default(),
            poll_delay: Family::default(),
            polls: Family::default(),
            poll_duration: Family::new_with_constructor(latency_histogram),
            upstream_bytes: Family::default(),
            not_modified: Family::default(),
            events: Family::default(),
            snapshots_sent: Family::default(),
            resynced: Family::default(),
            cut_off: Family::default(),
            write_timeouts: Counter::default(),
            proxy_requests: Family::default(),
            proxy_duration: Family::new_with_constructor(latency_histogram),
            proxy_by_class: Default::default(),
            limit_refusals: Family::default(),
            stragglers: Family::default(),
            stragglers_bytes: Family::default(),
            auth_checks: Family::default(),
            auth_checks_shared: Family::default(),
            cluster_up: Gauge::default(),
            cluster_fallbacks: Counter::default(),
            cluster_publishes: Counter::default(),
            cluster_rejected: Counter::default(),
        };
        for limit in crate::limits::LimitError::KINDS {
            let _ = m.limit_refusals.get_or_create(&LimitLabel {
                limit: limit.into(),
            });
        }
        let info = Family::<VersionLabel, Gauge>::default();
        info.get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);
        r.register("build_info", "pollcast's version (value is always 1)", info);
        r.register(
            "subscribers",
            "Open SSE streams, per feed definition",
            m.subscribers.clone(),
        );
        r.register(
            "feeds",
            "Live feed instances (distinct query and credentials), per feed definition",
            m.feeds.clone(),
        );
        r.register(
            "poll_loops",
            "Running poll loops over all feeds",
            m.poll_loops.clone(),
        );
        r.register_with_unit(
            "feed_memory",
            "Memory the live feeds' retained bodies, snapshots and items are charged to [limits] max_feed_memory",
            Unit::Bytes,
            m.feed_memory.clone(),
        );
        r.register_with_unit(
            "poll_delay",
            "Wait before the next poll, as last decided by a poll loop of the feed definition (fixed interval, adaptive interval, Cache-Control max-age, back-off)",
            Unit::Seconds,
            m.poll_delay.clone(),
        );
        r.register(
            "polls",
            "Upstream polls, per feed definition and outcome",
            m.polls.clone(),
        );
        r.register_with_unit(
            "poll_duration",
            "Time from sending a poll to having its whole body (or failing)",
            Unit::Seconds,
            m.poll_duration.clone(),
        );
        r.register_with_unit(
            "upstream",
            "Poll response body bytes received from the upstream",
            Unit::Bytes,
            m.upstream_bytes.clone(),
        );
        r.register(
            "upstream_not_modified",
            "Polls the upstream answered with 304 Not Modified",
            m.not_modified.clone(),
        );
        r.register(
            "events",
            "Events published by feeds, each encoded once and shared by all subscribers, per event name",
            m.events.clone(),
        );
        r.register(
            "snapshots_sent",
            "Snapshots written to subscribers (stream start, failed resume, resync)",
            m.snapshots_sent.clone(),
        );
        r.register(
            "subscribers_resynced",
            "Subscribers that fell behind the event history and got a fresh snapshot",
            m.resynced.clone(),
        );
        r.register(
            "subscribers_cut_off",
            "Subscriber streams ended by pollcast (too slow, revoked, definition removed)",
            m.cut_off.clone(),
        );
        r.register(
            "connections_write_timeout",
            "Client connections closed because a write made no progress for [sse] write_timeout (stalled or vanished SSE clients)",
            m.write_timeouts.clone(),
        );
        r.register(
            "proxy_requests",
            "Pass-through requests, per response status class",
            m.proxy_requests.clone(),
        );
        r.register_with_unit(
            "proxy_duration",
            "Pass-through time until the response head (bodies stream afterwards)",
            Unit::Seconds,
            m.proxy_duration.clone(),
        );
        r.register(
            "limit_refusals",
            "SSE requests refused by a [limits] limit (429 per client, 503 server-wide), per limit key",
            m.limit_refusals.clone(),
        );
        r.register(
            "stragglers_answered",
            "Plain GET/HEAD polls of a live feed's upstream path answered from its latest poll instead of the upstream (serve_polls), per feed definition and status",
            m.stragglers.clone(),
        );
        r.register_with_unit(
            "stragglers",
            "Body bytes of those answers: upstream bytes the stragglers did not cost",
            Unit::Bytes,
            m.stragglers_bytes.clone(),
        );
        r.register(
            "auth_checks",
            "auth = \"check\" admission and recheck requests sent to the upstream, per feed definition and outcome",
            m.auth_checks.clone(),
        );
        r.register(
            "auth_checks_shared",
            "Admissions and rechecks answered by an identical check (same path and credentials) made or in flight for another subscriber, per feed definition",
            m.auth_checks_shared.clone(),
        );
        root.register_collector(Box::new(process::Collector));
        Self {
            registry: root,
            ..m
        }
    }

    /// The metrics of a replica in a `[cluster]`: also `pollcast_cluster_up`
    /// and the cluster counters (absent without a cluster, so an alert on
    /// `pollcast_cluster_up == 0` never fires for a lone pollcast).
    pub fn with_cluster() -> Self {
        let mut m = Self::new();
        // The root holds the process collector too; pollcast's own names carry the prefix.
        let r = m.registry.sub_registry_with_prefix("pollcast_cluster");
        r.register(
            "up",
            "1 while this replica's Redis answers; 0 while it polls its feeds on its own",
            m.cluster_up.clone(),
        );
        r.register(
            "fallbacks",
            "Times this replica lost Redis and fell back to polling on its own",
            m.cluster_fallbacks.clone(),
        );
        r.register(
            "publishes",
            "Polls this replica published to the cluster as a feed's leader",
            m.cluster_publishes.clone(),
        );
        r.register(
            "rejected",
            "Publishes the cluster refused (the lease or the expected sequence no longer held)",
            m.cluster_rejected.clone(),
        );
        m
    }

    /// The cluster's Redis answers (`true`) or not.
    pub fn cluster_up(&self, up: bool) {
        self.cluster_up.set(i64::from(up));
        if !up {
            self.cluster_fallbacks.inc();
        }
    }

    /// A leader's publish to the cluster was accepted (`true`) or refused.
    pub fn cluster_publish(&self, accepted: bool) {
        if accepted {
            self.cluster_publishes.inc();
        } else {
            self.cluster_rejected.inc();
        }
    }

    /// A check request for definition `feed` was sent and ended so.
    pub fn auth_check(&self, feed: &str, outcome: CheckOutcome) {
        self.auth_checks
            .get_or_create(&CheckLabels {
                feed: feed.into(),
                outcome,
            })
            .inc();
    }

    /// A check for definition `feed` used another subscriber's answer.
    pub fn auth_check_shared(&self, feed: &str) {
        self.auth_checks_shared
            .get_or_create(&FeedLabel { feed: feed.into() })
            .inc();
    }

    /// One poll of feed definition `feed` ended with `outcome` after `took`,
    /// having received `bytes` of body.
    pub fn poll(&self, feed: &str, outcome: PollOutcome, took: Duration, bytes: u64) {
        let f = FeedLabel { feed: feed.into() };
        self.polls
            .get_or_create(&PollLabels {
                feed: feed.into(),
                outcome,
            })
            .inc();
        self.poll_duration
            .get_or_create(&f)
            .observe(took.as_secs_f64());
        if bytes > 0 {
            self.upstream_bytes.get_or_create(&f).inc_by(bytes);
        }
        if outcome == PollOutcome::not_modified {
            self.not_modified.get_or_create(&f).inc();
        }
    }

    /// A poll loop of definition `feed` waits `delay` before its next poll.
    pub fn poll_delay(&self, feed: &str, delay: Duration) {
        self.poll_delay
            .get_or_create(&FeedLabel { feed: feed.into() })
            .set(delay.as_secs_f64());
    }

    /// `n` events named `event` published by a feed of definition `feed`.
    pub fn events(&self, feed: &str, event: &str, n: u64) {
        self.events
            .get_or_create(&EventLabels {
                feed: feed.into(),
                event: event.into(),
            })
            .inc_by(n);
    }

    pub fn snapshot_sent(&self, feed: &str) {
        self.snapshots_sent
            .get_or_create(&FeedLabel { feed: feed.into() })
            .inc();
    }

    pub fn resynced(&self, feed: &str) {
        self.resynced
            .get_or_create(&FeedLabel { feed: feed.into() })
            .inc();
    }

    pub fn cut_off(&self, feed: &str) {
        self.cut_off
            .get_or_create(&FeedLabel { feed: feed.into() })
            .inc();
    }

    /// One pass-through request answered with `status` after `took`.
    pub fn proxied(&self, status: StatusCode, took: Duration) {
        let class = StatusClass::of(status);
        let (requests, duration) = self.proxy_by_class[usize::from(class.0)].get_or_init(|| {
            let l = StatusLabel { status: class };
            (
                self.proxy_requests.get_or_create(&l).clone(),
                self.proxy_duration.get_or_create(&l).clone(),
            )
        });
        requests.inc();
        duration.observe(took.as_secs_f64());
    }

    /// A poll of feed definition `feed`'s upstream path answered from its
    /// latest poll with `status` (200 or 304) and `bytes` of body.
    pub fn straggler(&self, feed: &str, status: StatusCode, bytes: u64) {
        self.stragglers
            .get_or_create(&AnsweredLabels {
                feed: feed.into(),
                status: status.as_str().into(),
            })
            .inc();
        if bytes > 0 {
            self.stragglers_bytes
                .get_or_create(&FeedLabel { feed: feed.into() })
                .inc_by(bytes);
        }
    }

    /// The straggler series of a `serve_polls` definition, at zero from the start.
    pub fn declare_stragglers(&self, feed: &str) {
        for status in ["200", "304"] {
            let _ = self.stragglers.get_or_create(&AnsweredLabels {
                feed: feed.into(),
                status: status.into(),
            });
        }
        let _ = self
            .stragglers_bytes
            .get_or_create(&FeedLabel { feed: feed.into() });
    }

    /// Make a feed definition's series exist (at zero) before its first use,
    /// so dashboards and alerts see it from the start.
    pub fn declare_feed(&self, feed: &str) {
        let f = FeedLabel { feed: feed.into() };
        let _ = self.upstream_bytes.get_or_create(&f);
        let _ = self.not_modified.get_or_create(&f);
        let _ = self.snapshots_sent.get_or_create(&f);
        let _ = self.resynced.get_or_create(&f);
        let _ = self.cut_off.get_or_create(&f);
    }

    /// The text exposition in `format`, with the live gauges of `now`.
    pub fn render_as(&self, now: &Gauges, format: Format) -> String {
        let text = self.render(now);
        match format {
            Format::OpenMetrics => text,
            Format::Prometheus => prometheus_text(&text),
        }
    }

    /// The OpenMetrics text exposition, with the live gauges of `now`.
    pub fn render(&self, now: &Gauges) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.subscribers.clear();
        self.feeds.clear();
        for (name, live, subs) in &now.live_by_definition {
            let f = FeedLabel { feed: name.clone() };
            self.feeds.get_or_create(&f).set(*live as i64);
            self.subscribers.get_or_create(&f).set(*subs as i64);
        }
        self.poll_loops.set(now.live_pollers as i64);
        self.feed_memory
            .set(i64::try_from(now.feed_memory).unwrap_or(i64::MAX));
        // The listener counts these without knowing a feed; mirror its
        // monotonic count (the scrape lock makes the catch-up exact).
        self.write_timeouts
            .inc_by(now.write_timeouts.saturating_sub(self.write_timeouts.get()));
        // The limits keep their own counts; bring the counters up to them.
        for (limit, total) in &now.refused {
            let c = self.limit_refusals.get_or_create(&LimitLabel {
                limit: (*limit).into(),
            });
            c.inc_by(total.saturating_sub(c.get()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What a scrape reads from the live feeds, taken at the scrape by whoever
/// holds them (the start-up context), so this module never imports the
/// registry that records into it.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// `(definition, live instances, subscribers)` per feed definition.
    pub live_by_definition: Vec<(String, usize, usize)>,
    /// Running poll loops.
    pub live_pollers: usize,
    /// Bytes charged to the feed memory budget.
    pub feed_memory: u64,
    /// Connections cut by the write timeout since start.
    pub write_timeouts: u64,
    /// Requests refused so far, per limit.
    pub refused: Vec<(&'static str, u64)>,
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(StatusCode::OK), StatusClass(2));
        assert_eq!(StatusClass::of(StatusCode::NOT_FOUND), StatusClass(4));
        assert_eq!(StatusClass::of(StatusCode::BAD_GATEWAY), StatusClass(5));
    }
}
