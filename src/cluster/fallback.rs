//! One feed on one replica while Redis is unreachable, and its way back.
//!
//! While Redis does not answer, the feed polls here under a local epoch
//! (its subscribers keep their streams). When Redis answers again, what it
//! holds may predate this replica's own polls (a partition: nobody could
//! write). The feed keeps polling here until the cluster's state is at least
//! as new as its own, then hands over in one step, so its subscribers get
//! one snapshot of the current state and never see an older one:
//! - the stored body is the one this replica last polled; or
//! - a leader wrote after Redis came back (it polled since); or
//! - this replica takes the lease: it leads from a poll of its own under a
//!   new epoch ([`super::lease::Lease::fresh`]).
//!
//! This module must never write to Redis: only a leader does.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::keys::Keys;
use super::lease::acquire;
use super::stored::{read, Seen, Stored};
use super::{lock, Cluster, ClusterError, Link};
use crate::budget::Charge;
use crate::feed::poller::{self, Good, Outlet, PollCtx, Published};
use crate::feed::Feed;

/// How a fallback ended.
pub(super) enum Rejoin {
    /// The feed ended (idle past its linger, retired, shutdown).
    End,
    /// The cluster's state is current: follow it (read it from scratch).
    Follow,
    /// This replica took the lease with this token: lead from a fresh poll.
    Lead(String),
}

/// What Redis held when it answered again.
struct Baseline {
    seen: Seen,
    body: Option<Bytes>,
}

/// Poll `feed` here under a local epoch until Redis is back and the
/// cluster's state is current (see the module docs).
pub(super) async fn run(
    cluster: &Arc<Cluster>,
    feed: &Arc<Feed>,
    ctx: &PollCtx,
    keys: &Keys,
    notify: &Link,
    up: &mut watch::Receiver<bool>,
    charge: Charge,
) -> (Charge, Rejoin) {
    feed.local_epoch();
    let stop = ctx.shutdown.child_token();
    let last = Arc::new(Mutex::new(None));
    let outlet = Box::new(Recording(last.clone()));
    let poll = poller::run(feed.clone(), ctx.fork(stop.clone(), outlet, None), charge);
    tokio::pin!(poll);
    let tick = cluster.cfg.lease / 3;
    // Redis answers again.
    let mut back = false;
    let mut base: Option<Baseline> = None;
    let next = loop {
        tokio::select! {
            c = &mut poll => return (c, Rejoin::End),
            r = up.changed() => {
                if r.is_err() {
                    stop.cancel();
                    return ((&mut poll).await, Rejoin::End);
                }
                back = *up.borrow_and_update();
                base = None;
                if !back {
                    continue;
                }
            }
            _ = notify.notified(), if back => {}
            _ = tokio::time::sleep(tick), if back => {}
        }
        let local = lock(&last).clone();
        match current(cluster, feed, keys, local, &mut base).await {
            Ok(Some(next)) => break next,
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(feed = %feed.label(), "cluster: rejoin: {e}");
                cluster.suspect();
            }
        }
    };
    stop.cancel();
    let charge = (&mut poll).await;
    if matches!(next, Rejoin::End) || ctx.shutdown.is_cancelled() || feed.is_retired() {
        return (charge, Rejoin::End);
    }
    (charge, next)
}

/// Whether the feed can hand over to the cluster now, and how.
async fn current(
    cluster: &Cluster,
    feed: &Feed,
    keys: &Keys,
    local: Option<Bytes>,
    base: &mut Option<Baseline>,
) -> Result<Option<Rejoin>, ClusterError> {
    let first = base.is_none();
    let b = match base {
        Some(b) => b,
        None => {
            let stored = read(cluster, keys, &None, 0).await?;
            base.insert(baseline(stored))
        }
    };
    if b.body.is_some() && b.body == local {
        return Ok(Some(Rejoin::Follow));
    }
    if feed.subscribers() > 0 {
        if let Some(token) = acquire(cluster, keys).await? {
            return Ok(Some(Rejoin::Lead(token)));
        }
    }
    if first {
        return Ok(None);
    }
    // A write since Redis came back: a leader polled after this replica's
    // state was the newest.
    let now = read(cluster, keys, &b.seen, 0).await?;
    Ok(match now {
        Some(s) if s.full.is_some() && !s.epoch.is_empty() => Some(Rejoin::Follow),
        _ => None,
    })
}

fn baseline(stored: Option<Stored>) -> Baseline {
    match stored {
        Some(s) => Baseline {
            seen: Some((s.epoch, s.rev)),
            body: s.full.map(|f| f.body).filter(|b| !b.is_empty()),
        },
        None => Baseline {
            seen: None,
            body: None,
        },
    }
}

/// The local poll loop's outlet: into the feed, keeping the last body.
struct Recording(Arc<Mutex<Option<Bytes>>>);

impl Outlet for Recording {
    fn publish<'a>(&'a mut self, good: Good<'a>) -> Published<'a> {
        let (body, list) = good.update.publish(good.feed, good.metrics);
        *lock(&self.0) = Some(body.clone());
        Box::pin(std::future::ready(Some((body, list))))
    }
}
