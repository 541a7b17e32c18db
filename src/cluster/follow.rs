//! One feed on one replica in a cluster: lead, follow, or fall back.
//!
//! - Lead: hold the feed's lease (renewed every third of it) and run the
//!   ordinary poll loop with a [`Fenced`] outlet: each good poll is written
//!   to Redis by one script that checks the lease and the expected sequence,
//!   then applied to the local feed. A takeover starts from the stored body
//!   and validators, so it costs the upstream a 304, not a resync.
//! - Follow: apply what the leader wrote (the state and the Stream entries
//!   after the local sequence), woken by the leader's announcement and at
//!   least every third of a lease, so a lost announcement loses nothing.
//! - Fall back: Redis unreachable, so the ordinary poll loop runs locally
//!   under a local epoch until Redis answers again.
//!
//! The task ends when the feed does (idle past its linger, retired,
//! shutdown), releasing a lease it holds.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use redis::Value;

use super::keys::Keys;
use super::{Cluster, ClusterError};
use crate::budget::Charge;
use crate::feed::extract::ItemList;
use crate::feed::poller::{self, Direct, Good, Outlet, PollCtx, Published, Resume};
use crate::feed::update::prepare;
use crate::feed::{Applied, Feed};
use crate::upstream::Validators;

/// The feed's state in Redis, as one read returned it.
pub(super) struct Stored {
    pub epoch: Arc<str>,
    pub seq: u64,
    pub rev: u64,
    /// `None`: unchanged since the rev asked about.
    pub full: Option<Full>,
}

pub(super) struct Full {
    pub body: Bytes,
    pub validators: Validators,
    pub events: Vec<(u64, Bytes)>,
}

/// What this replica last applied: `(epoch, rev)`.
pub(super) type Seen = Option<(Arc<str>, u64)>;

