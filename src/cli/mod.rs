//! The binary's own side: what only `pollcast` the command does, not the
//! library it runs. [`demo`]: the built-in upstream behind `--demo`;
//! [`healthcheck`]: the one-request client behind `--healthcheck`;
//! [`check`]: `--check`'s rendering of the effective config, secrets redacted.
//!
//! Nothing in the library imports these.

pub mod check;
pub mod demo;
pub mod healthcheck;
