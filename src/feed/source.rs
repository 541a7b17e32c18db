//! The seam where a feed's events come from: its own poll loop
//! ([`Local`]), or an engine shared by several replicas (the Redis cluster,
//! `crate::cluster`). The registry starts every feed through a [`Source`]
//! and the subscriber side reads only the [`super::Feed`], so a second engine
//! plugs in here without touching subscribers.
//!
//! This module owns that contract only. An engine must never hand a
//! subscriber anything but the feed's own history, snapshot and ids.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::poller::{self, PollCtx};
use super::Feed;
use crate::budget::Charge;

/// A refresh request (write-through, the refresh endpoint) this replica saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// A write to this upstream path (normalized).
    Path(String),
    /// The refresh endpoint, for every live feed of this definition.
    Definition(String),
}

/// Where the events of a live feed come from.
pub(crate) trait Source: Send + Sync {
    /// Run `feed` until it ends (idle past its linger, retired, shutdown):
    /// the registry's task for the feed. `ctx` is what a poll loop needs.
    fn run(&self, feed: Arc<Feed>, ctx: PollCtx, charge: Charge) -> BoxFuture<'static, ()>;

    /// This replica asked its live feeds to refresh; an engine that polls
    /// elsewhere passes it on (its own feeds were already asked).
    fn refreshed(&self, _what: &Refresh) {}
}

/// Every feed polls on its own: pollcast without a cluster.
pub(crate) struct Local;

impl Source for Local {
    fn run(&self, feed: Arc<Feed>, ctx: PollCtx, charge: Charge) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            poller::run(feed, ctx, charge).await;
        })
    }
}
