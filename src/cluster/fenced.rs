//! A feed's leader's outlet: each good poll and each change of the
//! upstream's status is written to Redis by one fenced script (the lease
//! token, and for a poll the sequence it read), then applied to the local
//! feed with the same bytes. A refused write stops the leader's poll loop:
//! it follows from then on. This module never reads the cluster's state.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderValue;

use super::keys::Keys;
use super::notice::{self, Tail};
use super::{Cluster, ClusterError};
use crate::feed::poller::{Good, Outlet, Published, Status};
use crate::feed::{Applied, Feed};
use crate::upstream::Validators;

/// One poll as the leader writes it.
pub(super) struct Written<'a> {
    pub body: &'a Bytes,
    pub validators: &'a Validators,
    pub events: &'a [(u64, Bytes)],
    pub end: Option<&'a Bytes>,
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
            let end = update.terminal().cloned();
            let (body, list) = update.into_parts();
            let poll = Written {
                body: &body,
                validators,
                events: &events,
                end: end.as_ref(),
            };
            let written = self.write(&epoch, expected, first, poll).await;
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

    fn status<'a>(&'a mut self, feed: &'a Arc<Feed>, status: Status) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Written first, then told here: every replica tells the same bytes.
            let (stale, body) = match &status {
                Status::Stale(b) => (true, b),
                Status::Recovered(b) => (false, b),
            };
            match self.write_status(stale, body).await {
                Ok(_) => status.apply(feed),
                Err(e) => {
                    tracing::info!(feed = %feed.label(), "cluster: status refused ({e}); following");
                    self.stop.cancel();
                }
            }
        })
    }
}

impl Fenced {
    pub(super) async fn write(
        &self,
        epoch: &str,
        expected: u64,
        first: bool,
        poll: Written<'_>,
    ) -> Result<i64, ClusterError> {
        let Written {
            body,
            validators,
            events,
            end,
        } = poll;
        let c = &self.cluster;
        let header =
            |v: &Option<HeaderValue>| v.as_ref().map_or(Vec::new(), |h| h.as_bytes().to_vec());
        // A new epoch is always read: followers start their history over.
        let tail = if first {
            Vec::new()
        } else {
            notice::encode(&Tail {
                epoch,
                from: expected,
                seq: events.last().map_or(expected, |(s, _)| *s),
                body,
                end: end.map_or(&[][..], |e| e.as_ref()),
                events,
            })
        };
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
            .arg(&self.keys.hash)
            .arg(end.map_or(&[][..], |e| e.as_ref()))
            .arg(tail);
        for (seq, e) in events {
            inv.arg(*seq).arg(e.as_ref());
        }
        let rev: i64 = c.invoke(&inv).await?;
        match rev {
            -1 => Err(ClusterError::Reply("the lease is no longer ours".into())),
            -2 => Err(ClusterError::Reply("the sequence moved".into())),
            r => Ok(r),
        }
    }

    /// Tell every replica the upstream's status, if the lease is still ours.
    pub(super) async fn write_status(
        &self,
        stale: bool,
        body: &Bytes,
    ) -> Result<i64, ClusterError> {
        let c = &self.cluster;
        let mut script = c.scripts.status.key(&self.keys.lease);
        script
            .key(&self.keys.state)
            .arg(&self.token)
            .arg(if stale { "1" } else { "0" })
            .arg(body.as_ref())
            .arg(c.ttl_ms(&self.keys))
            .arg(c.names.events_channel())
            .arg(&self.keys.hash);
        let rev: i64 = c.invoke(&script).await?;
        if rev == -1 {
            return Err(ClusterError::Reply("the lease is no longer ours".into()));
        }
        Ok(rev)
    }
}

impl Cluster {
    /// How long a feed's keys live past a write: per-user feeds shorter.
    pub(super) fn ttl_ms(&self, keys: &Keys) -> u64 {
        let ttl = if keys.per_user {
            self.cfg.user_ttl
        } else {
            self.cfg.ttl
        };
        ttl.as_millis() as u64
    }
}
