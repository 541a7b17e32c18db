//! Answer the stragglers: frontends that still poll an upstream path which a
//! live feed polls anyway get the feed's latest upstream answer from
//! pollcast, so the upstream's load drops before every frontend has moved to
//! SSE (per feed definition, `serve_polls = true`).
//!
//! This module owns the cache of latest answers (moka, keyed by the poll
//! request: path, normalised query, credentials), the rules that decide
//! whether a client's request is *the same request* as a poll and may be
//! answered from it, and that answer (200 or 304, `ETag`, `Age`,
//! `x-pollcast: snapshot`). A feed's poll loop is the only writer of its
//! entry, through its [`StragglerRecorder`].
//!
//! It must never answer a request that would reach the upstream as another
//! request than the poll (other path, query or credentials, an `Origin`, a
//! header the upstream's `Vary` names), never answer from a feed that is
//! failing, has ended, or has not polled since a write went through, and it
//! never awaits, so no lock of it can be held across an await.

use std::borrow::Cow;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::body::BoxBody;
use crate::config::{AdminConfig, Config, FeedConfig, UpstreamConfig};
use crate::feed::key::normalize_query;
use crate::feed::poller::{StragglerRecord, StragglerSink};
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::route::Pattern;

/// The response header that marks an answer pollcast gave from a snapshot.
pub const HEADER: &str = "x-pollcast";

/// The upstream request a poll makes; a client request with the same
/// identity would get the same answer from the upstream.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Identity {
    path: String,
    query: String,
    authorization: Option<HeaderValue>,
    cookie: Option<HeaderValue>,
}

/// An [`Identity`] borrowed from a client request, so a lookup allocates
/// nothing. Field order and types hash exactly as `Identity`'s do.
#[derive(Hash)]
struct Lookup<'a> {
    path: &'a str,
    query: &'a str,
    authorization: Option<&'a HeaderValue>,
    cookie: Option<&'a HeaderValue>,
}

impl moka::Equivalent<Identity> for Lookup<'_> {
    fn equivalent(&self, k: &Identity) -> bool {
        self.path == k.path
            && self.query == k.query
            && self.authorization == k.authorization.as_ref()
            && self.cookie == k.cookie.as_ref()
    }
}

/// The latest good poll of one feed, ready to be replayed.
struct Answer {
    body: Bytes,
    /// Sent with every answer: the upstream's representation headers, the
    /// `ETag`, `Cache-Control` and `x-pollcast`.
    headers: HeaderMap,
    etag: HeaderValue,
    last_modified: Option<SystemTime>,
    /// Request headers the upstream's `Vary` names and the poll did not send:
    /// a request carrying one may get another answer upstream.
    varies: Vec<HeaderName>,
    /// When the upstream last confirmed this body (a 200 or a 304).
    fetched: Instant,
    /// How long after `fetched` it may be served: the longest wait before
    /// the feed's next poll plus one upstream timeout, i.e. as long as the
    /// next poll may take to come back.
    ttl: Duration,
    feed: Weak<Feed>,
    /// The feed's refresh count when the poll began: a refresh since (a
    /// write passed through) means this body may predate the write.
    refreshes: u64,
    /// Which poll loop wrote it (feeds of two definitions may poll the same request).
    owner: u64,
    /// Definition name, for the metrics.
    name: Arc<str>,
}

struct Ttl;

