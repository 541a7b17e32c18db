//! One feed on one replica in a cluster: lead, follow, or fall back.
//!
//! - Lead: hold the feed's lease (renewed every third of it) and run the
//!   ordinary poll loop with a [`Fenced`] outlet: each good poll is written
//!   to Redis by one script that checks the lease and the expected sequence,
//!   then applied to the local feed. A takeover starts from the stored body
//!   and validators, so it costs the upstream a 304, not a resync.
//! - Follow: apply what the leader wrote, woken by the leader's
//!   announcement. An announcement carries the write (see
//!   [`notice`](super::notice)): one on top of exactly this replica's state
//!   is applied from the message; anything else (a gap, another epoch, a
//!   status, a large write) reads the state and the Stream entries after
//!   the local sequence. A read happens at least every third of a lease
//!   whatever was announced, so a lost announcement loses nothing.
//! - Fall back: Redis unreachable, so the ordinary poll loop runs locally
//!   under a local epoch until Redis answers again.
//!
//! The task ends when the feed does (idle past its linger, retired,
//! shutdown), releasing a lease it holds.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::fallback::{self, Rejoin};
use super::fenced::Fenced;
use super::keys::Keys;
use super::lease::{acquire, release, renew, Lease};
use super::notice::Notice;
use super::stored::{read, Full, Seen, Stored};
use super::{Cluster, ClusterError};
use crate::budget::Charge;
use crate::feed::extract::ItemList;
use crate::feed::poller::{self, PollCtx, Resume};
use crate::feed::update::prepare;
use crate::feed::{Applied, Feed};

pub(super) async fn run(cluster: Arc<Cluster>, feed: Arc<Feed>, ctx: PollCtx, mut charge: Charge) {
    let keys = cluster.names.keys(&feed);
    let notify = cluster.link(&keys.hash);
    let mut up = cluster.watch_up();
    let mut seen: Seen = None;
    let mut idle_since: Option<Instant> = None;
    let tick = cluster.cfg.lease / 3;
    // Woken by announcements this replica applied from the messages: the
    // leader is alive and nothing is left to read.
    let mut told = false;
    // The next read whatever was announced: a lost announcement is found
    // by then at the latest.
    let mut check_at = tokio::time::Instant::now();
    loop {
        if ctx.shutdown.is_cancelled() || feed.is_retired() {
            break;
        }
        if !*up.borrow_and_update() {
            // Fall back: poll here under a local epoch until Redis is back
            // and holds a state at least as new as this replica's.
            seen = None;
            let (c, next) =
                fallback::run(&cluster, &feed, &ctx, &keys, &notify, &mut up, charge).await;
            charge = c;
            match next {
                Rejoin::End => break,
                Rejoin::Follow => continue,
                Rejoin::Lead(token) => {
                    let lease = Lease { token, fresh: true };
                    match lead(&cluster, &feed, &ctx, &keys, lease, charge, &mut seen).await {
                        (c, true) => charge = c,
                        (_, false) => break,
                    }
                    continue;
                }
            }
        }
        let fresh = std::mem::take(&mut told);
        let synced = if fresh {
            Ok(())
        } else {
            check_at = tokio::time::Instant::now() + tick;
            sync(&cluster, &feed, &keys, &mut seen).await
        };
        match synced {
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(feed = %feed.label(), "cluster: read failed: {e}");
                cluster.suspect();
                // Wait for the health verdict (or retry shortly).
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = up.changed() => {}
                    _ = tokio::time::sleep(tick) => {}
                }
                continue;
            }
        }
        // Only a replica someone listens to polls for the cluster; a leader
        // that just wrote holds the lease.
        let token = if feed.subscribers() > 0 && !fresh {
            acquire(&cluster, &keys).await.unwrap_or_else(|e| {
                tracing::debug!(feed = %feed.label(), "cluster: acquire failed: {e}");
                cluster.suspect();
                None
            })
        } else {
            None
        };
        if let Some(token) = token {
            idle_since = None;
            let lease = Lease {
                token,
                fresh: false,
            };
            match lead(&cluster, &feed, &ctx, &keys, lease, charge, &mut seen).await {
                (c, true) => charge = c,
                (_, false) => break,
            }
            continue;
        }
        // Follow until woken.
        if feed.subscribers() > 0 {
            idle_since = None;
        } else {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= feed.def.linger && (ctx.remove_if_idle)(&feed) {
                break;
            }
        }
        let mut changes = feed.watch();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = feed.retired() => break,
            _ = notify.notified() => {
                told = notify.take().is_some_and(|ns| told_all(&feed, ns, &mut seen));
            }
            _ = tokio::time::sleep_until(check_at) => {}
            _ = up.changed() => {}
            // A first subscriber (or the last leaving) looks at the lease at once.
            _ = changes.changed() => {}
        }
    }
    cluster.unlink(&keys.hash, &notify);
    feed.wake();
}

