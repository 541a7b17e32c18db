//! HTTP/1.1 event streams written straight to the socket, without hyper.
//!
//! An idle subscriber should cost little more than its cursor. Served by
//! hyper, each one also holds a connection task with two 8 KiB buffers (read
//! and write) for as long as the stream lives, which is most of what a
//! subscriber costs. So when a connection's first request is an HTTP/1.1
//! `GET` on an SSE path, this module reads the request head itself, asks the
//! [`Router`] for the response like hyper would, and writes that response
//! with its own minimal framing (`Content-Length` or chunked): no buffers
//! beyond the frames in flight, one vectored write per batch of ready frames.
//!
//! Everything else, and anything this module does not fully understand (a
//! body, an upgrade, `Expect`, HTTP/1.0, an oversized or malformed head), is
//! handed to hyper untouched, with the bytes already read put back in front,
//! so behaviour at the edges stays hyper's. After a finite answer on a
//! keep-alive connection the connection goes back to hyper too; after a
//! stream it is closed (anything the client sent meanwhile cannot be answered
//! in order).
//!
//! On a plain TCP socket the stream shares the socket with its feed
//! ([`socket`]): while the subscriber is idle, the feed writes new events to
//! it itself, and this module writes what the subscriber's task sends
//! (first the rest of anything the feed's write left unfinished).
//!
//! This module owns the HTTP/1.1 wire format of those responses only. It must
//! never decide what to answer (that is `router` and `sse`) and never block
//! on a client: a client that stops reading stops the body being polled, so
//! its cursor falls behind and is resynced, exactly as under hyper.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, StatusCode, Version};
use http_body::Body;
use http_body_util::Empty;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::body::BoxBody;
use crate::feed::lane::Lane;
use crate::preface::Prefixed;
use crate::router::Router;
use crate::stall::WriteTimeout;

mod socket;
pub use socket::{Share, SharedTcp};

/// hyper's own default header count limit.
const MAX_HEADERS: usize = 100;
/// Frames gathered into one vectored write (a catching-up subscriber gets
/// many at once: id line, body, next event...).
const BATCH: usize = 32;
/// Bytes read and discarded per wake while streaming, so a client that
/// talks during a stream cannot keep the task busy.
const DRAIN_PER_WAKE: usize = 4;

/// What became of a connection.
pub enum Outcome<I> {
    /// Answered here; the connection is closed.
    Done,
    /// An event stream, head queued: run it (in a task of its own, so the
    /// connection's larger state is freed for as long as the stream lives).
    Stream(Stream<I>),
    /// The same, on a socket shared with the stream's feed.
    Shared(Stream<WriteTimeout<SharedTcp>>),
    /// Not for this module (or a finite answer on a keep-alive
    /// connection): hyper serves it, starting with these bytes.
    Hyper(Prefixed<I>),
}

/// Why a directly served connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("request head not complete within {0:?}")]
    HeadTimeout(Duration),
    #[error("writing the response: {0}")]
    Io(#[from] io::Error),
    #[error("the response body failed: {0}")]
    Body(crate::body::BoxError),
}

impl DirectError {
    /// The client stopped acknowledging data (write deadline or
    /// `TCP_USER_TIMEOUT`), as `stall::is_write_stall` tells for hyper.
    pub fn is_write_stall(&self) -> bool {
        matches!(self, DirectError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

/// Limits on the request head, the same hyper applies.
#[derive(Clone, Copy)]
pub struct HeadLimits {
    pub max_size: usize,
    pub timeout: Duration,
}

/// Serve `io` (an HTTP/1.x connection whose first bytes were read) if its
/// first request is a stream this module handles, else hand it to hyper.
///
/// `shutdown` is obeyed while the head is read; a stream then ends by its
/// own body (which tells the client to come back), never cut here.
pub async fn serve<I>(
    io: Prefixed<I>,
    router: &mut Router,
    limits: HeadLimits,
    shutdown: &CancellationToken,
) -> Result<Outcome<I>, DirectError>
where
    I: AsyncRead + AsyncWrite + Unpin + Share,
{
    let (mut buf, mut io) = io.into_parts();
    let reading =
        tokio::time::timeout(limits.timeout, read_head(&mut io, &mut buf, router, limits));
    let head = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Outcome::Done),
        r = reading => r.map_err(|_| DirectError::HeadTimeout(limits.timeout))??,
    };
    let Some((mut req, head_len, close)) = head else {
        return Ok(Outcome::Hyper(Prefixed::new(buf, io)));
    };
    // A stream on this socket may park in its feed (see `socket`).
    let lane = io.can_share().then(Lane::new);
    if let Some(lane) = &lane {
        req.extensions_mut().insert(lane.clone());
    }
    let rest = buf.split_off(head_len);
    drop(buf);
    let resp = match router.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, mut body) = resp.into_parts();
    let bodiless = parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
        || parts.status.is_informational();
    let length = (!bodiless).then(|| body.size_hint().exact());
    let mut out = Out::default();
    out.parts.push_back(response_head(&parts, length, close));
    if length == Some(None) {
        let Some(lane) = lane else {
            return Ok(Outcome::Stream(Stream::new(io, body, out, None)));
        };
        return Ok(match io.share() {
            Ok(io) => {
                lane.attach(io.get_ref().sink());
                Outcome::Shared(Stream::new(io, body, out, Some(lane)))
            }
            Err(io) => Outcome::Stream(Stream::new(io, body, out, None)),
        });
    }
    if length.is_some() {
        let mut ended = false;
        poll_fn(|cx| stream(&mut io, &mut body, &mut out, false, None, &mut ended, cx)).await?;
    } else {
        poll_fn(|cx| out.poll_flush(&mut io, cx)).await?;
    }
    if close {
        // Best effort: the peer may be gone already.
        let _ = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
        return Ok(Outcome::Done);
    }
    Ok(Outcome::Hyper(Prefixed::new(rest, io)))
}

