//! A plain TCP socket shared by a stream's task and its feed.
//!
//! A stream served here parks in its feed while idle (see `feed::lane`):
//! the feed then writes new events to the socket itself. Both hold the
//! socket through an `Arc`; tokio's socket reads and writes take `&self`,
//! and the lane decides which of the two may write at any moment.
//!
//! This module owns the HTTP/1.1 chunked framing of what the feed writes
//! and the adapter that lets the stream's task use the shared socket like
//! its own. It never decides who writes (that is the lane) and never blocks.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::feed::lane::{Offered, Sink};
use crate::stall::WriteTimeout;

/// Events per vectored write (three slices each; the kernel's limit is 1,024).
const EVENTS_PER_WRITE: usize = 64;

/// A connection whose socket a stream can share with its feed.
pub trait Share: Sized {
    /// Whether [`Share::share`] would succeed (asked before the request is
    /// answered, so the answer can offer the stream a lane).
    fn can_share(&self) -> bool;
    /// The socket behind a shared handle, with the same write deadline, or
    /// the connection back when it cannot be shared (TLS: the session must
    /// encrypt every byte, in order, in one place).
    fn share(self) -> Result<WriteTimeout<SharedTcp>, Self>;
}

impl Share for WriteTimeout<TcpStream> {
    fn can_share(&self) -> bool {
        true
    }

    fn share(self) -> Result<WriteTimeout<SharedTcp>, Self> {
        let (tcp, limit) = self.into_parts();
        Ok(WriteTimeout::new(SharedTcp(Arc::new(tcp)), limit))
    }
}

impl<T> Share for tokio_rustls::server::TlsStream<T> {
    fn can_share(&self) -> bool {
        false
    }

    fn share(self) -> Result<WriteTimeout<SharedTcp>, Self> {
        Err(self)
    }
}

/// The stream's task's handle on a socket its feed may also write to.
pub struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    /// The handle the feed writes through.
    pub fn sink(&self) -> Arc<dyn Sink> {
        self.0.clone()
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match r {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

/// A chunk's size line, formatted on the stack.
#[derive(Clone, Copy, Default)]
struct SizeLine {
    buf: [u8; 18],
    len: usize,
}

impl SizeLine {
    fn of(n: usize) -> Self {
        let mut line = Self::default();
        let hex = format_hex(n, &mut line.buf);
        line.len = hex + 2;
        line.buf[hex] = b'\r';
        line.buf[hex + 1] = b'\n';
        line
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `n` in upper-case hex at the start of `out`; returns the digit count.
fn format_hex(n: usize, out: &mut [u8; 18]) -> usize {
    let digits = ((usize::BITS - n.leading_zeros()).div_ceil(4)).max(1) as usize;
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = b"0123456789ABCDEF"[(n >> shift) & 0xF];
    }
    digits
}

impl Sink for TcpStream {
    fn offer(&self, events: &[Bytes], rest: &mut VecDeque<Bytes>) -> Offered {
        if let [event] = events {
            return offer_one(self, event, rest);
        }
        let mut wrote = false;
        let mut groups = events.chunks(EVENTS_PER_WRITE);
        while let Some(group) = groups.next() {
            let mut lines = [SizeLine::default(); EVENTS_PER_WRITE];
            for (line, e) in lines.iter_mut().zip(group) {
                *line = SizeLine::of(e.len());
            }
            let mut slices = [IoSlice::new(&[]); 3 * EVENTS_PER_WRITE];
            let (mut count, mut total) = (0, 0);
            // An empty chunk would end the body: empty events are skipped.
            for (line, e) in lines.iter().zip(group).filter(|(_, e)| !e.is_empty()) {
                slices[count] = IoSlice::new(line.as_bytes());
                slices[count + 1] = IoSlice::new(e);
                slices[count + 2] = IoSlice::new(b"\r\n");
                count += 3;
                total += line.len + e.len() + 2;
            }
            let n = write_now(self, &slices[..count]);
            if n == total {
                wrote = true;
                continue;
            }
            if n == 0 && !wrote {
                return Offered::Nothing;
            }
            keep(group, n, rest);
            for later in groups {
                keep(later, 0, rest);
            }
            return Offered::Part;
        }
        Offered::All
    }
}

/// One event, the common case: three slices on the stack and one write.
fn offer_one(tcp: &TcpStream, event: &Bytes, rest: &mut VecDeque<Bytes>) -> Offered {
    if event.is_empty() {
        return Offered::All; // an empty chunk would end the body
    }
    let line = SizeLine::of(event.len());
    let slices = [
        IoSlice::new(line.as_bytes()),
        IoSlice::new(event),
        IoSlice::new(b"\r\n"),
    ];
    let n = write_now(tcp, &slices);
    if n == line.len + event.len() + 2 {
        return Offered::All;
    }
    if n == 0 {
        return Offered::Nothing;
    }
    keep(std::slice::from_ref(event), n, rest);
    Offered::Part
}

/// Write what the socket takes now, without blocking: bytes written (0 when
/// it is full or failed; the subscriber's task then finds out which).
///
/// Straight to the socket rather than through tokio's readiness check: the
/// loop writes to thousands of sockets in turn, and the check's one extra
/// cache miss per socket is a measurable share of it. A write that would
/// block leaves tokio's readiness stale in the safe direction: the task's
/// next write finds the socket full itself and waits.
fn write_now(tcp: &TcpStream, slices: &[IoSlice<'_>]) -> usize {
    socket2::SockRef::from(tcp)
        .send_vectored(slices)
        .unwrap_or(0)
}

/// The framed bytes of `events` after the first `written`, into `rest`
/// (event bytes as zero-copy slices).
fn keep(events: &[Bytes], mut written: usize, rest: &mut VecDeque<Bytes>) {
    for e in events.iter().filter(|e| !e.is_empty()) {
        let line = SizeLine::of(e.len());
        let parts = [
            Bytes::copy_from_slice(line.as_bytes()),
            e.clone(),
            Bytes::from_static(b"\r\n"),
        ];
        for part in parts {
            if written >= part.len() {
                written -= part.len();
                continue;
            }
            rest.push_back(part.slice(written..));
            written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_lines_are_upper_case_hex() {
        for (n, want) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (26, "1A\r\n"),
            (1024, "400\r\n"),
        ] {
            assert_eq!(SizeLine::of(n).as_bytes(), want.as_bytes());
        }
        assert_eq!(
            SizeLine::of(usize::MAX).as_bytes(),
            format!("{:X}\r\n", usize::MAX).as_bytes()
        );
    }

    #[test]
    fn the_rest_of_a_partial_write_is_the_framed_bytes_after_it() {
        let events = [
            Bytes::from_static(b"data: a\n\n"),
            Bytes::from_static(b"data: bc\n\n"),
        ];
        let whole = b"9\r\ndata: a\n\n\r\nA\r\ndata: bc\n\n\r\n";
        for written in 0..whole.len() {
            let mut rest = VecDeque::new();
            keep(&events, written, &mut rest);
            let got: Vec<u8> = rest.iter().flat_map(|b| b.to_vec()).collect();
            assert_eq!(got, &whole[written..], "after {written} bytes");
        }
    }
}
