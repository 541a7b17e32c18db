//! Several pollcast replicas on one private `redis-server`, as processes:
//! their config files, starting them, finding the feed's leader, waiting on
//! their cluster metrics, and the test's own look at Redis.

use std::time::Duration;

use super::redis::RedisServer;
use super::{child, TestUpstream};

/// `POLLCAST_CLUSTER_SECRET` of every test replica.
pub const SECRET: &[u8] = b"test-secret-0123456789";
/// `child_config`'s lease: short, so takeovers happen within a test's patience.
pub const LEASE: Duration = Duration::from_millis(300);

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
    child_config_on(up, &redis.url(), feeds, lease, timeout)
}

/// [`child_config_with`] on the Redis at `url` (e.g. a [`super::redis::Cutter`]'s).
pub fn child_config_on(
    up: &TestUpstream,
    url: &str,
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
redis = "{url}"
lease = "{lease}"
timeout = "{timeout}"
"#,
        up.url(),
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

/// The base URL of a replica process's main listener.
pub async fn base_of(pc: &child::Pollcast) -> String {
    format!("http://{}", pc.addr().await)
}

/// A replica process's unlabelled counter `name` (0 while absent).
pub async fn counter(pc: &child::Pollcast, name: &str) -> f64 {
    let text = super::scrape_metrics_at(pc.admin_addr().await).await;
    super::series(&text, name).unwrap_or(0.0)
}

/// Writes this replica published to the cluster as a feed's leader.
pub const PUBLISHES: &str = "pollcast_cluster_publishes_total";
/// Writes of this replica the cluster refused (lease or sequence gone).
pub const REJECTED: &str = "pollcast_cluster_rejected_total";

/// The index of the replica leading the (one) feed: the only one whose
/// `pollcast_cluster_publishes_total` counted a write; waits until exactly
/// one has.
pub async fn leader_of(pcs: &[child::Pollcast]) -> usize {
    super::within("exactly one replica publishes", async {
        loop {
            let mut leaders = Vec::new();
            for (i, pc) in pcs.iter().enumerate() {
                if counter(pc, PUBLISHES).await > 0.0 {
                    leaders.push(i);
                }
            }
            if let [one] = leaders[..] {
                return one;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Wait until a replica process's `pollcast_cluster_up` reads `value`
/// (1: in the cluster; 0: polling its feeds on its own).
pub async fn wait_cluster_up(pc: &child::Pollcast, value: f64) {
    super::within("pollcast_cluster_up", async {
        while counter(pc, "pollcast_cluster_up").await != value {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// An SSE client of `path` on a replica process, with `headers`.
pub async fn connect(pc: &child::Pollcast, path: &str, headers: &[(&str, &str)]) -> super::Sse {
    super::Sse::connect_with(&format!("{}{path}", base_of(pc).await), headers).await
}

/// The epoch the cluster's feed is in, once a leader wrote one.
pub async fn stored_epoch(redis: &RedisServer) -> String {
    let mut conn = redis.conn().await;
    super::within("a leader writes an epoch", async {
        loop {
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg("*:state")
                .query_async(&mut conn)
                .await
                .expect("keys");
            for k in keys {
                let epoch: Option<String> = ::redis::cmd("HGET")
                    .arg(&k)
                    .arg("epoch")
                    .query_async(&mut conn)
                    .await
                    .expect("hget");
                if let Some(e) = epoch.filter(|e| !e.is_empty()) {
                    return e;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