/// An event stream being written: the socket, the body, the bytes in flight.
///
/// A named future rather than an `async fn`: it is most of an idle
/// subscriber's task, and an `async fn` would keep its argument and the
/// fields taken out of it side by side for the stream's whole life.
pub struct Stream<I> {
    io: I,
    /// `None` once the body ended (or failed): the subscriber is dropped
    /// first, so the feed writes nothing more, then the socket is shut.
    body: Option<BoxBody>,
    out: Out,
    /// Where the subscriber parks while idle, when the feed may write to
    /// the socket too.
    lane: Option<Arc<Lane>>,
    ended: bool,
}

impl<I> Stream<I> {
    fn new(io: I, body: BoxBody, out: Out, lane: Option<Arc<Lane>>) -> Self {
        Self {
            io,
            body: Some(body),
            out,
            lane,
            ended: false,
        }
    }
}

/// Written until its body ends (then the connection is closed) or the
/// client leaves.
impl<I: AsyncRead + AsyncWrite + Unpin> Future for Stream<I> {
    type Output = Result<(), DirectError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(body) = &mut this.body {
            let lane = this.lane.as_deref();
            let r = std::task::ready!(stream(
                &mut this.io,
                body,
                &mut this.out,
                true,
                lane,
                &mut this.ended,
                cx
            ));
            // The subscriber goes first: the feed writes nothing after this.
            this.body = None;
            r?;
        }
        // Best effort: the peer may be gone already.
        let _ = std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx));
        Poll::Ready(Ok(()))
    }
}

async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    router: &Router,
    limits: HeadLimits,
) -> Result<Option<(Request<Empty<Bytes>>, usize, bool)>, DirectError> {
    loop {
        // Decide from the request line alone when possible, so pass-through
        // requests are handed on without waiting for their whole head.
        if let Some(end) = memchr::memchr(b'\n', buf) {
            if !wanted_line(&buf[..end], router) {
                return Ok(None);
            }
            if let Some(parsed) = parse(buf) {
                // Over the limit: hyper answers 431.
                return Ok(parsed.filter(|(_, len, _)| *len <= limits.max_size));
            }
        } else if !buf.is_empty() && !b"GET ".starts_with(&buf[..buf.len().min(4)]) {
            return Ok(None);
        }
        if buf.len() >= limits.max_size {
            return Ok(None); // hyper answers 431
        }
        buf.reserve(1024);
        if io.read_buf(buf).await? == 0 {
            return Ok(None); // hyper sees the same EOF
        }
    }
}

/// `GET <path on an SSE route> HTTP/1.1`?
fn wanted_line(line: &[u8], router: &Router) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(b"GET"), Some(target), Some(b"HTTP/1.1"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match std::str::from_utf8(path) {
        Ok(p) => p.starts_with('/') && router.streams(p),
        Err(_) => false,
    }
}

/// Parse a complete head into a request. `None`: not complete yet.
/// `Some(None)`: complete but not for this module.
#[allow(clippy::type_complexity)]
fn parse(buf: &[u8]) -> Option<Option<(Request<Empty<Bytes>>, usize, bool)>> {
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
    let mut close = false;
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Some(None);
        };
        // A body, a protocol switch or an expectation: hyper's job.
        if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
            || (name == header::CONTENT_LENGTH && value.as_bytes() != b"0")
        {
            return Some(None);
        }
        if name == header::CONNECTION {
            close |= value
                .to_str()
                .unwrap_or_default()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
        req.headers_mut().append(name, value);
    }
    Some(Some((req, len, close)))
}

