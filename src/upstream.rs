//! The one pooled HTTP client to the upstream, shared by pass-through and polls.
//!
//! This module owns connecting to the upstream, the per-request timeout and the
//! body-size cap for polls, and the classification of upstream failures. It
//! must never interpret a poll body (that is `feed::extract`) nor shape
//! client responses (that is `proxy`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};

use crate::body::BoxBody;
use crate::config::{UpstreamConfig, UpstreamUrl};

mod pool;
mod raw;

pub(crate) use raw::{lists, Answer, RawError};

/// A response body from the upstream; read to its end, its connection is
/// reused.
pub use pool::Body;

/// Why a request to the upstream produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream refused or dropped the connection: {0}")]
    Connect(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream request failed: {0}")]
    Request(String),
    #[error("request URI is invalid: {0}")]
    Uri(String),
}

/// Why one poll failed; its text is the `reason` subscribers see.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream returned {0}")]
    Status(StatusCode),
    /// A failure status that says when to come back (`429`, `503` with `Retry-After`).
    #[error("upstream returned {0}, retry after {secs}s", secs = .1.as_secs())]
    RetryAfter(StatusCode, Duration),
    #[error("upstream body larger than {0} bytes")]
    TooLarge(usize),
    #[error("upstream body broke off: {0}")]
    Body(String),
}

/// Validators of the last good poll body (`ETag`, `Last-Modified`), sent back
/// as `If-None-Match` / `If-Modified-Since` so an unchanged list costs a 304.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<HeaderValue>,
}

impl Validators {
    fn of(headers: &HeaderMap) -> Self {
        Self {
            etag: headers.get(header::ETAG).cloned(),
            last_modified: headers.get(header::LAST_MODIFIED).cloned(),
        }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.etag {
            headers.insert(header::IF_NONE_MATCH, v.clone());
        }
        if let Some(v) = &self.last_modified {
            headers.insert(header::IF_MODIFIED_SINCE, v.clone());
        }
    }
}

/// A successful poll. How long the upstream says it stays fresh
/// ([`Polled::fresh_for`]) may delay the next poll.
#[derive(Debug)]
pub enum Polled {
    /// A body, with the validators to send next time and the response's
    /// headers (what `stragglers` replays of them is decided there).
    Body(Bytes, Validators, Box<HeaderMap>),
    /// `304 Not Modified`: the list is what it was; nothing to read or parse.
    NotModified(Option<Duration>),
}

impl Polled {
    /// Body bytes received.
    pub fn len(&self) -> usize {
        match self {
            Polled::Body(b, ..) => b.len(),
            Polled::NotModified(_) => 0,
        }
    }

