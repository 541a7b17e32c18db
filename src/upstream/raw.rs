//! The upstream exchange of a request without a body, written and read by
//! the task that waits for it.
//!
//! Most upstream requests are plain `GET`s (every poll, most passed-through
//! requests). For those, hyper's client is a request channel to a
//! connection task that encodes the head, parses the answer into a second
//! channel and hands the body over frame by frame: two tasks and two
//! channels per exchange, a visible share of a pass-through request's time.
//! Here the caller's task writes the head on a kept-alive connection it has
//! checked out, parses the answer head with `httparse` and reads the body
//! from the socket itself when the body is polled; the connection goes back
//! to the pool when the body has been read to its end.
//!
//! This module owns the HTTP/1.1 wire of those exchanges only: the request
//! head as hyper's client would write it, the answer head, its framing
//! (`Content-Length`, chunked, or until close) and whether the connection
//! may be used again. It must never take a request with a body, an upgrade
//! or trailers (`fits` says which: those stay hyper's), and never decide
//! anything about the answer beyond its framing: headers are the caller's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version,
};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::body::BoxBody;

mod decode;

pub(crate) use decode::Framing;
use decode::{decode, Chunk};

/// hyper's own header count limit.
const MAX_HEADERS: usize = 100;
/// The longest answer head taken (hyper's client allows about this much).
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read from the socket at a time.
const READ_SIZE: usize = 16 * 1024;

/// Why a raw exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RawError {
    /// The connection was closed or reset before any byte of an answer: on
    /// a kept-alive connection, the upstream had closed it meanwhile, and
    /// the request may go again on another.
    #[error("connection closed before an answer: {0}")]
    Closed(io::Error),
    #[error("reading the answer: {0}")]
    Io(io::Error),
    #[error("invalid answer from the upstream: {0}")]
    Invalid(&'static str),
}

/// Whether `req` goes over a raw connection: a `GET` or `HEAD` without a
/// body, an upgrade or a wish for trailers.
pub(crate) fn fits(req: &Request<BoxBody>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && http_body::Body::is_end_stream(req.body())
        && !req.headers().contains_key(header::UPGRADE)
        && !req.headers().contains_key(header::TE)
        && !req.headers().contains_key(header::CONTENT_LENGTH)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// The request head as hyper's client writes it: origin form, the header
/// map in its order, nothing added (the pool has set `Host`).
pub(crate) fn encode(req: &Request<BoxBody>) -> Vec<u8> {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut head = Vec::with_capacity(64 + target.len() + 48 * req.headers().len());
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A kept-alive connection to the upstream with what was read past the
/// last answer (nothing, on a connection that may be reused).
pub(crate) struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection may take a request: the upstream has not
    /// closed it or sent anything unasked. Costs a system call only when
    /// the socket was reported readable.
    pub(crate) fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Write `head` and read the answer's head, which `read` turns into
    /// what the caller wants of it. `bodiless` for a `HEAD` request, whose
    /// answer has no body whatever its headers say.
    pub(crate) async fn exchange<T>(
        mut self,
        head: &[u8],
        bodiless: bool,
        read: &mut impl FnMut(&Answer<'_, '_, '_>) -> Result<T, RawError>,
    ) -> Result<(T, RawBody), RawError> {
        self.io.write_all(head).await.map_err(RawError::Closed)?;
        let mut answered = false;
        loop {
            if !self.buf.is_empty() {
                answered = true;
                if let Some((t, framing, reusable)) = self.parse(bodiless, read)? {
                    let body = RawBody {
                        conn: Some(self),
                        framing,
                        reusable,
                    };
                    return Ok((t, body));
                }
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(RawError::Invalid("answer head too large"));
            }
            match read_some(&mut self.io, &mut self.buf).await {
                Ok(0) if !answered => {
                    return Err(RawError::Closed(io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => {
                    return Err(RawError::Invalid(
                        "connection closed inside the answer head",
                    ))
                }
                Ok(_) => {}
                Err(e) if !answered => return Err(RawError::Closed(e)),
                Err(e) => return Err(RawError::Io(e)),
            }
        }
    }

    /// Parse an answer head from the buffer and `read` it; `None` while
    /// the head is not whole. Informational answers (`1xx` but `101`) are
    /// skipped, as hyper's client skips them.
    fn parse<T>(
        &mut self,
        bodiless: bool,
        read: &mut impl FnMut(&Answer<'_, '_, '_>) -> Result<T, RawError>,
    ) -> Result<Option<(T, Framing, bool)>, RawError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            let len = match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(RawError::Invalid("too many headers"))
                }
                Err(_) => return Err(RawError::Invalid("malformed answer head")),
            };
            let status = parsed
                .code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or(RawError::Invalid("invalid status code"))?;
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(RawError::Invalid("switched protocols unasked"));
            }
            if status.is_informational() {
                self.buf.advance(len);
                if self.buf.is_empty() {
                    return Ok(None);
                }
                continue;
            }
            let (framing, reusable) = framing_of(&parsed, status, bodiless)?;
            let t = read(&Answer {
                parsed: &parsed,
                status,
            })?;
            self.buf.advance(len);
            return Ok(Some((t, framing, reusable)));
        }
    }
}

/// A parsed answer head, for the caller to read.
pub(crate) struct Answer<'p, 'h, 'b> {
    pub(crate) parsed: &'p httparse::Response<'h, 'b>,
    pub(crate) status: StatusCode,
}

