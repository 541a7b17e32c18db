//! pollcast: a reverse-proxy sidecar that turns polling into Server-Sent Events.
//!
//! One path for data:
//!
//! ```text
//! config ──> server ──> router ─┬─> proxy ──────────────> upstream (pass-through)
//!                               └─> sse (subscribers) <── feed (registry, poller,
//!                                                              extract, diff, contract)
//!                                                              └──> upstream (polls)
//! ```
//!
//! - [`config`]: the typed, validated configuration.
//! - [`server`]: the listener, connections, graceful shutdown; [`direct`]:
//!   HTTP/1.1 event streams written to the socket without hyper's buffers.
//! - [`router`]: the tower service choosing between pollcast and the upstream.
//! - [`proxy`]: pass-through of every request pollcast does not own, WebSocket
//!   tunnels included; [`cidr`]: the address blocks of `trusted_proxies`.
//! - [`sse`]: the wire format and the subscriber streams.
//! - [`feed`]: feeds, their poll loops, diffing and history.
//! - [`upstream`]: the pooled client shared by proxy and feeds.
//! - [`auth`], [`limits`], [`cors`]: who may open a stream, how many, from where;
//!   [`budget`]: the memory live feeds may retain.
//! - [`preface`]: a connection's first bytes, read under the header deadline;
//!   [`idle`]: the same deadline for HTTP/2 connections with no request in progress.
//! - [`fuzzing`]: entry points for the cargo-fuzz targets and their corpus regression test.
//! - [`stall`]: write deadlines that close connections of dead or stalled clients.
//! - [`stats`]: live counts (feeds, subscribers, tasks, fds) for `/_pollcast/stats`.
//! - [`tls`]: the optional TLS acceptor of the listener.
//! - [`status`]: the live status page.
//! - [`healthcheck`]: the client behind `pollcast --healthcheck`.
//! - [`init`]: `pollcast init`, a config.toml from an OpenAPI document or a probe.
//! - [`demo`]: a built-in upstream for `--demo`.
//! - [`admin`]: pollcast's own endpoints under `[admin] prefix`; [`readiness`]: `/readyz`.
//! - [`access`]: the access log line and metrics of each pass-through request.
//! - [`stragglers`]: polls of a live feed's upstream path answered from its latest poll.
//! - [`metrics`]: the Prometheus metrics behind `<prefix>/metrics`.
//! - [`reload`]: what a SIGHUP applies to a running pollcast.
//! - [`check`]: `--check`'s rendering of the effective config, secrets redacted.
//! - [`logging`]: the tracing subscriber, text or JSON, reloadable level.

pub mod access;
pub mod admin;
pub mod auth;
pub mod body;
pub mod budget;
pub mod check;
pub mod cidr;
pub mod config;
pub mod cors;
pub mod demo;
pub mod direct;
pub mod feed;
pub mod fuzzing;
pub mod healthcheck;
pub mod idle;
pub mod init;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pointer;
pub mod preface;
pub mod proxy;
pub mod readiness;
pub mod reload;
pub mod response;
pub mod route;
pub mod router;
pub mod server;
pub mod sse;
pub mod stall;
pub mod start;
pub mod stats;
pub mod status;
pub mod stragglers;
pub mod template;
pub mod tls;
pub mod upstream;
pub mod validation;
pub mod wire;

pub use body::{BoxBody, BoxError};
pub use config::Config;
pub use start::{start, Running};
