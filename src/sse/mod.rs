//! The subscriber side: admitting an EventSource request and answering it
//! with a stream that follows its feed (or feeds, when several share a path).
//!
//! This module owns the SSE response (headers, `retry:`, keepalives, resume
//! position, shutdown hint), the admission order of a request (CORS, method,
//! path parameter values, query allowlist and credentials, limits, `check`
//! admission, feed limits) and the per-subscriber [`stream::Subscriber`].
//! It must never poll the upstream for data or encode item payloads; it only
//! forwards the shared bytes a feed already encoded. A subscriber has no
//! queue of its own: it is a cursor polled by its connection (`direct` on
//! HTTP/1.1, else hyper) as the socket accepts bytes, so a client that stops
//! reading stops costing anything but its cursor. An idle one whose
//! connection offers a lane parks there, and its feed writes the next
//! events to the socket itself (`feed::lane`).

pub use crate::wire as encode;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::{Check, Checks, Verdict as CheckVerdict};
use crate::body::BoxBody;
use crate::config::AuthMode;
use crate::cors::{Cors, Verdict as CorsVerdict};
use crate::feed::key::{self, FeedKey, Identified};
use crate::feed::lane::Lane;
use crate::limits::Permit;
use crate::response::text;
use crate::shared::Shared;

/// What every SSE request needs, shared by all connections.
pub(crate) struct SseContext<'a> {
    pub shared: &'a Shared,
    pub cors: &'a Cors,
    pub shutdown: &'a CancellationToken,
    /// `auth = "check"` answers shared between subscribers.
    pub checks: &'a std::sync::Arc<Checks>,
}

/// Answer a request for an SSE path followed by the feed definitions `defs`
/// (several when feeds share the path), with the path's parameter values.
pub(crate) async fn respond(
    ctx: SseContext<'_>,
    defs: &[usize],
    params: Vec<String>,
    head: Parts,
    client: SocketAddr,
) -> Response<BoxBody> {
    let authority = head.uri.authority().map(|a| a.as_str().to_owned());
    if Cors::is_preflight(&head.method, &head.headers) {
        return ctx.cors.preflight(&head.headers, authority.as_deref());
    }
    let verdict = ctx.cors.judge(&head.headers, authority.as_deref());
    let mut resp = if verdict == CorsVerdict::Refused {
        text(
            StatusCode::FORBIDDEN,
            "this origin may not open this event stream (see [cors] allowed_origins)\n",
        )
    } else {
        admit(&ctx, defs, params, &head, client).await
    };
    ctx.cors.decorate(&verdict, resp.headers_mut());
    resp
}

/// The admission of one request, phase by phase, each named after the
/// moment it runs (CORS was judged by [`respond`]): method, [`identify`],
/// [`resume`], [`limit`], [`authorize`], [`subscribe`]. A phase that refuses
/// returns the answer to send.
async fn admit(
    ctx: &SseContext<'_>,
    defs: &[usize],
    params: Vec<String>,
    head: &Parts,
    client: SocketAddr,
) -> Response<BoxBody> {
    let phases = async {
        method(head)?;
        let mut ids = identify(ctx, defs, params, head)?;
        let last_event_id = resume(head, &mut ids)?;
        let (client, permit) = limit(ctx, head, client)?;
        let (keys, revoked) = authorize(ctx, ids, client, &head.headers).await?;
        let lane = head.extensions.get::<Arc<Lane>>().cloned();
        subscribe(ctx, keys, client, permit, last_event_id, revoked, lane)
    };
    match phases.await {
        Ok(resp) | Err(resp) => resp,
    }
}

/// A phase's outcome: go on with `T`, or send this answer. (A refusal is
/// the cold path: it is not boxed, so admitting costs no allocation.)
type Phase<T> = Result<T, Response<BoxBody>>;

/// Withdrawn admissions (`check` mode), one per feed that was checked.
type Revocations = Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;

/// An event stream is opened with GET (HEAD asks whether it would be).
#[allow(clippy::result_large_err)]
fn method(head: &Parts) -> Phase<()> {
    if head.method == Method::GET || head.method == Method::HEAD {
        return Ok(());
    }
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path is an event stream: open it with GET (EventSource)\n",
    );
    resp.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    Err(resp)
}

/// Which feed instance each definition on the path means for this request:
/// path parameter values, the query allowlist and the credentials.
#[allow(clippy::result_large_err)]
fn identify(
    ctx: &SseContext<'_>,
    defs: &[usize],
    params: Vec<String>,
    head: &Parts,
) -> Phase<Vec<(std::sync::Arc<crate::config::FeedConfig>, Identified)>> {
    // A value that could leave its path segment never reaches a poll, a
    // check or a feed (see `route::check_value`).
    if let Some(e) = params
        .iter()
        .find_map(|p| crate::route::check_value(p).err())
    {
        return Err(text(StatusCode::BAD_REQUEST, format!("{e}\n")));
    }
    // Every feed on the path admits the request by its own rules.
    let mut ids = Vec::with_capacity(defs.len());
    for &def in defs {
        let Some(cfg) = ctx.shared.registry.defs().get(def).cloned() else {
            return Err(text(StatusCode::NOT_FOUND, "no such feed\n"));
        };
        match key::identify(def, &cfg, head.uri.query(), &head.headers) {
            Ok(mut id) => {
                id.key = id.key.with_params(params.clone());
                ids.push((cfg, id));
            }
            Err(e) => return Err(text(StatusCode::BAD_REQUEST, format!("{e}\n"))),
        }
    }
    Ok(ids)
}

