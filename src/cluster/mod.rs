//! The cluster engine: several replicas share each feed's polls and event
//! ids through Redis (`[cluster]`).
//!
//! This module owns the Redis connection, its health (`pollcast_cluster_up`,
//! `/readyz`, the status page), the one pub/sub subscription per replica and
//! the per-feed task that leads (polls under a lease, publishes with one
//! fenced script), follows (applies what the leader wrote, filling gaps from
//! the Stream) or, while Redis is unreachable, polls on its own under a local
//! epoch. It plugs into the feed layer as a [`Source`]; it never touches the
//! subscriber side, and it must never put a credential into Redis (key names
//! are keyed hashes, see [`keys`]).

mod fallback;
mod fenced;
mod follow;
mod keys;
mod lease;
mod notice;
mod scripts;
mod stored;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::budget::Charge;
use crate::config::ClusterConfig;
use crate::feed::poller::PollCtx;
use crate::feed::source::{Refresh, Source};
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::readiness::ClusterHealth;
use keys::Namer;
use scripts::Scripts;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("not connected to redis")]
    Down,
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

/// Asks this replica's registry to refresh locally (a request another
/// replica saw).
pub(crate) type OnRefresh = Box<dyn Fn(&Refresh) + Send + Sync>;

/// The engine of one replica, shared by its feed tasks.
pub(crate) struct Cluster {
    cfg: ClusterConfig,
    history: usize,
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    up: watch::Sender<bool>,
    /// This replica's id in fencing tokens and refresh messages.
    replica: String,
    names: Namer,
    scripts: Scripts,
    metrics: Arc<Metrics>,
    health: Arc<ClusterHealth>,
    /// Live feeds of this replica by hash: woken when their leader wrote.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Refresh requests to pass on to the other replicas.
    outbox: mpsc::UnboundedSender<String>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    on_refresh: Mutex<Option<OnRefresh>>,
    /// Wakes the health check at once (an operation failed).
    suspect: Notify,
    /// When an operation last got its answer (ms since `born`): a replica
    /// busy with Redis needs no `PING` to know it is reachable.
    answered: AtomicU64,
    born: tokio::time::Instant,
}

impl Cluster {
    /// The engine for `cfg`; nothing connects before [`Cluster::run`].
    pub fn new(
        cfg: &ClusterConfig,
        history: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(cfg.redis.as_str())?;
        let (outbox, inbox) = mpsc::unbounded_channel();
        metrics.cluster_up(true);
        Ok(Arc::new(Self {
            history,
            client,
            conn: Mutex::new(None),
            // Optimistic until the first check: a replica starts by asking
            // Redis for the state, not by polling.
            up: watch::channel(true).0,
            replica: format!("{:016x}", fastrand::u64(..)),
            names: Namer::new(&cfg.prefix, cfg.secret_bytes()),
            scripts: Scripts::new(),
            metrics,
            health: Arc::new(ClusterHealth::new(true)),
            links: Mutex::new(HashMap::new()),
            outbox,
            inbox: Mutex::new(Some(inbox)),
            on_refresh: Mutex::new(None),
            suspect: Notify::new(),
            answered: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
            cfg: cfg.clone(),
        }))
    }

    /// What `/readyz` and the status page read.
    pub fn health(&self) -> Arc<ClusterHealth> {
        self.health.clone()
    }

