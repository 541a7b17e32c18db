//! pollcast: a reverse-proxy sidecar that turns polling into Server-Sent Events.
//!
//! One path for data:
//!
//! ```text
//! config ──> server ──> router ─┬─> proxy ──────────────> upstream (pass-through)
//!                               └─> sse (subscribers) <── feed (registry, poller,
//!                                                              extract, diff, contract)
//!                                                              └──> upstream (polls)
//! ```
//!
//! - [`config`]: the typed, validated configuration.
//! - [`server`]: the listener, connections, graceful shutdown; [`direct`]:
//!   HTTP/1.1 event streams written to the socket without hyper's buffers.
//! - [`router`]: the tower service choosing between pollcast and the upstream.
//! - [`proxy`]: pass-through of every request pollcast does not own, WebSocket
//!   tunnels included; [`cidr`]: the address blocks of `trusted_proxies`.
//! - [`sse`]: the wire format and the subscriber streams.
//! - [`feed`]: feeds, their poll loops, diffing and history.
//! - [`upstream`]: the pooled client shared by proxy and feeds.
//! - [`auth`], [`limits`], [`cors`]: who may open a stream, how many, from where;
//!   [`budget`]: the memory live feeds may retain.
//! - [`preface`]: a connection's first bytes, read under the header deadline;
//!   [`idle`]: the same deadline for HTTP/2 connections with no request in progress.
//! - [`fuzzing`]: entry points for the cargo-fuzz targets and their corpus regression test.
//! - [`stall`]: write deadlines that close connections of dead or stalled clients.
//! - [`stats`]: live counts (feeds, subscribers, tasks, fds) for `/_pollcast/stats`.
//! - [`tls`]: the optional TLS acceptor of the listener.
//! - [`status`]: the live status page.
//! - [`healthcheck`]: the client behind `pollcast --healthcheck`.
//! - [`init`]: `pollcast init`, a config.toml from an OpenAPI document or a probe.
//! - [`demo`]: a built-in upstream for `--demo`.
//! - [`admin`]: pollcast's own endpoints under `[admin] prefix`; [`readiness`]: `/readyz`.
//! - [`access`]: the access log line and metrics of each pass-through request.
//! - [`stragglers`]: polls of a live feed's upstream path answered from its latest poll.
//! - [`metrics`]: the Prometheus metrics behind `<prefix>/metrics`.
//! - [`reload`]: what a SIGHUP applies to a running pollcast.
//! - [`check`]: `--check`'s rendering of the effective config, secrets redacted.
//! - [`logging`]: the tracing subscriber, text or JSON, reloadable level.

pub mod access;
pub mod admin;
pub mod auth;
pub mod budget;
pub mod check;
pub mod cidr;
pub mod config;
pub mod cors;
pub mod demo;
pub mod direct;
pub mod feed;
pub mod fuzzing;
pub mod healthcheck;
pub mod idle;
pub mod init;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pointer;
pub mod preface;
pub mod proxy;
pub mod readiness;
pub mod reload;
pub mod route;
pub mod router;
pub mod server;
pub mod sse;
pub mod stall;
pub mod stats;
pub mod status;
pub mod stragglers;
pub mod template;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use feed::registry::Registry;
use router::App;
use upstream::Upstream;

/// Boxed error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response pollcast produces.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A short plain-text response, for pollcast's own answers.
pub fn text_response(status: StatusCode, text: &'static str) -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A running pollcast: its address, its feeds, and the way to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener's address (operator endpoints); `None` when
    /// `[admin] listen = ""` serves them on the main listener.
    pub admin_addr: Option<SocketAddr>,
    /// The listener's TLS acceptor, reloadable (`[server.tls]`).
    pub tls: Option<tls::Live>,
    pub registry: Registry,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    admin_server: Option<JoinHandle<()>>,
    sampler: JoinHandle<()>,
}

impl Running {
    /// Begin a graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait until the listener has drained and every poll loop has ended.
    pub async fn wait(self) {
        let _ = self.server.await;
        if let Some(admin) = self.admin_server {
            let _ = admin.await;
        }
        let _ = self.sampler.await;
        self.registry.closed().await;
    }

    /// Shut down and wait.
    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }
}

/// Bind the listeners and start serving `config`.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let tls = config
        .server
        .tls
        .as_ref()
        .map(tls::Live::new)
        .transpose()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    let admin_listener = match config.admin.listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("[admin] listen {a}: {e}")))?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let upstream = Upstream::new(&config.upstream);
    let metrics = Arc::new(metrics::Metrics::new());
    let registry = Registry::new(&config, upstream.clone(), shutdown.clone(), metrics);
    let proxy = proxy::Proxy::new(upstream.clone(), &config.upstream);
    let readiness = readiness::Readiness::new(&config.admin, upstream.clone(), shutdown.clone());
    let admin = Arc::new(admin::Admin::new(&config.admin, readiness));
    let app = Arc::new(App::new(
        registry.clone(),
        upstream,
        proxy,
        shutdown.clone(),
        admin,
        cors::Cors::new(&config.cors),
    ));
    let mut admin_addr = None;
    let admin_server = match admin_listener {
        Some(l) => {
            let a = l.local_addr()?;
            admin_addr = Some(a);
            tracing::info!(addr = %a, prefix = %config.admin.prefix, "admin listening");
            Some(tokio::spawn(server::serve(
                l,
                Arc::new(app.for_admin_listener()),
                shutdown.clone(),
                config.server.clone(),
                // Probes and scrapers inside the pod or node speak plain HTTP.
                None,
            )))
        }
        None => None,
    };
    let sampler = tokio::spawn(status::sample(
        app.admin.status.clone(),
        registry.clone(),
        config.upstream.url.clone(),
        shutdown.clone(),
    ));
    let server = tokio::spawn(server::serve(
        listener,
        app,
        shutdown.clone(),
        config.server.clone(),
        tls.clone(),
    ));
    tracing::info!(%addr, tls = config.server.tls.is_some(), upstream = %config.upstream.url, feeds = config.feeds.len(), "pollcast listening");
    for f in &config.feeds {
        tracing::info!(feed = %f.name, sse = %f.sse_path(), poll = %f.poll, interval = ?f.interval, auth = ?f.auth, "feed");
        if f.query.is_none() {
            tracing::warn!(feed = %f.name, "any query parameter is forwarded and makes its own feed (bounded only by [limits]); list the accepted ones in `query`");
        }
        if unscoped_check(f) {
            tracing::warn!(feed = %f.name, "the `check` path names none of the SSE path's parameters: a subscriber it admits may follow every instance of this feed; put the {{param}} that scopes the data in `check`");
        }
    }
    Ok(Running {
        addr,
        admin_addr,
        tls,
        registry,
        shutdown,
        server,
        admin_server,
        sampler,
    })
}

/// An explicit `check` on a feed with path parameters that uses none of them:
/// one admission for every instance (legitimate for "any logged-in user",
/// a cross-tenant hole for per-project data), so it is pointed out.
fn unscoped_check(f: &config::FeedConfig) -> bool {
    let Some(check) = &f.check else {
        return false;
    };
    let (Ok(sse), Ok(check)) = (
        route::Pattern::parse(&f.sse_path()),
        route::Pattern::parse(check),
    ) else {
        return false;
    };
    f.auth == config::AuthMode::Check && sse.has_params() && !check.has_params()
}
