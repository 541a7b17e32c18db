//! The registry of live feeds: at most one [`Feed`] and one poll loop per
//! [`FeedKey`], created by the first subscriber and removed by its poller
//! after the last subscriber left and the linger passed.
//!
//! This module owns feed lifetimes and the poll tasks (tracked, cancellable),
//! and enforces the feed-count limits (`max_feeds`,
//! `max_feeds_per_definition`) at the one place feeds are created.
//! Its map lock is held only for lookups and inserts, never across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::stats::DefStats;
use super::{poller, Feed, FeedKey};
use crate::config::{Config, FeedConfig, SseConfig};
use crate::limits::{LimitError, Limits};
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// Shared handle to all live feeds.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    feeds: Mutex<HashMap<FeedKey, Arc<Feed>>>,
    pub(crate) defs: Vec<Arc<FeedConfig>>,
    /// Counters per definition, parallel to `defs`.
    pub(crate) stats: Vec<Arc<DefStats>>,
    pub(crate) sse: SseConfig,
    pub(crate) upstream: Upstream,
    limits: Arc<Limits>,
    pub(crate) metrics: Arc<Metrics>,
    tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// A subscriber's claim on a feed; the feed may stop once all are dropped.
pub struct Subscription {
    pub feed: Arc<Feed>,
    pub metrics: Arc<Metrics>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.remove_subscriber();
    }
}

impl Registry {
    pub fn new(
        config: &Config,
        upstream: Upstream,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        for f in &config.feeds {
            metrics.declare_feed(&f.name);
        }
        Self {
            inner: Arc::new(Inner {
                feeds: Mutex::new(HashMap::new()),
                defs: config.feeds.iter().cloned().map(Arc::new).collect(),
                stats: config.feeds.iter().map(|_| Arc::default()).collect(),
                sse: config.sse.clone(),
                upstream,
                limits: Limits::new(&config.limits),
                metrics,
                tasks: TaskTracker::new(),
                shutdown,
            }),
        }
    }

    pub fn defs(&self) -> &[Arc<FeedConfig>] {
        &self.inner.defs
    }

    pub fn sse(&self) -> &SseConfig {
        &self.inner.sse
    }

    /// The admission limits shared by every SSE request.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.inner.limits
    }

    /// The upstream client (for `check` admission requests).
    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// Join (or start) the feed for `key`. Starting one may be refused by
    /// `max_feeds` or `max_feeds_per_definition`; joining never is.
    pub fn subscribe(&self, key: FeedKey) -> Result<Subscription, LimitError> {
        let mut feeds = self.inner.feeds();
        if let Some(feed) = feeds.get(&key) {
            feed.add_subscriber();
            return Ok(Subscription {
                feed: feed.clone(),
                metrics: self.inner.metrics.clone(),
            });
        }
        let cfg = self.inner.limits.config();
        if cfg.max_feeds > 0 && feeds.len() >= cfg.max_feeds {
            return Err(LimitError::Feeds(cfg.max_feeds));
        }
        // Counted only when a feed is created, so O(feeds) stays off the join path.
        if cfg.max_feeds_per_definition > 0
            && feeds.keys().filter(|k| k.def == key.def).count() >= cfg.max_feeds_per_definition
        {
            return Err(LimitError::FeedsPerDefinition(cfg.max_feeds_per_definition));
        }
        let def = self.inner.defs[key.def].clone();
        let feed = Arc::new(Feed::new(key.clone(), def, self.inner.sse.history));
        feed.add_subscriber();
        feeds.insert(key, feed.clone());
        drop(feeds);
        tracing::debug!(feed = %feed.label(), "feed started");
        self.inner
            .tasks
            .spawn(poller::run(feed.clone(), self.inner.clone()));
        Ok(Subscription {
            feed,
            metrics: self.inner.metrics.clone(),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// `(definition name, live feed instances, subscribers)` for every feed
    /// definition, including those with nothing live.
    pub fn live_by_definition(&self) -> Vec<(String, usize, usize)> {
        let mut out: Vec<(String, usize, usize)> =
            self.defs().iter().map(|d| (d.name.clone(), 0, 0)).collect();
        let feeds = self.inner.feeds();
        for f in feeds.values() {
            let subs = f.subscribers();
            match out.iter_mut().find(|(n, _, _)| *n == f.def.name) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += subs;
                }
                None => out.push((f.def.name.clone(), 1, subs)),
            }
        }
        out
    }

    /// Counters of feed definition `def` (an index into [`Registry::defs`]).
    pub fn stats(&self, def: usize) -> Option<&DefStats> {
        self.inner.stats.get(def).map(|s| &**s)
    }

    /// Per definition: (live instances, subscribers, instances whose upstream is failing).
    pub fn def_usage(&self) -> Vec<(usize, usize, usize)> {
        let feeds: Vec<Arc<Feed>> = self.inner.feeds().values().cloned().collect();
        let mut usage = vec![(0, 0, 0); self.inner.defs.len()];
        for f in feeds {
            if let Some(u) = usage.get_mut(f.key.def) {
                u.0 += 1;
                u.1 += f.subscribers();
                u.2 += usize::from(f.is_stale());
            }
        }
        usage
    }

    /// Live feed instances.
    pub fn live_feeds(&self) -> usize {
        self.inner.feeds().len()
    }

    /// Running poll loops (a loop outlives its feed's map entry only while exiting).
    pub fn live_pollers(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Subscribers over all feeds.
    pub fn subscribers(&self) -> usize {
        self.inner.feeds().values().map(|f| f.subscribers()).sum()
    }

    /// Wait for every poll loop to end (after shutdown was cancelled).
    pub async fn closed(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

impl Inner {
    fn feeds(&self) -> MutexGuard<'_, HashMap<FeedKey, Arc<Feed>>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove `feed` if nobody subscribes to it; the check and the removal
    /// happen under the map lock, so a concurrent subscribe either finds the
    /// feed before removal (and the removal is refused) or starts a new one.
    pub(crate) fn remove_if_idle(&self, feed: &Arc<Feed>) -> bool {
        let mut feeds = self.feeds();
        if feed.subscribers() > 0 {
            return false;
        }
        if feeds.get(&feed.key).is_some_and(|f| Arc::ptr_eq(f, feed)) {
            feeds.remove(&feed.key);
        }
        true
    }
}
