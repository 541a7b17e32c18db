//! The tower service every connection runs: decides, per request, whether
//! pollcast answers it (SSE paths, its own endpoints under `[admin] prefix`,
//! see `admin`) or the upstream does (everything else).
//!
//! This module owns routing only; it must never touch bodies or feeds itself.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};

use crate::admin::{self, Admin, Side};
use crate::body::{BoxBody, BoxError};
use crate::cors::Cors;
use crate::feed::registry::Refresher;
use crate::proxy::Proxy;
use crate::shared::Shared;
use crate::{access, sse};

/// Everything a request may need, shared by all connections.
pub struct App {
    /// The start-up context: feeds, limits, `[sse]`, metrics, counters.
    pub shared: Arc<Shared>,
    /// Write-through: asks the feeds a successful write may change to poll now.
    pub refresher: Refresher,
    /// Pass-through: forwarding rules and open tunnels.
    pub proxy: Proxy,
    pub admin: Arc<Admin>,
    /// The listener this `App` serves.
    pub side: Side,
    /// CORS rules of the SSE paths.
    pub cors: Arc<Cors>,
    /// `auth = "check"` answers shared between subscribers.
    pub checks: Arc<crate::auth::Checks>,
    /// What this listener's admin endpoints read.
    pub admin_at: admin::At,
    /// Latest answers of feeds that serve polls (`serve_polls`).
    pub stragglers: Arc<crate::stragglers::Stragglers>,
}

impl App {
    pub fn new(
        shared: Arc<Shared>,
        proxy: Proxy,
        admin: Arc<Admin>,
        cors: Cors,
        stragglers: Arc<crate::stragglers::Stragglers>,
    ) -> Self {
        let checks = Arc::new(crate::auth::Checks::new(shared.metrics.clone()));
        let admin_at = admin::At {
            admin: admin.clone(),
            side: Side::Main,
            shared: shared.clone(),
        };
        Self {
            admin_at,
            stragglers,
            checks,
            refresher: shared.registry.refresher(),
            shared,
            proxy,
            admin,
            side: Side::Main,
            cors: Arc::new(cors),
        }
    }

    /// The same state, for the separate admin listener.
    pub fn for_admin_listener(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            refresher: self.refresher.clone(),
            proxy: self.proxy.clone(),
            admin: self.admin.clone(),
            side: Side::Admin,
            cors: self.cors.clone(),
            checks: self.checks.clone(),
            admin_at: admin::At {
                side: Side::Admin,
                ..self.admin_at.clone()
            },
            stragglers: self.stragglers.clone(),
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

    /// How `direct` may serve a plain HTTP/1.1 `GET` of `path`.
    pub fn lane(&self, path: &str) -> Lane<'_> {
        let app = &*self.app;
        if app.side != Side::Main || app.admin.own(path).is_some() {
            return Lane::General;
        }
        if app.shared.registry.route(path).is_some() {
            return Lane::Stream;
        }
        // The lane opens no span and answers no poll itself.
        if app.stragglers.serving() || crate::trace::on() {
            return Lane::General;
        }
        match app.proxy.express() {
            Some(express) => Lane::Express(express),
            None => Lane::General,
        }
    }

    /// The express lane, once [`Router::lane`] offered it.
    pub fn express(&self) -> Option<&crate::proxy::Express> {
        self.app.proxy.express()
    }

    /// How the client reached pollcast, as the upstream is told.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The access line and metrics of a request passed through on the
    /// express lane (a `GET`), as the general path records them.
    pub fn passed(&self, path: &str, status: http::StatusCode, took: std::time::Duration) {
        access::record(
            &self.app.shared.metrics,
            &http::Method::GET,
            path,
            self.remote,
            status,
            took,
        );
    }

    pub fn counters(&self) -> std::sync::Arc<crate::stats::Counters> {
        self.app.shared.counters.clone()
    }
}

/// Where `direct` sends a plain HTTP/1.1 `GET` (see [`Router::lane`]).
pub enum Lane<'a> {
    /// An SSE path: the answer may be an event stream.
    Stream,
    /// Passed through on the express lane.
    Express(&'a crate::proxy::Express),
    /// Through the router, as any request.
    General,
}

/// The future of one request's response.
pub type RouteFuture = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

impl<B> tower::Service<Request<B>> for Router
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.dispatch(req)
    }
}

/// hyper's own service trait, implemented directly so an HTTP/1.1
/// connection calls the router by reference: no clone of the router and no
/// readiness future per request, as hyper-util's tower adapter would add.
impl<B> hyper::service::Service<Request<B>> for Router
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn call(&self, req: Request<B>) -> Self::Future {
        self.dispatch(req)
    }
}

impl Router {
    fn dispatch<B>(&self, req: Request<B>) -> RouteFuture
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let app = self.app.clone();
        let remote = self.remote;
        let scheme = if self.tls { "https" } else { "http" };
        if let Some(resp) = admin::handle(&app.admin_at, &req) {
            return Box::pin(async move { Ok(resp.await) });
        }
        if app.side == Side::Admin {
            return Box::pin(async move { Ok(admin::not_found()) });
        }
        let path = req.uri().path();
        // SSE routes are read per request from the registry's current
        // definitions, so a reload takes effect for the next request.
        if let Some((defs, params)) = app.shared.registry.route(path) {
            let (head, _body) = req.into_parts();
            return Box::pin(async move {
                let ctx = sse::SseContext {
                    shared: &app.shared,
                    cors: &app.cors,
                    shutdown: &app.shared.shutdown,
                    checks: &app.checks,
                };
                Ok(sse::respond(ctx, &defs, params, head, remote).await)
            });
        }
        if let Some(resp) = app.stragglers.answer(&req, remote) {
            return Box::pin(async move { Ok(resp) });
        }
        let method = req.method().clone();
        // The client's target shares its bytes (a reference count, no copy):
        // its path is what the access log and the write-through refresh read.
        let target = req.uri().clone();
        Box::pin(async move {
            let started = Instant::now();
            let resp = app.proxy.forward(req, remote, scheme).await;
            let path = target.path();
            if is_write(&method) && resp.status().is_success() {
                app.refresher.refresh_path(path);
            }
            let took = started.elapsed();
            access::record(
                &app.shared.metrics,
                &method,
                path,
                remote,
                resp.status(),
                took,
            );
            Ok(resp)
        })
    }
}

/// Methods whose success may change a list a feed polls (write-through refresh).
fn is_write(method: &http::Method) -> bool {
    use http::Method;
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}
