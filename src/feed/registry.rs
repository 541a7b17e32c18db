//! The registry of live feeds: at most one [`Feed`] and one poll loop per
//! [`FeedKey`], created by the first subscriber and removed by its poller
//! after the last subscriber left and the linger passed.
//!
//! This module owns feed lifetimes and the poll tasks (tracked, cancellable),
//! and enforces the feed limits (`max_feeds`, `max_feeds_per_definition`,
//! `max_feeds_per_client`, the `max_feed_memory` reservation) at the one
//! place feeds are created; a poll task holds its feed's per-client permit
//! and memory charge until it ends.
//! Its map lock is held only for lookups and inserts, never across an await.
//!
//! It also owns the feed *definitions* in force ([`Defs`]: definitions and
//! the SSE routes to them), swapped whole by a config reload and read by
//! each request without a lock (`arc-swap`). Indices into the definitions
//! are stable: a reload appends new and changed definitions and retires the
//! old ones, so a [`FeedKey`] never silently points at another definition.
//!
//! It holds nothing else: admission limits, `[sse]` settings, metrics,
//! counters and the keepalive ticker live in the start-up context
//! (`crate::shared`); each poll loop gets the [`poller::PollKit`] the registry
//! was handed; write-through goes through a [`Refresher`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::defs::same;
pub use super::defs::{Defs, Reloaded};
use super::source::{Local, Refresh, Source};
use super::stats::DefStats;
use super::{poller, Feed, FeedKey};
use crate::config::{Config, FeedConfig};
use crate::limits::{LimitError, Limits};
use crate::metrics::Metrics;
use crate::stats::Counters;
use crate::upstream::Upstream;

/// Shared handle to all live feeds.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    feeds: Mutex<HashMap<FeedKey, Arc<Feed>>>,
    /// Replaced only under the `feeds` lock (see [`Registry::reload`]).
    defs: ArcSwap<Defs>,
    /// Events each new feed keeps for resuming subscribers (`sse.history`).
    history: usize,
    /// What each poll loop is handed; its limits are the feed limits this
    /// registry enforces.
    kit: poller::PollKit,
    tasks: TaskTracker,
    /// Where each feed's events come from (its own poll loop by default).
    source: Arc<dyn Source>,
}

/// A subscriber's claim on a feed; the feed may stop once all are dropped.
pub struct Claim {
    pub feed: Arc<Feed>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.feed.remove_subscriber();
        if self.feed.subscribers() == 0 {
            // The poll loop of a feed that has not served anyone yet ends
            // at once (see `poller::run`); it learns of it through this.
            self.feed.wake();
        }
    }
}

/// A [`Claim`] with what its subscriber records into.
pub struct Subscription {
    pub feed: Arc<Feed>,
    pub metrics: Arc<Metrics>,
    pub counters: Arc<Counters>,
    _claim: Claim,
}

impl Subscription {
    pub fn new(claim: Claim, metrics: Arc<Metrics>, counters: Arc<Counters>) -> Self {
        Self {
            feed: claim.feed.clone(),
            metrics,
            counters,
            _claim: claim,
        }
    }
}

impl Registry {
    /// A registry of `config`'s feeds, each polling on its own, with the
    /// limits of `config` (tests, benchmarks).
    pub fn new(
        config: &Config,
        upstream: Upstream,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        for f in &config.feeds {
            metrics.declare_feed(&f.name);
        }
        let kit = poller::PollKit {
            upstream,
            metrics,
            limits: Limits::new(&config.limits, &config.upstream.trusted_proxies),
            stragglers: Arc::new(poller::NoStragglers),
            shutdown,
        };
        Self::with_source(&config.feeds, config.sse.history, kit, Arc::new(Local))
    }

