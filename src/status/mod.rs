//! The status page: one HTML file embedded in the binary, and an SSE stream of
//! JSON status snapshots (one per second) that the page renders live.
//!
//! This module owns the sampler (one task, ticking once per second, owned by
//! [`crate::Running`] and ended by the shutdown token) and the two responses.
//! Every snapshot is encoded once and shared by all status subscribers through
//! a `watch` channel. It must never show anything per user: only feed
//! definitions and their totals, the upstream without credentials, no query
//! strings and no headers.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::body::{BoxBody, BoxError};
use crate::config::UpstreamUrl;
use crate::feed::registry::Registry;
use crate::feed::stats::StatsSample;
use crate::wire as encode;

/// The page, served as is.
const PAGE: &str = include_str!("../../assets/status.html");

/// How often a snapshot is taken (and sent).
pub const PERIOD: Duration = Duration::from_secs(1);

/// Points kept for the events-per-second sparklines (one per period).
pub const HISTORY: usize = 60;

/// The latest encoded snapshot, shared by every status subscriber.
#[derive(Clone)]
pub struct StatusFeed {
    tx: watch::Sender<Bytes>,
}

impl Default for StatusFeed {
    fn default() -> Self {
        Self {
            tx: watch::channel(Bytes::new()).0,
        }
    }
}

impl StatusFeed {
    /// `GET <admin prefix>/status`: the HTML page.
    pub fn page(&self) -> Response<BoxBody> {
        let mut r = Response::new(
            Full::new(Bytes::from_static(PAGE.as_bytes()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        r
    }

    /// `GET <admin prefix>/status/events`: `event: status` with the JSON
    /// snapshot, once per second, until the client leaves or shutdown.
    pub fn events(&self, shutdown: &CancellationToken) -> Response<BoxBody> {
        let mut rx = self.tx.subscribe();
        // The current snapshot goes out at once; later ones as they come.
        rx.mark_changed();
        let state = (rx, shutdown.clone(), Some(encode::retry(PERIOD * 2)));
        let frames = futures_util::stream::unfold(state, |(mut rx, shutdown, first)| async move {
            if let Some(b) = first {
                return Some((Ok::<_, BoxError>(Frame::data(b)), (rx, shutdown, None)));
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    r = rx.changed() => r.ok()?,
                }
                let b = rx.borrow_and_update().clone();
                if !b.is_empty() {
                    return Some((Ok(Frame::data(b)), (rx, shutdown, None)));
                }
            }
        });
        let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    }
}

/// Take a snapshot every [`PERIOD`] and publish it, until `shutdown`.
pub async fn sample(
    feed: StatusFeed,
    registry: Registry,
    upstream: UpstreamUrl,
    cluster: Option<std::sync::Arc<crate::readiness::ClusterHealth>>,
    shutdown: CancellationToken,
) {
    let mut sampler = Sampler::new(&registry, &upstream);
    sampler.cluster = cluster;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let snapshot = sampler.snapshot(&registry);
        feed.tx
            .send_replace(encode::body("status", snapshot.to_string().as_bytes()));
    }
}

/// Turns counters into rates and keeps the sparkline history.
struct Sampler {
    started: Instant,
    /// The upstream as shown: scheme, host, port and prefix, never userinfo.
    upstream: String,
    /// `[cluster]` only: whether Redis answers (shown as a line).
    cluster: Option<std::sync::Arc<crate::readiness::ClusterHealth>>,
    prev: Option<(Instant, Vec<StatsSample>)>,
    /// Events per second per definition, oldest first.
    history: Vec<VecDeque<f64>>,
    total_history: VecDeque<f64>,
}

impl Sampler {
    fn new(registry: &Registry, upstream: &UpstreamUrl) -> Self {
        Self {
            started: Instant::now(),
            upstream: display_upstream(upstream),
            cluster: None,
            prev: None,
            history: vec![VecDeque::new(); registry.defs().len()],
            total_history: VecDeque::new(),
        }
    }