    /// How long the answer stays fresh (`Cache-Control: max-age` less `Age`).
    pub fn fresh_for(&self) -> Option<Duration> {
        match self {
            Polled::Body(_, _, head) => fresh_for(head),
            Polled::NotModified(f) => *f,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shared, cheaply cloneable upstream client.
#[derive(Clone)]
pub struct Upstream {
    pool: pool::Pool,
    pub url: UpstreamUrl,
    pub timeout: Duration,
    pub max_body: usize,
    /// Set on the first response of any kind; readiness looks at it.
    reached: Arc<AtomicBool>,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        Self {
            pool: pool::Pool::new(
                &cfg.url.authority,
                cfg.timeout,
                cfg.pool_idle_timeout,
                cfg.pool_max_idle,
            ),
            url: cfg.url.clone(),
            timeout: cfg.timeout,
            max_body: cfg.max_body,
            reached: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the upstream has answered any request (any status) yet.
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_reached(&self) {
        if !self.reached.load(Ordering::Relaxed) {
            self.reached.store(true, Ordering::Relaxed);
        }
    }

    /// Send a request whose URI is already absolute; waits at most `timeout`
    /// for the response head, counted from when the request body has been
    /// sent (a big upload may stream for far longer than `timeout`). The
    /// response body then streams for as long as it lasts.
    /// The current span (pass-through, check), when traced, is the
    /// request's `traceparent`.
    pub async fn send(&self, mut req: Request<BoxBody>) -> Result<Response<Body>, UpstreamError> {
        crate::trace::inject(&tracing::Span::current(), req.headers_mut());
        if http_body::Body::is_end_stream(req.body()) {
            // Nothing to send: the wait for the answer starts once a
            // connection has the request, without the signal or a second
            // boxing of the body.
            let r = self.pool.send(req, Some(self.timeout)).await;
            return r.inspect(|_| self.mark_reached());
        }
        let sent = Arc::new(tokio::sync::Notify::new());
        let req = req.map(|inner| {
            SentSignal {
                inner,
                sent: sent.clone(),
            }
            .boxed_unsync()
        });
        let answer_overdue = async {
            sent.notified().await;
            tokio::time::sleep(self.timeout).await;
        };
        let answered = tokio::select! {
            r = self.pool.send(req, None) => Ok(r),
            _ = answer_overdue => Err(()),
        };
        match answered {
            Err(()) => Err(UpstreamError::Timeout(self.timeout)),
            Ok(r) => r.inspect(|_| self.mark_reached()),
        }
    }

    /// A plain `GET` whose whole head the caller wrote (`Host` included:
    /// see [`Upstream::host`]), exchanged on a raw connection; the answer
    /// head must come within `timeout`. `read` makes of it what the caller
    /// needs (the express lane writes it on as bytes).
    pub(crate) async fn send_get<T>(
        &self,
        head: &[u8],
        read: &mut impl FnMut(&Answer<'_, '_, '_>) -> Result<T, RawError>,
    ) -> Result<(T, Body), UpstreamError> {
        let r = self
            .pool
            .exchange_raw(head, false, Some(self.timeout), read)
            .await;
        r.inspect(|_| self.mark_reached())
    }

    /// The `Host` the upstream gets when the client's is not preserved.
    pub(crate) fn host(&self) -> &HeaderValue {
        self.pool.host_header()
    }

    /// `GET path_and_query` with `headers`, the whole exchange (head and body)
    /// bounded by `timeout` and the body by `max_body`.
    /// With `conditions`, an unchanged list may be answered `304`, which is
    /// [`Polled::NotModified`], a success.
    pub async fn poll(
        &self,
        path_and_query: &str,
        headers: HeaderMap,
        conditions: Option<&Validators>,
    ) -> Result<Polled, PollError> {
        let uri = self
            .url
            .join(path_and_query)
            .map_err(|e| UpstreamError::Uri(e.to_string()))?;
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| UpstreamError::Uri(e.to_string()))?;
        *req.headers_mut() = headers;
        if let Some(c) = conditions {
            c.apply(req.headers_mut());
        }
        req.headers_mut()
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("application/json"));
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("pollcast/", env!("CARGO_PKG_VERSION"))),
        );
        // The poll's `request` span, when traced, is the upstream's parent.
        let span = tracing::Span::current();
        crate::trace::inject(&span, req.headers_mut());

        let max = self.max_body;
        let exchange = async {
            let resp = self.pool.send(req, None).await?;
            self.mark_reached();
            span.record("http.response.status_code", resp.status().as_u16());
            if resp.status() == StatusCode::NOT_MODIFIED && conditions.is_some() {
                return Ok(Polled::NotModified(fresh_for(resp.headers())));
            }
            if !resp.status().is_success() {
                return Err(match retry_after(resp.headers(), SystemTime::now()) {
                    Some(after) => PollError::RetryAfter(resp.status(), after),
                    None => PollError::Status(resp.status()),
                });
            }
            if let Some(len) = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
            {
                if len > max {
                    return Err(PollError::TooLarge(max));
                }
            }
            let validators = Validators::of(resp.headers());
            let (head, body) = resp.into_parts();
            match Limited::new(body, max).collect().await {
                Ok(c) => Ok(Polled::Body(
                    c.to_bytes(),
                    validators,
                    Box::new(head.headers),
                )),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    Err(PollError::TooLarge(max))
                }
                Err(e) => Err(PollError::Body(e.to_string())),
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(self.timeout).into()),
        }
    }
}

