//! Start-up: binding the listeners and wiring the parts together, and the
//! handle of a running pollcast (its addresses, its feeds, its shutdown).
//!
//! The top of the crate: it may import every module, and no module imports it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::feed::source::{Local, Refresh, Source};
use crate::{
    admin, cluster, config, cors, metrics, proxy, readiness, route, server, status, stragglers, tls,
};

use crate::feed::poller::PollKit;
use crate::feed::registry::Registry;
use crate::limits::Limits;
use crate::router::App;
use crate::shared::Shared;
use crate::upstream::Upstream;

/// A running pollcast: its address, its feeds, and the way to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener's address (operator endpoints); `None` when
    /// `[admin] listen = ""` serves them on the main listener.
    pub admin_addr: Option<SocketAddr>,
    /// The listener's TLS acceptor, reloadable (`[server.tls]`).
    pub tls: Option<tls::Live>,
    pub registry: Registry,
    /// The start-up context: the registry beside limits, `[sse]`, metrics,
    /// counters and the keepalive ticker.
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    admin_server: Option<JoinHandle<()>>,
    sampler: JoinHandle<()>,
    /// `[cluster]`: the engine's health checks and pub/sub subscription.
    cluster: Option<JoinHandle<()>>,
}

impl Running {
    /// Begin a graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait until the listener has drained and every poll loop has ended.
    pub async fn wait(self) {
        let _ = self.server.await;
        if let Some(admin) = self.admin_server {
            let _ = admin.await;
        }
        let _ = self.sampler.await;
        // Feed tasks first: a leader releases its lease through the engine.
        self.shared.closed().await;
        if let Some(cluster) = self.cluster {
            let _ = cluster.await;
        }
    }

    /// Shut down and wait.
    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }
}

/// How many connections the kernel may hold completed but not yet accepted
/// (it caps this at `net.core.somaxconn`). After a restart or a network blip
/// thousands of streams reconnect within a second, while the accept loop
/// shares its core with the first arrivals' snapshots: at tokio's default of
/// 1,024 the queue overflows and the kernel drops SYNs, which clients only
/// retry after 1, 3, 7 and 15 s.
const BACKLOG: u32 = 4096;

