//! Traces: the spans pollcast opens (one root per poll, with `request`,
//! `extract`, `diff` and `publish` children; one per pass-through request;
//! one per admission check) and W3C `traceparent` propagation.
//!
//! This module owns the span target, the trace-context format on the wire
//! and the export pipeline ([`export`]). It must never decide when a span
//! starts or ends (callers do) and must never cost anything with traces off:
//! then every span here is disabled and no header is read or written.

mod export;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use export::{Pipeline, TraceError};

/// The target of every span pollcast exports. Enabled only when traces
/// are on; it does not start with `pollcast`, so `[log] level` never
/// enables it (log filters match targets by prefix).
pub(crate) const TARGET: &str = "otel::pollcast";

/// Whether pass-through spans are exported (traces on), so a request
/// must take the path that opens them.
pub(crate) fn on() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// Continue the trace of an incoming request on `span`: its parent becomes
/// the caller's span named by `traceparent` (and `tracestate`). Without a
/// valid header, `span` stays a root.
pub(crate) fn continue_from(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        // Fails only when the span already started; it did not.
        let _ = span.set_parent(cx);
    }
}

/// Write `span` as the parent into an outgoing request's `traceparent`
/// (and `tracestate`), replacing any the request carried. Nothing when
/// `span` is not traced.
pub(crate) fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// The trace and span ids of the current span, hex, for log lines.
pub(crate) fn current_ids() -> Option<(String, String)> {
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
