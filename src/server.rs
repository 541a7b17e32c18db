//! The listener: accepts connections, serves each with HTTP/1.1 or HTTP/2 on
//! the same port (h2c prior knowledge in plain text; ALPN under TLS), and
//! drains them on shutdown.
//!
//! This module owns sockets and connection lifetimes, following hyper-util's
//! graceful-shutdown idiom. It must never look at requests (that is `router`).
//! Shutdown order: stop accepting, let SSE streams send their final `retry:`
//! and end (they watch the same token), let in-flight pass-through requests
//! finish, and give up on whatever is left after the drain timeout.
//!
//! Request heads are bounded in size (`max_header_size`: 431 on HTTP/1.1, a
//! refused stream on HTTP/2) and in time (`header_read_timeout`, from the
//! first byte of a connection on, see [`crate::preface`]), so a slowloris
//! client holds at most one connection task for that long. On HTTP/2 the
//! same deadline applies to a connection with no request in progress
//! ([`crate::idle`]): a HEADERS frame left without its CONTINUATION, or an
//! idle connection, is closed after it.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::idle::{Activity, Tracked};
use crate::router::{App, Router};
use crate::stall::WriteTimeout;
use crate::{direct, preface};

/// A client that has not finished its TLS handshake by then is dropped, so
/// half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `listener` until `shutdown` is cancelled, then drain for at most
/// `cfg.drain_timeout`. With `tls`, every connection must complete a TLS
/// handshake first.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
    cfg: ServerConfig,
    tls: Option<crate::tls::Live>,
) {
    let drain = cfg.drain_timeout;
    let head_timeout = cfg.header_read_timeout;
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        // Also hyper's write-buffer limit: what a connection may hold unsent
        // before hyper stops pulling from the body, so a client that stopped
        // reading pins little and soon counts as behind (then resynced).
        .max_buf_size(cfg.max_header_size);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_size).unwrap_or(u32::MAX));

    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let write_timeout = app.shared.sse.write_timeout;
        crate::stall::tune(&stream, write_timeout);
        let stream = WriteTimeout::new(stream, write_timeout);
        let router = Router::new(app.clone(), remote).over_tls(tls.is_some());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let conn = Conn {
            builder,
            router,
            watcher,
            head_timeout,
            max_header_size: cfg.max_header_size,
            shutdown: shutdown.clone(),
        };
        match &tls {
            None => {
                tokio::spawn(serve_conn(conn, stream));
            }
            Some(live) => {
                // The acceptor in force now: a reload affects new handshakes.
                let (acceptor, shutdown) = (live.acceptor(), shutdown.clone());
                tokio::spawn(async move {
                    if let Some(stream) = handshake(&acceptor, stream, &shutdown).await {
                        serve_conn(conn, stream).await;
                    }
                });
            }
        }
    }
    drop(listener);
    // Upgraded connections (WebSockets) left hyper's watch when they switched
    // protocols; they drain under the same deadline.
    let tunnels = app.proxy.tunnels();
    tokio::select! {
        _ = async { graceful.shutdown().await; tunnels.drained().await } => tracing::debug!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain timeout: closing remaining connections"),
    }
    tunnels.close_all().await;
}

/// What serving one connection needs.
struct Conn {
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    watcher: Watcher,
    head_timeout: Duration,
    max_header_size: usize,
    shutdown: CancellationToken,
}

