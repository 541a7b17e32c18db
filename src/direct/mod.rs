//! HTTP/1.1 answers written straight to the socket, without hyper.
//!
//! An idle subscriber should cost little more than its cursor, and a
//! passed-through `GET` little more than the upstream's own answer. Served
//! by hyper, each subscriber also holds a connection task with two 8 KiB
//! buffers (read and write) for as long as the stream lives, and each
//! request pays hyper's server dispatch on top of the proxy's own work. So
//! on an HTTP/1.1 connection this module reads each request head itself
//! ([`head`]), and when it is a plain `GET` (origin form, no body, no
//! upgrade, no expectation) asks the [`Router`] for the response like hyper
//! would, and writes that response with its own minimal framing
//! (`Content-Length` or chunked): no buffers beyond the frames in flight,
//! one vectored write per batch of ready frames. The connection then waits
//! for its next request here, as hyper's keep-alive would.
//!
//! Everything else, and anything this module does not fully understand (a
//! body, an upgrade, `Expect`, `TE: trailers` on a passed-through answer,
//! HTTP/1.0, an oversized or malformed head), is handed to hyper untouched,
//! with the bytes already read put back in front, so behaviour at the edges
//! stays hyper's; hyper then serves the rest of the connection. After an
//! event stream the connection is closed (anything the client sent
//! meanwhile cannot be answered in order).
//!
//! On a plain TCP socket the stream shares the socket with its feed
//! ([`socket`]): while the subscriber is idle, the feed writes new events to
//! it itself, and this module writes what the subscriber's task sends
//! (first the rest of anything the feed's write left unfinished).
//!
//! This module owns the HTTP/1.1 wire format of those responses only. It must
//! never decide what to answer (that is `router`, `sse` and `proxy`) and
//! never block on a client: a client that stops reading stops the body being
//! polled, so a subscriber's cursor falls behind and is resynced, and a
//! passed-through body waits, exactly as under hyper.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::body::BoxBody;
use crate::feed::lane::Lane;
use crate::preface::Prefixed;
use crate::router::Router;
use crate::stall::WriteTimeout;

mod head;
mod socket;

use head::Head;
pub use socket::{Share, SharedTcp};

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

/// Serve `io` (an HTTP/1.x connection whose first bytes were read): its
/// plain `GET`s one after another, until the client closes, asks to close,
/// or sends a request that is hyper's (then hyper serves the rest), or an
/// event stream starts (then the stream is the connection's last answer).
///
/// `shutdown` is obeyed while a head is read, and an answer written after
/// it tells the client the connection closes; a stream ends by its own
/// body (which tells the client to come back), never cut here.
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
    loop {
        let reading = tokio::time::timeout(
            limits.timeout,
            head::read(&mut io, &mut buf, router, limits),
        );
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Outcome::Done),
            r = reading => r,
        };
        let (mut req, len, close, is_stream) = match read {
            Ok(Ok(Head::Request {
                req,
                len,
                close,
                stream,
            })) => (req, len, close, stream),
            Ok(Ok(Head::Express {
                upstream,
                len,
                close,
                path,
            })) => {
                buf.drain(..len);
                let close = close || shutdown.is_cancelled();
                express(&mut io, &mut buf, router, &upstream, &path, close).await?;
                if close || shutdown.is_cancelled() {
                    // Best effort: the peer may be gone already.
                    let _ = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
                    return Ok(Outcome::Done);
                }
                continue;
            }
            Ok(Ok(Head::Hyper)) => return Ok(Outcome::Hyper(Prefixed::new(buf, io))),
            Ok(Ok(Head::Closed)) => return Ok(Outcome::Done),
            Ok(Err(e)) => return Err(e),
            // Idle between requests for as long as a head may take: closed
            // quietly, as hyper closes an idle keep-alive connection.
            Err(_) if buf.is_empty() => return Ok(Outcome::Done),
            Err(_) => return Err(DirectError::HeadTimeout(limits.timeout)),
        };
        // A stream on this socket may park in its feed (see `socket`).
        let lane = (is_stream && io.can_share()).then(Lane::new);
        if let Some(lane) = &lane {
            req.extensions_mut().insert(lane.clone());
        }
        if is_stream {
            // A stream may live for hours: it keeps no read buffer.
            buf = buf.split_off(len);
        } else {
            buf.drain(..len);
        }
        // The last answer on a connection says so.
        let close = close || shutdown.is_cancelled();
        // A client that leaves while the upstream thinks drops the exchange.
        let mut call = router.call(req);
        let resp = poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(Ok(resp)) => Poll::Ready(Ok(resp)),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => match watch(&mut io, &mut buf, cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        })
        .await?;
        drop(call);
        let (parts, body) = resp.into_parts();
        let length = (!head::is_bodiless(parts.status)).then(|| body.size_hint().exact());
        let mut out = Out::default();
        out.parts.push_back(head::response(&parts, length, close));
        if is_stream && length == Some(None) {
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
        // A finite answer, or a passed-through body of unknown length
        // (chunked), written here; the connection then waits for the next
        // request.
        finite(&mut io, &mut buf, out, body, length).await?;
        if close || shutdown.is_cancelled() {
            // Best effort: the peer may be gone already.
            let _ = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
            return Ok(Outcome::Done);
        }
    }
}