/// Where the client resumes: `Last-Event-ID` (header, or the query
/// parameter). A stream that already ended with a terminal event gets 204,
/// the one answer that makes EventSource stop reconnecting.
#[allow(clippy::result_large_err)]
fn resume(
    head: &Parts,
    ids: &mut [(std::sync::Arc<crate::config::FeedConfig>, Identified)],
) -> Phase<Option<String>> {
    let last_event_id = head
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| ids.first_mut().and_then(|(_, id)| id.last_event_id.take()));
    if last_event_id
        .as_deref()
        .is_some_and(|id| id.ends_with(stream::END_SUFFIX))
    {
        let mut resp = text(StatusCode::NO_CONTENT, "");
        resp.headers_mut().remove(header::CONTENT_TYPE);
        return Err(resp);
    }
    Ok(last_event_id)
}

/// How many streams this client and everyone may hold: a permit, or 429/503
/// (HEAD holds none).
#[allow(clippy::result_large_err)]
fn limit(
    ctx: &SseContext<'_>,
    head: &Parts,
    client: SocketAddr,
) -> Phase<(std::net::IpAddr, Option<Permit>)> {
    let limits = &ctx.shared.limits;
    let client = limits.client(client.ip(), &head.headers);
    if head.method == Method::HEAD {
        return Ok((client, None));
    }
    match limits.admit(client) {
        Ok(p) => Ok((client, Some(p))),
        Err(e) => Err(limits.response(e)),
    }
}

/// `auth = "check"`: the upstream admits the credentials for each feed that
/// asks (shared answers, see `auth`); its later rechecks can end the stream.
#[allow(clippy::result_large_err)]
async fn authorize(
    ctx: &SseContext<'_>,
    ids: Vec<(std::sync::Arc<crate::config::FeedConfig>, Identified)>,
    client: std::net::IpAddr,
    headers: &HeaderMap,
) -> Phase<(Vec<FeedKey>, Revocations)> {
    let mut revoked: Revocations = Vec::new();
    let mut keys = Vec::with_capacity(ids.len());
    for (cfg, id) in ids {
        keys.push(id.key.clone());
        if cfg.auth != AuthMode::Check {
            continue;
        }
        let check = Check::new(
            ctx.shared.upstream.clone(),
            cfg.clone(),
            &id.key.query,
            &id.key.params,
            id.credentials,
            client,
            ctx.checks.clone(),
        );
        // The subscriber's trace, when it sent one, goes on in the check.
        let span = tracing::info_span!(
            target: crate::trace::TARGET,
            "check",
            "pollcast.feed" = %cfg.name,
        );
        crate::trace::continue_from(&span, headers);
        match check.run().instrument(span).await {
            CheckVerdict::Admit => revoked.push(Box::pin(check.revoked())),
            CheckVerdict::Deny(resp) => {
                tracing::debug!(feed = %cfg.name, client = %client, status = resp.status().as_u16(), "admission refused by the upstream");
                return Err(resp);
            }
            CheckVerdict::Failed(reason) => {
                tracing::warn!(feed = %cfg.name, client = %client, %reason, "admission check failed: refusing");
                return Err(text(
                    StatusCode::BAD_GATEWAY,
                    "the upstream could not confirm access to this event stream\n",
                ));
            }
        }
    }
    Ok((keys, revoked))
}

/// Join (or start) each feed and answer with the stream that follows them.
#[allow(clippy::result_large_err)]
fn subscribe(
    ctx: &SseContext<'_>,
    keys: Vec<FeedKey>,
    client: std::net::IpAddr,
    permit: Option<Permit>,
    last_event_id: Option<String>,
    revoked: Revocations,
    lane: Option<Arc<Lane>>,
) -> Phase<Response<BoxBody>> {
    let mut resp = text(StatusCode::OK, "");
    *resp.headers_mut() = sse_headers();
    let Some(permit) = permit else {
        return Ok(resp); // HEAD: admitted, nothing to stream
    };
    let (shared, limits) = (ctx.shared, &ctx.shared.limits);
    let mut subs = Vec::with_capacity(keys.len());
    for key in keys {
        match shared.subscribe_from(key, client) {
            Ok(sub) => subs.push(sub),
            Err(e) => return Err(limits.response(limits.refuse(e, client))),
        }
    }
    // Withdrawn admission to any of the feeds ends the stream.
    let revoked = (!revoked.is_empty()).then_some(async move {
        futures_util::future::select_all(revoked).await;
    });
    let subscriber = stream::Subscriber::new(
        subs,
        last_event_id.as_deref(),
        &shared.sse,
        ctx.shutdown.clone(),
    )
    .hold(permit)
    .revoked_by(revoked)
    .parks_in(lane);
    *resp.body_mut() = subscriber.into_body();
    Ok(resp)
}

fn sse_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h
}
