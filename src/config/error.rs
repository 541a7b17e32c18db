//! Why a configuration could not be used, and where in the file.

use super::*;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// A problem found by [`Config::validate`], located later against the source text.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// `(table, index)` for array tables such as `("feeds", 0)`, or a plain table name.
    pub table: Option<(String, Option<usize>)>,
    pub key: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn feed(i: usize, key: &str, message: String) -> Self {
        Self {
            table: Some(("feeds".into(), Some(i))),
            key: key.into(),
            message,
        }
    }
    pub(crate) fn in_table(table: &str, key: &str, message: String) -> Self {
        Self {
            table: Some((table.into(), None)),
            key: key.into(),
            message,
        }
    }

    /// `feeds[0].interval`, `sse.history`, ...
    pub(crate) fn key_path(&self) -> String {
        match &self.table {
            Some((t, Some(i))) => format!("{t}[{i}].{}", self.key),
            Some((t, None)) => format!("{t}.{}", self.key),
            None => self.key.clone(),
        }
    }
}