impl moka::Expiry<Identity, Arc<Answer>> for Ttl {
    fn expire_after_create(&self, _: &Identity, v: &Arc<Answer>, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Identity,
        v: &Arc<Answer>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// The latest answers of every live feed that serves polls.
pub struct Stragglers {
    cache: Cache<Identity, Arc<Answer>>,
    /// Poll loops with an answer in the cache: while none, a request costs one atomic load.
    serving: AtomicUsize,
    next_owner: AtomicU64,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Stragglers {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        // At most one entry per live feed; bodies are shared with the feeds, not copied.
        let capacity = match config.limits.max_feeds {
            0 => 100_000,
            n => n as u64,
        };
        for f in config.feeds.iter().filter(|f| f.serve_polls) {
            metrics.declare_stragglers(&f.name);
        }
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(Ttl)
                .build(),
            serving: AtomicUsize::new(0),
            next_owner: AtomicU64::new(0),
            timeout: config.upstream.timeout,
            metrics,
        }
    }

    /// The recorder of one poll loop: `poll` is the feed's upstream path
    /// (parameters filled in), `headers` the credentials its polls send.
    pub(crate) fn recorder_for(
        self: &Arc<Self>,
        feed: &Arc<Feed>,
        poll: &str,
        headers: &HeaderMap,
    ) -> StragglerRecorder {
        StragglerRecorder {
            on: feed.def.serve_polls.then(|| self.clone()),
            identity: Identity {
                path: poll.to_owned(),
                query: feed.key.query.clone(),
                authorization: headers.get(header::AUTHORIZATION).cloned(),
                cookie: headers.get(header::COOKIE).cloned(),
            },
            owner: self.next_owner.fetch_add(1, Ordering::Relaxed),
            feed: Arc::downgrade(feed),
            name: feed.def.name.as_str().into(),
            timeout: self.timeout,
            last: None,
            serving: false,
            began: 0,
        }
    }

    /// The answer to `req` from a live feed's latest poll, when `req` is a
    /// plain GET or HEAD of exactly what that feed polls; `None` sends it
    /// upstream as usual.
    /// Whether any feed serves polls now: then a `GET` on any path may be
    /// answered here rather than passed through.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire) != 0
    }

    pub fn answer<B: http_body::Body>(
        &self,
        req: &Request<B>,
        client: SocketAddr,
    ) -> Option<Response<BoxBody>> {
        if self.serving.load(Ordering::Acquire) == 0 {
            return None;
        }
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            return None;
        }
        let h = req.headers();
        // A body, a part, a precondition, a protocol switch or a CORS request
        // is the upstream's to answer; so is a client that asks for it.
        if !req.body().is_end_stream()
            || [
                header::RANGE,
                header::IF_RANGE,
                header::IF_MATCH,
                header::IF_UNMODIFIED_SINCE,
                header::ORIGIN,
                header::UPGRADE,
                header::TRANSFER_ENCODING,
            ]
            .iter()
            .any(|n| h.contains_key(n))
        {
            return None;
        }
        let query = match req.uri().query() {
            None | Some("") => Cow::Borrowed(""),
            Some(q) => Cow::Owned(normalize_query(q)),
        };
        let a = self.cache.get(&Lookup {
            path: req.uri().path(),
            query: &query,
            authorization: single(h, &header::AUTHORIZATION)?,
            cookie: single(h, &header::COOKIE)?,
        })?;
        let feed = a.feed.upgrade()?;
        if feed.is_retired() || feed.refreshes() != a.refreshes {
            return None;
        }
        let age = a.fetched.elapsed();
        if age > a.ttl
            || !takes_stored(h, age)
            || !acceptable(h.get(header::ACCEPT), a.headers.get(header::CONTENT_TYPE))
            || a.varies.iter().any(|n| h.contains_key(n))
        {
            return None;
        }

        let not_modified = if h.contains_key(header::IF_NONE_MATCH) {
            h.get_all(header::IF_NONE_MATCH)
                .iter()
                .any(|v| etag_matches(v.as_bytes(), a.etag.as_bytes()))
        } else {
            let since = h
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok());
            matches!((a.last_modified, since), (Some(lm), Some(since)) if lm <= since)
        };
        let mut headers = a.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        let (status, body) = if not_modified {
            // A 304 carries the validators and caching headers, not the
            // body's description (RFC 9110 15.4.5).
            headers.remove(header::CONTENT_TYPE);
            headers.remove(header::CONTENT_LANGUAGE);
            (StatusCode::NOT_MODIFIED, empty())
        } else if head {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(a.body.len()));
            (StatusCode::OK, empty())
        } else {
            let body = Full::new(a.body.clone())
                .map_err(|never| match never {})
                .boxed_unsync();
            (StatusCode::OK, body)
        };
        let sent = if status == StatusCode::OK && !head {
            a.body.len()
        } else {
            0
        };
        self.metrics.straggler(&a.name, status, sent as u64);
        crate::access::answered(req.method(), req.uri().path(), client, status, &a.name);
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Some(resp)
    }
}

fn empty() -> BoxBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The one value of `name`: `Some(None)` when absent, `None` (not the same
/// request as any poll, which sends at most one) when repeated.
fn single<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<Option<&'a HeaderValue>> {
    let mut all = h.get_all(name).iter();
    let first = all.next();
    match all.next() {
        None => Some(first),
        Some(_) => None,
    }
}

