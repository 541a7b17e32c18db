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

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};

use crate::config::{CheckMethod, FeedConfig};
use crate::feed::key::Credentials;
use crate::upstream::Upstream;
use crate::BoxBody;

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

/// What a check request is sent with.
#[derive(Clone)]
pub struct Check {
    upstream: Upstream,
    def: Arc<FeedConfig>,
    /// Path and query of the check request.
    target: String,
    credentials: Credentials,
    client: IpAddr,
}

impl Check {
    /// `check` path (default: the poll path with the subscriber's query).
    pub fn new(
        upstream: Upstream,
        def: Arc<FeedConfig>,
        query: &str,
        credentials: Credentials,
        client: IpAddr,
    ) -> Self {
        let target = match &def.check {
            Some(path) => path.clone(),
            None if query.is_empty() => def.poll.clone(),
            None => format!("{}?{}", def.poll, query),
        };
        Self {
            upstream,
            def,
            target,
            credentials,
            client,
        }
    }

    /// Ask the upstream once.
    pub async fn run(&self) -> Verdict {
        match self.exchange().await {
            Ok(v) => v,
            Err(e) => Verdict::Failed(e),
        }
    }

    async fn exchange(&self) -> Result<Verdict, String> {
        let uri = self
            .upstream
            .url
            .join(&self.target)
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
                return Ok(Verdict::Admit);
            }
            if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                return Ok(Verdict::Failed(format!("check request answered {status}")));
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
            let body = Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync();
            Ok(Verdict::Deny(Response::from_parts(parts, body)))
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(r) => r,
            Err(_) => Err(format!("check request got no answer within {timeout:?}")),
        }
    }

    /// Resolves when the subscriber must be cut off: a recheck answered
    /// 401/403, or [`MAX_FAILED_RECHECKS`] rechecks in a row failed.
    /// Checks are spaced by at most `recheck` (with jitter down to 3/4 of it,
    /// so many subscribers admitted together do not recheck in lockstep).
    pub async fn revoked(self) {
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(jittered(self.def.recheck)).await;
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
    fn jitter_never_exceeds_the_period() {
        let d = Duration::from_millis(400);
        for _ in 0..1000 {
            let j = jittered(d);
            assert!(j <= d && j >= d * 3 / 4, "{j:?}");
        }
    }
}
