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

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::feed::lane::{Framer, Sink};
use crate::stall::WriteTimeout;

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

/// Events on a shared socket are chunks of its HTTP/1.1 response body.
static CHUNKED: Framer = Framer { frame: chunk };

/// One event as one chunk: size line, bytes, CRLF. Empty for an empty
/// event: an empty chunk would end the body.
fn chunk(event: &Bytes) -> Bytes {
    if event.is_empty() {
        return Bytes::new();
    }
    let mut b = BytesMut::with_capacity(event.len() + 20);
    b.put_slice(&super::chunk_size_line(event.len()));
    b.put_slice(event);
    b.put_slice(b"\r\n");
    b.freeze()
}

impl Sink for TcpStream {
    fn socket(&self) -> Option<(RawFd, &'static Framer)> {
        Some((self.as_raw_fd(), &CHUNKED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_chunk_and_an_empty_one_none() {
        assert_eq!(
            chunk(&Bytes::from_static(b"data: a\n\n")),
            "9\r\ndata: a\n\n\r\n"
        );
        let big = Bytes::from(vec![b'x'; 1024]);
        assert_eq!(&chunk(&big)[..5], b"400\r\n");
        assert_eq!(chunk(&big).len(), 5 + 1024 + 2);
        assert!(chunk(&Bytes::new()).is_empty());
    }
}
