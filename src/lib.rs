//! pollcast: a reverse-proxy sidecar that turns polling into Server-Sent Events.
//!
//! One path for data:
//!
//! ```text
//! server ──> router ─┬─> proxy ─────────────────────────> upstream (pass-through)
//!                    └─> sse (subscribers) <── feed (registry, poller, extract,
//!                                                    diff, contract)
//!                                                    └──> upstream (polls)
//! ```
//!
//! The module map. Layers run one way: a module imports only modules on the
//! layers below its own (and its own folder), never one above; there are no
//! import loops. This list is the one map of the crate.
//!
//! ```text
//! start-up    start (listeners, wiring, Running), reload (SIGHUP, file watch), validation
//!             (the features' checks handed to config); main.rs on top
//! listener    server (accept, connections, shutdown) > direct (HTTP/1.1 streams
//!             written to the socket)
//! routing     router (the tower service: pollcast or the upstream)
//! answers     sse (admission, subscriber streams), admin (own endpoints),
//!             status (status page), stragglers (polls answered from a feed),
//!             auth (`check` admission), cluster (feeds shared through
//!             Redis, behind `feed::source`), fuzzing
//! context     shared (the start-up context: registry, limits, `[sse]`, metrics, counters,
//!             keepalive ticker; the snapshots metrics and stats render from)
//! feeds       feed/ (registry, defs, poller, update, cadence, extract, scan, diff, contract,
//!             key, id, object, snapshot, cursor, source, stats), access (pass-through access log)
//! services    metrics, readiness, proxy/ (pass-through, tunnels)
//! policy, io  upstream (pooled client), limits, cors, stats, tls, logging,
//!             watch (config and TLS file changes), init (`pollcast init`),
//!             trace/ (spans, traceparent, OTLP export)
//! model       config/ (model and defaults, load, env, overrides, sources,
//!             schema, validate), idle, response
//! leaves      body, wire (SSE encoding), template, pointer, route, budget,
//!             cidr, stall, preface
//! ```
//!
//! The binary (`src/main.rs`) sits on top and keeps its own side in
//! `src/cli/`: the `--demo` upstream, the `--healthcheck` client and the
//! `--check` rendering, which nothing in the library imports.
//!
//! - [`body`] and [`response`]: the one body type and every short answer
//!   pollcast writes itself; [`wire`]: the SSE wire encoding, used by the feed
//!   layer to encode each event once.
//! - [`config`]: the typed, validated configuration; it imports no feature:
//!   [`validation`] hands it the checks that need one.
//! - [`start`](mod@start): binding the listeners and wiring the parts; [`reload`]: what a
//!   SIGHUP (or a change [`watch`] saw) applies to a running pollcast.
//! - [`server`]: the listener, connections, graceful shutdown; [`direct`]:
//!   HTTP/1.1 event streams written to the socket without hyper's buffers.
//! - [`router`]: the tower service choosing between pollcast and the upstream.
//! - [`proxy`]: pass-through of every request pollcast does not own, WebSocket
//!   tunnels included; [`cidr`]: the address blocks of `trusted_proxies`.
//! - [`sse`]: admission and the subscriber streams.
//! - `shared`: the context built at start-up and handed to the listener, router,
//!   SSE admission and admin endpoints (limits, `[sse]`, metrics, counters, the
//!   keepalive ticker beside the registry).
//! - [`feed`]: feeds, their poll loops, diffing and history; the registry holds
//!   only feeds and their definitions; the poller's seams (`feed::poller::PollKit`
//!   and `PollCtx`, [`feed::poller::StragglerSink`]) are what it is handed, never
//!   the registry's insides; write-through goes through `feed::registry::Refresher`.
//! - [`upstream`]: the pooled client shared by proxy and feeds.
//! - [`auth`], [`limits`], [`cors`]: who may open a stream, how many, from where;
//!   [`budget`]: the memory live feeds may retain.
//! - [`preface`]: a connection's first bytes, read under the header deadline;
//!   [`idle`]: the same deadline for HTTP/2 connections with no request in progress.
//! - `fuzzing` (feature `fuzzing`): entry points for the cargo-fuzz targets and their corpus regression test.
//! - [`stall`]: write deadlines that close connections of dead or stalled clients.
//! - [`stats`]: live counts (feeds, subscribers, tasks, fds) for `/_pollcast/stats`.
//! - [`tls`]: the optional TLS acceptor of the listener.
//! - [`status`]: the live status page.
//! - [`init`]: `pollcast init`, a config.toml from an OpenAPI document or a probe.
//! - [`admin`]: pollcast's own endpoints under `[admin] prefix`; [`readiness`]: `/readyz`.
//! - [`access`]: the access log line and metrics of each pass-through request.
//! - [`stragglers`]: polls of a live feed's upstream path answered from its latest poll.
//! - [`metrics`]: the Prometheus metrics behind `<prefix>/metrics`, the
//!   standard `process_*` ones (`/proc/self`) beside pollcast's own.
//! - [`logging`]: the tracing subscriber, text or JSON, reloadable level, or `RUST_LOG`.
//! - [`watch`]: notices when the config or TLS files change (Kubernetes symlink swaps included).
//! - [`cluster`]: `[cluster]`, replicas sharing polls and event ids through
//!   Redis; it plugs into the feed layer as a `feed::source::Source`.
//! - [`trace`]: OpenTelemetry spans, `traceparent` propagation, OTLP export.

pub(crate) mod access;
pub(crate) mod admin;
pub mod auth;
pub(crate) mod body;
pub(crate) mod budget;
pub mod cidr;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod cors;
pub(crate) mod direct;
pub mod feed;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod idle;
pub mod init;
pub(crate) mod limits;
pub mod logging;
pub(crate) mod metrics;
pub mod pointer;
pub(crate) mod preface;
pub(crate) mod proxy;
pub(crate) mod readiness;
pub mod reload;
pub(crate) mod response;
pub mod route;
pub(crate) mod router;
pub(crate) mod server;
pub(crate) mod shared;
pub mod sse;
pub(crate) mod stall;
pub mod start;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod stragglers;
pub(crate) mod template;
pub(crate) mod tls;
pub mod trace;
pub(crate) mod upstream;
pub(crate) mod validation;
pub mod watch;
pub mod wire;

pub use body::{BoxBody, BoxError};
pub use config::Config;
pub use start::{start, Running};
