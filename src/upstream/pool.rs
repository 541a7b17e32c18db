//! Kept-alive HTTP/1.1 connections to the one upstream, most recently used
//! first.
//!
//! This module owns connecting (`TCP_NODELAY`, the connect timeout), the idle
//! list (`pool_max_idle`, `pool_idle_timeout`), putting a request in the
//! origin form HTTP/1.1 sends with its `Host`, and handing a connection back
//! once its response body has been read to the end. It replaces hyper-util's
//! legacy client, whose per-request machinery (a pool keyed by origin, a
//! checkout racing a lazy connect, a `Host` formatted per request and a task
//! spawned per response to wait for the connection to be ready again) was a
//! visible share of pass-through time; hyper's own connection (one task per
//! connection, upgrades included) does the wire work as before.
//! It must never look at what it carries beyond that: headers, timeouts of
//! the answer and bodies are the caller's.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Parts};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::raw::{self, Answer, Conn, RawBody, RawError};
use super::{error_chain, UpstreamError};
use crate::body::{BoxBody, BoxError};

type Sender = http1::SendRequest<BoxBody>;

/// Eviction of idle connections runs at most this often (as hyper-util's did).
const MIN_CHECK: Duration = Duration::from_millis(90);

/// The pool; cheap to clone.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where to connect (`host`, `port`), without user info.
    host: String,
    port: u16,
    /// The `Host` a request without one is sent with.
    host_header: HeaderValue,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Idle>,
    /// Cancelled when the pool is dropped (by the guard): the eviction
    /// task ends then rather than at its next check.
    gone: CancellationToken,
    _cancel_when_dropped: DropGuard,
}

#[derive(Default)]
struct Idle {
    /// Most recently returned last.
    conns: Vec<(Sender, Instant)>,
    /// Connections of raw exchanges (`raw`), most recently returned last.
    raw: Vec<(Conn, Instant)>,
    /// Whether the eviction task runs.
    evicting: bool,
}

impl Pool {
    pub(crate) fn new(
        authority: &Authority,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let host = authority.host();
        // `Authority::host` keeps an IPv6 literal's brackets; `Host` wants them.
        let host_header = match authority.port_u16() {
            Some(80) | None => HeaderValue::from_str(host),
            Some(port) => HeaderValue::from_str(&format!("{host}:{port}")),
        }
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let gone = CancellationToken::new();
        Self {
            inner: Arc::new(Inner {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: authority.port_u16().unwrap_or(80),
                host_header,
                connect_timeout,
                idle_timeout,
                max_idle,
                idle: Mutex::new(Idle::default()),
                _cancel_when_dropped: gone.clone().drop_guard(),
                gone,
            }),
        }
    }