    /// Where refresh requests of other replicas go (this replica's registry).
    pub fn on_refresh(&self, f: OnRefresh) {
        *lock(&self.on_refresh) = Some(f);
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    pub(crate) fn watch_up(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    fn set_up(&self, up: bool) {
        let was = self.up.send_replace(up);
        if was != up {
            self.health.set(up);
            self.metrics.cluster_up(up);
            if up {
                tracing::info!(redis = %self.redacted(), "cluster: Redis reachable again; feeds rejoin the cluster (one snapshot each)");
            } else {
                tracing::warn!(redis = %self.redacted(), "cluster: Redis unreachable; every feed falls back to polling on this replica under a local epoch");
            }
        }
    }

    /// The Redis URL without its password, for logs.
    fn redacted(&self) -> String {
        let url = &self.cfg.redis;
        match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.clone(),
        }
    }

    /// A Redis operation failed: check health now rather than at the next tick.
    pub(crate) fn suspect(&self) {
        self.suspect.notify_one();
    }

    /// A connection for one operation; `Down` before the first connect.
    pub(crate) fn conn(&self) -> Result<ConnectionManager, ClusterError> {
        lock(&self.conn).clone().ok_or(ClusterError::Down)
    }

    /// Invoke a script on the shared connection, within the operation timeout.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let mut conn = self.conn()?;
        self.timed(script.invoke_async(&mut conn)).await
    }