    fn snapshot(&mut self, registry: &Registry) -> Value {
        let now = Instant::now();
        let defs = registry.defs();
        // Indices are stable across reloads; new definitions extend them.
        if self.history.len() < defs.len() {
            self.history.resize(defs.len(), VecDeque::new());
        }
        let samples: Vec<StatsSample> = (0..defs.len())
            .map(|i| registry.stats(i).map(|s| s.sample()).unwrap_or_default())
            .collect();
        let usage = registry.def_usage();
        let (prev_at, prev) = match &self.prev {
            Some((at, p)) => (Some(*at), Some(p)),
            None => (None, None),
        };
        let secs = prev_at.map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        let rate = |cur: u64, old: Option<u64>| match old {
            Some(old) if secs > 0.0 => cur.saturating_sub(old) as f64 / secs,
            _ => 0.0,
        };

        let mut feeds = Vec::with_capacity(defs.len());
        let (mut total_subs, mut total_polls, mut total_events) = (0, 0.0, 0.0);
        for (i, def) in defs.iter() {
            let s = &samples[i];
            let p = prev.and_then(|p| p.get(i));
            let polls_per_s = rate(
                s.polls_ok + s.polls_failed,
                p.map(|p| p.polls_ok + p.polls_failed),
            );
            let events_per_s = rate(s.events, p.map(|p| p.events));
            let hist = &mut self.history[i];
            push_bounded(hist, events_per_s);
            let (instances, subscribers, stale) = usage.get(i).copied().unwrap_or_default();
            total_subs += subscribers;
            total_polls += polls_per_s;
            total_events += events_per_s;
            let state = match (instances, stale) {
                (0, _) => "idle",
                (_, 0) => "ok",
                _ => "stale",
            };
            feeds.push(json!({
                "name": def.name,
                "sse": def.sse_path(),
                "poll": def.poll,
                "interval_ms": millis(def.interval),
                "poll_delay_ms": s.delay_ms,
                "instances": instances,
                "subscribers": subscribers,
                "stale_instances": stale,
                "upstream_state": state,
                "polls_ok": s.polls_ok,
                "polls_failed": s.polls_failed,
                "polls_per_s": round2(polls_per_s),
                "events": s.events,
                "events_per_s": round2(events_per_s),
                "events_per_s_history": hist.iter().copied().map(round2).collect::<Vec<_>>(),
                "last_poll": s.last.as_ref().map(|l| json!({
                    "outcome": if l.ok { "ok" } else { "failed" },
                    "latency_ms": round2(l.latency.as_secs_f64() * 1000.0),
                    "ago_ms": SystemTime::now().duration_since(l.at).map_or(0, millis),
                    "error": l.error,
                })),
            }));
        }
        push_bounded(&mut self.total_history, total_events);
        self.prev = Some((now, samples));
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "upstream": self.upstream,
            "cluster": self.cluster.as_ref().map(|c| c.describe()),
            "period_ms": millis(PERIOD),
            "subscribers": total_subs,
            "polls_per_s": round2(total_polls),
            "events_per_s": round2(total_events),
            "events_per_s_history": self.total_history.iter().copied().map(round2).collect::<Vec<_>>(),
            "feeds": feeds,
        })
    }
}

fn push_bounded(q: &mut VecDeque<f64>, v: f64) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `http://host:port/prefix`, with any `user:password@` removed.
fn display_upstream(u: &UpstreamUrl) -> String {
    let authority = u.authority.as_str();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("http://{host}{}", u.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_is_shown_without_userinfo() {
        let u = UpstreamUrl::parse("http://admin:hunter2@api.internal:3000/v1").expect("url");
        assert_eq!(display_upstream(&u), "http://api.internal:3000/v1");
        let u = UpstreamUrl::parse("http://127.0.0.1:3000").expect("url");
        assert_eq!(display_upstream(&u), "http://127.0.0.1:3000");
    }

    #[test]
    fn history_is_bounded() {
        let mut q = VecDeque::new();
        for i in 0..(HISTORY + 5) {
            push_bounded(&mut q, i as f64);
        }
        assert_eq!(q.len(), HISTORY);
        assert_eq!(q.front().copied(), Some(5.0));
    }
}
