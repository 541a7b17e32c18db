//! The heads `direct` reads and writes: an HTTP/1.1 request head parsed into
//! a [`Request`] when it is one `direct` serves, and a response head with
//! the framing `direct` writes.
//!
//! This module owns which requests are `direct`'s: an HTTP/1.1 `GET` in
//! origin form without a body, an upgrade or an expectation. It must never
//! guess at anything else: a head it does not fully understand is hyper's,
//! so behaviour at the edges (errors, 431, HTTP/1.0, absolute targets)
//! stays hyper's.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::Empty;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{DirectError, HeadLimits};
use crate::router::{Lane, Router};

/// hyper's own header count limit.
const MAX_HEADERS: usize = 100;

/// What the next bytes of a connection are.
// Returned once per request and taken apart at once: boxing would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Head {
    /// A request `direct` serves, `len` bytes long.
    Request {
        req: Request<Empty<Bytes>>,
        len: usize,
        /// The client asked to close after this answer.
        close: bool,
        /// Its path is an SSE route: the answer may be an event stream.
        stream: bool,
    },
    /// A plain `GET` passed through on the express lane, `len` bytes long.
    Express {
        /// The upstream's request head.
        upstream: Vec<u8>,
        len: usize,
        close: bool,
        /// For the access line.
        path: String,
    },
    /// hyper's, from the first byte in the buffer on.
    Hyper,
    /// The client closed the connection between requests.
    Closed,
}

/// Read until `buf` holds a whole request head, or it is plain that the
/// request is not `direct`'s.
pub(super) async fn read<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    router: &Router,
    limits: HeadLimits,
) -> Result<Head, DirectError> {
    loop {
        // Decide from the request line alone when possible, so a request
        // that is hyper's is handed on without waiting for its whole head.
        if let Some(end) = memchr::memchr(b'\n', buf) {
            let Some(lane) = wanted_line(&buf[..end], router) else {
                return Ok(Head::Hyper);
            };
            if let Lane::Express(express) = lane {
                match express_head(buf, express, router, limits.max_size) {
                    Express::Partial => {}
                    Express::Head(head) => return Ok(head),
                    Express::General => {}
                }
            }
            let stream = matches!(lane, Lane::Stream);
            if let Some(parsed) = parse(buf, stream) {
                return Ok(match parsed {
                    // Over the limit: hyper answers 431.
                    Some((_, len, _)) if len > limits.max_size => Head::Hyper,
                    Some((req, len, close)) => Head::Request {
                        req,
                        len,
                        close,
                        stream,
                    },
                    None => Head::Hyper,
                });
            }
        } else if !buf.is_empty() && !b"GET ".starts_with(&buf[..buf.len().min(4)]) {
            return Ok(Head::Hyper);
        }
        if buf.len() >= limits.max_size {
            return Ok(Head::Hyper); // hyper answers 431
        }
        buf.reserve(1024);
        if io.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(Head::Closed);
            }
            return Ok(Head::Hyper); // hyper sees the same EOF
        }
    }
}

/// `GET <origin-form target> HTTP/1.1`? Then how its path is served.
fn wanted_line<'r>(line: &[u8], router: &'r Router) -> Option<Lane<'r>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(b"GET"), Some(target), Some(b"HTTP/1.1"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match std::str::from_utf8(path) {
        Ok(p) if p.starts_with('/') => Some(router.lane(p)),
        _ => None,
    }
}

/// What the express lane makes of the buffer.
#[allow(clippy::large_enum_variant)] // as `Head`
enum Express {
    /// The head is not whole yet.
    Partial,
    Head(Head),
    /// Not the lane's: the general path decides (a request, or hyper's).
    General,
}

/// Parse a head on an express path into the upstream's request head.
/// A head over `max_size` is left to the general path (hyper answers 431).
fn express_head(
    buf: &[u8],
    express: &crate::proxy::Express,
    router: &Router,
    max_size: usize,
) -> Express {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_size => len,
        Ok(httparse::Status::Complete(_)) | Err(_) => return Express::General,
        Ok(httparse::Status::Partial) => return Express::Partial,
    };
    let (Some("GET"), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Express::General;
    };
    // A target hyper would refuse (400) is refused there.
    if target.parse::<http::uri::PathAndQuery>().is_err() {
        return Express::General;
    }
    let Some(close) = plain(parsed.headers, false) else {
        return Express::General;
    };
    let Some(upstream) =
        express.request_head(target, parsed.headers, router.remote(), router.scheme())
    else {
        return Express::General;
    };
    let path = target.split('?').next().unwrap_or(target).to_owned();
    Express::Head(Head::Express {
        upstream,
        len,
        close,
        path,
    })
}