/// Write a finite answer (or one of unknown length, chunked) whose head is
/// queued in `out`, keeping what the client sends meanwhile in `kept`.
async fn finite<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    kept: &mut Vec<u8>,
    mut out: Out,
    mut body: BoxBody,
    length: Option<Option<u64>>,
) -> Result<(), DirectError> {
    let chunked = length == Some(None);
    let mut ended = length.is_none();
    let reads = &mut Reads::Keep(kept);
    poll_fn(|cx| {
        stream(
            io, &mut body, &mut out, chunked, reads, None, &mut ended, cx,
        )
    })
    .await
}

/// Pass a plain `GET` through on the express lane: send the upstream its
/// head (`upstream`), write the client the answer, record it as the router
/// records a pass-through.
async fn express<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    kept: &mut Vec<u8>,
    router: &Router,
    upstream: &[u8],
    path: &str,
    close: bool,
) -> Result<(), DirectError> {
    let Some(express) = router.express() else {
        // The router offered the lane, so it has one.
        return Err(DirectError::Io(io::Error::other("express lane gone")));
    };
    let started = Instant::now();
    let sent = express.send(upstream, router.remote());
    let mut sent = std::pin::pin!(sent);
    // A client that leaves while the upstream thinks drops the exchange.
    let answer = poll_fn(|cx| match sent.as_mut().poll(cx) {
        Poll::Ready(answer) => Poll::Ready(Ok(answer)),
        Poll::Pending => match watch(&mut *io, &mut *kept, cx) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        },
    })
    .await?;
    let (head, body, length, status) = match answer {
        Ok((answered, body)) => {
            let length = (!head::is_bodiless(answered.status)).then(|| body.size_hint().exact());
            let head = head::finish(answered.head, answered.date, length, close);
            (head, body, length, answered.status)
        }
        Err(resp) => {
            let (parts, body) = resp.into_parts();
            let length = (!head::is_bodiless(parts.status)).then(|| body.size_hint().exact());
            (
                head::response(&parts, length, close),
                body,
                length,
                parts.status,
            )
        }
    };
    router.passed(path, status, started.elapsed());
    let mut out = Out::default();
    out.parts.push_back(head);
    finite(io, kept, out, body, length).await
}

/// An event stream being written: the socket, the body, the bytes in flight.
///
/// A named future rather than an `async fn`: it is most of an idle
/// subscriber's task, and an `async fn` would keep its argument and the
/// fields taken out of it side by side for the stream's whole life.
pub struct Stream<I> {
    /// `None` once the body ended: the subscriber is dropped first, so the
    /// feed writes nothing more, then the socket is shut. Declared before
    /// `io` so that a stream dropped after an error also lets go of its
    /// subscriber before its socket.
    body: Option<BoxBody>,
    io: I,
    out: Out,
    /// Where the subscriber parks while idle, when the feed may write to
    /// the socket too.
    lane: Option<Arc<Lane>>,
    ended: bool,
}