/// Lead the feed with `token` until the loop ends or the lease is lost.
/// Returns the charge and whether the feed goes on (`false`: it ended).
async fn lead(
    cluster: &Arc<Cluster>,
    feed: &Arc<Feed>,
    ctx: &PollCtx,
    keys: &Keys,
    Lease { token, fresh }: Lease,
    charge: Charge,
    seen: &mut Seen,
) -> (Charge, bool) {
    tracing::debug!(feed = %feed.label(), fresh, "cluster: leading");
    // Start from what is stored: the takeover's first poll is conditional.
    let stored = if fresh {
        None
    } else {
        read(cluster, keys, &None, 0).await.ok().flatten()
    };
    let mut resume = None;
    let mut outlet = Fenced {
        cluster: cluster.clone(),
        keys: keys.clone(),
        token: token.clone(),
        epoch: None,
        seq: 0,
        stop: ctx.shutdown.child_token(),
    };
    if let Some(stored) = stored {
        let (epoch, seq) = (stored.epoch.clone(), stored.seq);
        if let Some(r) = take(feed, stored, seen) {
            outlet.epoch = Some(epoch);
            outlet.seq = seq;
            resume = Some(r);
        }
    }
    let stop = outlet.stop.clone();
    let poll = poller::run(
        feed.clone(),
        ctx.fork(stop.clone(), Box::new(outlet), resume),
        charge,
    );
    tokio::pin!(poll);
    let mut up = cluster.watch_up();
    let every = cluster.cfg.lease / 3;
    let mut renew_at = tokio::time::Instant::now() + every;
    let charge = loop {
        tokio::select! {
            c = &mut poll => break c,
            _ = tokio::time::sleep_until(renew_at) => {
                renew_at += every;
                // A subscriber whose id is ahead of this replica waits no longer.
                feed.synced();
                if !stop.is_cancelled() && !renew(cluster, keys, &token).await {
                    tracing::info!(feed = %feed.label(), "cluster: lease lost; following");
                    stop.cancel();
                }
            }
            r = up.changed() => {
                if r.is_err() || !*up.borrow_and_update() {
                    stop.cancel();
                }
            }
        }
    };
    // The loop ended on its own (idle, retired, shutdown) or was stopped.
    let goes_on = stop.is_cancelled() && !ctx.shutdown.is_cancelled() && !feed.is_retired();
    if !goes_on || !cluster.is_up() {
        release(cluster, keys, &token).await;
    }
    *seen = None;
    (charge, goes_on)
}

/// Bring the local feed up to what Redis holds.
async fn sync(
    cluster: &Cluster,
    feed: &Arc<Feed>,
    keys: &Keys,
    seen: &mut Seen,
) -> Result<(), ClusterError> {
    let (epoch, seq) = (feed.epoch(), feed.head());
    let from = match seen {
        Some((e, _)) if **e == *epoch => seq + 1,
        _ => 0,
    };
    if let Some(stored) = read(cluster, keys, seen, from).await? {
        take(feed, stored, seen);
    }
    feed.synced();
    Ok(())
}

/// Apply announced writes straight from their messages, each only on top
/// of exactly the state it was written on (same epoch, sequence and the
/// previous rev). `false`: something did not line up, read the state.
fn told_all(feed: &Feed, notices: Vec<Notice>, seen: &mut Seen) -> bool {
    for n in notices {
        let Some((epoch, rev)) = seen.as_ref() else {
            return false;
        };
        if **epoch != *n.epoch
            || *rev + 1 != n.rev
            || *feed.epoch() != *n.epoch
            || feed.head() != n.from
        {
            return false;
        }
        let Some(list) = list_of(feed, n.body) else {
            return false;
        };
        let epoch = epoch.clone();
        apply(feed, &epoch, n.seq, list, n.events, seen, n.rev);
        if !n.end.is_empty() && !feed.is_finished() {
            feed.finish(n.end);
        }
    }
    // No `feed.synced()`: an announcement is no comparison with Redis (a
    // client's id a moment ahead may be in the next one).
    true
}

/// Apply a stored state to the local feed in the order its leader told it:
/// a recovery before the events, the events, then a new failure or the
/// end. Returns where a leader's poll loop resumes from.
pub(super) fn take(feed: &Feed, stored: Stored, seen: &mut Seen) -> Option<Resume> {
    let Stored {
        epoch,
        seq,
        rev,
        full,
    } = stored;
    let Full {
        body,
        validators,
        events,
        status,
    } = full?;
    if status.stale.is_none() && feed.is_stale() {
        // Stale from this replica's own polls: the cluster never told one.
        let recovered = if status.recovered.is_empty() {
            feed.render.recovered(std::time::SystemTime::now(), 0)
        } else {
            status.recovered
        };
        feed.set_recovered(recovered);
    }
    let mut resume = None;
    if epoch.is_empty() {
        // Only a status so far: the upstream failed before any good poll.
        *seen = Some((epoch, rev));
    } else if let Some(list) = list_of(feed, body.clone()) {
        apply(feed, &epoch, seq, list.clone(), events, seen, rev);
        resume = Some(Resume {
            body,
            list,
            validators,
        });
    }
    if let Some(stale) = status.stale {
        feed.set_stale(stale);
    }
    if let (Some(end), false) = (status.end, feed.is_finished()) {
        feed.finish(end);
    }
    resume
}

/// Apply a stored state to the local feed and remember it as seen.
fn apply(
    feed: &Feed,
    epoch: &Arc<str>,
    seq: u64,
    list: Arc<ItemList>,
    events: Vec<(u64, Bytes)>,
    seen: &mut Seen,
    rev: u64,
) {
    let same = *feed.epoch() == **epoch;
    let head = feed.head();
    // A gap (entries trimmed before this replica read them) or a
    // sequence that went back: the history starts over from what is stored.
    let reset = !same
        || head > seq
        || events.first().is_some_and(|(s, _)| *s > head + 1)
        || (events.is_empty() && seq != head);
    feed.apply(Applied {
        epoch: epoch.clone(),
        seq,
        base: 1,
        list,
        events,
        reset,
    });
    *seen = Some((epoch.clone(), rev));
}

/// The item list of a stored body (as the leader's poll made it).
fn list_of(feed: &Feed, body: Bytes) -> Option<Arc<ItemList>> {
    match prepare(&feed.def, &feed.render, None, body) {
        Ok(Some(u)) => Some(u.into_parts().1),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(feed = %feed.label(), "cluster: stored body does not parse: {e}");
            None
        }
    }
}
