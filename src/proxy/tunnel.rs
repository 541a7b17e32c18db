//! Protocol upgrades (WebSocket and any other `Connection: Upgrade`): after
//! the upstream's `101 Switching Protocols`, the client's and the upstream's
//! connections are spliced byte for byte, both ways, until they close.
//!
//! This module owns recognising an upgrade request and the lifetime of every
//! spliced pair. It must never parse what flows through a tunnel: pollcast
//! does not speak WebSocket, it only stops being HTTP for that connection.
//!
//! Shutdown: open tunnels count as in-flight pass-through. They keep running
//! through the server's drain period and are closed when it ends.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::headers::has_token;

/// The protocol a request asks to switch to, when it is an upgrade pollcast forwards.
///
/// Only HTTP/1.1 has `Upgrade`. `h2c` is not forwarded: the upstream would
/// start speaking HTTP/2 on a connection pollcast then could not pool or
/// route, and RFC 9113 deprecated that upgrade anyway. Such requests are
/// forwarded as plain requests without it.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || req.method() == Method::CONNECT {
        return None;
    }
    let headers = req.headers();
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return None;
    }
    let proto = headers.get(header::UPGRADE)?;
    let only_h2c = proto
        .to_str()
        .map(|p| p.split(',').all(|p| p.trim().eq_ignore_ascii_case("h2c")))
        .unwrap_or(false);
    (!only_h2c).then(|| proto.clone())
}

/// Put back the two headers that make a message an upgrade, after the
/// hop-by-hop strip removed them along with everything else.
pub fn mark_upgrade(headers: &mut HeaderMap, proto: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, proto);
}

/// Every open tunnel, so shutdown can wait for them and then close them.
#[derive(Clone, Default)]
pub struct Tunnels {
    tracker: TaskTracker,
    close: CancellationToken,
}

impl Tunnels {
    /// Splice `client` and `upstream` once both upgrades complete.
    pub fn open(&self, client: OnUpgrade, upstream: OnUpgrade, peer: SocketAddr) {
        let close = self.close.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                r = splice(client, upstream) => match r {
                    Ok((up, down)) => tracing::debug!(%peer, up, down, "tunnel closed"),
                    Err(e) => tracing::debug!(%peer, error = %e, "tunnel ended with an error"),
                },
                _ = close.cancelled() => tracing::debug!(%peer, "tunnel closed by shutdown"),
            }
        });
    }

    /// For shutdown: resolves once every tunnel has closed by itself.
    pub async fn drained(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Close every open tunnel now and wait until their tasks have ended.
    pub async fn close_all(&self) {
        self.close.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Why a tunnel ended other than by a close.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("upgrade did not complete: {0}")]
    Upgrade(#[from] hyper::Error),
    #[error("tunnel I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Copy both ways until both directions are done; a half close on one side
/// is passed on to the other, as TCP would.
async fn splice(client: OnUpgrade, upstream: OnUpgrade) -> Result<(u64, u64), TunnelError> {
    let (client, upstream) = tokio::try_join!(client, upstream)?;
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    Ok(tokio::io::copy_bidirectional(&mut client, &mut upstream).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, connection: &str, upgrade: &str) -> Request<()> {
        let mut r = Request::builder().version(version).uri("/ws");
        if !connection.is_empty() {
            r = r.header(header::CONNECTION, connection);
        }
        if !upgrade.is_empty() {
            r = r.header(header::UPGRADE, upgrade);
        }
        r.body(()).expect("request")
    }

    #[test]
    fn websocket_handshakes_are_upgrades() {
        let r = req(Version::HTTP_11, "keep-alive, Upgrade", "websocket");
        assert_eq!(requested(&r).expect("upgrade"), "websocket");
    }

    #[test]
    fn h2c_plain_and_http2_requests_are_not() {
        assert!(requested(&req(Version::HTTP_11, "Upgrade, HTTP2-Settings", "h2c")).is_none());
        assert!(requested(&req(Version::HTTP_11, "keep-alive", "websocket")).is_none());
        assert!(requested(&req(Version::HTTP_11, "upgrade", "")).is_none());
        assert!(requested(&req(Version::HTTP_2, "upgrade", "websocket")).is_none());
    }
}
