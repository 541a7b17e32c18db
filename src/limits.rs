//! Admission limits: how many SSE streams all clients together, and each
//! client address, may hold open, how many feed instances may exist (in all,
//! per definition, started by one client) and how much memory they may
//! retain (the [`Budget`]).
//!
//! This module owns the counters and the answer given when a limit is hit
//! (429 for one client, 503 for the whole server, both with `Retry-After`),
//! the log line for it (at most one per limit per second, so a flood cannot
//! flood the logs too) and a refusal counter per limit for metrics. A
//! [`Permit`] is the only way to hold a subscriber slot: it is released when
//! dropped, so no path can leak one. It must never decide who may see what
//! (that is `auth`), and holds its lock only to bump a counter.
//!
//! "A client" is an IP address: the TCP peer, or, when the peer is one of
//! `[upstream] trusted_proxies`, the address that proxy (and any trusted
//! proxies before it) put in `X-Forwarded-For`. From anyone else that header
//! is ignored, so no client can forge its way into another's share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, Response, StatusCode};

use crate::body::BoxBody;
use crate::budget::Budget;
use crate::cidr::Cidr;
use crate::config::LimitsConfig;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many live feeds (limits.max_feeds = {0})")]
    Feeds(usize),
    #[error("too many live feeds of this definition (limits.max_feeds_per_definition = {0})")]
    FeedsPerDefinition(usize),
    #[error("too many open streams (limits.max_subscribers = {0})")]
    Subscribers(usize),
    #[error("too many open streams from this client (limits.max_subscribers_per_client = {0})")]
    SubscribersPerClient(usize),
    #[error("too many live feeds started by this client (limits.max_feeds_per_client = {0})")]
    FeedsPerClient(usize),
    #[error("the feed memory budget is full (limits.max_feed_memory = {0} bytes)")]
    FeedMemory(u64),
}

impl LimitError {
    /// Every kind, in the order of [`LimitError::index`].
    pub const KINDS: [&'static str; 6] = [
        "max_feeds",
        "max_feeds_per_definition",
        "max_subscribers",
        "max_subscribers_per_client",
        "max_feeds_per_client",
        "max_feed_memory",
    ];

    fn index(self) -> usize {
        match self {
            Self::Feeds(_) => 0,
            Self::FeedsPerDefinition(_) => 1,
            Self::Subscribers(_) => 2,
            Self::SubscribersPerClient(_) => 3,
            Self::FeedsPerClient(_) => 4,
            Self::FeedMemory(_) => 5,
        }
    }

