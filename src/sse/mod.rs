//! The subscriber side: answering an EventSource request with a stream that
//! follows one feed.
//!
//! This module owns the SSE response (headers, `retry:`, keepalives, resume
//! position, shutdown hint) and the per-subscriber [`stream::Subscriber`]. It
//! must never poll the upstream or encode item payloads; it only forwards the
//! shared bytes a feed already encoded. A subscriber is not a task and has no
//! queue of its own: it is a cursor polled by hyper as the socket accepts
//! bytes, so a client that stops reading stops costing anything but its cursor.

pub mod encode;
pub mod stream;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::feed::key::split_query;
use crate::feed::registry::Registry;
use crate::feed::FeedKey;
use crate::{text_response, BoxBody};

/// Answer a request for the SSE path of feed definition `def`.
pub fn respond<B>(
    registry: &Registry,
    def: usize,
    req: &Request<B>,
    shutdown: &CancellationToken,
) -> Response<BoxBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "this path is an event stream: open it with GET (EventSource)\n",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let (query, id_param) = split_query(req.uri().query());
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(id_param);
    let key = FeedKey::new(
        def,
        query,
        req.headers().get(header::AUTHORIZATION).cloned(),
        req.headers().get(header::COOKIE).cloned(),
    );

    let mut resp = Response::new(http_body_util::Empty::<Bytes>::new().map_err_never());
    *resp.headers_mut() = sse_headers();
    if req.method() == Method::HEAD {
        return resp;
    }
    let sub = registry.subscribe(key);
    let subscriber = stream::Subscriber::new(
        sub,
        last_event_id.as_deref(),
        registry.sse(),
        shutdown.clone(),
    );
    *resp.body_mut() = subscriber.into_body();
    resp
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

trait MapErrNever {
    fn map_err_never(self) -> BoxBody;
}

impl MapErrNever for http_body_util::Empty<Bytes> {
    fn map_err_never(self) -> BoxBody {
        use http_body_util::BodyExt;
        self.map_err(|never| match never {}).boxed_unsync()
    }
}