    /// Send `req` (any URI form: only its path and query are sent) on an idle
    /// connection, or a new one. A request an idle connection could not take
    /// (it closed meanwhile) goes on the next one; it was never sent.
    /// With `answer_within`, the response head must come that soon after a
    /// connection took the request (for a request without a body: once it
    /// is sent; connecting has its own timeout).
    pub(crate) async fn send(
        &self,
        mut req: Request<BoxBody>,
        answer_within: Option<Duration>,
    ) -> Result<Response<Body>, UpstreamError> {
        origin_form(req.uri_mut());
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.inner.host_header.clone());
        if raw::fits(&req) {
            let head = raw::encode(&req);
            let bodiless = req.method() == http::Method::HEAD;
            drop(req);
            let (resp, body) = self
                .exchange_raw(&head, bodiless, answer_within, &mut raw::response_of)
                .await?;
            return Ok(resp.map(|()| body));
        }
        loop {
            let (mut tx, reused) = match self.checkout().await {
                Some(tx) => (tx, true),
                None => (self.connect().await?, false),
            };
            let answered = within(answer_within, tx.try_send_request(req)).await?;
            match answered {
                Ok(resp) => return Ok(self.wrap(resp, tx)),
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => req = back,
                    _ => {
                        return Err(UpstreamError::Request(error_chain(&e.into_error())));
                    }
                },
            }
        }
    }

    /// A request without a body, exchanged by this task on a connection of
    /// its own (see `raw`). A kept-alive connection the upstream closed
    /// before answering gets the request again on the next one: it is a
    /// `GET` or `HEAD`, safe to repeat.
    ///
    /// `head` is the whole request head, `Host` included; `read` makes of
    /// the answer head what the caller wants.
    pub(crate) async fn exchange_raw<T>(
        &self,
        head: &[u8],
        bodiless: bool,
        answer_within: Option<Duration>,
        read: &mut impl FnMut(&Answer<'_, '_, '_>) -> Result<T, RawError>,
    ) -> Result<(T, Body), UpstreamError> {
        loop {
            let (conn, reused) = match self.checkout_raw() {
                Some(conn) => (conn, true),
                None => (Conn::new(self.connect_tcp().await?), false),
            };
            let answered = within(answer_within, conn.exchange(head, bodiless, read)).await?;
            match answered {
                Ok((t, body)) => {
                    let home = Arc::downgrade(&self.inner);
                    let body = Body {
                        kind: Kind::Raw { body, home },
                    };
                    return Ok((t, body));
                }
                Err(RawError::Closed(_)) if reused => continue,
                Err(e) => return Err(UpstreamError::Request(e.to_string())),
            }
        }
    }

    /// The most recently used idle raw connection that is still open.
    fn checkout_raw(&self) -> Option<Conn> {
        let mut idle = self.inner.idle();
        while let Some((mut conn, since)) = idle.raw.pop() {
            if since.elapsed() < self.inner.idle_timeout && conn.alive() {
                return Some(conn);
            }
        }
        None
    }

    /// The `Host` a request without one is sent with.
    pub(crate) fn host_header(&self) -> &HeaderValue {
        &self.inner.host_header
    }

    /// The most recently used idle connection that is still open, ready.
    async fn checkout(&self) -> Option<Sender> {
        loop {
            let (mut tx, since) = self.inner.idle().conns.pop()?;
            if tx.is_closed() || since.elapsed() >= self.inner.idle_timeout {
                continue;
            }
            // Handed back at the end of its response, a connection may still
            // be finishing that exchange; it is ready in a moment or closed.
            if tx.ready().await.is_ok() {
                return Some(tx);
            }
        }
    }

    async fn connect(&self) -> Result<Sender, UpstreamError> {
        let tcp = self.connect_tcp().await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Connect(error_chain(&e)))?;
        // Owned by its sender: it ends when the sender is dropped (evicted,
        // or the pool gone) once any exchange in flight is over, or when the
        // upstream closes.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %error_chain(&e), "upstream connection closed");
            }
        });
        Ok(tx)
    }

    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let inner = &self.inner;
        let tcp = tokio::time::timeout(
            inner.connect_timeout,
            TcpStream::connect((inner.host.as_str(), inner.port)),
        )
        .await
        .map_err(|_| {
            UpstreamError::Connect(format!(
                "connect timed out after {:?}",
                inner.connect_timeout
            ))
        })?
        .map_err(|e| UpstreamError::Connect(format!("tcp connect error: {e}")))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    fn wrap(&self, resp: Response<Incoming>, tx: Sender) -> Response<Body> {
        // After a protocol switch the connection is the tunnel's.
        let home = (resp.status() != StatusCode::SWITCHING_PROTOCOLS)
            .then(|| (tx, Arc::downgrade(&self.inner)));
        resp.map(|inner| Body {
            kind: Kind::Hyper {
                inner,
                home: Cell::new(home),
            },
        })
    }
}

impl Inner {
    fn idle(&self) -> MutexGuard<'_, Idle> {
        // The list stays consistent whatever panicked while holding it.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_back(self: &Arc<Self>, tx: Sender) {
        if !tx.is_closed() {
            self.keep(|idle| &mut idle.conns, tx);
        }
    }

    fn put_back_raw(self: &Arc<Self>, conn: Conn) {
        self.keep(|idle| &mut idle.raw, conn);
    }

    /// Keep an idle connection on its list, most recently used last; when
    /// the list is full, the least recently used goes.
    fn keep<T>(self: &Arc<Self>, list: impl FnOnce(&mut Idle) -> &mut Vec<(T, Instant)>, conn: T) {
        if self.max_idle == 0 || self.idle_timeout.is_zero() {
            return;
        }
        let mut idle = self.idle();
        let conns = list(&mut idle);
        if conns.len() >= self.max_idle {
            conns.remove(0);
        }
        conns.push((conn, Instant::now()));
        self.evict_later(&mut idle);
    }

    fn evict_later(self: &Arc<Self>, idle: &mut Idle) {
        if !idle.evicting {
            idle.evicting = true;
            let every = self.idle_timeout.max(MIN_CHECK);
            tokio::spawn(evict(Arc::downgrade(self), every, self.gone.clone()));
        }
    }
}

/// `answer`, given at most `limit` when there is one.
async fn within<F: std::future::Future>(
    limit: Option<Duration>,
    answer: F,
) -> Result<F::Output, UpstreamError> {
    match limit {
        Some(t) => tokio::time::timeout(t, answer)
            .await
            .map_err(|_| UpstreamError::Timeout(t)),
        None => Ok(answer.await),
    }
}

