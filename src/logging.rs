//! Logging: the `tracing` subscriber pollcast installs, its two formats
//! (`text` for people, `json` for log collectors), the level a config
//! reload may change, and the OpenTelemetry layer when traces are on.
//!
//! This module owns where log lines go (stderr) and how they are shaped. It
//! must never decide what is logged; callers do, and they never pass
//! credentials (see `feed::key` for the printable form of a feed).

use std::fmt;
use std::io::IsTerminal;

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogLevel};
use crate::trace::Pipeline;

/// Changes the level of the installed subscriber.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    pub fn set_level(&self, level: LogLevel) {
        if let Err(e) = self.filter.reload(filter(level)) {
            tracing::warn!(error = %e, "could not change the log level");
        }
    }
}

/// pollcast's own messages at `level`; dependencies (hyper, h2, ...) only
/// from `warn`, so `debug` stays readable.
fn filter(level: LogLevel) -> EnvFilter {
    EnvFilter::new(format!("warn,pollcast={}", level.as_str()))
}

/// Install the global subscriber, writing to stderr. Call once. With a
/// trace `pipeline`, pollcast's spans (target [`crate::trace::TARGET`]) are
/// recorded and exported whatever the log level, and JSON lines written
/// inside one carry its `trace_id` and `span_id`. Each layer filters for
/// itself, so log lines look the same with traces on or off.
pub fn init(format: LogFormat, level: LogLevel, pipeline: Option<&Pipeline>) -> LogHandle {
    let (filter_layer, handle) = reload::Layer::new(filter(level));
    let ansi = std::io::stderr().is_terminal();
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let spans = pipeline.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer())
            .with_filter(Targets::new().with_target(crate::trace::TARGET, Level::INFO))
    });
    tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter_layer))
        .with(spans)
        .init();
    LogHandle { filter: handle }
}

/// A JSON event format with `trace_id` and `span_id` first when the event
/// happens inside a traced span.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = crate::trace::current_ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}
