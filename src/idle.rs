//! The HTTP/2 request-head deadline and idle timeout of a connection.
//!
//! hyper bounds an HTTP/1.1 request head with `header_read_timeout`, but has
//! no such knob for HTTP/2: a client can send a HEADERS frame without
//! END_HEADERS and then nothing, and the h2 codec waits for the CONTINUATION
//! forever; an h2 connection with no stream open is never closed either.
//! This module gives HTTP/2 the HTTP/1.1 rule: a connection with no request
//! in progress (none received, or every response ended) must complete a
//! request head within `header_read_timeout`, else it is closed. A HEADERS
//! frame still waiting for its CONTINUATION is not a request yet, so it
//! cannot hold the connection either.
//!
//! It owns the count of requests in progress on one connection ([`Activity`],
//! a request counts from the moment the service sees it until its response
//! body ends or is dropped) and the [`Tracked`] service wrapper that keeps
//! it. It must never look inside requests or responses.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::BoxBody;

/// Requests in progress on one connection, and since when there were none.
#[derive(Default)]
pub struct Activity {
    active: AtomicUsize,
    /// When the connection last became idle; `None` until the first check.
    idle_since: Mutex<Option<Instant>>,
    changed: Notify,
}

/// One request in progress; dropped with its response body.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.since() = Some(Instant::now());
        }
        self.0.changed.notify_one();
    }
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            idle_since: Mutex::new(Some(Instant::now())),
            ..Self::default()
        })
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request in progress for
    /// `timeout` in a row.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            if self.active.load(Ordering::Acquire) > 0 {
                self.changed.notified().await;
                continue;
            }
            let since = (*self.since()).unwrap_or_else(Instant::now);
            tokio::select! {
                _ = tokio::time::sleep_until(since + timeout) => {
                    let now_since = *self.since();
                    if self.active.load(Ordering::Acquire) == 0 && now_since == Some(since) {
                        return;
                    }
                }
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// A service whose requests count as [`Activity`] until their response
/// bodies end.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, B> tower::Service<Request<B>> for Tracked<S>
where
    S: tower::Service<Request<B>, Response = Response<BoxBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let busy = self.activity.begin();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| {
                body.map_frame(move |f| {
                    // Held by the body: released when it ends or is dropped.
                    let _ = &busy;
                    f
                })
                .boxed_unsync()
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_only_after_a_quiet_timeout() {
        let a = Activity::new();
        let t = Duration::from_secs(1);
        let busy = a.begin();
        let waiting = tokio::time::timeout(Duration::from_secs(5), a.idle_for(t));
        assert!(waiting.await.is_err(), "never idle while a request is open");
        drop(busy);
        let started = Instant::now();
        a.idle_for(t).await;
        assert!(started.elapsed() >= t);
    }
}
