//! The tower service every connection runs: decides, per request, whether
//! pollcast answers it (SSE paths, its own endpoints under `/_pollcast`) or
//! the upstream does (everything else).
//!
//! This module owns routing only; it must never touch bodies or feeds itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::config::ADMIN_PREFIX;
use crate::feed::registry::Registry;
use crate::upstream::Upstream;
use crate::{proxy, sse, text_response, BoxBody, BoxError};

/// Everything a request may need, shared by all connections.
pub struct App {
    pub registry: Registry,
    pub upstream: Upstream,
    /// SSE path -> feed definition index.
    pub routes: HashMap<String, usize>,
    pub shutdown: CancellationToken,
}

impl App {
    pub fn new(registry: Registry, upstream: Upstream, shutdown: CancellationToken) -> Self {
        let routes = registry
            .defs()
            .iter()
            .enumerate()
            .map(|(i, d)| (d.sse_path(), i))
            .collect();
        Self {
            registry,
            upstream,
            routes,
            shutdown,
        }
    }
}

/// One per connection: the shared [`App`] plus the peer address.
#[derive(Clone)]
pub struct Router {
    app: Arc<App>,
    remote: SocketAddr,
    /// The client reached us over TLS (told to the upstream as `X-Forwarded-Proto`).
    tls: bool,
}

impl Router {
    pub fn new(app: Arc<App>, remote: SocketAddr) -> Self {
        Self {
            app,
            remote,
            tls: false,
        }
    }

    /// Mark this connection as TLS.
    pub fn over_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
}

impl<B> tower::Service<Request<B>> for Router
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let app = self.app.clone();
        let remote = self.remote;
        let scheme = if self.tls { "https" } else { "http" };
        let path = req.uri().path();
        if let Some(&def) = app.routes.get(path) {
            let resp = sse::respond(&app.registry, def, &req, &app.shutdown);
            return Box::pin(async move { Ok(resp) });
        }
        if let Some(own) = path.strip_prefix(ADMIN_PREFIX) {
            let resp = match own {
                "/healthz" => text_response(StatusCode::OK, "ok\n"),
                _ => text_response(StatusCode::NOT_FOUND, "no such pollcast endpoint\n"),
            };
            return Box::pin(async move { Ok(resp) });
        }
        Box::pin(async move { Ok(proxy::forward(&app.upstream, req, remote, scheme).await) })
    }
}
