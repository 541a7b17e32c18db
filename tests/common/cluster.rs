//! Several pollcast replicas on one private `redis-server`: the shared
//! `[cluster]` settings of the cluster tests, in-process or as processes.

use std::time::Duration;

use pollcast::config::{ClusterConfig, Config};

use super::redis::RedisServer;
use super::{child, config, TestUpstream};

/// `POLLCAST_CLUSTER_SECRET` of every test replica.
pub const SECRET: &[u8] = b"test-secret-0123456789";
/// A short lease, so takeovers happen within a test's patience.
pub const LEASE: Duration = Duration::from_millis(300);

/// The one-feed test config (`jobs`) with `[cluster]` on `redis`.
pub fn cluster_config(up: &TestUpstream, redis: &RedisServer, interval: Duration) -> Config {
    let mut c = config(up);
    c.feeds[0].interval = interval;
    c.feeds[0].linger = Duration::from_secs(1);
    with_cluster(&mut c, &redis.url());
    c
}

/// Add `[cluster]` (lease [`LEASE`], a 100ms operation timeout) to `c`.
pub fn with_cluster(c: &mut Config, url: &str) {
    let mut cl = ClusterConfig::new(url, SECRET);
    cl.lease = LEASE;
    cl.timeout = Duration::from_millis(100);
    c.cluster = Some(cl);
}

/// Start `n` replicas of `c` in this process.
pub async fn replicas(n: usize, c: &Config) -> Vec<pollcast::Running> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pollcast::start(c.clone()).await.expect("start"));
    }
    out
}

/// A config file for replicas run as processes (lease 300ms, `jobs` every 100ms).
pub fn child_config(up: &TestUpstream, redis: &RedisServer) -> tempfile::NamedTempFile {
    child_config_with(up, redis, JOBS_EVERY_100MS, "300ms", "100ms")
}

/// `child_config`'s one feed.
pub const JOBS_EVERY_100MS: &str = r#"
[[feeds]]
name = "jobs"
poll = "/api/jobs"
sse = "/sse/jobs"
interval = "100ms"
linger = "1s"
"#;

/// A config file for replicas run as processes: `feeds` (TOML `[[feeds]]`
/// tables) on `redis` with the given lease and operation timeout.
pub fn child_config_with(
    up: &TestUpstream,
    redis: &RedisServer,
    feeds: &str,
    lease: &str,
    timeout: &str,
) -> tempfile::NamedTempFile {
    child::config_file(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[upstream]
url = "{}"
{feeds}
[cluster]
redis = "{}"
lease = "{lease}"
timeout = "{timeout}"
"#,
        up.url(),
        redis.url()
    ))
}

/// Start `n` replicas as processes on `file`; each is listening on return.
pub async fn spawn_replicas(n: usize, file: &tempfile::NamedTempFile) -> Vec<child::Pollcast> {
    let mut out = Vec::new();
    for _ in 0..n {
        let p = spawn_replica(file);
        p.addr().await;
        out.push(p);
    }
    out
}

/// Start a replica as a process on `file` with the cluster secret set.
pub fn spawn_replica(file: &tempfile::NamedTempFile) -> child::Pollcast {
    let path = file.path().to_str().expect("path");
    let secret = std::str::from_utf8(SECRET).expect("utf8");
    child::Pollcast::spawn(&["--config", path], &[("POLLCAST_CLUSTER_SECRET", secret)])
}
