//! What the harness binaries (`loadgen`, `synth`) share: the clock their
//! stamps use and their command-line argument reading.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch: every stamp and receive time.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The value after `name` in `args`, or `default`.
pub fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}