/// Serve one connection (plain or TLS) until it ends or the drain closes it.
/// Its first bytes must arrive within the header timeout (hyper's own
/// timeout only starts once the protocol is known).
async fn serve_conn<I>(c: Conn, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + direct::Share + 'static,
{
    let Conn {
        builder,
        router,
        watcher,
        head_timeout,
        max_header_size,
        shutdown,
    } = c;
    let remote = router.remote();
    let counters = router.counters();
    let io = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = preface::read(io, head_timeout) => match r {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, %remote, "connection dropped before a request");
                return;
            }
        },
    };
    let mut router = router;
    let h2 = io.is_h2();
    let io = if h2 {
        io
    } else {
        let limits = direct::HeadLimits {
            max_size: max_header_size,
            timeout: head_timeout,
        };
        match direct::serve(io, &mut router, limits, &shutdown).await {
            Ok(direct::Outcome::Hyper(io)) => io,
            Ok(direct::Outcome::Done) => return,
            Ok(direct::Outcome::Stream(stream)) => {
                return spawn_stream(stream, watcher, counters, remote);
            }
            Ok(direct::Outcome::Shared(stream)) => {
                return spawn_stream(stream, watcher, counters, remote);
            }
            Err(e) => return ended_badly(&counters, remote, e.is_write_stall(), &e),
        }
    };
    // HTTP/1.1 heads are bounded by hyper (and `direct`); HTTP/2 by the
    // idle deadline below, which needs its requests tracked. HTTP/1.1 does
    // not, and calls the router directly: no tracking, no second boxing of
    // each response future and body, no router clone per request.
    let result = if h2 {
        let activity = Activity::new();
        let service = TowerToHyperService::new(Tracked::new(router, activity.clone()));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        tokio::select! {
            r = watcher.watch(conn) => r,
            _ = activity.idle_for(head_timeout) => {
                tracing::debug!(%remote, timeout = ?head_timeout, "HTTP/2 connection without a request in progress closed");
                return;
            }
        }
    } else {
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), router)
            .into_owned();
        watcher.watch(conn).await
    };
    if let Err(e) = result {
        ended_badly(&counters, remote, crate::stall::is_write_stall(&*e), &e);
    }
}

/// Run an event stream in a task sized for it alone: the connection's
/// task, sized for hyper and the request head, ends. Holding the watcher
/// keeps the stream in the shutdown drain.
fn spawn_stream<I>(
    stream: direct::Stream<I>,
    watcher: Watcher,
    counters: Arc<crate::stats::Counters>,
    remote: std::net::SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(Streaming {
        stream,
        _watcher: watcher,
        counters,
        remote,
    });
}

/// An event stream's whole task. A named future: an `async` block would
/// hold the stream twice (its capture and the awaited copy), and an idle
/// subscriber is mostly this task.
struct Streaming<I> {
    stream: direct::Stream<I>,
    _watcher: Watcher,
    counters: Arc<crate::stats::Counters>,
    remote: std::net::SocketAddr,
}

impl<I: AsyncRead + AsyncWrite + Unpin> std::future::Future for Streaming<I> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let r = std::task::ready!(std::pin::Pin::new(&mut self.stream).poll(cx));
        if let Err(e) = r {
            ended_badly(&self.counters, self.remote, e.is_write_stall(), &e);
        }
        std::task::Poll::Ready(())
    }
}

/// A connection that ended with an error: counted as a write timeout when
/// the client stopped acknowledging data (hyper's or `direct`'s), logged.
fn ended_badly(
    counters: &crate::stats::Counters,
    remote: std::net::SocketAddr,
    stall: bool,
    error: &dyn std::fmt::Display,
) {
    if stall {
        counters.add_write_timeout();
    }
    tracing::debug!(error = %error, %remote, "connection ended with an error");
}

/// The TLS handshake, bounded in time and abandoned on shutdown.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: WriteTimeout<TcpStream>,
    shutdown: &CancellationToken,
) -> Option<tokio_rustls::server::TlsStream<WriteTimeout<TcpStream>>> {
    let remote = stream.get_ref().peer_addr().ok();
    tokio::select! {
        _ = shutdown.cancelled() => None,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match r {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, ?remote, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(?remote, "TLS handshake timed out");
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::SharedTcp;
    use crate::stall::WriteTimeout;

    /// An idle subscriber is mostly its stream's task: the task must hold
    /// the stream once, plus what it reports an error with (an `async`
    /// block held it twice).
    #[test]
    fn a_stream_task_holds_its_stream_once() {
        type S = direct::Stream<WriteTimeout<SharedTcp>>;
        let stream = std::mem::size_of::<S>();
        let task = std::mem::size_of::<Streaming<WriteTimeout<SharedTcp>>>();
        let own =
            std::mem::size_of::<(Watcher, Arc<crate::stats::Counters>, std::net::SocketAddr)>();
        assert!(
            task <= stream + own,
            "task {task} bytes, stream {stream}, own {own}"
        );
    }
}
