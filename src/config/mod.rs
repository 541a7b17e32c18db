//! Typed configuration: the TOML file, its defaults, environment overrides and
//! the one-time validation that runs before anything listens.
//!
//! This module owns the *shape* of the configuration and every rule about which
//! values are acceptable: the model and its defaults here, `load` (file,
//! line and column of every error), `env` (environment overrides),
//! `validate` (rules across values). It imports no feature of the crate: the
//! checks that need one (an event contract compiles, a certificate loads) are
//! handed in as [`Checks`] by whoever loads the config. It must never do I/O
//! beyond reading the file and the process environment, and nothing outside
//! it re-validates: a [`Config`] that exists is a config that is valid.
//!
//! Errors name the file, the line and the key (`config.toml:12: feeds[0].interval: ...`)
//! so a platform engineer can fix a ConfigMap without reading source code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod cluster;
mod env;
mod error;
mod events;
mod feed;
mod load;
mod log;
pub mod overrides;
mod reload;
pub mod schema;
mod sources;
#[cfg(test)]
mod tests;
mod trace;
mod url;
mod validate;

pub use cluster::{ClusterConfig, ClusterSecret, SECRET_ENV as CLUSTER_SECRET_ENV};
pub use error::{ConfigError, Problem};
pub use events::{EventSpec, EventsConfig, TerminalConfig, TransitionConfig};
pub use feed::FeedConfig;
pub use log::{LogConfig, LogFormat, LogLevel};
pub use reload::ReloadConfig;
pub use sources::Sources;
pub use trace::TraceConfig;
pub use url::UpstreamUrl;
pub use validate::Checks;

use crate::cidr::Cidr;

/// Query parameters that belong to pollcast and are never forwarded
/// upstream (a config may not list them in a feed's `query`).
pub const OWN_PARAMS: &[&str] = &["lastEventId"];

/// The default of `[admin] prefix`, under which pollcast serves its own endpoints.
pub const DEFAULT_ADMIN_PREFIX: &str = "/_pollcast";

/// The default of `[admin] listen`: operator endpoints on loopback only, so a
/// bare binary never serves them to the clients of `[server] listen`.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// `[admin] listen`: an address, or `""` for none.
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "" => Ok(None),
            a => a.parse().map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an address like 127.0.0.1:9090 (or \"\" for none): {e}"
                ))
            }),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub sse: SseConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub feeds: Vec<FeedConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub cors: CorsConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// `[cluster]`: several replicas share polls and event ids through Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// `[trace]`: OpenTelemetry spans, exported over OTLP when configured.
    #[serde(default)]
    pub trace: TraceConfig,
}

/// `[server]`: the listener pollcast accepts clients on.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long shutdown waits for in-flight requests before closing them.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// `[server.tls]`: when present the listener speaks TLS only (HTTP/2 and
    /// HTTP/1.1 chosen by ALPN); when absent, plain HTTP/1.1 and h2c.
    pub tls: Option<TlsConfig>,
    /// A client must send its whole request head within this long after
    /// connecting (or after its previous request), or it is disconnected.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line plus headers) accepted, in bytes;
    /// HTTP/1.1 answers 431 above it, HTTP/2 refuses the stream.
    pub max_header_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            drain_timeout: Duration::from_secs(10),
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
        }
    }
}

/// `[server.tls]`: PEM files for the client listener. Relative paths are
/// resolved against the config file's directory.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// hyper refuses smaller HTTP/1.1 read buffers.
pub const MIN_HEADER_SIZE: usize = 8192;

/// `[limits]`: how much any client, and all clients together, may make
/// pollcast hold. 0 disables a limit.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Live feed instances (poll loops) over all definitions; over it: 503.
    pub max_feeds: usize,
    /// Live feed instances of one `[[feeds]]` definition; over it: 503.
    pub max_feeds_per_definition: usize,
    /// Open SSE streams in total; over it: 503.
    pub max_subscribers: usize,
    /// Open SSE streams per client IP address; over it: 429.
    pub max_subscribers_per_client: usize,
    /// Live feed instances one client IP address started (they count until
    /// they end, even when others joined them); over it: 429.
    pub max_feeds_per_client: usize,
    /// Bytes the retained state of all live feeds may take (see
    /// `crate::budget`); a new feed over it: 503.
    pub max_feed_memory: u64,
    /// Sent as `Retry-After` with every 429 and 503 pollcast gives for a limit.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_feeds: 2000,
            max_feeds_per_definition: 1000,
            max_subscribers: 10_000,
            max_subscribers_per_client: 256,
            max_feeds_per_client: 64,
            max_feed_memory: 128 * 1024 * 1024,
            retry_after: Duration::from_secs(10),
        }
    }
}

/// `[cors]`: which browser origins may open the SSE paths.
/// Pass-through responses are never touched: the upstream owns their CORS.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) or `"*"` for any.
    pub allowed_origins: Vec<String>,
    /// Allow `withCredentials` (cookies, Authorization). Never with `"*"`.
    pub allow_credentials: bool,
    /// Request headers a preflight may ask for.
    pub allowed_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            allowed_headers: ["authorization", "last-event-id", "cache-control", "accept"]
                .map(String::from)
                .to_vec(),
            max_age: Duration::from_secs(600),
        }
    }
}

