//! The context built once at start-up and handed to the listener, the router,
//! the SSE admission and the admin endpoints: the feed registry beside what
//! is not the registry's (admission limits, `[sse]` settings, metrics, event
//! counters, the keepalive ticker), and the snapshots that metrics and stats
//! render from.
//!
//! This module owns the keepalive ticker's lifetime. It must never hold the
//! registry's lock itself (it asks the registry) nor decide anything about a
//! request: that is `sse`'s and `router`'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, SseConfig};
use crate::feed::registry::{Registry, Subscription};
use crate::feed::FeedKey;
use crate::limits::{LimitError, Limits};
use crate::metrics::{Gauges, Metrics};
use crate::stats::{Counters, Counts, Stats};
use crate::upstream::Upstream;

/// Everything shared by all connections and subscribers of one pollcast.
pub struct Shared {
    /// Feeds and their definitions.
    pub registry: Registry,
    /// The upstream client (pass-through, `check` admission requests).
    pub upstream: Upstream,
    /// `[sse]`: history, keepalive, write timeout.
    pub sse: SseConfig,
    /// Admission limits shared by every SSE request (the registry is handed
    /// the same for the feed limits it enforces).
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    /// Resync and cut-off counters, for `/_pollcast/stats`.
    pub counters: Arc<Counters>,
    /// The one timer of every subscriber's keepalive.
    pub keepalive: Keepalive,
    pub shutdown: CancellationToken,
}

impl Shared {
    pub fn new(
        registry: Registry,
        upstream: Upstream,
        sse: SseConfig,
        limits: Arc<Limits>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            keepalive: Keepalive::new(sse.keepalive, shutdown.clone()),
            registry,
            upstream,
            sse,
            limits,
            metrics,
            counters: Arc::default(),
            shutdown,
        }
    }

    /// The context of a registry of `config`'s feeds, each polling on its
    /// own (tests, benchmarks; start-up wires a cluster engine and the
    /// straggler cache in).
    pub fn from_config(
        config: &Config,
        upstream: Upstream,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        let registry = Registry::new(config, upstream.clone(), shutdown.clone(), metrics.clone());
        let limits = registry.feed_limits().clone();
        Self::new(
            registry,
            upstream,
            config.sse.clone(),
            limits,
            metrics,
            shutdown,
        )
    }

    /// Join (or start) the feed for `key` with nothing counted against a
    /// client (tests, internal use): see [`Shared::subscribe_from`].
    pub fn subscribe(&self, key: FeedKey) -> Result<Subscription, LimitError> {
        let claim = self.registry.subscribe(key)?;
        Ok(self.follow(claim))
    }

    /// Join (or start) the feed for `key` for a request from `client` (see
    /// `Registry::subscribe_from`), and keep the keepalive ticker running.
    pub fn subscribe_from(
        &self,
        key: FeedKey,
        client: std::net::IpAddr,
    ) -> Result<Subscription, LimitError> {
        let claim = self.registry.subscribe_from(key, client)?;
        Ok(self.follow(claim))
    }

    fn follow(&self, claim: crate::feed::registry::Claim) -> Subscription {
        // After the join: the feed is in the map the ticker reads.
        self.keepalive.ensure(&self.registry);
        Subscription::new(claim, self.metrics.clone(), self.counters.clone())
    }

    /// The admission limits.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// What a metrics scrape reads, taken now.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            live_by_definition: self.registry.live_by_definition(),
            live_pollers: self.registry.live_pollers(),
            feed_memory: self.limits.budget().used(),
            write_timeouts: self.counters.write_timeouts.load(Ordering::Relaxed),
            refused: self.limits.refused().to_vec(),
        }
    }

    /// The metrics exposition (OpenMetrics text) with the gauges of now.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(&self.gauges())
    }

    /// The live counts of `/_pollcast/stats`, taken now.
    pub fn counts(&self) -> Counts {
        let r = &self.registry;
        Counts::new(
            r.live_feeds(),
            r.live_pollers(),
            r.subscribers(),
            &self.counters,
        )
    }

    /// What `/_pollcast/stats` answers now.
    pub fn stats(&self) -> Stats {
        Stats::collect(&self.counts())
    }

    /// Wait for the keepalive ticker and every poll loop to end (after
    /// shutdown was cancelled).
    pub async fn closed(&self) {
        self.keepalive.closed().await;
        self.registry.closed().await;
    }
}

