//! `auth = "check"` admission: a subscriber may follow a shared feed only
//! after the upstream accepted its own credentials on a check request, and
//! only for as long as the upstream keeps accepting them.
//!
//! This module owns the check request (path, method, the subscriber's
//! `Authorization`/`Cookie`, a bounded body), the translation of its answer
//! (2xx admits; 401/403 go back to the client as the upstream sent them;
//! anything else fails closed with 502) and the recheck loop that ends a
//! revoked subscriber's stream. It must never log a credential and never
//! admit on an error.
//!
//! The check goes to the path the subscriber's data comes from: the `check`
//! path (or the poll path) with the SSE path's parameters filled in, so a
//! user is admitted to project 1's feed only if the upstream admits them to
//! project 1.
//!
//! Answers are shared ([`Checks`]): subscribers with the same check request
//! (filled path, method, `Authorization`, `Cookie`, client address) use one
//! upstream check
//! for [`share_ttl`] (a quarter of `recheck`, at most 5 s), and concurrent
//! identical checks wait for one request. So N tabs of one user cost one
//! check per period, not N. Revocation still takes effect within one
//! `recheck`: rechecks are spaced by at most `recheck - share_ttl`, so the
//! first recheck at least `share_ttl` after a revocation, which comes before
//! `recheck` has passed, sees an answer given after it.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use moka::sync::Cache;
use tokio::sync::OnceCell;

use crate::body::BoxBody;
use crate::config::{CheckMethod, FeedConfig};
use crate::feed::key::Credentials;
use crate::metrics::{CheckOutcome, Metrics};
use crate::route::Pattern;
use crate::upstream::Upstream;

/// Longest time a check's answer is shared.
pub const MAX_SHARE: Duration = Duration::from_secs(5);

/// Check requests remembered at most (each holds its credentials).
const MAX_SHARED_CHECKS: u64 = 100_000;

/// How long a check's answer is shared for a feed with this `recheck`.
pub(crate) fn share_ttl(recheck: Duration) -> Duration {
    (recheck / 4).min(MAX_SHARE)
}

/// Largest 401/403 body passed back to a client.
const MAX_DENIAL_BODY: usize = 64 * 1024;

/// Consecutive failed rechecks (upstream down, 5xx) after which a stream is
/// closed anyway: a subscriber is never kept on an answer we cannot get.
pub const MAX_FAILED_RECHECKS: u32 = 3;

/// The upstream's answer to one check.
pub enum Verdict {
    /// 2xx: the subscriber may follow the feed.
    Admit,
    /// 401 or 403, ready to send to the client as the upstream sent it.
    Deny(Response<BoxBody>),
    /// Anything else; the text is for logs and the client's 502.
    Failed(String),
}

/// A check's answer as shared between subscribers.
#[derive(Clone)]
enum Answer {
    Admit,
    Deny {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Failed(String),
}

impl Answer {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Admit => Verdict::Admit,
            Self::Deny {
                status,
                headers,
                body,
            } => {
                let mut r = Response::new(
                    Full::new(body.clone())
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                *r.status_mut() = *status;
                *r.headers_mut() = headers.clone();
                Verdict::Deny(r)
            }
            Self::Failed(m) => Verdict::Failed(m.clone()),
        }
    }

    fn outcome(&self) -> CheckOutcome {
        match self {
            Self::Admit => CheckOutcome::admit,
            Self::Deny { .. } => CheckOutcome::deny,
            Self::Failed(_) => CheckOutcome::failed,
        }
    }
}

/// What makes two checks the same request. The client address is part of
/// it because the check carries it (`X-Forwarded-For`) and an upstream may
/// decide by it; the sharing time too, so a feed with a short `recheck`
/// never uses an answer kept for a longer one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CheckKey {
    target: String,
    head: bool,
    authorization: Option<HeaderValue>,
    cookie: Option<HeaderValue>,
    client: IpAddr,
    ttl: Duration,
}

/// One check request's answer, shared while young; the cell makes
/// concurrent identical checks wait for one request.
struct Shared {
    answer: OnceCell<Answer>,
}

struct Ttl;

impl moka::Expiry<CheckKey, Arc<Shared>> for Ttl {
    // Counted from the entry's creation, before the request was sent: an
    // answer is never used more than `ttl` after the check began.
    fn expire_after_create(&self, k: &CheckKey, _: &Arc<Shared>, _: Instant) -> Option<Duration> {
        Some(k.ttl)
    }
}

