//! pollcast's own short answers: the plain-text responses (400, 403, 404,
//! 405, 429, 431, 502, 503, 504 and the rest) and the uncached answers of
//! the admin endpoints, each built here and nowhere else.
//!
//! A leaf: it imports only [`crate::body`]. It never decides *when* to
//! answer so; callers above choose the status and the words.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, BoxBody};

/// A short plain-text response.
pub fn text(status: StatusCode, message: impl Into<Bytes>) -> Response<BoxBody> {
    with_type(status, "text/plain; charset=utf-8", message.into())
}

/// A plain-text response that tells the client when to come back.
pub fn retry_later(
    status: StatusCode,
    message: impl Into<Bytes>,
    after_secs: u64,
) -> Response<BoxBody> {
    let mut r = text(status, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(after_secs.max(1)));
    r
}

/// A plain-text admin answer: never cached.
pub fn uncached_text(status: StatusCode, message: impl Into<Bytes>) -> Response<BoxBody> {
    uncached(status, "text/plain; charset=utf-8", message.into())
}

/// An admin answer: never cached, since it describes this instant.
pub fn uncached(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<BoxBody> {
    let mut r = with_type(status, content_type, body);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<BoxBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