pub(super) async fn run(cluster: Arc<Cluster>, feed: Arc<Feed>, ctx: PollCtx, mut charge: Charge) {
    let keys = cluster.names.keys(&feed);
    let notify = cluster.link(&keys.hash);
    let mut up = cluster.watch_up();
    let mut seen: Seen = None;
    let mut idle_since: Option<Instant> = None;
    let tick = cluster.cfg.lease / 3;
    loop {
        if ctx.shutdown.is_cancelled() || feed.is_retired() {
            break;
        }
        if !*up.borrow_and_update() {
            // Fall back: poll here under a local epoch until Redis is back.
            feed.local_epoch();
            seen = None;
            let stop = ctx.shutdown.child_token();
            let poll = poller::run(
                feed.clone(),
                ctx.fork(stop.clone(), Box::new(Direct), None),
                charge,
            );
            tokio::pin!(poll);
            let rejoin = loop {
                tokio::select! {
                    c = &mut poll => { charge = c; break false; }
                    r = up.changed() => {
                        if r.is_err() || *up.borrow_and_update() {
                            stop.cancel();
                            charge = (&mut poll).await;
                            break true;
                        }
                    }
                }
            };
            if !rejoin || ctx.shutdown.is_cancelled() || feed.is_retired() {
                break;
            }
            continue;
        }
        match sync(&cluster, &feed, &keys, &mut seen).await {
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
        // Only a replica someone listens to polls for the cluster.
        let token = if feed.subscribers() > 0 {
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
            match lead(&cluster, &feed, &ctx, &keys, token, charge, &mut seen).await {
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
            _ = notify.notified() => {}
            _ = tokio::time::sleep(tick) => {}
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
    token: String,
    charge: Charge,
    seen: &mut Seen,
) -> (Charge, bool) {
    tracing::debug!(feed = %feed.label(), "cluster: leading");
    // Start from what is stored: the takeover's first poll is conditional.
    let stored = read(cluster, keys, &None, 0).await.ok().flatten();
    let mut resume = None;
    let mut outlet = Fenced {
        cluster: cluster.clone(),
        keys: keys.clone(),
        token: token.clone(),
        epoch: None,
        seq: 0,
        stop: ctx.shutdown.child_token(),
    };
    if let Some(Stored {
        epoch,
        seq,
        rev,
        full: Some(full),
    }) = stored
    {
        if let Some(list) = list_of(feed, full.body.clone()) {
            apply(feed, &epoch, seq, list.clone(), full.events, seen, rev);
            outlet.epoch = Some(epoch);
            outlet.seq = seq;
            resume = Some(Resume {
                body: full.body,
                list,
                validators: full.validators,
            });
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

/// A leader's outlet: one fenced script per good poll, then the same
/// events applied locally.
pub(super) struct Fenced {
    pub cluster: Arc<Cluster>,
    pub keys: Keys,
    pub token: String,
    /// The cluster epoch this leader writes in (`None` until the first poll
    /// of a feed Redis knows nothing of).
    pub epoch: Option<Arc<str>>,
    pub seq: u64,
    pub stop: tokio_util::sync::CancellationToken,
}

impl Outlet for Fenced {
    fn publish<'a>(&'a mut self, good: Good<'a>) -> Published<'a> {
        let Good {
            feed,
            update,
            validators,
            metrics,
        } = good;
        Box::pin(async move {
            let first = update.is_first() || self.epoch.is_none();
            let (epoch, expected): (Arc<str>, u64) = match (&self.epoch, first) {
                (Some(e), false) => (e.clone(), self.seq),
                _ => (
                    format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff).into(),
                    0,
                ),
            };
            let events = if first {
                Vec::new()
            } else {
                update.events(&feed.render, expected + 1, |s| format!("{epoch}:{s}"))
            };
            let seq = if first {
                1
            } else {
                events.last().map_or(expected, |(s, _)| *s)
            };
            update.count(&feed.def.name, metrics);
            let (body, list) = update.into_parts();
            let written = self
                .write(&epoch, expected, first, &body, validators, &events)
                .await;
            metrics.cluster_publish(written.is_ok());
            if let Err(e) = written {
                tracing::info!(feed = %feed.label(), "cluster: publish refused ({e}); following");
                self.stop.cancel();
                return None;
            }
            feed.apply(Applied {
                epoch: epoch.clone(),
                seq,
                base: 1,
                list: list.clone(),
                events,
                reset: first,
            });
            self.epoch = Some(epoch);
            self.seq = seq;
            Some((body, list))
        })
    }
}

impl Fenced {
    pub(super) async fn write(
        &self,
        epoch: &str,
        expected: u64,
        first: bool,
        body: &Bytes,
        validators: &Validators,
        events: &[(u64, Bytes)],
    ) -> Result<i64, ClusterError> {
        let c = &self.cluster;
        let header =
            |v: &Option<HeaderValue>| v.as_ref().map_or(Vec::new(), |h| h.as_bytes().to_vec());
        let mut inv = c.scripts.publish.prepare_invoke();
        inv.key(&self.keys.lease)
            .key(&self.keys.state)
            .key(&self.keys.stream)
            .arg(&self.token)
            .arg(epoch)
            .arg(expected)
            .arg(if first { "1" } else { "0" })
            .arg(body.as_ref())
            .arg(header(&validators.etag))
            .arg(header(&validators.last_modified))
            .arg(c.history.max(1))
            .arg(c.ttl_ms(&self.keys))
            .arg(c.names.events_channel())
            .arg(&self.keys.hash);
        for (seq, e) in events {
            inv.arg(*seq).arg(e.as_ref());
        }
        let mut conn = c.conn()?;
        let rev: i64 = c.timed(inv.invoke_async(&mut conn)).await?;
        match rev {
            -1 => Err(ClusterError::Reply("the lease is no longer ours".into())),
            -2 => Err(ClusterError::Reply("the sequence moved".into())),
            r => Ok(r),
        }
    }
}

impl Cluster {
    /// How long a feed's keys live past a write: per-user feeds shorter.
    fn ttl_ms(&self, keys: &Keys) -> u64 {
        let ttl = if keys.per_user {
            self.cfg.user_ttl
        } else {
            self.cfg.ttl
        };
        ttl.as_millis() as u64
    }
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
    let Some(stored) = read(cluster, keys, seen, from).await? else {
        return Ok(());
    };
    let Some(full) = stored.full else {
        return Ok(());
    };
    let Some(list) = list_of(feed, full.body) else {
        return Ok(());
    };
    apply(
        feed,
        &stored.epoch,
        stored.seq,
        list,
        full.events,
        seen,
        stored.rev,
    );
    Ok(())
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

/// One consistent read of the state and the entries from `from`.
pub(super) async fn read(
    cluster: &Cluster,
    keys: &Keys,
    seen: &Seen,
    from: u64,
) -> Result<Option<Stored>, ClusterError> {
    let (epoch, rev) = match seen {
        Some((e, r)) => (e.to_string(), r.to_string()),
        None => (String::new(), String::new()),
    };
    let mut conn = cluster.conn()?;
    let reply: Vec<Value> = cluster
        .timed(
            cluster
                .scripts
                .read
                .key(&keys.state)
                .key(&keys.stream)
                .arg(epoch)
                .arg(rev)
                .arg(from)
                .invoke_async(&mut conn),
        )
        .await?;
    if reply.is_empty() {
        return Ok(None);
    }
    let bytes = |i: usize| -> Result<Bytes, ClusterError> {
        match reply.get(i) {
            Some(Value::BulkString(b)) => Ok(Bytes::copy_from_slice(b)),
            Some(Value::Int(n)) => Ok(Bytes::from(n.to_string())),
            other => Err(ClusterError::Reply(format!("field {i}: {other:?}"))),
        }
    };
    let number = |i: usize| -> Result<u64, ClusterError> {
        let b = bytes(i)?;
        std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClusterError::Reply(format!("field {i} is not a number")))
    };
    let epoch: Arc<str> = String::from_utf8_lossy(&bytes(0)?).into();
    let seq = number(1)?;
    let rev = number(2)?;
    if reply.len() == 3 {
        return Ok(Some(Stored {
            epoch,
            seq,
            rev,
            full: None,
        }));
    }
    let header = |b: Bytes| {
        (!b.is_empty())
            .then(|| HeaderValue::from_maybe_shared(b).ok())
            .flatten()
    };
    let validators = Validators {
        etag: header(bytes(4)?),
        last_modified: header(bytes(5)?),
    };
    let mut events = Vec::new();
    let mut i = 6;
    while i + 1 < reply.len() {
        events.push((number(i)?, bytes(i + 1)?));
        i += 2;
    }
    Ok(Some(Stored {
        epoch,
        seq,
        rev,
        full: Some(Full {
            body: bytes(3)?,
            validators,
            events,
        }),
    }))
}

pub(super) async fn acquire(
    cluster: &Cluster,
    keys: &Keys,
) -> Result<Option<String>, ClusterError> {
    let mut conn = cluster.conn()?;
    cluster
        .timed(
            cluster
                .scripts
                .acquire
                .key(&keys.lease)
                .key(&keys.fence)
                .arg(&cluster.replica)
                .arg(cluster.cfg.lease.as_millis() as u64)
                .arg(cluster.ttl_ms(keys))
                .invoke_async(&mut conn),
        )
        .await
}

async fn renew(cluster: &Cluster, keys: &Keys, token: &str) -> bool {
    let Ok(mut conn) = cluster.conn() else {
        return false;
    };
    let r: Result<i64, _> = cluster
        .timed(
            cluster
                .scripts
                .renew
                .key(&keys.lease)
                .arg(token)
                .arg(cluster.cfg.lease.as_millis() as u64)
                .invoke_async(&mut conn),
        )
        .await;
    if r.is_err() {
        cluster.suspect();
    }
    matches!(r, Ok(1))
}

async fn release(cluster: &Cluster, keys: &Keys, token: &str) {
    let Ok(mut conn) = cluster.conn() else {
        return;
    };
    let r: Result<i64, _> = cluster
        .timed(
            cluster
                .scripts
                .release
                .key(&keys.lease)
                .arg(token)
                .invoke_async(&mut conn),
        )
        .await;
    if let Err(e) = r {
        tracing::debug!("cluster: release: {e}");
    }
}
