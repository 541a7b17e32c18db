//! Shared test harness: a real HTTP upstream whose data the test changes,
//! pollcast started in-process on an ephemeral port, and a real SSE client
//! (reqwest + eventsource-stream) to read what pollcast sends.
//!
//! Split by role, all re-exported here so `use common::*;` has everything:
//! - [`upstream`]: the test upstream ([`TestUpstream`], [`Mode`], [`Seen`]);
//! - [`sse`]: SSE clients ([`Sse`], [`RawSse`]) and wire checks;
//! - [`metrics`]: the one scraper of `/_pollcast/metrics` and `/_pollcast/stats`;
//! - [`config`]: test configs ([`config()`], [`example`]);
//! - [`child`], [`passthrough`], [`procstat`]: pollcast as a child process,
//!   the upstream's `/pt/...` endpoints, what a process holds;
//! - [`scripted`]: a raw-TCP upstream answering byte for byte, and a raw
//!   HTTP/1.1 client (the express lane's tests).
//!
//! Everything waits on events or conditions with a generous deadline; nothing
//! sleeps and hopes.

#![allow(dead_code)]

pub mod child;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod passthrough;
pub mod procstat;
pub mod redis;
pub mod scripted;
pub mod sse;
pub mod upstream;

// Each test binary uses only part of the harness.
#[allow(unused_imports)]
pub use config::*;
#[allow(unused_imports)]
pub use metrics::*;
#[allow(unused_imports)]
pub use sse::*;
#[allow(unused_imports)]
pub use upstream::*;

use std::future::Future;
use std::time::Duration;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A URL on pollcast's main listener (feeds, pass-through, probes).
pub fn url(pc: &pollcast::Running, path: &str) -> String {
    format!("http://{}{path}", pc.addr)
}

/// Wait until `cond` holds, checking every few milliseconds; fail after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The largest send buffer Linux may give a socket (`tcp_wmem`'s maximum;
/// 4 MiB where it cannot be read): events larger than it are never taken by
/// one write.
pub fn tcp_wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Run `f` with a deadline.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// What a browser test needs: Debian's chromium, node, and the Node driver
/// installed by `npm ci --prefix tests/browser` (as `.ci/run` does).
///
/// `None` (the test skips, saying why) when something is missing on a
/// developer machine; a panic naming the missing piece when `CI=true`.
pub fn browser_tools() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !std::path::Path::new(&chromium).exists() {
        Some(format!("{chromium} (apt-get install -y chromium)"))
    } else if !node_ok {
        Some("node (apt-get install -y nodejs npm)".to_owned())
    } else if !dir.join("node_modules/playwright-core").exists() {
        Some(format!(
            "playwright-core (npm ci --prefix {})",
            dir.display()
        ))
    } else {
        None
    };
    match missing {
        None => Some(dir),
        Some(what) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("browser test cannot run: missing {what}; .ci/run installs it")
        }
        Some(what) => {
            eprintln!("skipped: missing {what}");
            None
        }
    }
}
