//! Logging: the `tracing` subscriber pollcast installs, its two formats
//! (`text` for people, `json` for log collectors), the level a config
//! reload may change, and the OpenTelemetry layer when traces are on.
//!
//! `RUST_LOG`, when set and not empty, is the filter instead of `[log]
//! level` (the usual `tracing` directives, e.g. `info,pollcast=debug,h2=trace`,
//! so a dependency can be made verbose too); a reload then leaves it alone.
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
    /// The filter came from `RUST_LOG`: `[log] level` does not apply.
    from_env: bool,
}

impl LogHandle {
    pub(crate) fn set_level(&self, level: LogLevel) {
        if self.from_env {
            tracing::info!(
                level = level.as_str(),
                "[log] level changed, but RUST_LOG is set and stays the filter"
            );
            return;
        }
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

/// The filter `RUST_LOG` asks for: `Ok(None)` when it is unset or empty,
/// `Err` (naming the variable) when it is not valid directives.
pub fn env_filter(rust_log: Option<&str>) -> Result<Option<EnvFilter>, String> {
    match rust_log.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => EnvFilter::builder()
            .parse(v)
            .map(Some)
            .map_err(|e| format!("environment variable RUST_LOG: `{v}` is not a log filter: {e}")),
    }
}

/// Install the global subscriber, writing to stderr. Call once. With a
/// trace `pipeline`, pollcast's spans (target [`crate::trace::TARGET`]) are
/// recorded and exported whatever the log level, and JSON lines written
/// inside one carry its `trace_id` and `span_id`. Each layer filters for
/// itself, so log lines look the same with traces on or off.
/// `env` (see [`env_filter`]) replaces the filter `level` makes.
pub fn init(
    format: LogFormat,
    level: LogLevel,
    env: Option<EnvFilter>,
    pipeline: Option<&Pipeline>,
) -> LogHandle {
    let from_env = env.is_some();
    let (filter_layer, handle) = reload::Layer::new(env.unwrap_or_else(|| filter(level)));
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
    if from_env {
        tracing::info!("log filter from RUST_LOG; [log] level does not apply");
    }
    LogHandle {
        filter: handle,
        from_env,
    }
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
