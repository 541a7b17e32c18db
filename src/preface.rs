//! A connection's first bytes, read under the header deadline.
//!
//! hyper-util's automatic HTTP/1.1-or-HTTP/2 detection reads up to 24 bytes
//! (the HTTP/2 preface) with no time limit, and hyper's own
//! `header_read_timeout` only starts after it. A client that connects and
//! sends nothing, or the preface one byte at a time, would hold a connection
//! forever. This module reads just enough to know the protocol, within
//! `header_read_timeout`, and hands the bytes back in front of the stream.
//! It owns nothing else and must never interpret HTTP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream with bytes already read from it put back in front.
pub struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    io: T,
}

/// Why a connection was dropped before its protocol was known.
#[derive(Debug, thiserror::Error)]
pub enum PrefaceError {
    #[error("no request started within {0:?}")]
    Timeout(Duration),
    #[error("reading the first bytes: {0}")]
    Io(#[from] io::Error),
}

/// Read until the bytes either differ from the HTTP/2 preface (HTTP/1.x) or
/// complete it, or the peer closes; fail after `deadline`.
pub async fn read<T: AsyncRead + Unpin>(
    mut io: T,
    deadline: Duration,
) -> Result<Prefixed<T>, PrefaceError> {
    let mut buf = [0u8; 24];
    let mut n = 0;
    let reading = async {
        while n < H2_PREFACE.len() && buf[..n] == H2_PREFACE[..n] {
            let got = io.read(&mut buf[n..]).await?;
            if got == 0 {
                break;
            }
            n += got;
        }
        Ok::<_, io::Error>(())
    };
    match tokio::time::timeout(deadline, reading).await {
        Ok(r) => r?,
        Err(_) => return Err(PrefaceError::Timeout(deadline)),
    }
    Ok(Prefixed {
        prefix: buf[..n].to_vec(),
        pos: 0,
        io,
    })
}

impl<T> Prefixed<T> {
    /// `io` with `prefix` to be read first.
    pub fn new(prefix: Vec<u8>, io: T) -> Self {
        Self { prefix, pos: 0, io }
    }

    /// Whether the connection opened with the HTTP/2 preface.
    pub fn is_h2(&self) -> bool {
        self.prefix[self.pos..] == *H2_PREFACE
    }

    /// The bytes not read yet, and the stream.
    pub fn into_parts(mut self) -> (Vec<u8>, T) {
        self.prefix.drain(..self.pos);
        (self.prefix, self.io)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = out.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            out.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn http1_bytes_are_handed_back_in_order() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let mut p = read(b, Duration::from_secs(5)).await.expect("read");
        // One byte differs from "PRI" at once: nothing more was waited for.
        assert_eq!(p.prefix, b"GET / HTTP/1.1\r\n");
        a.write_all(b"Host: x\r\n").await.expect("write");
        drop(a);
        let mut all = Vec::new();
        p.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"GET / HTTP/1.1\r\nHost: x\r\n");
    }

    #[tokio::test]
    async fn a_silent_or_dribbling_client_times_out() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"PRI * HT").await.expect("write");
        let e = read(b, Duration::from_millis(50)).await.err();
        assert!(matches!(e, Some(PrefaceError::Timeout(_))), "{e:?}");
    }
}