    /// A registry of `feeds` whose loops are handed `kit` and whose feeds
    /// take their events from `source` (their own poll loop, or a cluster
    /// engine), keeping `history` events each.
    pub(crate) fn with_source(
        feeds: &[FeedConfig],
        history: usize,
        kit: poller::PollKit,
        source: Arc<dyn Source>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                feeds: Mutex::new(HashMap::new()),
                defs: ArcSwap::from_pointee(Defs::new(feeds)),
                history,
                kit,
                tasks: TaskTracker::new(),
                source,
            }),
        }
    }

    /// The definitions in force now (a snapshot: a reload does not change it).
    pub fn defs(&self) -> Arc<Defs> {
        self.inner.defs.load_full()
    }

    /// The definition indices and path parameters for an SSE request path.
    pub fn route(&self, path: &str) -> Option<(Vec<usize>, Vec<String>)> {
        self.inner.defs.load().route(path)
    }

    /// Put the feed definitions of a new, already validated config in force.
    ///
    /// Unchanged definitions keep their live feeds and subscribers. Live
    /// feeds of removed or changed definitions are retired: their poll loops
    /// stop and their subscribers get a `retry:` hint and an end of stream,
    /// so EventSource reconnects to the new definition (or to the upstream,
    /// if the path is no longer a feed). New definitions are routed at once.
    pub fn reload(&self, feeds: &[FeedConfig]) -> Reloaded {
        // Under the map lock, so no subscribe can join a feed of a
        // definition between its retirement and the sweep below.
        let mut map = self.inner.feeds();
        let old = self.inner.defs.load_full();
        let by_name: HashMap<&str, usize> = old.iter().map(|(i, d)| (d.name.as_str(), i)).collect();
        let mut next = Defs {
            all: old.all.clone(),
            retired: vec![true; old.all.len()],
            stats: old.stats.clone(),
            routes: HashMap::new(),
            patterns: Vec::new(),
        };
        let mut r = Reloaded::default();
        let mut seen = HashSet::new();
        for f in feeds {
            seen.insert(f.name.as_str());
            match by_name.get(f.name.as_str()) {
                Some(&i) if same(&old.all[i], f) => {
                    next.retired[i] = false;
                    next.add_route(f, i);
                    r.unchanged.push(f.name.clone());
                }
                Some(_) => {
                    next.push(f);
                    r.changed.push(f.name.clone());
                }
                None => {
                    next.push(f);
                    r.added.push(f.name.clone());
                }
            }
        }
        r.removed = old
            .iter()
            .filter(|(_, d)| !seen.contains(d.name.as_str()))
            .map(|(_, d)| d.name.clone())
            .collect();
        let retired = next.retired.clone();
        self.inner.defs.store(Arc::new(next));
        map.retain(|key, feed| {
            if retired[key.def] {
                r.ended_subscribers += feed.subscribers();
                feed.retire();
                false
            } else {
                true
            }
        });
        r
    }

    /// Join (or start) the feed for `key`. Starting one may be refused by
    /// `max_feeds` or `max_feeds_per_definition`; joining never is. Nothing
    /// is counted against a client (tests, internal use): see
    /// [`Registry::subscribe_from`].
    pub fn subscribe(&self, key: FeedKey) -> Result<Claim, LimitError> {
        self.join_or_start(key, None)
    }

    /// [`Registry::subscribe`] for a request from `client`: a feed it starts
    /// counts against it (`max_feeds_per_client`) until the feed ends, and
    /// must fit the memory budget (`max_feed_memory`).
    pub(crate) fn subscribe_from(
        &self,
        key: FeedKey,
        client: std::net::IpAddr,
    ) -> Result<Claim, LimitError> {
        self.join_or_start(key, Some(client))
    }

    fn join_or_start(
        &self,
        key: FeedKey,
        client: Option<std::net::IpAddr>,
    ) -> Result<Claim, LimitError> {
        let mut feeds = self.inner.feeds();
        if let Some(feed) = feeds.get(&key) {
            feed.add_subscriber();
            return Ok(Claim { feed: feed.clone() });
        }
        let limits = &self.inner.kit.limits;
        let cfg = limits.config();
        if cfg.max_feeds > 0 && feeds.len() >= cfg.max_feeds {
            return Err(LimitError::Feeds(cfg.max_feeds));
        }
        // Counted only when a feed is created, so O(feeds) stays off the join path.
        if cfg.max_feeds_per_definition > 0
            && feeds.keys().filter(|k| k.def == key.def).count() >= cfg.max_feeds_per_definition
        {
            return Err(LimitError::FeedsPerDefinition(cfg.max_feeds_per_definition));
        }
        let defs = self.inner.defs.load();
        let def = defs.all[key.def].clone();
        let feed = Arc::new(Feed::new(key.clone(), def, self.inner.history));
        if defs.retired[key.def] {
            // Routed just before a reload retired the definition: send this
            // subscriber to the new one too, without starting a poll loop.
            feed.retire();
            feed.add_subscriber();
            return Ok(Claim { feed });
        }
        let starter = client.map(|c| limits.start_feed(c)).transpose()?;
        let charge = limits
            .budget()
            .reserve(key.def)
            .ok_or(LimitError::FeedMemory(limits.budget().cap()))?;
        feed.add_subscriber();
        feeds.insert(key, feed.clone());
        drop(feeds);
        tracing::debug!(feed = %feed.label(), "feed started");
        let inner = self.inner.clone();
        let ctx = self.inner.kit.ctx(
            self.inner.stats(feed.key.def),
            Arc::new(move |f| inner.remove_if_idle(f)),
        );
        let run = self.inner.source.run(feed.clone(), ctx, charge);
        self.inner.tasks.spawn(async move {
            // Counted against its starter until the loop (the feed) ends.
            let _starter = starter;
            run.await;
        });
        Ok(Claim { feed })
    }

    /// The limits of the feeds this registry starts (the same the start-up
    /// context admits requests with).
    pub(crate) fn feed_limits(&self) -> &Arc<Limits> {
        &self.inner.kit.limits
    }

    /// Every live feed (for the keepalive ticker).
    pub fn live(&self) -> Vec<Arc<Feed>> {
        self.inner.feeds().values().cloned().collect()
    }

    /// `(definition name, live feed instances, subscribers)` for every feed
    /// definition, including those with nothing live.
    pub(crate) fn live_by_definition(&self) -> Vec<(String, usize, usize)> {
        let mut out: Vec<(String, usize, usize)> = self
            .defs()
            .iter()
            .map(|(_, d)| (d.name.clone(), 0, 0))
            .collect();
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
    pub fn stats(&self, def: usize) -> Option<Arc<DefStats>> {
        self.inner.defs.load().stats.get(def).cloned()
    }

    /// Per definition: (live instances, subscribers, instances whose upstream is failing).
    pub fn def_usage(&self) -> Vec<(usize, usize, usize)> {
        let feeds: Vec<Arc<Feed>> = self.inner.feeds().values().cloned().collect();
        let mut usage = vec![(0, 0, 0); self.inner.defs.load().len()];
        for f in feeds {
            if let Some(u) = usage.get_mut(f.key.def) {
                u.0 += 1;
                u.1 += f.subscribers();
                u.2 += usize::from(f.is_stale());
            }
        }
        usage
    }

    /// The handle write-through and the refresh endpoint ask feeds to poll
    /// now through.
    pub fn refresher(&self) -> Refresher {
        Refresher {
            inner: self.inner.clone(),
        }
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

/// Asks live feeds to poll now: write-through (a write succeeded upstream)
/// and the refresh endpoint. A cheap clone, and all it can do.
#[derive(Clone)]
pub struct Refresher {
    inner: Arc<Inner>,
}

impl Refresher {
    /// Write-through: a write to `path` succeeded upstream, so every live feed
    /// polling `path` or a parent of it (`/api/jobs` for `PATCH /api/jobs/7`)
    /// polls now. Returns how many feeds were asked.
    ///
    /// Both paths are compared in RFC 3986's normal form (see
    /// [`crate::route::normalize`]): a write to `/api/jobs/%2e%2e/track` is a
    /// write to `/api/track` for any upstream that resolves dot-segments, and
    /// one that does not answers it for a path no feed polls.
    pub fn refresh_path(&self, path: &str) -> usize {
        let path = crate::route::normalize(path);
        self.inner.source.refreshed(&Refresh::Path(path.clone()));
        self.refresh_local_path(&path)
    }

    /// [`Refresher::refresh_path`] on this replica only, `path` normalized
    /// (a request passed on by another replica).
    pub(crate) fn refresh_local_path(&self, path: &str) -> usize {
        let feeds = self.inner.feeds();
        let mut n = 0;
        for feed in feeds.values() {
            // The instance's own path: a write to `/api/projects/3/jobs/7`
            // refreshes the feed of project 3 only.
            if covers(&crate::route::normalize(&feed.poll_path), path) {
                feed.refresh();
                n += 1;
            }
        }
        n
    }

    /// The refresh endpoint: every live feed of the definition `name` polls
    /// now. `None` when no definition has that name.
    pub(crate) fn refresh_definition(&self, name: &str) -> Option<usize> {
        let n = self.refresh_local_definition(name)?;
        self.inner
            .source
            .refreshed(&Refresh::Definition(name.to_owned()));
        Some(n)
    }

    /// [`Refresher::refresh_definition`] on this replica only.
    pub(crate) fn refresh_local_definition(&self, name: &str) -> Option<usize> {
        let def = self
            .inner
            .defs
            .load()
            .iter()
            .find(|(_, d)| d.name == name)
            .map(|(i, _)| i)?;
        let feeds = self.inner.feeds();
        let mut n = 0;
        for feed in feeds.values().filter(|f| f.key.def == def) {
            feed.refresh();
            n += 1;
        }
        Some(n)
    }
}

impl Inner {
    /// Counters of definition `def`, kept across reloads while it is unchanged.
    pub(crate) fn stats(&self, def: usize) -> Arc<DefStats> {
        self.defs.load().stats.get(def).cloned().unwrap_or_default()
    }

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

#[cfg(test)]
mod reload_tests;

/// Whether a write to `path` may change the list polled at `poll`: the same
/// path or one below it, on segment boundaries (`/api/jobs` covers
/// `/api/jobs/7`, not `/api/jobsx`).
fn covers(poll: &str, path: &str) -> bool {
    let poll = poll.trim_end_matches('/');
    match path.strip_prefix(poll) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod write_through_tests;
