//! The feed definitions in force ([`Defs`]) and the SSE routes that lead to
//! them, and what a reload changed ([`Reloaded`]).
//!
//! This module owns the index of definitions: indices are stable (a reload
//! appends new and changed definitions and retires the old ones), so a
//! `FeedKey` never silently points at another definition. It holds no live
//! feed and never blocks: the registry swaps a whole `Defs` on reload.

use std::collections::HashMap;
use std::sync::Arc;

use super::stats::DefStats;
use crate::config::FeedConfig;
use crate::route::Pattern;

/// The feed definitions in force and the SSE paths that lead to them.
#[derive(Default)]
pub struct Defs {
    /// Every definition loaded since start, by stable index.
    pub(super) all: Vec<Arc<FeedConfig>>,
    /// Whether a reload removed or replaced the definition at that index.
    pub(super) retired: Vec<bool>,
    /// Counters per definition (for the status page), by the same index.
    pub(super) stats: Vec<Arc<DefStats>>,
    /// SSE path -> indices of the definitions in force there (several feeds
    /// may share a path), in config order.
    pub(super) routes: HashMap<String, Vec<usize>>,
    /// SSE paths with `{param}` segments, in config order, tried after `routes`.
    pub(super) patterns: Vec<(String, Pattern, Vec<usize>)>,
}

impl Defs {
    pub(crate) fn new(feeds: &[FeedConfig]) -> Self {
        let mut d = Self::default();
        for f in feeds {
            d.push(f);
        }
        d
    }

    pub(crate) fn push(&mut self, f: &FeedConfig) -> usize {
        let i = self.all.len();
        self.all.push(Arc::new(f.clone()));
        self.retired.push(false);
        self.stats.push(Arc::default());
        self.add_route(f, i);
        i
    }

    /// Route `f`'s SSE path to definition `i`, after those already there.
    pub(super) fn add_route(&mut self, f: &FeedConfig, i: usize) {
        let path = f.sse_path();
        match Pattern::parse(&path) {
            Ok(p) if p.has_params() => {
                match self.patterns.iter_mut().find(|(s, _, _)| *s == path) {
                    Some((_, _, defs)) => defs.push(i),
                    None => self.patterns.push((path, p, vec![i])),
                }
            }
            _ => self.routes.entry(path).or_default().push(i),
        }
    }

    /// The definition at index `i`, retired ones included: a request routed
    /// just before a reload completes its admission, and its subscription is
    /// then ended with a `retry:` hint (see [`Registry::subscribe`](super::registry::Registry::subscribe)) instead
    /// of failing with an error EventSource would not retry.
    pub fn get(&self, i: usize) -> Option<&Arc<FeedConfig>> {
        self.all.get(i)
    }

    /// Whether a reload removed or replaced the definition at index `i`.
    #[cfg(test)]
    pub(crate) fn is_retired(&self, i: usize) -> bool {
        self.retired.get(i).copied().unwrap_or(true)
    }

    /// The definitions in force, with their indices, in config order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Arc<FeedConfig>)> {
        self.all
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.retired[*i])
    }

    /// The size of the index space: every definition loaded since start,
    /// retired ones included (see [`Defs::iter`] for those in force).
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The definitions whose SSE path is `path`, and the path's parameter
    /// values. Exact paths win over patterns; patterns go in config order.
    pub fn route(&self, path: &str) -> Option<(Vec<usize>, Vec<String>)> {
        if let Some(defs) = self.routes.get(path) {
            return Some((defs.clone(), Vec::new()));
        }
        self.patterns
            .iter()
            .find_map(|(_, p, defs)| p.matches(path).map(|v| (defs.clone(), v)))
    }
}

/// What a reload changed, by feed definition name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Subscribers sent away (with a `retry:` hint) because their
    /// definition was removed or changed.
    pub ended_subscribers: usize,
}

/// Two definitions are the same when every key is (serde is the one place
/// that knows all of them, including keys added later).
pub(crate) fn same(a: &FeedConfig, b: &FeedConfig) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