    /// The config key of the limit, also its metric label.
    pub fn kind(self) -> &'static str {
        Self::KINDS[self.index()]
    }

    /// 429 when one client is over its share, 503 when the server is full.
    pub fn status(self) -> StatusCode {
        match self {
            Self::SubscribersPerClient(_) | Self::FeedsPerClient(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Shared counters; one per server.
pub struct Limits {
    cfg: LimitsConfig,
    trusted: Vec<Cidr>,
    subscribers: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Live feeds each client started (see [`FeedPermit`]).
    feeds_per_client: Mutex<HashMap<IpAddr, usize>>,
    /// `max_feed_memory`: the bytes feeds retain.
    budget: Arc<Budget>,
    refused: [AtomicU64; KINDS],
    /// Milliseconds since `start` of the last log line, per limit.
    logged: [AtomicU64; KINDS],
    start: Instant,
}

/// How many limits there are.
const KINDS: usize = LimitError::KINDS.len();

/// A live feed counted against the client that started it, for as long as
/// the feed lives (even if others joined it): a client cannot make feeds
/// and walk away to make more. Released on drop.
pub struct FeedPermit {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Drop for FeedPermit {
    fn drop(&mut self) {
        let mut map = self.limits.feed_starters();
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// One open stream's slot; released on drop.
pub struct Permit {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.subscribers.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.limits.clients();
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

impl Limits {
    pub fn new(cfg: &LimitsConfig, trusted_proxies: &[Cidr]) -> Arc<Self> {
        Arc::new(Self {
            cfg: cfg.clone(),
            trusted: trusted_proxies.to_vec(),
            subscribers: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            feeds_per_client: Mutex::new(HashMap::new()),
            budget: Budget::new(cfg.max_feed_memory),
            refused: Default::default(),
            logged: Default::default(),
            start: Instant::now(),
        })
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    /// The client a request counts against: the peer, unless the peer is a
    /// trusted proxy, then the nearest untrusted address in `X-Forwarded-For`
    /// (read right to left, the way the proxies appended it).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusts = |ip: IpAddr| self.trusted.iter().any(|c| c.contains(ip));
        if !trusts(peer) {
            return peer;
        }
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in chain.iter().rev() {
            if !trusts(client) {
                break;
            }
            match hop.parse::<IpAddr>() {
                Ok(ip) => client = ip,
                // Garbage from behind the proxy: count it against the proxy's
                // last known hop rather than trusting anything further.
                Err(_) => break,
            }
        }
        client
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn feed_starters(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.feeds_per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The feed memory budget.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Count a new feed against the client that starts it, or refuse with
    /// `max_feeds_per_client`.
    pub fn start_feed(self: &Arc<Self>, client: IpAddr) -> Result<FeedPermit, LimitError> {
        let max = self.cfg.max_feeds_per_client;
        let mut map = self.feed_starters();
        let n = map.entry(client).or_insert(0);
        if max > 0 && *n >= max {
            return Err(LimitError::FeedsPerClient(max));
        }
        *n += 1;
        Ok(FeedPermit {
            limits: self.clone(),
            client,
        })
    }

    /// Live feeds `client` started, for tests and the status page.
    pub fn feeds_started_by(&self, client: IpAddr) -> usize {
        self.feed_starters().get(&client).copied().unwrap_or(0)
    }

    /// Take a subscriber slot for `client`, or say which limit is full.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Permit, LimitError> {
        let max = self.cfg.max_subscribers;
        let total = self.subscribers.fetch_add(1, Ordering::AcqRel);
        if max > 0 && total >= max {
            self.subscribers.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(LimitError::Subscribers(max), client));
        }
        let per = self.cfg.max_subscribers_per_client;
        {
            let mut map = self.clients();
            let n = map.entry(client).or_insert(0);
            if per > 0 && *n >= per {
                drop(map);
                self.subscribers.fetch_sub(1, Ordering::AcqRel);
                return Err(self.refuse(LimitError::SubscribersPerClient(per), client));
            }
            *n += 1;
        }
        Ok(Permit {
            limits: self.clone(),
            client,
        })
    }

    /// Count (and maybe log) a refusal; returns it for `?`.
    pub fn refuse(&self, e: LimitError, client: IpAddr) -> LimitError {
        let i = e.index();
        let total = self.refused[i].fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.start.elapsed().as_millis() as u64;
        let last = self.logged[i].load(Ordering::Relaxed);
        if (total == 1 || now.saturating_sub(last) >= 1000)
            && self.logged[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(limit = e.kind(), %client, refused_total = total, "{e}");
        }
        e
    }

    /// Open streams now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    /// Requests refused so far, per limit (`(kind, count)`), for metrics.
    pub fn refused(&self) -> [(&'static str, u64); KINDS] {
        let mut out = [("", 0); KINDS];
        for (i, kind) in LimitError::KINDS.iter().enumerate() {
            out[i] = (kind, self.refused[i].load(Ordering::Relaxed));
        }
        out
    }

    /// The 429/503 answer for `e`, with `Retry-After`.
    pub fn response(&self, e: LimitError) -> Response<BoxBody> {
        crate::response::retry_later(
            e.status(),
            format!("{e}; retry later\n"),
            retry_after_secs(self.cfg.retry_after),
        )
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_secs(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn limits(total: usize, per: usize) -> Arc<Limits> {
        Limits::new(
            &LimitsConfig {
                max_subscribers: total,
                max_subscribers_per_client: per,
                ..LimitsConfig::default()
            },
            &[Cidr::parse("10.0.0.0/8").expect("cidr")],
        )
    }

    #[test]
    fn the_client_is_found_behind_trusted_proxies_only() {
        let l = limits(0, 0);
        let xff = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static(v));
            h
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // Untrusted peers cannot claim another address.
        assert_eq!(l.client(ip("1.2.3.4"), &xff("9.9.9.9")), ip("1.2.3.4"));
        // Behind one trusted proxy: the address it saw.
        assert_eq!(l.client(ip("10.0.0.1"), &xff("5.6.7.8")), ip("5.6.7.8"));
        // A client-supplied prefix before the real hop is ignored.
        assert_eq!(
            l.client(ip("10.0.0.1"), &xff("9.9.9.9, 5.6.7.8, 10.0.0.2")),
            ip("5.6.7.8")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(l.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        assert_eq!(l.client(ip("10.0.0.1"), &xff("nonsense")), ip("10.0.0.1"));
    }

    #[test]
    fn per_client_then_global_and_permits_release_on_drop() {
        let l = limits(3, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = l.admit(a).expect("a1");
        let _a2 = l.admit(a).expect("a2");
        assert_eq!(l.admit(a).err(), Some(LimitError::SubscribersPerClient(2)));
        let _b1 = l.admit(b).expect("b1");
        assert_eq!(l.admit(b).err(), Some(LimitError::Subscribers(3)));
        assert_eq!(l.subscribers(), 3);
        drop(a1);
        assert_eq!(l.subscribers(), 2);
        let _a3 = l.admit(a).expect("a slot is free again");
        assert_eq!(l.refused()[2], ("max_subscribers", 1));
        assert_eq!(l.refused()[3], ("max_subscribers_per_client", 1));
    }

    #[test]
    fn feeds_count_against_the_client_that_started_them_until_they_end() {
        let l = Limits::new(
            &LimitsConfig {
                max_feeds_per_client: 2,
                ..LimitsConfig::default()
            },
            &[],
        );
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = l.start_feed(a).expect("a1");
        let _a2 = l.start_feed(a).expect("a2");
        assert_eq!(l.start_feed(a).err(), Some(LimitError::FeedsPerClient(2)));
        let _b1 = l.start_feed(b).expect("another client is not affected");
        drop(a1);
        assert_eq!(l.feeds_started_by(a), 1);
        let _a3 = l.start_feed(a).expect("a feed ended: room again");
    }

    #[test]
    fn zero_disables_and_retry_after_rounds_up() {
        let l = limits(0, 0);
        let ip: IpAddr = "::1".parse().expect("ip");
        let held: Vec<_> = (0..1000).map(|_| l.admit(ip).expect("unlimited")).collect();
        assert_eq!(l.subscribers(), held.len());
        drop(held);
        assert!(l.clients().is_empty(), "no entry left for a gone client");
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    }

    #[test]
    fn status_codes() {
        assert_eq!(
            LimitError::SubscribersPerClient(1).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            LimitError::FeedsPerClient(1).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        for e in [
            LimitError::Feeds(1),
            LimitError::FeedsPerDefinition(1),
            LimitError::Subscribers(1),
            LimitError::FeedMemory(1),
        ] {
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