/// One timer for every subscriber's keepalive: every half `sse.keepalive`
/// each live feed is ticked, and a subscriber that wrote nothing since the
/// previous tick sends a keepalive (so no stream is silent for longer than
/// `keepalive`). A timer per subscriber would cost a timer-wheel entry and its
/// updates on every event, times the number of subscribers.
///
/// Started by a subscriber (so inside the runtime), it ends when no feed is
/// left and at shutdown, when every feed is woken once more so its
/// subscribers see it and leave.
pub struct Keepalive {
    half: Duration,
    ticking: Arc<AtomicBool>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Keepalive {
    fn new(keepalive: Duration, shutdown: CancellationToken) -> Self {
        Self {
            half: (keepalive / 2).max(Duration::from_millis(5)),
            ticking: Arc::default(),
            tasks: TaskTracker::new(),
            shutdown,
        }
    }

    /// Start the ticker unless it runs. Called after a subscriber joined a
    /// feed of `registry`, so the feed is in the map the ticker reads.
    pub fn ensure(&self, registry: &Registry) {
        if !self.ticking.swap(true, Ordering::SeqCst) {
            self.tasks.spawn(tick(
                registry.clone(),
                self.half,
                self.ticking.clone(),
                self.shutdown.clone(),
            ));
        }
    }

    /// Wait for the ticker to end (after shutdown was cancelled).
    pub async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn tick(
    registry: Registry,
    half: Duration,
    ticking: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        let mut live = registry.live();
        if live.is_empty() {
            // Idle: the next subscriber starts a new ticker. A subscriber
            // that joined between the look and the store either saw this
            // ticker running (and started none), then the second look sees
            // its feed and this ticker goes on; or it started a new one,
            // and this one ends.
            ticking.swap(false, Ordering::SeqCst);
            live = registry.live();
            if live.is_empty() || ticking.swap(true, Ordering::SeqCst) {
                return;
            }
        }
        for feed in live {
            feed.tick();
        }
    }
    for feed in registry.live() {
        feed.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FeedConfig, UpstreamUrl};

    /// Waits (in paused time) until `done`, at most a simulated minute.
    async fn until(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..60 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        done()
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_ends_with_the_last_feed_and_the_next_subscriber_starts_it_again() {
        // Nothing listens there: the loop never publishes, so it ends as
        // soon as its only subscriber leaves.
        let url = UpstreamUrl::parse("http://127.0.0.1:9").expect("url");
        let mut config = Config::new(url, vec![FeedConfig::new("t", "/t")]);
        config.sse.keepalive = Duration::from_secs(2);
        let shutdown = CancellationToken::new();
        let upstream = Upstream::new(&config.upstream);
        let shared = Shared::from_config(&config, upstream, shutdown.clone(), Arc::default());
        let key = || FeedKey::new(0, String::new(), None, None);

        let sub = shared.subscribe(key()).expect("no limits configured");
        assert_eq!(
            shared.keepalive.tasks.len(),
            1,
            "the first subscriber starts it"
        );
        let again = shared.subscribe(key()).expect("no limits configured");
        assert_eq!(shared.keepalive.tasks.len(), 1, "one ticker for everyone");
        drop((sub, again));
        assert!(
            until(|| shared.registry.live_feeds() == 0 && shared.keepalive.tasks.is_empty()).await,
            "no feed left: the ticker ended"
        );

        let sub = shared.subscribe(key()).expect("no limits configured");
        assert_eq!(shared.keepalive.tasks.len(), 1, "started again");
        shutdown.cancel();
        drop(sub);
        shared.closed().await;
        assert!(shared.keepalive.tasks.is_empty(), "and it ends at shutdown");
    }
}