/// Check answers shared between subscribers (see the module docs); one per
/// running pollcast. Holds credentials in memory only, never prints them.
pub struct Checks {
    cache: Cache<CheckKey, Arc<Shared>>,
    metrics: Arc<Metrics>,
}

impl Checks {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_SHARED_CHECKS)
                .expire_after(Ttl)
                .build(),
            metrics,
        }
    }

    /// The answer for `key`: shared if a young one exists or is coming,
    /// else asked with `ask`. A failure is not kept for later checks.
    async fn answer<F>(&self, feed: &str, key: CheckKey, ask: F) -> Answer
    where
        F: Future<Output = Answer>,
    {
        let entry = self.cache.get_with(key.clone(), || {
            Arc::new(Shared {
                answer: OnceCell::new(),
            })
        });
        let mut asked = false;
        let answer = entry
            .answer
            .get_or_init(|| {
                asked = true;
                ask
            })
            .await
            .clone();
        if asked {
            self.metrics.auth_check(feed, answer.outcome());
            if matches!(answer, Answer::Failed(_)) {
                self.cache.invalidate(&key);
            }
        } else {
            self.metrics.auth_check_shared(feed);
        }
        answer
    }
}

/// What a check request is sent with.
#[derive(Clone)]
pub struct Check {
    upstream: Upstream,
    def: Arc<FeedConfig>,
    /// Path and query of the check request; `None` when the configured path
    /// cannot be filled in (refused, never sent unfilled).
    target: Option<String>,
    credentials: Credentials,
    client: IpAddr,
    checks: Arc<Checks>,
}

impl Check {
    /// `check` path (default: the poll path with the subscriber's query),
    /// with the SSE path's parameter values `params` filled in.
    pub fn new(
        upstream: Upstream,
        def: Arc<FeedConfig>,
        query: &str,
        params: &[String],
        credentials: Credentials,
        client: IpAddr,
        checks: Arc<Checks>,
    ) -> Self {
        let path = def.check.as_deref().unwrap_or(def.poll_path());
        let filled = match (Pattern::parse(path), Pattern::parse(&def.sse_path())) {
            (Ok(p), Ok(sse)) => Some(p.fill(&sse.params(), params)),
            _ => None,
        };
        let target = filled.map(|path| match &def.check {
            None if !query.is_empty() => format!("{path}?{query}"),
            _ => path,
        });
        Self {
            upstream,
            def,
            target,
            credentials,
            client,
            checks,
        }
    }

    /// Ask the upstream, or share the answer of an identical young check.
    pub async fn run(&self) -> Verdict {
        let Some(target) = &self.target else {
            return Verdict::Failed("the check path cannot be filled in".into());
        };
        let key = CheckKey {
            target: target.clone(),
            head: self.def.check_method == CheckMethod::Head,
            authorization: self.credentials.authorization.clone(),
            cookie: self.credentials.cookie.clone(),
            client: self.client,
            ttl: share_ttl(self.def.recheck),
        };
        let ask = async {
            match self.exchange(target).await {
                Ok(a) => a,
                Err(e) => Answer::Failed(e),
            }
        };
        self.checks.answer(&self.def.name, key, ask).await.verdict()
    }

