//! `/readyz`: whether this pollcast should be sent traffic.
//!
//! Ready means: the config is loaded and the listeners are up (true once
//! [`crate::start()`] returned), pollcast is not shutting down, and the upstream
//! is there: either it has answered any request at least once (poll,
//! pass-through, or a `HEAD /` this module sends when nothing else has), or,
//! with `[admin] ready_probe`, that path answers 2xx.
//!
//! This module owns that verdict and keeps it cheap: a verdict that needed the
//! upstream is reused for `[admin] ready_cache`, and concurrent probes share
//! one upstream request. It must never be on the path of client traffic.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Empty};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;
use crate::upstream::Upstream;

/// The answer `/readyz` gives.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub ready: bool,
    /// One line for people reading the probe's output.
    pub detail: String,
}

impl Verdict {
    fn ready(detail: String) -> Self {
        Self {
            ready: true,
            detail,
        }
    }
    fn not_ready(detail: String) -> Self {
        Self {
            ready: false,
            detail,
        }
    }
}

/// Whether this replica's cluster engine reaches Redis, as `/readyz` and the
/// status page tell it. Written by the cluster engine (a higher layer), read
/// here, so readiness never imports it.
#[derive(Debug)]
pub struct ClusterHealth {
    up: std::sync::atomic::AtomicBool,
}

impl ClusterHealth {
    pub fn new(up: bool) -> Self {
        Self {
            up: std::sync::atomic::AtomicBool::new(up),
        }
    }
    pub fn set(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::Release);
    }
    pub fn is_up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Acquire)
    }
    /// One line for people: what the cluster state means for this replica.
    pub fn describe(&self) -> &'static str {
        if self.is_up() {
            "cluster: Redis reachable, polls shared"
        } else {
            "cluster: Redis unreachable, polling locally"
        }
    }
}

pub struct Readiness {
    /// `[cluster]` only. Losing Redis does not make a replica unready: it
    /// keeps serving (polling on its own), and `/readyz` says so.
    pub cluster: Option<std::sync::Arc<ClusterHealth>>,
    upstream: Upstream,
    probe: Option<String>,
    cache: Duration,
    shutdown: CancellationToken,
    /// The last verdict that needed the upstream. An async mutex on purpose:
    /// holding it across the probe makes concurrent checks wait for one
    /// upstream request instead of sending one each (never on the hot path).
    last: Mutex<Option<(Instant, Verdict)>>,
}

impl Readiness {
    pub fn new(cfg: &AdminConfig, upstream: Upstream, shutdown: CancellationToken) -> Self {
        Self {
            cluster: None,
            upstream,
            probe: cfg.ready_probe.clone(),
            cache: cfg.ready_cache,
            shutdown,
            last: Mutex::new(None),
        }
    }

    pub async fn check(&self) -> Verdict {
        let mut v = self.check_upstream().await;
        if let Some(c) = &self.cluster {
            v.detail = format!("{}; {}", v.detail, c.describe());
        }
        v
    }

    async fn check_upstream(&self) -> Verdict {
        if self.shutdown.is_cancelled() {
            return Verdict::not_ready("shutting down".into());
        }
        if self.probe.is_none() && self.upstream.reached() {
            return Verdict::ready("upstream has answered".into());
        }
        let mut last = self.last.lock().await;
        if let Some((at, v)) = &*last {
            if at.elapsed() < self.cache {
                return v.clone();
            }
        }
        let v = self.ask_upstream().await;
        *last = Some((Instant::now(), v.clone()));
        v
    }

    async fn ask_upstream(&self) -> Verdict {
        let (method, path) = match &self.probe {
            Some(p) => (Method::GET, p.as_str()),
            None => (Method::HEAD, "/"),
        };
        let uri = match self.upstream.url.join(path) {
            Ok(u) => u,
            Err(e) => return Verdict::not_ready(format!("probe path {path}: {e}")),
        };
        let mut req = Request::new(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!(
                "pollcast/",
                env!("CARGO_PKG_VERSION"),
                " (readiness)"
            )),
        );
        match (self.upstream.send(req).await, &self.probe) {
            (Ok(resp), Some(p)) if resp.status().is_success() => {
                Verdict::ready(format!("probe GET {p} answered {}", resp.status()))
            }
            (Ok(resp), Some(p)) => {
                Verdict::not_ready(format!("probe GET {p} answered {}", resp.status()))
            }
            (Ok(resp), None) => Verdict::ready(format!("upstream answered {}", resp.status())),
            (Err(e), _) => Verdict::not_ready(format!("{method} {path}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{UpstreamConfig, UpstreamUrl};

    #[tokio::test]
    async fn not_ready_once_shutdown_began_even_with_a_reached_upstream() {
        let url = UpstreamUrl::parse("http://127.0.0.1:9").expect("url");
        let upstream = Upstream::new(&UpstreamConfig::new(url));
        upstream.mark_reached();
        let shutdown = CancellationToken::new();
        let r = Readiness::new(&AdminConfig::default(), upstream, shutdown.clone());
        assert!(r.check().await.ready);
        shutdown.cancel();
        let v = r.check().await;
        assert!(!v.ready && v.detail == "shutting down", "{v:?}");
    }
}
