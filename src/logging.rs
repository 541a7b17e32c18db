//! Logging: the `tracing` subscriber pollcast installs, its two formats
//! (`text` for people, `json` for log collectors) and the level a config
//! reload may change.
//!
//! This module owns where log lines go (stderr) and how they are shaped. It
//! must never decide what is logged; callers do, and they never pass
//! credentials (see `feed::key` for the printable form of a feed).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogLevel};

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

/// Install the global subscriber, writing to stderr. Call once.
pub fn init(format: LogFormat, level: LogLevel) -> LogHandle {
    let (filter_layer, handle) = reload::Layer::new(filter(level));
    let ansi = std::io::stderr().is_terminal();
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(fmt_layer)
        .init();
    LogHandle { filter: handle }
}
