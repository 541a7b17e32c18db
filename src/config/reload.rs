//! `[reload]`: whether pollcast re-reads its files on its own.

use super::*;

/// `[reload]`: reload without a signal. SIGHUP reloads in every case.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the config file and the `[server.tls]` files (through
    /// symlinks, so a Kubernetes ConfigMap or Secret update is seen) and
    /// reload when their content changes, exactly as SIGHUP does.
    pub watch: bool,
    /// Quiet time after the last change before the reload starts, so a
    /// half-written file or one of two rotated files is never read alone.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: Duration::from_millis(500),
        }
    }
}