    /// Run `op` with the operation timeout.
    pub(crate) async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.cfg.timeout, op).await {
            Ok(r) => {
                let v = r?;
                let ms = self.born.elapsed().as_millis() as u64;
                self.answered.fetch_max(ms.max(1), Ordering::Relaxed);
                Ok(v)
            }
            Err(_) => Err(ClusterError::Timeout(self.cfg.timeout)),
        }
    }

    /// Whether an operation got its answer within the last `within`.
    fn answered_within(&self, within: Duration) -> bool {
        let at = self.answered.load(Ordering::Relaxed);
        at > 0 && self.born.elapsed().as_millis() as u64 <= at + within.as_millis() as u64
    }

    fn link(&self, hash: &str) -> Arc<Link> {
        lock(&self.links)
            .entry(hash.to_owned())
            .or_default()
            .clone()
    }

    fn unlink(&self, hash: &str, notify: &Arc<Link>) {
        let mut links = lock(&self.links);
        if links.get(hash).is_some_and(|n| Arc::ptr_eq(n, notify)) {
            links.remove(hash);
        }
    }

    /// Health checks and the pub/sub subscription, until `shutdown`. The
    /// owner is start-up (`Running` waits for it).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let health = self.clone().health_loop(shutdown.clone());
        let pubsub = self.clone().pubsub_loop(shutdown.clone());
        tokio::join!(health, pubsub);
        // Break the registry <-> engine cycle.
        lock(&self.on_refresh).take();
    }

    async fn health_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.cfg.lease / 3).min(Duration::from_millis(500));
        let mut suspected = true;
        loop {
            // An answer since the last check says as much as a `PING`; a
            // failed operation always checks.
            let ok = (!suspected && self.answered_within(every)) || self.check().await;
            self.set_up(ok);
            suspected = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => false,
                _ = self.suspect.notified() => true,
            };
        }
    }

    /// One health check: connect if needed, then `PING`.
    pub(crate) async fn check(&self) -> bool {
        let conn = lock(&self.conn).clone();
        let mut conn = match conn {
            Some(c) => c,
            None => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.cfg.timeout)
                    .set_response_timeout(self.cfg.timeout)
                    .set_number_of_retries(1)
                    .set_max_delay(self.cfg.timeout.as_millis() as u64);
                match self
                    .timed(self.client.get_connection_manager_with_config(cfg))
                    .await
                {
                    Ok(c) => {
                        *lock(&self.conn) = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::debug!("cluster: connect: {e}");
                        return false;
                    }
                }
            }
        };
        let pong: Result<String, _> = self.timed(redis::cmd("PING").query_async(&mut conn)).await;
        pong.is_ok()
    }

    async fn pubsub_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut inbox) = lock(&self.inbox).take() else {
            return;
        };
        let events = self.names.events_channel();
        let refresh = self.names.refresh_channel();
        let mut up = self.watch_up();
        loop {
            // Wait for Redis, passing on no refresh meanwhile (each replica
            // polls its own feeds then).
            while !*up.borrow_and_update() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = up.changed() => if r.is_err() { return },
                    _ = inbox.recv() => {}
                }
            }
            let sub = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&events).await?;
                ps.subscribe(&refresh).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            let mut ps = match self.timed(sub).await {
                Ok(ps) => ps,
                Err(e) => {
                    tracing::debug!("cluster: subscribe: {e}");
                    self.suspect();
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.cfg.timeout) => continue,
                    }
                }
            };
            // Whatever was announced while unsubscribed is read now.
            for n in lock(&self.links).values() {
                n.told(None);
            }
            let mut messages = ps.on_message();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = messages.next() => {
                        let Some(m) = m else {
                            self.suspect();
                            break;
                        };
                        let payload = m.get_payload_bytes();
                        if m.get_channel_name() == events {
                            let Some((hash, notice)) = notice::decode(payload) else { continue };
                            let link = lock(&self.links).get(hash).cloned();
                            if let Some(n) = link {
                                n.told(notice);
                            }
                        } else {
                            let Ok(payload) = std::str::from_utf8(payload) else { continue };
                            self.refresh_from(payload);
                        }
                    }
                    r = up.changed() => {
                        if r.is_err() || !*up.borrow_and_update() {
                            break;
                        }
                    }
                    Some(msg) = inbox.recv() => {
                        if let Ok(mut c) = self.conn() {
                            let sent: Result<i64, _> = self
                                .timed(redis::cmd("PUBLISH").arg(&refresh).arg(&msg).query_async(&mut c))
                                .await;
                            if let Err(e) = sent {
                                tracing::debug!("cluster: refresh not passed on: {e}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// A refresh request from the channel: `<replica> p <path>` or
    /// `<replica> d <definition>`; this replica's own are ignored.
    fn refresh_from(&self, payload: &str) {
        let mut parts = payload.splitn(3, ' ');
        let (Some(replica), Some(kind), Some(what)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if replica == self.replica {
            return;
        }
        let r = match kind {
            "p" => Refresh::Path(what.to_owned()),
            "d" => Refresh::Definition(what.to_owned()),
            _ => return,
        };
        if let Some(f) = &*lock(&self.on_refresh) {
            f(&r);
        }
    }
}

impl Source for Arc<Cluster> {
    fn run(&self, feed: Arc<Feed>, ctx: PollCtx, charge: Charge) -> BoxFuture<'static, ()> {
        Box::pin(follow::run(self.clone(), feed, ctx, charge))
    }

    fn refreshed(&self, what: &Refresh) {
        let msg = match what {
            Refresh::Path(p) => format!("{} p {p}", self.replica),
            Refresh::Definition(d) => format!("{} d {d}", self.replica),
        };
        // The pub/sub task sends it; a closed channel means shutdown.
        let _ = self.outbox.send(msg);
    }
}

/// A live feed's line from the pub/sub task: the writes announced since
/// its task last looked, or that it must read the state.
#[derive(Default)]
struct Link {
    notify: Notify,
    told: Mutex<Told>,
}

#[derive(Default)]
struct Told {
    notices: Vec<notice::Notice>,
    /// Something was announced without the write (a status, a large or
    /// first write, a resubscription, too many at once): read the state.
    read: bool,
}

impl Link {
    /// More announced than a follower would apply from messages.
    const MAX: usize = 32;

    fn told(&self, notice: Option<notice::Notice>) {
        {
            let mut t = lock(&self.told);
            match notice {
                Some(n) if !t.read && t.notices.len() < Self::MAX => t.notices.push(n),
                _ => {
                    t.notices.clear();
                    t.read = true;
                }
            }
        }
        self.notify.notify_one();
    }

    async fn notified(&self) {
        self.notify.notified().await
    }

    /// The writes announced since the last call, or `None`: read the state.
    fn take(&self) -> Option<Vec<notice::Notice>> {
        let mut t = lock(&self.told);
        let notices = std::mem::take(&mut t.notices);
        (!std::mem::take(&mut t.read)).then_some(notices)
    }
}

#[cfg(test)]
mod tests;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