/// Closes connections idle for longer than `pool_idle_timeout`; ends once
/// none is idle (the next one handed back starts it again) or the pool is gone.
async fn evict(pool: Weak<Inner>, every: Duration, gone: CancellationToken) {
    loop {
        tokio::select! {
            _ = gone.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let mut idle = inner.idle();
        let timeout = inner.idle_timeout;
        idle.conns
            .retain(|(tx, since)| !tx.is_closed() && since.elapsed() < timeout);
        idle.raw
            .retain_mut(|(conn, since)| since.elapsed() < timeout && conn.alive());
        if idle.conns.is_empty() && idle.raw.is_empty() {
            idle.evicting = false;
            return;
        }
    }
}

/// HTTP/1.1 sends the origin form (`/path?query`) to an origin server.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let mut parts = Parts::default();
    parts.path_and_query = uri.path_and_query().cloned();
    *uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
}

/// A response body from the pool: once read to its end, its connection
/// goes back to the pool; dropped before that, the connection closes.
pub struct Body {
    kind: Kind,
}

enum Kind {
    /// Read by hyper's connection task.
    Hyper {
        inner: Incoming,
        /// `Cell`, not `Option`, so `is_end_stream` can see it too; a body
        /// is `Send`, never shared.
        home: Cell<Option<(Sender, Weak<Inner>)>>,
    },
    /// Read from its socket by whoever polls it (`raw`).
    Raw { body: RawBody, home: Weak<Inner> },
}

impl Body {
    fn go_home(&mut self) {
        match &mut self.kind {
            Kind::Hyper { home, .. } => {
                if let Some((tx, pool)) = home.take() {
                    if let Some(pool) = pool.upgrade() {
                        pool.put_back(tx);
                    }
                }
            }
            Kind::Raw { body, home } => {
                if let (Some(conn), Some(pool)) = (body.reusable_conn(), home.upgrade()) {
                    pool.put_back_raw(conn);
                }
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match &mut self.kind {
            Kind::Hyper { inner, home } => {
                let frame = Pin::new(&mut *inner).poll_frame(cx);
                match &frame {
                    Poll::Ready(None) => self.go_home(),
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => self.go_home(),
                    Poll::Ready(Some(Err(_))) => drop(home.take()),
                    _ => {}
                }
                frame.map(|f| f.map(|r| r.map_err(BoxError::from)))
            }
            Kind::Raw { body, .. } => {
                let data = std::task::ready!(body.poll_data(cx));
                if body.is_end() {
                    self.go_home();
                }
                Poll::Ready(data.map(|r| r.map(http_body::Frame::data).map_err(BoxError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Hyper { inner, .. } => inner.is_end_stream(),
            Kind::Raw { body, .. } => body.is_end(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            Kind::Hyper { inner, .. } => inner.size_hint(),
            Kind::Raw { body, .. } => match body.exact_len() {
                Some(n) => http_body::SizeHint::with_exact(n),
                None => http_body::SizeHint::default(),
            },
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // A body read to its end (or empty) but not polled past it still
        // leaves a reusable connection.
        if http_body::Body::is_end_stream(self) {
            self.go_home();
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("upstream::Body").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_in_origin_form() {
        let mut u: Uri = "http://example.com:8080/api/jobs?x=1".parse().expect("uri");
        origin_form(&mut u);
        assert_eq!(u, "/api/jobs?x=1");
        let mut u: Uri = "http://example.com".parse().expect("uri");
        origin_form(&mut u);
        assert_eq!(u, "/");
    }

    #[test]
    fn host_has_the_port_unless_it_is_80_and_no_user_info() {
        let pool = |a: &str| {
            Pool::new(
                &a.parse().expect("authority"),
                Duration::ZERO,
                Duration::ZERO,
                0,
            )
        };
        assert_eq!(pool("example.com:80").inner.host_header, "example.com");
        assert_eq!(
            pool("u:p@example.com:81").inner.host_header,
            "example.com:81"
        );
        let v6 = pool("[::1]:9000");
        assert_eq!(v6.inner.host_header, "[::1]:9000");
        assert_eq!(v6.inner.host, "::1");
    }

    #[tokio::test]
    async fn eviction_ends_when_the_pool_is_dropped() {
        let hour = Duration::from_secs(3600);
        let pool = Pool::new(&"127.0.0.1:9".parse().expect("authority"), hour, hour, 4);
        let task = tokio::spawn(evict(
            Arc::downgrade(&pool.inner),
            hour,
            pool.inner.gone.clone(),
        ));
        drop(pool);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the eviction task ends with the pool, not an hour later")
            .expect("no panic");
    }
}