    async fn exchange(&self, target: &str) -> Result<Answer, String> {
        let uri = self
            .upstream
            .url
            .join(target)
            .map_err(|e| format!("check path is not a valid URI: {e}"))?;
        let method = match self.def.check_method {
            CheckMethod::Get => Method::GET,
            CheckMethod::Head => Method::HEAD,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| e.to_string())?;
        let h = req.headers_mut();
        self.credentials.apply(h);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("pollcast/", env!("CARGO_PKG_VERSION"))),
        );
        if let Ok(v) = HeaderValue::from_str(&self.client.to_string()) {
            h.insert("x-forwarded-for", v);
        }

        let timeout = self.upstream.timeout;
        let answer = async {
            let resp = self.upstream.send(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            if status.is_success() {
                // Drain a little so the connection can be reused; never keep it.
                let _ = Limited::new(resp.into_body(), MAX_DENIAL_BODY)
                    .collect()
                    .await;
                return Ok(Answer::Admit);
            }
            if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                return Ok(Answer::Failed(format!("check request answered {status}")));
            }
            let (mut parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_DENIAL_BODY)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_else(|_| Bytes::from_static(b"unauthorized\n"));
            crate::proxy::strip_hop_by_hop(&mut parts.headers);
            // The body may have been cut or be empty (HEAD): let hyper size it.
            parts.headers.remove(header::CONTENT_LENGTH);
            // This answer is pollcast's SSE response now, under pollcast's CORS.
            let upstream_cors: Vec<_> = parts
                .headers
                .keys()
                .filter(|k| k.as_str().starts_with("access-control-"))
                .cloned()
                .collect();
            for k in upstream_cors {
                parts.headers.remove(k);
            }
            Ok(Answer::Deny {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(r) => r,
            Err(_) => Err(format!("check request got no answer within {timeout:?}")),
        }
    }

    /// Resolves when the subscriber must be cut off: a recheck answered
    /// 401/403, or [`MAX_FAILED_RECHECKS`] rechecks in a row failed.
    /// Checks are spaced by at most `recheck - share_ttl` (so a shared
    /// answer still cuts within `recheck`, see the module docs), with jitter
    /// down to 3/4 of it so many subscribers admitted together do not
    /// recheck in lockstep.
    pub async fn revoked(self) {
        let mut failures = 0u32;
        let spacing = self.def.recheck - share_ttl(self.def.recheck);
        loop {
            tokio::time::sleep(jittered(spacing)).await;
            match self.run().await {
                Verdict::Admit => failures = 0,
                Verdict::Deny(resp) => {
                    tracing::info!(
                        feed = %self.def.name,
                        client = %self.client,
                        status = resp.status().as_u16(),
                        "admission revoked by the upstream: closing the stream"
                    );
                    return;
                }
                Verdict::Failed(reason) => {
                    failures += 1;
                    tracing::warn!(feed = %self.def.name, client = %self.client, failures, %reason, "recheck failed");
                    if failures >= MAX_FAILED_RECHECKS {
                        return;
                    }
                }
            }
        }
    }
}

/// A duration in `[3/4 d, d]`.
fn jittered(d: Duration) -> Duration {
    let quarter = d / 4;
    d - quarter.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_answer_never_outlives_one_recheck() {
        for ms in [10, 100, 400, 1_000, 30_000, 600_000] {
            let recheck = Duration::from_millis(ms);
            let ttl = share_ttl(recheck);
            assert!(ttl <= MAX_SHARE && ttl > Duration::ZERO, "{recheck:?}");
            // The longest spacing between rechecks plus the oldest answer a
            // recheck may use: a revocation is seen within one recheck.
            assert!((recheck - ttl) + ttl <= recheck);
            assert!(jittered(recheck - ttl) + ttl <= recheck);
        }
    }

    #[tokio::test]
    async fn identical_concurrent_checks_make_one_request_and_failures_are_not_kept() {
        let checks = Checks::new(Arc::new(Metrics::new()));
        let key = CheckKey {
            target: "/api/me".into(),
            head: false,
            authorization: Some(HeaderValue::from_static("Bearer a")),
            cookie: None,
            client: IpAddr::from([127, 0, 0, 1]),
            ttl: Duration::from_secs(60),
        };
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let ask = || async {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            Answer::Admit
        };
        let all =
            futures_util::future::join_all((0..10).map(|_| checks.answer("f", key.clone(), ask())))
                .await;
        assert!(all.iter().all(|a| matches!(a, Answer::Admit)));
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Other credentials: another request.
        let other = CheckKey {
            authorization: Some(HeaderValue::from_static("Bearer b")),
            ..key.clone()
        };
        checks.answer("f", other.clone(), ask()).await;
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
        // The same credentials from another address, or for a feed with
        // another sharing time: other requests too.
        let elsewhere = CheckKey {
            client: IpAddr::from([10, 0, 0, 9]),
            ..other.clone()
        };
        checks.answer("f", elsewhere, ask()).await;
        let shorter = CheckKey {
            ttl: Duration::from_secs(1),
            ..other
        };
        checks.answer("f", shorter, ask()).await;
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 4);
        // A failure is shared by those waiting, not by later checks.
        let failing = CheckKey {
            target: "/api/down".into(),
            ..key
        };
        let fail = || async { Answer::Failed("down".into()) };
        checks.answer("f", failing.clone(), fail()).await;
        checks.cache.run_pending_tasks();
        let a = checks.answer("f", failing, ask()).await;
        assert!(matches!(a, Answer::Admit));
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 5);
    }

    #[test]
    fn jitter_never_exceeds_the_period() {
        let d = Duration::from_millis(400);
        for _ in 0..1000 {
            let j = jittered(d);
            assert!(j <= d && j >= d * 3 / 4, "{j:?}");
        }
    }
}
