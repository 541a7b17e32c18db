//! The access log and metrics of pass-through requests: one log line per
//! request (method, path, status, latency, client address) and the
//! `pollcast_proxy_*` metrics.
//!
//! This module owns what an access line contains. It must never log a query
//! string or a header: query strings and `Authorization`/`Cookie` carry
//! tokens. It never looks at bodies; latency is time to the response head,
//! since bodies stream for as long as they last.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::metrics::Metrics;

pub fn record(
    metrics: &Metrics,
    method: &Method,
    path: &str,
    client: SocketAddr,
    status: StatusCode,
    took: Duration,
) {
    metrics.proxied(status, took);
    tracing::info!(
        target: "pollcast::access",
        method = %method,
        path,
        status = status.as_u16(),
        latency_ms = (took.as_secs_f64() * 1e6).round() / 1e3,
        client = %client.ip(),
        "pass-through"
    );
}

/// The access line of a request pollcast answered from feed `feed`'s latest
/// poll instead of passing it through (see `stragglers`).
pub fn answered(method: &Method, path: &str, client: SocketAddr, status: StatusCode, feed: &str) {
    tracing::info!(
        target: "pollcast::access",
        method = %method,
        path,
        status = status.as_u16(),
        feed,
        client = %client.ip(),
        "answered from snapshot"
    );
}
