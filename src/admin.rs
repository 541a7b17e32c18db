//! pollcast's own endpoints, under `[admin] prefix` (default `/_pollcast`):
//! `healthz`, `readyz`, `metrics`, and whatever other modules add.
//!
//! This module owns the list of own routes (one `match` in [`Route::parse`]:
//! add new ones there) and which listener may serve each: with a separate
//! `[admin] listen`er, the main listener serves only routes meant for
//! browsers, so operator endpoints are not exposed through the Service.
//! It must never forward anything to the upstream: a path under the prefix
//! that matches no route is a 404 from pollcast.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::body::BoxBody;
use crate::config::AdminConfig;
use crate::metrics::Format;
use crate::readiness::Readiness;
use crate::response::uncached_text as text;
use crate::shared::Shared;
use crate::status::StatusFeed;

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `[server] listen`: SSE, pass-through, and own routes.
    Main,
    /// `[admin] listen`: own routes only.
    Admin,
}

/// Shared state of the own endpoints.
pub struct Admin {
    pub prefix: String,
    /// Whether a separate admin listener exists.
    pub separate: bool,
    pub readiness: Readiness,
    /// Live snapshots behind the status page.
    pub status: StatusFeed,
}

impl Admin {
    pub fn new(cfg: &AdminConfig, readiness: Readiness) -> Self {
        Self {
            prefix: cfg.prefix.clone(),
            separate: cfg.listen.is_some(),
            readiness,
            status: StatusFeed::default(),
        }
    }

    /// The part of `path` after the prefix, when `path` is under it.
    pub(crate) fn own<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// Who a route is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Served on every listener: browsers and probes reach it wherever they
    /// can reach pollcast.
    Public,
    /// Served on the admin listener when there is one (the default, on
    /// loopback), else on the main one (`[admin] listen = ""`).
    Operator,
}

/// Every own endpoint. Add new ones here and in [`Route::parse`].
#[derive(Debug, Clone, Copy)]
enum Route {
    /// Alive: the process answers.
    Healthz,
    /// Ready for traffic (see [`crate::readiness`]).
    Readyz,
    /// Prometheus metrics (see [`crate::metrics`]).
    Metrics,
    /// The status page (see [`crate::status`]).
    Status,
    /// The status page's SSE stream of JSON snapshots.
    StatusEvents,
    /// Live counts as JSON (see [`crate::stats`]).
    Stats,
    /// `POST /refresh/<feed name>`: poll every live feed of a definition now
    /// (for an upstream that can send webhooks).
    Refresh,
    /// The browser client module (`clients/js/client/dist/index.js`) for the default contract.
    ClientJs,
}

impl Route {
    /// `sub` is the path after the prefix, e.g. `/healthz`.
    fn parse(sub: &str) -> Option<Self> {
        Some(match sub {
            "/healthz" => Self::Healthz,
            "/readyz" => Self::Readyz,
            "/metrics" => Self::Metrics,
            "/status" => Self::Status,
            "/status/events" => Self::StatusEvents,
            "/stats" => Self::Stats,
            "/client.js" => Self::ClientJs,
            s if s.starts_with("/refresh/") => Self::Refresh,
            _ => return None,
        })
    }

    fn audience(self) -> Audience {
        match self {
            // The status page tells how the API is used (upstream address,
            // poll paths); refresh makes upstream polls: not for the public.
            Self::Metrics | Self::Status | Self::StatusEvents | Self::Stats | Self::Refresh => {
                Audience::Operator
            }
            // Pages import it from the origin they talk to; the kubelet
            // probes whatever port it is given. Readiness verdicts are
            // cached (`ready_cache`), so probes cost the upstream little.
            Self::ClientJs | Self::Healthz | Self::Readyz => Audience::Public,
        }
    }

    /// The methods a route answers, as an `Allow` value.
    fn allow(self) -> &'static str {
        match self {
            Self::Refresh => "POST",
            _ => "GET, HEAD",
        }
    }

    async fn serve(self, at: At, sub: &str, format: Format) -> Response<BoxBody> {
        match self {
            Self::Refresh => {
                let name = sub.trim_start_matches("/refresh/");
                match at.shared.registry.refresher().refresh_definition(name) {
                    Some(n) => text(
                        StatusCode::ACCEPTED,
                        format!("refreshing {n} live feed(s) of {name}\n"),
                    ),
                    None => text(StatusCode::NOT_FOUND, format!("no feed named {name}\n")),
                }
            }
            Self::Healthz => text(StatusCode::OK, "ok\n"),
            Self::Stats => crate::stats::Stats::response(&at.shared.counts()),
            Self::Readyz => {
                let v = at.admin.readiness.check().await;
                let status = if v.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let word = if v.ready { "ready" } else { "not ready" };
                text(status, format!("{word}: {}\n", v.detail))
            }
            Self::Metrics => {
                let body = at.shared.metrics.render_as(&at.shared.gauges(), format);
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                r
            }
            Self::Status => at.admin.status.page(),
            Self::ClientJs => {
                let mut r = text(StatusCode::OK, CLIENT_JS);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript; charset=utf-8"),
                );
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                r
            }
            Self::StatusEvents => at.admin.status.events(&at.shared.shutdown),
        }
    }
}

/// The client module, embedded so the binary serves it with no files around:
/// the `@pollcast/client` package's built file (`clients/js/client/dist/`,
/// committed; CI rebuilds it and fails on a difference), byte for byte.
const CLIENT_JS: &str = include_str!("../clients/js/client/dist/index.js");

pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>;

/// What the admin endpoints read, handed in by the listener's service (so
/// this module never sees the router that calls it).
#[derive(Clone)]
pub struct At {
    pub admin: Arc<Admin>,
    pub side: Side,
    pub shared: Arc<Shared>,
}

/// Answer `req` when its path is under the admin prefix; `None` otherwise.
pub fn handle<B>(at: &At, req: &Request<B>) -> Option<ResponseFuture> {
    let sub = at.admin.own(req.uri().path())?;
    let route = Route::parse(sub).filter(|r| match (at.side, r.audience()) {
        (Side::Main, Audience::Operator) => !at.admin.separate,
        _ => true,
    });
    let Some(route) = route else {
        return Some(ready(text(
            StatusCode::NOT_FOUND,
            "no such pollcast endpoint\n",
        )));
    };
    let allow = route.allow();
    if !allow.split(", ").any(|m| m == req.method().as_str()) {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}\n"));
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        return Some(ready(resp));
    }
    // The metrics' text format, from what the scraper accepts.
    let format = Format::negotiate(req.headers().get(header::ACCEPT));
    let (at, sub) = (at.clone(), sub.to_owned());
    Some(Box::pin(async move { route.serve(at, &sub, format).await }))
}

/// Anything that is not an own route on the admin listener.
pub fn not_found() -> Response<BoxBody> {
    text(
        StatusCode::NOT_FOUND,
        "the admin listener serves only pollcast's own endpoints\n",
    )
}

fn ready(resp: Response<BoxBody>) -> ResponseFuture {
    Box::pin(async move { resp })
}
