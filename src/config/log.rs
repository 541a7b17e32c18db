//! `[log]`: the level and format of what pollcast writes to stderr.

use clap::ValueEnum;
use schemars::JsonSchema;

use super::*;

/// `[log]`: what pollcast writes to stderr.
#[derive(Debug, Clone, Deserialize, Serialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Most verbose level of pollcast's own messages (dependencies log at `warn`).
    pub level: LogLevel,
    /// `text` for people, `json` (one object per line) for log collectors.
    pub format: LogFormat,
}

/// `[log] level`, `--log-level`, `POLLCAST_LOG_LEVEL`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ValueEnum, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ALL: &'static str = "error, warn, info, debug, trace";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as ValueEnum>::from_str(s, true)
            .map_err(|_| format!("`{s}` is not one of {}", Self::ALL))
    }
}

/// `[log] format`, `--log-format`, `POLLCAST_LOG_FORMAT`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ValueEnum, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as ValueEnum>::from_str(s, true)
            .map_err(|_| format!("`{s}` is not one of text, json"))
    }
}
