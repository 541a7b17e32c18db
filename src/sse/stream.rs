//! One subscriber's stream: a cursor into its feed, turned into body frames.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::encode;
use crate::config::SseConfig;
use crate::feed::registry::Subscription;
use crate::feed::{Cursor, Out};
use crate::limits::Permit;
use crate::{BoxBody, BoxError};

/// Resolves when the subscriber's admission is withdrawn (`check` mode).
type Revoked = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Follows one feed for one client. Owns nothing shared but its
/// [`Subscription`] and its limits [`Permit`]; dropping it (client gone)
/// releases both.
pub struct Subscriber {
    sub: Subscription,
    changed: watch::Receiver<u64>,
    cursor: Cursor,
    pending: VecDeque<Out>,
    keepalive: Duration,
    retry: Duration,
    shutdown: CancellationToken,
    done: bool,
    /// Held, never read: dropping it frees the slot.
    _permit: Option<Permit>,
    revoked: Option<Revoked>,
}

impl Subscriber {
    pub fn new(
        sub: Subscription,
        last_event_id: Option<&str>,
        cfg: &SseConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let cursor = sub.feed.cursor(last_event_id);
        let changed = sub.feed.watch();
        let mut pending = VecDeque::new();
        pending.push_back(Out::Bytes(encode::retry(cfg.retry)));
        Self {
            sub,
            changed,
            cursor,
            pending,
            keepalive: cfg.keepalive,
            retry: cfg.retry,
            shutdown,
            done: false,
            _permit: None,
            revoked: None,
        }
    }

    /// Keep `permit` (a limits slot) for as long as the stream lives.
    pub fn hold(mut self, permit: Permit) -> Self {
        self._permit = Some(permit);
        self
    }

    /// End the stream, without a `retry:` hint, when `revoked` resolves.
    pub fn revoked_by(
        mut self,
        revoked: Option<impl Future<Output = ()> + Send + 'static>,
    ) -> Self {
        self.revoked = revoked.map(|f| Box::pin(f) as Revoked);
        self
    }

    /// The next bytes to write, waiting for the feed, a keepalive or shutdown.
    /// `None` ends the response.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            // A subscriber that is never idle (busy feed, catching up) must
            // still have its rechecks run and obeyed: poll the revocation on
            // every frame, not only while waiting.
            if let Some(revoked) = self.revoked.as_mut().filter(|_| !self.done) {
                let now = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(revoked.as_mut().poll(cx).is_ready())
                })
                .await;
                if now {
                    self.sub.metrics.cut_off(&self.sub.feed.def.name);
                    self.revoked = None;
                    self.pending.clear();
                    self.done = true;
                }
            }
            match self.pending.pop_front() {
                Some(Out::Bytes(b)) => return Some(b),
                Some(Out::Snapshot(id, snap)) => {
                    self.sub.metrics.snapshot_sent(&self.sub.feed.def.name);
                    self.pending.push_front(Out::Bytes(snap.encoded()));
                    return Some(id);
                }
                None => {}
            }
            if self.done {
                return None;
            }
            // Mark the current version seen before reading the state, so a
            // change published after the pull wakes us.
            self.changed.borrow_and_update();
            let resyncs = self.cursor.resyncs;
            self.sub.feed.pull(&mut self.cursor, &mut self.pending);
            if self.cursor.resyncs != resyncs {
                self.sub.metrics.resynced(&self.sub.feed.def.name);
                self.sub.counters.add_resync();
            }
            if !self.pending.is_empty() {
                continue;
            }
            let revoked = self.revoked.as_mut();
            let revoked = async move {
                match revoked {
                    Some(f) => f.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = revoked => {
                    // The reconnect that follows meets the refusal itself.
                    self.sub.metrics.cut_off(&self.sub.feed.def.name);
                    self.revoked = None;
                    self.pending.clear();
                    self.done = true;
                }
                _ = self.sub.feed.retired() => {
                    // A reload removed or changed the definition: come back
                    // soon, to whatever now serves this path.
                    self.sub.metrics.cut_off(&self.sub.feed.def.name);
                    self.pending.push_back(Out::Bytes(encode::retry(self.retry)));
                    self.done = true;
                }
                _ = self.shutdown.cancelled() => {
                    // Come back soon, to this replica or another one.
                    self.pending.push_back(Out::Bytes(encode::retry(self.retry)));
                    self.done = true;
                }
                r = self.changed.changed() => {
                    if r.is_err() {
                        self.done = true;
                    }
                }
                _ = tokio::time::sleep(self.keepalive) => {
                    self.pending.push_back(Out::Bytes(encode::comment("keepalive")));
                }
            }
        }
    }

    pub fn into_body(self) -> BoxBody {
        let frames = futures_util::stream::unfold(self, |mut s| async move {
            s.next()
                .await
                .map(|b| (Ok::<_, BoxError>(Frame::data(b)), s))
        });
        StreamBody::new(frames).boxed_unsync()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{Config, FeedConfig, UpstreamUrl};
    use crate::feed::extract::extract;
    use crate::feed::registry::Registry;
    use crate::feed::FeedKey;
    use crate::metrics::Metrics;
    use crate::pointer::Pointer;
    use crate::upstream::Upstream;

    #[tokio::test]
    async fn a_subscriber_that_fell_behind_is_resynced_and_counted() {
        // An upstream nobody listens on: the poll loop fails quietly and
        // never publishes, so this test alone drives the feed.
        let url = UpstreamUrl::parse("http://127.0.0.1:9").expect("url");
        let mut config = Config::new(url, vec![FeedConfig::new("t", "/t")]);
        config.sse.history = 1;
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::new(
            &config,
            Upstream::new(&config.upstream),
            shutdown.clone(),
            metrics.clone(),
        );
        let sub = registry
            .subscribe(FeedKey::new(0, String::new(), None, None))
            .expect("no limits configured");
        let feed = sub.feed.clone();
        let mut s = Subscriber::new(sub, None, &config.sse, shutdown.clone());
        let list = |body: &'static str| {
            let (l, _) = extract(
                Bytes::from_static(body.as_bytes()),
                &Pointer::default(),
                &Pointer::parse("/id").expect("p"),
            )
            .expect("list");
            Arc::new(l)
        };
        feed.publish(list("[]"), vec![], true);
        s.next().await.expect("retry"); // retry:
        s.next().await.expect("id"); // first snapshot
        s.next().await.expect("body");
        // Three events while the subscriber does not read: history holds one.
        for _ in 0..3 {
            let seq = feed.next_seq();
            let e = encode::event(&feed.id(seq), "added", b"{}");
            feed.publish(list("[]"), vec![(seq, e)], false);
        }
        s.next().await.expect("id");
        let body = s.next().await.expect("snapshot body");
        assert!(String::from_utf8_lossy(&body).contains("event: snapshot"));
        let text = metrics.render(&registry);
        assert!(
            text.contains("pollcast_subscribers_resynced_total{feed=\"t\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pollcast_snapshots_sent_total{feed=\"t\"} 2\n"),
            "{text}"
        );
        shutdown.cancel();
        drop(s);
        registry.closed().await;
    }
}