/// Who may see a feed, and whose credentials its polls carry.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Each subscriber's `Authorization` and `Cookie` are forwarded on the
    /// polls and are part of the feed's identity.
    #[default]
    Forward,
    /// One shared poll with pollcast's own credentials; each subscriber is
    /// admitted by a check request carrying its own credentials.
    Check,
    /// A public feed: credentials are neither forwarded nor part of identity.
    None,
}

/// Method of the admission request in `check` mode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
pub enum CheckMethod {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
}

/// A credential read from the environment: usable as a header, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(http::HeaderValue);

impl Secret {
    /// `None` when `value` cannot be a header value.
    pub fn new(value: &str) -> Option<Self> {
        let mut v = http::HeaderValue::from_str(value).ok()?;
        v.set_sensitive(true);
        Some(Self(v))
    }

    pub fn header(&self) -> &http::HeaderValue {
        &self.0
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether `name` can be an SSE event name (or a JSON field name that
/// config puts on the wire) without breaking framing: non-empty, at most 128
/// bytes, printable ASCII without spaces or `:` (so no line break, no field
/// separator, nothing a parser could split).
pub fn valid_event_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// `[upstream]`: the API pollcast sits in front of.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, `http://host:port` (an optional path prefix is kept).
    pub url: UpstreamUrl,
    /// Per upstream request: for pass-through, from the end of the request
    /// body until response headers arrive;
    /// for polls, the whole request including the body.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Largest poll response body accepted, in bytes; a larger one fails the poll.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Idle pooled upstream connections are closed after this long.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde", default = "default_pool_idle")]
    pub pool_idle_timeout: Duration,
    /// At most this many idle pooled connections are kept.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// Pass-through sends the client's `Host` instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Peers whose `X-Forwarded-*`/`Forwarded` headers are kept and appended to;
    /// from anyone else they are replaced. Addresses or CIDR blocks.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Pass-through also sends an RFC 7239 `Forwarded` header.
    #[serde(default)]
    pub forwarded: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_body() -> usize {
    16 * 1024 * 1024
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(90)
}
fn default_pool_max_idle() -> usize {
    64
}

/// `[sse]`: how subscriber streams behave.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SseConfig {
    /// A `: keepalive` comment is written after this much silence.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Sent as `retry:` at the start of every stream: EventSource's reconnect delay.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// Events kept per feed for `Last-Event-ID` resume.
    pub history: usize,
    /// A client connection whose writes make no progress for this long (it
    /// stopped reading, or vanished without a FIN) is closed.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            history: 1024,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// `[admin]`: pollcast's own endpoints (probes, metrics, ...).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Path prefix of every pollcast endpoint; SSE paths may not use it.
    pub prefix: String,
    /// The listener of the operator endpoints (metrics, status, stats,
    /// refresh); loopback by default ([`DEFAULT_ADMIN_LISTEN`]). The main
    /// listener then answers only the public ones (probes, the browser
    /// client). `None` (written `""`) serves every endpoint on the main
    /// listener: only where that listener is not reachable by clients.
    #[serde(with = "optional_addr")]
    #[schemars(with = "String")]
    pub listen: Option<SocketAddr>,
    /// An upstream path that must answer 2xx for `/readyz` to say ready.
    /// Without it, ready means the upstream has answered at least once.
    pub ready_probe: Option<String>,
    /// How long a `/readyz` verdict about the upstream is reused.
    #[schemars(schema_with = "crate::config::schema::duration")]
    #[serde(with = "humantime_serde")]
    pub ready_cache: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_ADMIN_PREFIX.to_owned(),
            listen: Some(DEFAULT_ADMIN_LISTEN),
            ready_probe: None,
            ready_cache: Duration::from_secs(1),
        }
    }
}

impl AdminConfig {
    /// Whether `path` is `prefix` or below it.
    pub fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl UpstreamConfig {
    pub fn new(url: UpstreamUrl) -> Self {
        Self {
            url,
            timeout: default_timeout(),
            max_body: default_max_body(),
            pool_idle_timeout: default_pool_idle(),
            pool_max_idle: default_pool_max_idle(),
            preserve_host: false,
            trusted_proxies: Vec::new(),
            forwarded: false,
        }
    }
}

impl Config {
    /// A config with defaults everywhere, for code that builds configs (demo, tests).
    pub fn new(upstream: UpstreamUrl, feeds: Vec<FeedConfig>) -> Self {
        Self {
            server: ServerConfig::default(),
            upstream: UpstreamConfig::new(upstream),
            sse: SseConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            feeds,
            limits: LimitsConfig::default(),
            cors: CorsConfig::default(),
            reload: ReloadConfig::default(),
            cluster: None,
            trace: TraceConfig::default(),
        }
    }
}
