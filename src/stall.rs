//! Dead and stalled clients: a write that makes no progress for
//! `sse.write_timeout` closes the connection.
//!
//! pollcast never queues per subscriber (a stalled subscriber is only a cursor
//! that is resynced when it drains), so a client that stops reading costs
//! little; but one that never reads again, or vanished without a FIN
//! (half-open), would hold its socket, its hyper buffers and its feed forever.
//! [`WriteTimeout`] wraps every accepted socket and fails the connection once
//! writes have been blocked (TCP window full) for the limit; [`tune`] sets the
//! kernel side, `TCP_USER_TIMEOUT` (unacknowledged data, e.g. a keepalive
//! comment to a peer that is gone) and TCP keepalive (idle connections).
//!
//! This module owns those socket-level deadlines. It must never look at
//! what is written, and never time out reads (an idle pass-through client
//! is not a dead one; hyper's own timers govern reads).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Kernel-side dead-peer detection on an accepted socket: unacknowledged
/// data older than `limit` kills the connection (`TCP_USER_TIMEOUT`, Linux),
/// and idle connections are probed (TCP keepalive). Best effort: a platform
/// without an option just lacks that safety net.
pub fn tune(stream: &TcpStream, limit: Duration) {
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&keepalive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = sock.set_tcp_user_timeout(Some(limit));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = limit;
}

/// Whether a connection ended because a peer stopped acknowledging: our
/// write deadline, or the kernel's `TCP_USER_TIMEOUT` (both `TimedOut`).
pub fn is_write_stall(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An IO whose writes fail with `TimedOut` after `limit` without progress.
pub struct WriteTimeout<I> {
    inner: I,
    limit: Duration,
    /// Armed while writes are blocked; reset (not reallocated) on each stall.
    /// Allocated at the first stall only: most connections never stall, and
    /// an idle subscriber should not carry a timer.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<I> WriteTimeout<I> {
    pub fn new(inner: I, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            stalled: false,
        }
    }

    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The inner IO and the limit, to wrap the IO in something else and
    /// that again in a deadline. Only between writes: a stall in progress
    /// is forgotten.
    pub fn into_parts(self) -> (I, Duration) {
        (self.inner, self.limit)
    }

    /// Called when the inner write returned `Pending`: start or check the clock.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.stalled {
            self.stalled = true;
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("client accepted no data for {:?}", self.limit),
            ))),
        }
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_never_reads_fails_the_write_after_the_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = tokio::spawn(async move { listener.accept().await });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _peer = peer.await.expect("join").expect("accept"); // never reads
        let mut w = WriteTimeout::new(stream, Duration::from_millis(200));
        let chunk = vec![b'x'; 64 * 1024];
        let err = loop {
            if let Err(e) = w.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(is_write_stall(&err));
    }

    #[tokio::test]
    async fn a_slow_but_reading_peer_is_never_cut() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let total = 4 * 1024 * 1024;
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0; 64 * 1024];
            let mut got = 0;
            while got < total {
                // Slower than the writer, but never stalled for the limit.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0);
                got += n;
            }
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut w = WriteTimeout::new(stream, Duration::from_millis(500));
        w.write_all(&vec![b'x'; total]).await.expect("all written");
        reader.await.expect("reader");
    }
}