/// Whether a parsed head is one `direct` serves (no body, protocol switch
/// or expectation; no trailers wanted, unless `stream`), and if so whether
/// the client asked to close after it.
fn plain(headers: &[httparse::Header<'_>], stream: bool) -> Option<bool> {
    let mut close = false;
    for h in headers {
        let name = h.name;
        // A body, a protocol switch or an expectation: hyper's job. So are
        // trailers the client takes from a passed-through answer, which
        // `direct` does not write.
        if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
            || (name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || (name.eq_ignore_ascii_case("te") && !stream)
        {
            return None;
        }
        if name.eq_ignore_ascii_case("connection") {
            close |= crate::upstream::lists(h.value, b"close");
        }
    }
    Some(close)
}

/// Parse a complete head into a request. `None`: not complete yet.
/// `Some(None)`: complete but not for this module.
#[allow(clippy::type_complexity)]
fn parse(buf: &[u8], stream: bool) -> Option<Option<(Request<Empty<Bytes>>, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(None),
    };
    let (Some("GET"), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Some(None);
    };
    let mut req = Request::new(Empty::new());
    *req.method_mut() = Method::GET;
    *req.version_mut() = Version::HTTP_11;
    let Ok(uri) = path.parse() else {
        return Some(None);
    };
    *req.uri_mut() = uri;
    let Some(close) = plain(parsed.headers, stream) else {
        return Some(None);
    };
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Some(None);
        };
        req.headers_mut().append(name, value);
    }
    Some(Some((req, len, close)))
}

/// The response head. `length`: `None` without a body (204, 304),
/// `Some(None)` for a body of unknown length (chunked), `Some(Some(n))` for
/// `n` bytes.
pub(super) fn response(
    parts: &http::response::Parts,
    length: Option<Option<u64>>,
    close: bool,
) -> Bytes {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.extend_from_slice(b" ");
    // A passed-through answer keeps the upstream's own reason phrase, as
    // hyper would write it.
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => head.extend_from_slice(reason.as_bytes()),
        None => head.extend_from_slice(
            parts
                .status
                .canonical_reason()
                .unwrap_or("Unknown")
                .as_bytes(),
        ),
    }
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue; // framing is ours to say
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let date = parts.headers.contains_key(header::DATE);
    finish(head, date, length, close)
}

/// End a response head whose status line and fields are in `head`: the
/// `Date` unless it has one, the framing, `Connection: close` when this is
/// the connection's last answer, the blank line.
pub(super) fn finish(
    mut head: Vec<u8>,
    date: bool,
    length: Option<Option<u64>>,
    close: bool,
) -> Bytes {
    if !date {
        head.extend_from_slice(b"date: ");
        now(&mut head);
        head.extend_from_slice(b"\r\n");
    }
    match length {
        None => {}
        Some(Some(n)) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa_u64(n, &mut [0u8; 20]));
            head.extend_from_slice(b"\r\n");
        }
        Some(None) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Bytes::from(head)
}

/// `n` in decimal, in `buf`.
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Whether a response with `status` has no body whatever its headers say.
pub(super) fn is_bodiless(status: StatusCode) -> bool {
    status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
}

/// Append the current `Date` value. Formatted once a second per thread (as
/// hyper caches it), not once a response.
fn now(head: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        head.extend_from_slice(cached.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_http_date_of_now() {
        let mut head = Vec::new();
        now(&mut head);
        let text = std::str::from_utf8(&head).expect("ascii");
        let when = httpdate::parse_http_date(text).expect("an HTTP date");
        let age = SystemTime::now()
            .duration_since(when)
            .unwrap_or_default()
            .as_secs();
        assert!(age <= 2, "{text} is {age}s old");
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            assert_eq!(itoa_u64(n, &mut [0u8; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn a_custom_reason_phrase_is_kept() {
        let mut resp = http::Response::new(());
        *resp.status_mut() = StatusCode::OK;
        resp.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Indeed"));
        let (parts, ()) = resp.into_parts();
        let head = response(&parts, Some(Some(0)), false);
        assert!(
            head.starts_with(b"HTTP/1.1 200 Fine Indeed\r\n"),
            "{head:?}"
        );
    }

    #[test]
    fn heads_direct_does_not_serve_are_left_to_hyper() {
        let cases: [&[u8]; 5] = [
            b"GET /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            b"GET /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET /a HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET /a HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET /a HTTP/1.1\r\nte: trailers\r\n\r\n",
        ];
        for head in cases {
            assert!(
                matches!(parse(head, false), Some(None)),
                "{:?} should be hyper's",
                String::from_utf8_lossy(head)
            );
        }
        // An event stream ignores trailers, so TE does not matter there.
        assert!(matches!(
            parse(b"GET /a HTTP/1.1\r\nte: trailers\r\n\r\n", true),
            Some(Some(_))
        ));
        let Some(Some((req, len, close))) = parse(
            b"GET /a?b=1 HTTP/1.1\r\nconnection: close\r\n\r\nGET",
            false,
        ) else {
            panic!("a plain GET is direct's");
        };
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(len, 42);
        assert!(close);
    }
}