/// Whether the client's `Cache-Control` (or HTTP/1.0 `Pragma`) lets a stored
/// answer of this age be used: not with `no-cache`, `no-store`, or a
/// `max-age` below the age.
fn takes_stored(h: &HeaderMap, age: Duration) -> bool {
    let mut directives = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .peekable();
    if directives.peek().is_none() {
        return !h
            .get_all(header::PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    }
    directives.all(|d| match d.split_once('=') {
        None => d != "no-cache" && d != "no-store",
        Some((k, v)) if k.trim() == "max-age" => v
            .trim()
            .trim_matches('"')
            .parse::<u64>()
            .is_ok_and(|secs| age <= Duration::from_secs(secs)),
        Some((k, _)) => k.trim() != "no-cache",
    })
}

/// Whether a request's `Accept` takes `content_type`: the most specific
/// matching range decides (`application/json;q=0, */*` refuses JSON).
fn acceptable(accept: Option<&HeaderValue>, content_type: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept else { return true };
    let Ok(accept) = accept.to_str() else {
        return false;
    };
    let ct = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map_or("application/octet-stream".to_owned(), |v| {
            v.trim().to_ascii_lowercase()
        });
    let (ty, sub) = ct.split_once('/').unwrap_or((ct.as_str(), ""));
    let mut best: Option<(u8, bool)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .is_some_and(|q| q <= 0.0);
        let specificity = match media.split_once('/') {
            Some(("*", "*")) => 1,
            Some((t, "*")) if t == ty => 2,
            Some((t, s)) if t == ty && s == sub => 3,
            _ => continue,
        };
        if best.is_none() || best.is_some_and(|(s, _)| specificity > s) {
            best = Some((specificity, !q_zero));
        }
    }
    best.is_some_and(|(_, ok)| ok)
}

/// Weak comparison (RFC 9110 8.8.3.2) of one `If-None-Match` value, a list
/// of entity tags or `*`, with our `etag`.
fn etag_matches(list: &[u8], etag: &[u8]) -> bool {
    let opaque = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    let ours = opaque(etag);
    let mut rest = list;
    loop {
        rest = trim_start(rest, |c| c == b' ' || c == b'\t' || c == b',');
        if rest.is_empty() {
            return false;
        }
        if rest[0] == b'*' {
            return true;
        }
        let tag = rest.strip_prefix(b"W/").unwrap_or(rest);
        if tag.first() != Some(&b'"') {
            return false;
        }
        let Some(end) = tag[1..].iter().position(|&c| c == b'"') else {
            return false;
        };
        if tag[..end + 2] == ours[..] {
            return true;
        }
        rest = &tag[end + 2..];
    }
}

fn trim_start(mut s: &[u8], skip: impl Fn(u8) -> bool) -> &[u8] {
    while let Some((&c, rest)) = s.split_first() {
        if !skip(c) {
            break;
        }
        s = rest;
    }
    s
}

/// Representation headers of the poll response that a replay keeps. Never
/// `Set-Cookie` or anything about the connection or the poll itself.
const KEPT: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_LANGUAGE,
    header::LAST_MODIFIED,
    header::VARY,
];

/// The config rules of `serve_polls` for feed `f`: an `Err` is the message.
pub fn check(
    f: &FeedConfig,
    feeds: &[FeedConfig],
    admin: &AdminConfig,
    upstream: &UpstreamConfig,
) -> Result<(), String> {
    if upstream.preserve_host {
        return Err("cannot be used with [upstream] preserve_host = true: clients' requests reach the upstream with their own Host, polls with the upstream's, so no request is the same as a poll".into());
    }
    if admin.owns(f.poll_path()) {
        return Err(format!(
            "the poll path `{}` is inside pollcast's own prefix {} ([admin] prefix): requests for it never reach the upstream",
            f.poll, admin.prefix
        ));
    }
    for (j, other) in feeds.iter().enumerate() {
        let sse = other.sse_path();
        let routed = sse == f.poll_path()
            || Pattern::parse(&sse)
                .ok()
                .is_some_and(|p| p.has_params() && p.matches(f.poll_path()).is_some());
        if routed {
            return Err(format!(
                "the poll path `{}` is also the SSE path of feeds[{j}] (`{}`): GETs of it open the event stream and never reach the upstream",
                f.poll, other.name
            ));
        }
    }
    Ok(())
}

mod recorder;
pub(crate) use recorder::StragglerRecorder;

#[cfg(test)]
mod tests;
