//! What a poll loop is handed and where its results go: the seams between
//! the poller and whoever starts it (the registry, a cluster engine) or
//! reads its answers (the straggler cache). The poller imports none of them.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use std::time::Duration;

use super::super::extract::ItemList;
use super::super::stats::DefStats;
use super::super::update::Update;
use super::super::Feed;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::upstream::{Upstream, Validators};

/// Where poll loops leave their latest answer, so plain polls of the same
/// upstream path can be answered from it (`serve_polls`). The straggler
/// cache implements it; the feed layer never imports that cache.
pub trait StragglerSink: Send + Sync {
    /// The recorder of one poll loop: `poll` is the feed's upstream path
    /// (parameters filled in), `headers` the credentials its polls send.
    fn straggler_recorder(
        &self,
        feed: &Arc<Feed>,
        poll: &str,
        headers: &HeaderMap,
    ) -> Box<dyn StragglerRecord>;
}

/// One poll loop's side of [`StragglerSink`], told at each moment of a poll.
/// Dropping it withdraws the loop's answer.
pub trait StragglerRecord: Send {
    /// A poll is about to start.
    fn polling(&mut self, feed: &Feed);
    /// A poll answered 200 with this body; the next poll is `next` away.
    fn body(&mut self, body: Bytes, head: &HeaderMap, next: Duration);
    /// A poll confirmed the answer in force (304, or an unchanged body).
    fn confirmed(&mut self, next: Duration);
    /// The answer in force no longer stands (a failure, a write).
    fn withdraw(&mut self);
}

/// No feed serves polls: every record does nothing.
pub(crate) struct NoStragglers;

impl StragglerSink for NoStragglers {
    fn straggler_recorder(
        &self,
        _: &Arc<Feed>,
        _: &str,
        _: &HeaderMap,
    ) -> Box<dyn StragglerRecord> {
        Box::new(NoStragglers)
    }
}

impl StragglerRecord for NoStragglers {
    fn polling(&mut self, _: &Feed) {}
    fn body(&mut self, _: Bytes, _: &HeaderMap, _: Duration) {}
    fn confirmed(&mut self, _: Duration) {}
    fn withdraw(&mut self) {}
}

/// Ends a feed nobody subscribes to; `true` when it ended.
pub(crate) type RemoveIfIdle = Arc<dyn Fn(&Arc<Feed>) -> bool + Send + Sync>;

/// Where a good poll's update goes: into the feed itself ([`Direct`]), or
/// through an engine that numbers it for several replicas (see
/// [`crate::feed::source`]). `None`: the update was refused (this loop no longer
/// owns the feed); the list stays as it was and the owner ends the loop.
pub(crate) trait Outlet: Send + Sync {
    fn publish<'a>(&'a mut self, good: Good<'a>) -> Published<'a>;

    /// The upstream's status changed. An engine shared by several replicas
    /// tells them all (the same bytes everywhere); by default only this feed.
    fn status<'a>(&'a mut self, feed: &'a Arc<Feed>, status: Status) -> BoxFuture<'a, ()> {
        status.apply(feed);
        Box::pin(std::future::ready(()))
    }
}

/// A change of the upstream's status, encoded: what every subscriber of the
/// feed hears as `stale` or `recovered`.
pub(crate) enum Status {
    Stale(Bytes),
    Recovered(Bytes),
}

impl Status {
    /// Put the status into the feed itself.
    pub(crate) fn apply(self, feed: &Feed) {
        match self {
            Status::Stale(b) => feed.set_stale(b),
            Status::Recovered(b) => feed.set_recovered(b),
        }
    }
}

/// A good poll on its way out: its feed, its update, the validators of its
/// body, and the metrics it is counted in.
pub(crate) struct Good<'a> {
    pub feed: &'a Arc<Feed>,
    pub update: Update,
    pub validators: &'a Validators,
    pub metrics: &'a Metrics,
}

/// What an [`Outlet`] kept: the body and list in force, `None` when refused.
pub(crate) type Published<'a> = BoxFuture<'a, Option<(Bytes, Arc<ItemList>)>>;

/// The update goes into the feed, numbered by this process.
pub(crate) struct Direct;

impl Outlet for Direct {
    fn publish<'a>(&'a mut self, good: Good<'a>) -> Published<'a> {
        let kept = good.update.publish(good.feed, good.metrics);
        Box::pin(std::future::ready(Some(kept)))
    }
}

/// Where a poll loop starts from when the feed already has a list it did
/// not poll itself (a cluster takeover): its body, list and validators, so
/// the first poll is conditional and diffs against it.
pub(crate) struct Resume {
    pub body: Bytes,
    pub list: Arc<ItemList>,
    pub validators: Validators,
}

/// What every poll loop is handed, built at start-up and given to the
/// registry whole: the registry passes it on to each loop it starts
/// ([`PollKit::ctx`]) and reads none of it.
#[derive(Clone)]
pub(crate) struct PollKit {
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub stragglers: Arc<dyn StragglerSink>,
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl PollKit {
    /// The context of one feed's loop, publishing straight into the feed.
    pub(crate) fn ctx(&self, stats: Arc<DefStats>, remove_if_idle: RemoveIfIdle) -> PollCtx {
        PollCtx {
            upstream: self.upstream.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            stragglers: self.stragglers.clone(),
            stats,
            shutdown: self.shutdown.clone(),
            remove_if_idle,
            outlet: Box::new(Direct),
            resume: None,
        }
    }
}

/// What one poll loop needs from the registry that started it (see
/// [`PollKit`]), so the poller never reaches into the registry's insides.
pub(crate) struct PollCtx {
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub stragglers: Arc<dyn StragglerSink>,
    /// This feed definition's counters for the status page.
    pub stats: Arc<DefStats>,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// End the feed if nobody subscribes to it (the check and the removal
    /// are one step under the registry's lock); `true` when it ended.
    pub remove_if_idle: RemoveIfIdle,
    /// Where good polls are published.
    pub outlet: Box<dyn Outlet>,
    /// What the loop starts from (`None`: nothing, the first poll is a snapshot).
    pub resume: Option<Resume>,
}

impl PollCtx {
    /// The same context with another shutdown, outlet and starting point
    /// (an engine running the loop for a while).
    pub(crate) fn fork(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
        outlet: Box<dyn Outlet>,
        resume: Option<Resume>,
    ) -> Self {
        Self {
            upstream: self.upstream.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            stragglers: self.stragglers.clone(),
            stats: self.stats.clone(),
            shutdown,
            remove_if_idle: self.remove_if_idle.clone(),
            outlet,
            resume,
        }
    }
}
