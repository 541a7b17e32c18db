//! What the process environment changes: `POLLCAST_*` overrides and the
//! credentials a feed names with `credentials_env`.

use super::*;

/// The six variables pollcast read before the `POLLCAST_<SECTION>__<KEY>`
/// rule (see `overrides`), kept as aliases: each with the variable of the
/// rule that names the same key and wins when both are set.
pub(crate) const CANONICAL: &[(&str, &str)] = &[
    ("POLLCAST_SERVER_LISTEN", "POLLCAST_SERVER__LISTEN"),
    ("POLLCAST_UPSTREAM_URL", "POLLCAST_UPSTREAM__URL"),
    ("POLLCAST_UPSTREAM_TIMEOUT", "POLLCAST_UPSTREAM__TIMEOUT"),
    ("POLLCAST_LOG_LEVEL", "POLLCAST_LOG__LEVEL"),
    ("POLLCAST_LOG_FORMAT", "POLLCAST_LOG__FORMAT"),
    ("POLLCAST_ADMIN_LISTEN", "POLLCAST_ADMIN__LISTEN"),
];

impl Config {
    /// The six alias variables ([`CANONICAL`]), applied to a typed config
    /// (as they always were: case-insensitive levels and formats, `""`
    /// for no admin listener). `get` answers `None` for an alias to skip.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let err = |var: &str, message: String| ConfigError::Env {
            var: var.to_owned(),
            message,
        };
        if let Some(v) = get("POLLCAST_SERVER_LISTEN") {
            self.server.listen = v.parse().map_err(|e| {
                err(
                    "POLLCAST_SERVER_LISTEN",
                    format!("`{v}` is not an address like 0.0.0.0:8080: {e}"),
                )
            })?;
        }
        if let Some(v) = get("POLLCAST_UPSTREAM_URL") {
            self.upstream.url =
                UpstreamUrl::parse(&v).map_err(|m| err("POLLCAST_UPSTREAM_URL", m))?;
        }
        if let Some(v) = get("POLLCAST_LOG_LEVEL") {
            self.log.level = v.parse().map_err(|m| err("POLLCAST_LOG_LEVEL", m))?;
        }
        if let Some(v) = get("POLLCAST_LOG_FORMAT") {
            self.log.format = v.parse().map_err(|m| err("POLLCAST_LOG_FORMAT", m))?;
        }
        if let Some(v) = get("POLLCAST_ADMIN_LISTEN") {
            // Empty turns a listener set in the file off again.
            self.admin.listen = match v.trim() {
                "" => None,
                a => Some(a.parse().map_err(|e| {
                    err(
                        "POLLCAST_ADMIN_LISTEN",
                        format!(
                            "`{v}` is not an address like 127.0.0.1:9090 (or empty for none): {e}"
                        ),
                    )
                })?),
            };
        }
        if let Some(v) = get("POLLCAST_UPSTREAM_TIMEOUT") {
            self.upstream.timeout = humantime::parse_duration(&v).map_err(|e| {
                err(
                    "POLLCAST_UPSTREAM_TIMEOUT",
                    format!("`{v}` is not a duration like \"5s\": {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Read each feed's `credentials_env` variable. The value is kept only
    /// as a [`Secret`]; the error names the variable, never a value.
    pub(crate) fn resolve_credentials(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), Problem> {
        for (i, f) in self.feeds.iter_mut().enumerate() {
            let Some(var) = &f.credentials_env else {
                continue;
            };
            let value = get(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                Problem::feed(
                    i,
                    "credentials_env",
                    format!("environment variable {var} is not set or empty"),
                )
            })?;
            f.credentials = Some(Secret::new(&value).ok_or_else(|| {
                Problem::feed(
                    i,
                    "credentials_env",
                    format!("the value of {var} cannot be sent as an Authorization header"),
                )
            })?);
        }
        Ok(())
    }
}