/// The main listener, bound as tokio's `TcpListener::bind` would bind it
/// (address reuse on) but with [`BACKLOG`].
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Bind the listeners and start serving `config`.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let tls = config
        .server
        .tls
        .as_ref()
        .map(tls::Live::new)
        .transpose()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = bind(config.server.listen)?;
    let addr = listener.local_addr()?;
    let admin_listener = match config.admin.listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("[admin] listen {a}: {e}")))?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let upstream = Upstream::new(&config.upstream);
    let metrics = Arc::new(match &config.cluster {
        Some(_) => metrics::Metrics::with_cluster(),
        None => metrics::Metrics::new(),
    });
    let stragglers = Arc::new(stragglers::Stragglers::new(&config, metrics.clone()));
    let engine = config
        .cluster
        .as_ref()
        .map(|c| cluster::Cluster::new(c, config.sse.history, metrics.clone()))
        .transpose()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("[cluster] redis: {e}"),
            )
        })?;
    let source: Arc<dyn Source> = match &engine {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(Local),
    };
    for f in &config.feeds {
        metrics.declare_feed(&f.name);
    }
    let limits = Limits::new(&config.limits, &config.upstream.trusted_proxies);
    let kit = PollKit {
        upstream: upstream.clone(),
        metrics: metrics.clone(),
        limits: limits.clone(),
        stragglers: Arc::new(stragglers.clone()),
        shutdown: shutdown.clone(),
    };
    let registry = Registry::with_source(&config.feeds, config.sse.history, kit, source);
    let shared = Arc::new(Shared::new(
        registry.clone(),
        upstream.clone(),
        config.sse.clone(),
        limits,
        metrics,
        shutdown.clone(),
    ));
    let cluster_task = engine.as_ref().map(|c| {
        let reg = registry.refresher();
        c.on_refresh(Box::new(move |r| match r {
            Refresh::Path(p) => {
                reg.refresh_local_path(p);
            }
            Refresh::Definition(d) => {
                reg.refresh_local_definition(d);
            }
        }));
        tokio::spawn(c.clone().run(shutdown.clone()))
    });
    let proxy = proxy::Proxy::new(upstream.clone(), &config.upstream);
    let mut readiness =
        readiness::Readiness::new(&config.admin, upstream.clone(), shutdown.clone());
    readiness.cluster = engine.as_ref().map(|c| c.health());
    let admin = Arc::new(admin::Admin::new(&config.admin, readiness));
    let app = Arc::new(App::new(
        shared.clone(),
        proxy,
        admin,
        cors::Cors::new(&config.cors),
        stragglers,
    ));
    let mut admin_addr = None;
    let admin_server = match admin_listener {
        Some(l) => {
            let a = l.local_addr()?;
            admin_addr = Some(a);
            tracing::info!(addr = %a, prefix = %config.admin.prefix, "admin listening");
            Some(tokio::spawn(server::serve(
                l,
                Arc::new(app.for_admin_listener()),
                shutdown.clone(),
                config.server.clone(),
                // Probes and scrapers inside the pod or node speak plain HTTP.
                None,
            )))
        }
        None => None,
    };
    let sampler = tokio::spawn(status::sample(
        app.admin.status.clone(),
        registry.clone(),
        config.upstream.url.clone(),
        engine.as_ref().map(|c| c.health()),
        shutdown.clone(),
    ));
    let server = tokio::spawn(server::serve(
        listener,
        app,
        shutdown.clone(),
        config.server.clone(),
        tls.clone(),
    ));
    tracing::info!(%addr, tls = config.server.tls.is_some(), upstream = %config.upstream.url, feeds = config.feeds.len(), "pollcast listening");
    for f in &config.feeds {
        tracing::info!(feed = %f.name, sse = %f.sse_path(), poll = %f.poll, interval = ?f.interval, auth = ?f.auth, "feed");
        if f.query.is_none() {
            tracing::warn!(feed = %f.name, "any query parameter is forwarded and makes its own feed (bounded only by [limits]); list the accepted ones in `query`");
        }
        if unscoped_check(f) {
            tracing::warn!(feed = %f.name, "the `check` path names none of the SSE path's parameters: a subscriber it admits may follow every instance of this feed; put the {{param}} that scopes the data in `check`");
        }
    }
    Ok(Running {
        addr,
        admin_addr,
        tls,
        registry,
        shared,
        shutdown,
        server,
        admin_server,
        sampler,
        cluster: cluster_task,
    })
}

/// An explicit `check` on a feed with path parameters that uses none of them:
/// one admission for every instance (legitimate for "any logged-in user",
/// a cross-tenant hole for per-project data), so it is pointed out.
fn unscoped_check(f: &config::FeedConfig) -> bool {
    let Some(check) = &f.check else {
        return false;
    };
    let (Ok(sse), Ok(check)) = (
        route::Pattern::parse(&f.sse_path()),
        route::Pattern::parse(check),
    ) else {
        return false;
    };
    f.auth == config::AuthMode::Check && sse.has_params() && !check.has_params()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// Above tokio's default backlog of 1,024 and within this test's file limit.
    const BURST: usize = 1500;

    fn somaxconn() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_burst_beyond_tokios_default_backlog_waits_in_the_queue_instead_of_being_dropped() {
        if somaxconn() < BURST {
            eprintln!("net.core.somaxconn is below {BURST}: the kernel caps any backlog there");
            return;
        }
        // One client socket per connection: make room for them.
        // SAFETY: plain getrlimit/setrlimit on a local struct.
        unsafe {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            lim.rlim_cur = lim.rlim_max.min(8192).max(lim.rlim_cur);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        let listener = super::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let addr = listener.local_addr().expect("address");
        // Nothing accepts: each handshake must complete into the kernel's
        // queue at once. A full queue drops the SYN and the client's retry
        // comes only after a second, by which the queue is still full.
        let mut held = Vec::with_capacity(BURST);
        for i in 0..BURST {
            let conn =
                tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("connection {i} was not queued: the backlog overflowed")
                    })
                    .expect("connect");
            held.push(conn);
        }
        assert_eq!(held.len(), BURST);
    }
}