/// The answer head as a `Response`, as hyper's client gives it.
pub(crate) fn response_of(answer: &Answer<'_, '_, '_>) -> Result<Response<()>, RawError> {
    let parsed = answer.parsed;
    let mut resp = Response::new(());
    *resp.status_mut() = answer.status;
    *resp.version_mut() = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if let Some(reason) = parsed.reason {
        if answer.status.canonical_reason() != Some(reason) {
            if let Ok(r) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes()) {
                resp.extensions_mut().insert(r);
            }
        }
    }
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| RawError::Invalid("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| RawError::Invalid("invalid header value"))?;
        map.append(name, value);
    }
    *resp.headers_mut() = map;
    Ok(resp)
}

/// The framing of an answer's body and whether its connection may be
/// reused after it (RFC 9112 6.3).
fn framing_of(
    parsed: &httparse::Response<'_, '_>,
    status: StatusCode,
    bodiless: bool,
) -> Result<(Framing, bool), RawError> {
    let mut length: Option<u64> = None;
    let mut coded = false;
    let mut chunked = false;
    let mut close = parsed.version == Some(0);
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // A list of one value repeated is that value (RFC 9110 8.6), as
            // hyper reads it.
            for part in h.value.split(|&b| b == b',') {
                let n =
                    digits(part.trim_ascii()).ok_or(RawError::Invalid("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(RawError::Invalid("conflicting Content-Length"));
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            // Only the last coding frames the body.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= lists(h.value, b"close");
        }
    }
    let framing =
        if bodiless || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Length(0)
        } else if coded && chunked {
            Framing::Chunked(Chunk::Size)
        } else if coded {
            // A coding other than chunked last runs until close.
            close = true;
            Framing::Close
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            close = true;
            Framing::Close
        };
    Ok((framing, !close))
}

/// Whether a comma-separated field value (`Connection`, ...) lists
/// `token`, matched case-insensitively.
pub(crate) fn lists(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A `Content-Length` value: `1*DIGIT` (RFC 9112 6.3), no sign, no
/// overflow. `u64::from_str` would take a leading `+`.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Read what the socket has into `buf` (at least some spare room first).
async fn read_some(io: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_some(io, buf, cx)).await
}

fn poll_read_some(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_SIZE);
    }
    let spare = buf.spare_capacity_mut();
    let mut rb = ReadBuf::uninit(spare);
    std::task::ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    let n = rb.filled().len();
    // SAFETY: `poll_read` initialised the first `n` bytes of the spare room.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// The body of an answer read from its connection by whoever polls it.
