//! `[cluster]`: the optional Redis backbone shared by several replicas.
//!
//! This module owns the shape and defaults of that table and the rules of
//! its values. The hashing key of feed identities never appears in the file:
//! it is read from `POLLCAST_CLUSTER_SECRET` ([`SECRET_ENV`]).

use super::*;

/// The environment variable holding the key that hashes feed identities into
/// Redis key names.
pub const SECRET_ENV: &str = "POLLCAST_CLUSTER_SECRET";

/// Shortest accepted hashing key, in bytes.
pub(crate) const MIN_SECRET: usize = 16;

/// `[cluster]`: present turns the cluster engine on; absent, every replica
/// polls on its own as before.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` (TLS).
    pub redis: String,
    /// Prefix of every key and channel name pollcast uses.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How long a replica's claim to poll a feed lasts unless renewed
    /// (renewed every third of it).
    #[serde(default = "default_lease", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub lease: Duration,
    /// Longest wait for one Redis operation; a replica whose Redis does not
    /// answer within it falls back to polling on its own.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub timeout: Duration,
    /// How long the keys of a shared feed outlive its last write.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub ttl: Duration,
    /// How long the keys of a per-user feed (`auth = "forward"`) outlive
    /// its last write.
    #[serde(default = "default_user_ttl", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub user_ttl: Duration,
    /// The key that hashes feed identities ([`SECRET_ENV`]); never in the file.
    #[serde(skip)]
    #[schemars(skip)]
    pub secret: Option<ClusterSecret>,
}

/// The hashing key, kept out of `Debug` output and `--check`.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    pub fn new(key: &[u8]) -> Self {
        Self(key.to_vec())
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn default_prefix() -> String {
    "pollcast:".into()
}
fn default_lease() -> Duration {
    Duration::from_secs(3)
}
fn default_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_user_ttl() -> Duration {
    Duration::from_secs(600)
}

impl ClusterConfig {
    /// A cluster on `redis` with every default (tests, code that builds configs).
    pub fn new(redis: &str, secret: &[u8]) -> Self {
        Self {
            redis: redis.into(),
            prefix: default_prefix(),
            lease: default_lease(),
            timeout: default_timeout(),
            ttl: default_ttl(),
            user_ttl: default_user_ttl(),
            secret: Some(ClusterSecret::new(secret)),
        }
    }

    /// The hashing key's bytes (empty only in a config that skipped loading).
    pub(crate) fn secret_bytes(&self) -> &[u8] {
        self.secret.as_ref().map_or(&[], |s| s.bytes())
    }

    pub(crate) fn validate(&self) -> Result<(), Problem> {
        let bad = |key: &str, m: String| Problem::in_table("cluster", key, m);
        let scheme = self.redis.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss")) {
            return Err(bad(
                "redis",
                "must be a URL like redis://host:6379 or rediss://host:6380".into(),
            ));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}', ' ']) {
            return Err(bad(
                "prefix",
                format!(
                    "`{}` must be non-empty, without spaces or braces",
                    self.prefix
                ),
            ));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(bad("lease", "must be at least 100ms".into()));
        }
        if self.timeout < Duration::from_millis(10) || self.timeout >= self.lease {
            return Err(bad(
                "timeout",
                "must be at least 10ms and shorter than lease".into(),
            ));
        }
        if self.ttl < self.lease || self.user_ttl < self.lease {
            return Err(bad("ttl", "ttl and user_ttl must be at least lease".into()));
        }
        Ok(())
    }

    /// Read the hashing key from the environment.
    pub(crate) fn resolve_secret(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), Problem> {
        if self.secret.is_some() {
            return Ok(());
        }
        let v = get(SECRET_ENV).unwrap_or_default();
        if v.len() < MIN_SECRET {
            return Err(Problem::in_table(
                "cluster",
                "redis",
                format!("environment variable {SECRET_ENV} must hold a key of at least {MIN_SECRET} bytes (it hashes feed identities into Redis key names)"),
            ));
        }
        self.secret = Some(ClusterSecret::new(v.as_bytes()));
        Ok(())
    }
}