impl PollError {
    /// How long the upstream asked pollcast to wait before the next poll.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PollError::RetryAfter(_, after) => Some(*after),
            _ => None,
        }
    }
}

/// `Retry-After` (RFC 9110 10.2.3) as a delay from `now`: either delay-seconds
/// or an HTTP-date. A date in the past means "now"; anything unparseable is ignored.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How long an answer stays fresh by RFC 9111: `Cache-Control: max-age`
/// (its first occurrence over all `Cache-Control` lines) less `Age`.
/// `None` when there is no usable `max-age`, when the answer is already
/// stale, and with `no-cache` or `no-store`, which ask to be asked again.
/// A value too large for a number saturates (the caller caps it anyway).
pub fn fresh_for(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for line in headers.get_all(header::CACHE_CONTROL) {
        let Ok(line) = line.to_str() else {
            continue;
        };
        for directive in line.split(',') {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return None;
            }
            if name.eq_ignore_ascii_case("max-age") && max_age.is_none() {
                max_age = Some(value.and_then(delta_seconds));
            }
        }
    }
    let max_age = max_age.flatten()?;
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(v.trim()))
        .unwrap_or(0);
    let left = max_age.saturating_sub(age);
    (left > 0).then(|| Duration::from_secs(left))
}

/// RFC 9111 1.2.2 delta-seconds: digits only; too many saturate.
fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse().unwrap_or(u64::MAX))
}

/// A request body that signals when it has been sent in full (or was
/// empty), which is when the wait for the upstream's answer begins.
struct SentSignal {
    inner: BoxBody,
    sent: Arc<tokio::sync::Notify>,
}

impl http_body::Body for SentSignal {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let frame = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = frame {
            // A stored permit: the waiter may start waiting later.
            self.sent.notify_one();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        // hyper asks this instead of polling an empty body.
        let end = self.inner.is_end_stream();
        if end {
            self.sent.notify_one();
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An error and its sources on one line; hyper's top-level messages alone are vague.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(
            retry_after(&headers("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:50:07 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&headers("-5"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    fn cache_control(lines: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, HeaderValue::from_static(l));
        }
        h
    }

    #[test]
    fn fresh_for_reads_max_age_less_age() {
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(fresh_for(&cache_control(&["max-age=30"])), secs(30));
        assert_eq!(
            fresh_for(&cache_control(&["public, MAX-AGE=\"5\", must-revalidate"])),
            secs(5)
        );
        assert_eq!(
            fresh_for(&cache_control(&["private", "max-age=7"])),
            secs(7)
        );
        // The first occurrence counts.
        assert_eq!(
            fresh_for(&cache_control(&["max-age=7, max-age=1"])),
            secs(7)
        );
        assert_eq!(
            fresh_for(&cache_control(&["max-age=99999999999999999999999"])),
            Some(Duration::from_secs(u64::MAX))
        );
        let mut aged = cache_control(&["max-age=30"]);
        aged.insert(header::AGE, HeaderValue::from_static("12"));
        assert_eq!(fresh_for(&aged), secs(18));
        aged.insert(header::AGE, HeaderValue::from_static("45"));
        assert_eq!(fresh_for(&aged), None);
        aged.insert(header::AGE, HeaderValue::from_static("soon"));
        assert_eq!(fresh_for(&aged), secs(30));
    }

    #[test]
    fn fresh_for_ignores_no_cache_no_store_zero_and_garbage() {
        for lines in [
            &["no-cache"][..],
            &["no-store, max-age=60"],
            &["max-age=60", "no-cache"],
            &["max-age=0"],
            &["max-age=-5"],
            &["max-age=1.5"],
            &["max-age"],
            &["max-age="],
            &["s-maxage=60"],
            &[],
        ] {
            assert_eq!(fresh_for(&cache_control(lines)), None, "{lines:?}");
        }
    }
}