/// The response head. `length`: `None` without a body (204, 304),
/// `Some(None)` for a stream (chunked), `Some(Some(n))` for `n` bytes.
fn response_head(parts: &http::response::Parts, length: Option<Option<u64>>, close: bool) -> Bytes {
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
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
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match length {
        None => {}
        Some(Some(n)) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        Some(None) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head.freeze()
}

/// Drive `body` into `io` until it ends or the peer goes away. `chunked`
/// for a stream; `lane` when the stream shares the socket with its feed.
fn stream<I: AsyncWrite + AsyncRead + Unpin>(
    io: &mut I,
    body: &mut BoxBody,
    out: &mut Out,
    chunked: bool,
    lane: Option<&Lane>,
    ended: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(), DirectError>> {
    if let Some(lane) = lane {
        // What the feed's own write left unfinished goes out first.
        for rest in lane.take_rest().into_iter().rev() {
            out.parts.push_front(rest);
        }
    }
    loop {
        // A client closing its side ends a stream (as hyper notices by
        // reading between responses); bytes it sends meanwhile are dropped.
        // A finite answer leaves them for hyper.
        for _ in 0..if chunked { DRAIN_PER_WAKE } else { 0 } {
            let mut scratch = [0u8; 512];
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => break,
            }
        }
        if out.poll_flush(&mut *io, cx)?.is_pending() {
            // Back-pressure: no more frames until the client drains.
            return Poll::Pending;
        }
        if *ended {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..BATCH {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        out.push(data, chunked);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(DirectError::Body(e))),
                Poll::Ready(None) => {
                    if chunked {
                        out.parts.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    *ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if out.parts.is_empty() && !*ended {
            if let Some(lane) = lane {
                // Everything queued was written: if the subscriber parked,
                // the feed may write now.
                lane.arm();
            }
            return Poll::Pending;
        }
    }
}

/// Bytes waiting to be written, in order; shared event bytes are never
/// copied.
#[derive(Default)]
struct Out {
    parts: VecDeque<Bytes>,
}

impl Out {
    fn push(&mut self, data: Bytes, chunked: bool) {
        if data.is_empty() {
            return; // an empty chunk would end the body
        }
        if chunked {
            self.parts.push_back(chunk_size_line(data.len()));
            self.parts.push_back(data);
            self.parts.push_back(Bytes::from_static(b"\r\n"));
        } else {
            self.parts.push_back(data);
        }
    }

    /// Write everything queued; `Pending` while the socket is full.
    fn poll_flush<I: AsyncWrite + Unpin>(
        &mut self,
        io: &mut I,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.parts.is_empty() {
            let mut slices = [IoSlice::new(&[]); 64];
            let mut count = 0;
            for (slot, part) in slices.iter_mut().zip(&self.parts) {
                *slot = IoSlice::new(part);
                count += 1;
            }
            let mut n = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            while n > 0 {
                let Some(front) = self.parts.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.parts.pop_front();
                } else {
                    *front = front.slice(n..);
                    n = 0;
                }
            }
        }
        // An idle stream holds no buffer (a burst, resync or catch-up,
        // least of all): most subscribers are idle most of the time, and
        // the next event costs one small allocation.
        self.parts = VecDeque::new();
        Pin::new(io).poll_flush(cx)
    }
}

/// The chunk-size line of a `len`-byte chunk. An event goes to every
/// subscriber in turn with the same length, so the last line made is kept
/// (per thread): a reference count instead of a format and an allocation
/// per subscriber.
fn chunk_size_line(len: usize) -> Bytes {
    thread_local! {
        static LAST: std::cell::RefCell<(usize, Bytes)> =
            const { std::cell::RefCell::new((0, Bytes::new())) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != len || last.1.is_empty() {
            *last = (len, Bytes::from(format!("{len:X}\r\n")));
        }
        last.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_follow_the_length() {
        assert_eq!(chunk_size_line(1024), "400\r\n");
        assert_eq!(chunk_size_line(1024), "400\r\n");
        assert_eq!(chunk_size_line(26), "1A\r\n");
        assert_eq!(chunk_size_line(1024), "400\r\n");
    }

    #[test]
    fn a_flushed_queue_keeps_no_buffer() {
        let mut out = Out::default();
        out.push(Bytes::from_static(b"data: x\n\n"), true);
        let mut sink = Vec::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(out.poll_flush(&mut sink, &mut cx).is_ready());
        assert_eq!(sink, b"9\r\ndata: x\n\n\r\n");
        assert_eq!(out.parts.capacity(), 0);
    }
}
