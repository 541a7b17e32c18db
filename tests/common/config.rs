//! Configs for tests: the one-feed test config and the shipped examples,
//! pointed at a [`TestUpstream`] on ephemeral ports with short intervals.

use std::time::Duration;

use pollcast::config::{Config, FeedConfig};

use super::TestUpstream;

/// A config for one feed `jobs` polling `/api/jobs` every 50ms, on an ephemeral port.
pub fn config(upstream: &TestUpstream) -> Config {
    let mut feed = FeedConfig::new("jobs", "/api/jobs");
    feed.sse = Some("/sse/jobs".into());
    feed.interval = Duration::from_millis(50);
    feed.linger = Duration::from_millis(100);
    feed.backoff_max = Duration::from_millis(200);
    let mut c = Config::new(upstream.url(), vec![feed]);
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.listen = Some("127.0.0.1:0".parse().expect("addr"));
    c.upstream.timeout = Duration::from_secs(2);
    c.server.drain_timeout = Duration::from_secs(2);
    c
}

/// Load a shipped example config and point it at a test upstream on an
/// ephemeral port, with short intervals.
pub fn example(file: &str, upstream: &TestUpstream) -> Config {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let mut c = Config::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    c.upstream.url = upstream.url();
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    if c.admin.listen.is_some() {
        c.admin.listen = Some("127.0.0.1:0".parse().expect("addr"));
    }
    c.server.drain_timeout = Duration::from_secs(2);
    for f in &mut c.feeds {
        f.interval = Duration::from_millis(50);
        f.backoff_max = Duration::from_millis(200);
        f.linger = Duration::from_secs(5);
    }
    c
}
