//! The config as a running pollcast loads it: [`Config::load`],
//! [`Config::from_toml`] and [`Config::validate`] with the checks that need a
//! feature (an event contract compiles, `serve_polls` fits, a certificate
//! loads) handed to `config`, which never imports the features it configures.
//!
//! It sits above `feed`, `stragglers` and `tls`, and nothing below imports it.

use std::path::Path;

use crate::config::{Checks, Config, ConfigError, Problem};

/// Every check a feature adds to config validation.
pub const FEATURES: Checks = Checks {
    contract: crate::feed::contract::check,
    serve_polls: crate::stragglers::check,
    tls: |tls| {
        crate::tls::acceptor(tls)
            .map(drop)
            .map_err(|e| (e.key, e.to_string()))
    },
};

impl Config {
    /// Read, parse, apply environment overrides and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &FEATURES)
    }

    /// Parse and validate config text; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, path, &FEATURES)
    }

    /// Every rule that involves more than one value, or a value serde cannot judge.
    pub fn validate(&self) -> Result<(), Problem> {
        self.validate_with(&FEATURES)
    }
}