pub(crate) struct RawBody {
    /// `None` once taken back or dropped after an error.
    conn: Option<Conn>,
    framing: Framing,
    /// The answer leaves the connection usable for the next request.
    reusable: bool,
}

impl RawBody {
    pub(crate) fn is_end(&self) -> bool {
        matches!(self.framing, Framing::Length(0) | Framing::Done)
    }

    /// Once the body was read to its end: its connection, when it may take
    /// the next request.
    pub(crate) fn reusable_conn(&mut self) -> Option<Conn> {
        if !self.is_end() {
            return None;
        }
        self.framing = Framing::Done;
        let conn = self.conn.take()?;
        // Bytes past the answer: the upstream said more than it was asked.
        (self.reusable && conn.buf.is_empty()).then_some(conn)
    }

    pub(crate) fn exact_len(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body: `None` at its end.
    pub(crate) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if self.is_end() {
                return Poll::Ready(None);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match decode(&mut self.framing, &mut conn.buf) {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(None) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if matches!(self.framing, Framing::Length(0) | Framing::Done) {
                continue;
            }
            match std::task::ready!(poll_read_some(&mut conn.io, &mut conn.buf, cx)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.framing = Framing::Done;
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the body's end",
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(wire: &[u8], bodiless: bool) -> Result<(Response<()>, Framing, bool), RawError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        parsed.parse(wire).expect("parses");
        let status = StatusCode::from_u16(parsed.code.expect("code")).expect("status");
        let (framing, reusable) = framing_of(&parsed, status, bodiless)?;
        let resp = response_of(&Answer {
            parsed: &parsed,
            status,
        })?;
        Ok((resp, framing, reusable))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |wire: &[u8], bodiless| head(wire, bodiless).map(|(_, f, reuse)| (f, reuse));
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", false).ok(),
            Some((Framing::Length(7), true))
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", true).ok(),
            Some((Framing::Length(0), true))
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 7\r\n\r\n",
                false
            )
            .ok(),
            Some((Framing::Chunked(Chunk::Size), true))
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false).ok(),
            Some((Framing::Close, false))
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\n\r\n", false).ok(),
            Some((Framing::Close, false))
        );
        assert_eq!(
            f(
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                false
            )
            .ok(),
            Some((Framing::Length(0), true))
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n",
                false
            )
            .ok(),
            Some((Framing::Length(0), false))
        );
        assert_eq!(
            f(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false).ok(),
            Some((Framing::Length(0), false))
        );
        assert!(f(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(f(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", false).is_err());
        for bad in [
            &b"+5"[..],
            b"",
            b"5 5",
            b"0x5",
            b"99999999999999999999",
            b"5,",
        ] {
            let mut wire = b"HTTP/1.1 200 OK\r\ncontent-length: ".to_vec();
            wire.extend_from_slice(bad);
            wire.extend_from_slice(b"\r\n\r\n");
            assert!(
                f(&wire, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", false).ok(),
            Some((Framing::Length(5), true))
        );
    }

    #[test]
    fn a_custom_reason_phrase_is_kept_and_a_canonical_one_is_not_stored() {
        let (resp, _, _) = head(
            b"HTTP/1.1 200 Fine Indeed\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .expect("valid");
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .expect("kept");
        assert_eq!(reason.as_bytes(), b"Fine Indeed");
        let (resp, _, _) =
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false).expect("valid");
        assert!(resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());
    }

    #[test]
    fn the_request_head_is_written_as_hyper_writes_it() {
        let mut req = Request::get("http://up:81/a?b=1")
            .header("host", "up:81")
            .header("x-one", "1")
            .body(BoxBody::default())
            .expect("request");
        assert!(fits(&req));
        assert_eq!(
            encode(&req),
            b"GET /a?b=1 HTTP/1.1\r\nhost: up:81\r\nx-one: 1\r\n\r\n"
        );
        *req.method_mut() = Method::POST;
        assert!(!fits(&req));
    }
}
