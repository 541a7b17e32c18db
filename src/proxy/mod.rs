//! Pass-through: every request pollcast does not own goes to the upstream
//! and its response comes back, as a reverse proxy would pass them.
//!
//! This module owns the forwarding of one exchange: the request target, the
//! header rules (`headers`), protocol upgrades (`tunnel`), streaming both
//! bodies without buffering (so the upstream's own SSE, long polls and big
//! downloads or uploads pass as they are sent), passing trailers, and the
//! 400/405/502/504 answers pollcast gives itself. It must never read or
//! buffer a body: an upstream body that breaks off breaks the client's
//! response off too (never a silently short success), and a client that goes
//! away drops the upstream exchange with it.

pub mod express;
mod headers;
mod lines;
pub mod tunnel;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::OnUpgrade;
use tracing::field;
use tracing::Instrument;

pub use express::Express;
pub use headers::{joined_cookie, strip_hop_by_hop, Forwarding};
pub use tunnel::Tunnels;

use crate::body::{BoxBody, BoxError};
use crate::config::UpstreamConfig;
use crate::response::text as text_response;
use crate::trace;
use crate::upstream::{self, Upstream, UpstreamError};

/// The pass-through half of pollcast: the upstream client, the header policy
/// and the open tunnels.
#[derive(Clone)]
pub struct Proxy {
    upstream: Upstream,
    forwarding: Forwarding,
    tunnels: Tunnels,
    /// `None` when the upstream URL has a path prefix: the lane writes the
    /// client's target as it is.
    express: Option<Express>,
}

impl Proxy {
    pub fn new(upstream: Upstream, cfg: &UpstreamConfig) -> Self {
        let forwarding = Forwarding::new(cfg);
        let express = upstream
            .url
            .prefix
            .is_empty()
            .then(|| Express::new(upstream.clone(), forwarding.clone()));
        Self {
            upstream,
            forwarding,
            tunnels: Tunnels::default(),
            express,
        }
    }

    /// The express lane, for plain `GET`s `direct` reads itself.
    pub fn express(&self) -> Option<&Express> {
        self.express.as_ref()
    }

    /// Open upgraded connections, for shutdown.
    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// Forward `req` from `client`, who reached pollcast over `scheme`
    /// (`http` or `https`), to the upstream and return its response.
    ///
    /// Traced as one `pass-through` span (until the response head), which
    /// continues the client's `traceparent` and is the upstream's parent.
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Response<BoxBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let span = tracing::info_span!(
            target: trace::TARGET,
            "pass-through",
            "otel.kind" = "server",
            "http.request.method" = %req.method(),
            "url.path" = %req.uri().path(),
            "http.response.status_code" = field::Empty,
        );
        trace::continue_from(&span, req.headers());
        let resp = self
            .exchange(req, client, scheme)
            .instrument(span.clone())
            .await;
        span.record("http.response.status_code", resp.status().as_u16());
        resp
    }

    async fn exchange<B: crate::body::Incoming>(
        &self,
        mut req: Request<B>,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Response<BoxBody> {
        if req.method() == Method::CONNECT {
            // A reverse proxy has no business opening tunnels to arbitrary hosts.
            let mut r = text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: pollcast is a reverse proxy\n",
            );
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            return r;
        }
        // Taken before the request is consumed; it completes once hyper has
        // written our 101 to the client.
        let upgrade = tunnel::requested(&req).map(|proto| (proto, hyper::upgrade::on(&mut req)));

        let (mut parts, body) = req.into_parts();
        let uri = match parts.uri.path_and_query() {
            // Without a prefix the client's path and query are the upstream
            // request's target as they are (the pool sends the origin form):
            // nothing to format and parse again per request.
            Some(pq) if self.upstream.url.prefix.is_empty() && pq.as_str().starts_with('/') => {
                let mut target = http::uri::Parts::default();
                target.path_and_query = Some(pq.clone());
                Uri::from_parts(target).ok()
            }
            pq => {
                let path_and_query = pq.map_or("/", |pq| pq.as_str());
                self.upstream.url.join(path_and_query).ok()
            }
        };
        let Some(uri) = uri else {
            return text_response(StatusCode::BAD_REQUEST, "invalid request target\n");
        };
        // HTTP/2 clients send :authority instead of Host.
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        // HTTP/2 always carries trailers; an HTTP/1.1 client must say it takes them.
        let wants_trailers = parts.version >= Version::HTTP_2
            || headers::has_token(&parts.headers, header::TE, "trailers");

        strip_hop_by_hop(&mut parts.headers);
        // hyper answered the client's `Expect: 100-continue` itself, when the
        // body was first read, i.e. once the upstream was ready for it. Its
        // client never waits for an upstream 100, so the expectation is met
        // here and not passed on (Envoy does the same).
        parts.headers.remove(header::EXPECT);
        // TE is hop-by-hop, but without `TE: trailers` an HTTP/1.1 upstream
        // drops its trailers, so this one token is passed on.
        if wants_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some((proto, _)) = &upgrade {
            tunnel::mark_upgrade(&mut parts.headers, proto.clone());
        }
        self.forwarding
            .apply(&mut parts.headers, client, host.as_ref(), scheme);
        parts.uri = uri;
        parts.version = Version::HTTP_11;

        let req = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
        match self.upstream.send(req).await {
            Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                self.switch(resp, upgrade.map(|(_, on)| on), client)
            }
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // The error reaches hyper, which then ends the client's response
                // without its final chunk (or short of its Content-Length, or
                // with RST_STREAM on HTTP/2): the client sees a broken response.
                let body = body.map_err(move |e| {
                    tracing::warn!(error = %e, %client, "upstream response broke off; breaking off the client's too");
                    BoxError::from(e)
                });
                Response::from_parts(parts, body.boxed_unsync())
            }
            Err(e) => failed(e),
        }
    }

    /// The upstream agreed to switch protocols: answer the client with the
    /// upstream's 101 and splice the two connections once both are upgraded.
    fn switch(
        &self,
        mut resp: Response<upstream::Body>,
        client_upgrade: Option<OnUpgrade>,
        client: SocketAddr,
    ) -> Response<BoxBody> {
        let proto = resp.headers().get(header::UPGRADE).cloned();
        let (Some(client_upgrade), Some(proto)) = (client_upgrade, proto) else {
            tracing::warn!(%client, "upstream switched protocols without being asked to");
            return text_response(
                StatusCode::BAD_GATEWAY,
                "upstream switched protocols unasked\n",
            );
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        self.tunnels.open(client_upgrade, upstream_upgrade, client);
        let (mut parts, _) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        tunnel::mark_upgrade(&mut parts.headers, proto);
        let empty = Empty::<Bytes>::new().map_err(|never| match never {});
        Response::from_parts(parts, empty.boxed_unsync())
    }
}

/// The answer pollcast gives itself when the upstream gave none.
fn failed(e: UpstreamError) -> Response<BoxBody> {
    match e {
        UpstreamError::Timeout(_) => {
            tracing::warn!(error = %e, "pass-through timed out");
            text_response(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream did not answer in time\n",
            )
        }
        e => {
            tracing::warn!(error = %e, "pass-through failed");
            text_response(StatusCode::BAD_GATEWAY, "upstream unreachable\n")
        }
    }
}