impl<I> Stream<I> {
    fn new(io: I, body: BoxBody, out: Out, lane: Option<Arc<Lane>>) -> Self {
        Self {
            body: Some(body),
            io,
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
                &mut Reads::Drop,
                lane,
                &mut this.ended,
                cx
            ));
            if r.is_err() {
                // The subscriber stays until the stream is dropped, after its
                // owner counted why it ended: whoever sees the subscriber gone
                // also sees the write timeout that ended it.
                return Poll::Ready(r);
            }
            // The subscriber goes first: the feed writes nothing after this.
            this.body = None;
        }
        // Best effort: the peer may be gone already.
        let _ = std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx));
        Poll::Ready(Ok(()))
    }
}

/// What the writer of an answer does with bytes the client sends meanwhile.
enum Reads<'a> {
    /// An event stream's: read and dropped (the connection closes after
    /// it), a few reads a wake, so a talking client cannot keep the task
    /// busy; the client closing its side ends the stream.
    Drop,
    /// A finite answer's: kept for the next request, and read only while
    /// none is kept (at most one read's worth, as hyper reads). The client
    /// closing its side breaks the answer off, as it does under hyper, so
    /// an upstream exchange nobody waits for is dropped.
    Keep(&'a mut Vec<u8>),
}

/// Drive `body` into `io` until it ends or the peer goes away. `chunked`
/// for a body of unknown length; `lane` when the stream shares the socket
/// with its feed.
#[allow(clippy::too_many_arguments)]
fn stream<I: AsyncWrite + AsyncRead + Unpin>(
    io: &mut I,
    body: &mut BoxBody,
    out: &mut Out,
    chunked: bool,
    reads: &mut Reads<'_>,
    lane: Option<&Lane>,
    ended: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(), DirectError>> {
    if let Some(lane) = lane {
        // A socket that failed the feed's write has told only the feed.
        if let Some(kind) = lane.take_failure() {
            return Poll::Ready(Err(DirectError::Io(kind.into())));
        }
        // What the feed's own write left unfinished goes out first.
        for rest in lane.take_rest().into_iter().rev() {
            out.parts.push_front(rest);
        }
    }
    loop {
        match reads {
            Reads::Drop => {
                for _ in 0..DRAIN_PER_WAKE {
                    let mut scratch = [0u8; 512];
                    let mut rb = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                            return Poll::Ready(Ok(()))
                        }
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Pending => break,
                    }
                }
            }
            Reads::Keep(kept) if !*ended => watch(&mut *io, kept, cx)?,
            Reads::Keep(_) => {}
        }
        // What is ready is gathered before writing, so a head and a body
        // that came with it go out in one write. Only into a queue that was
        // written (all but a partly written last part): a client that does
        // not read holds one batch, no more.
        let mut waiting = false;
        if out.parts.len() <= 1 && !*ended {
            for _ in 0..BATCH {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            out.push(data, chunked);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // What came before the break goes out first (best
                        // effort, without waiting), so the client sees the
                        // head and the part that arrived, then the break.
                        let _ = out.poll_flush(&mut *io, cx);
                        return Poll::Ready(Err(DirectError::Body(e)));
                    }
                    Poll::Ready(None) => {
                        if chunked {
                            out.parts.push_back(Bytes::from_static(b"0\r\n\r\n"));
                        }
                        *ended = true;
                        break;
                    }
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                }
            }
        }
        if out.poll_flush(&mut *io, cx)?.is_pending() {
            // Back-pressure: no more frames until the client drains.
            return Poll::Pending;
        }
        if *ended {
            return Poll::Ready(Ok(()));
        }
        if waiting {
            if let Some(lane) = lane {
                // Everything queued was written: if the subscriber parked,
                // the feed may write now.
                lane.arm();
            }
            return Poll::Pending;
        }
    }
}

/// Notice a client that leaves while its answer is awaited or written,
/// keeping anything it sends meanwhile for the next request. Read only while
/// nothing is kept (at most one read's worth, as hyper reads); a read that
/// would block costs no system call (the socket's readiness is cached).
fn watch<I: AsyncRead + Unpin>(
    io: &mut I,
    kept: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> io::Result<()> {
    if !kept.is_empty() {
        return Ok(());
    }
    let mut scratch = [0u8; 1024];
    let mut rb = ReadBuf::new(&mut scratch);
    match Pin::new(io).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) if rb.filled().is_empty() => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client closed its side before its answer was written",
        )),
        Poll::Ready(Ok(())) => {
            kept.extend_from_slice(rb.filled());
            Ok(())
        }
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(()),
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
