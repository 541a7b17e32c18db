//! Big bodies stream through pass-through without sitting in pollcast's
//! memory: a 256 MiB download and a 256 MiB upload through pollcast running
//! as its own process, whose peak resident memory is read from /proc.
//!
//! The data is generated and checked as it streams on both ends (a repeating
//! pattern, compared chunk by chunk), so the test process holds no copy either.

mod common;

use std::convert::Infallible;
use std::time::Instant;

use common::child::{config_file, Pollcast};
use common::passthrough::{pattern_stream, PatternCheck};
use common::*;
use futures_util::StreamExt;
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
/// The bodies pushed through pollcast each way.
const BIG: u64 = 256 * MIB;
/// How much pollcast's peak RSS may exceed its RSS before the transfers. Far
/// below `BIG`: a proxy that held a body (or a large part of it) fails.
const GROWTH_BOUND: u64 = 64 * MIB;

/// A `VmRSS`/`VmHWM` style line of /proc/<pid>/status, in bytes.
fn proc_status_bytes(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line}"));
    kib * 1024
}

async fn download(client: &reqwest::Client, url: &str, bytes: u64) {
    let r = client
        .get(format!("{url}/pt/download?bytes={bytes}&chunked=1"))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), 200);
    let mut check = PatternCheck::default();
    let mut body = r.bytes_stream();
    while let Some(chunk) = within("download chunk", body.next()).await {
        check.feed(&chunk.expect("download chunk"));
    }
    assert_eq!(check.pos, bytes, "download length");
    assert!(check.ok, "download bytes differ from the upstream's");
}

async fn upload(client: &reqwest::Client, url: &str, bytes: u64) {
    let body = reqwest::Body::wrap_stream(pattern_stream(bytes).map(Ok::<_, Infallible>));
    let r = client
        .post(format!("{url}/pt/upload"))
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["bytes"], bytes, "upload length at the upstream");
    assert_eq!(v["pattern"], true, "upload bytes differ at the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_download_and_upload_leave_pollcasts_memory_flat() {
    let up = TestUpstream::start().await;
    let cfg = config_file(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"http://{}\"\n",
        up.addr
    ));
    let path = cfg.path().to_str().expect("utf-8 path");
    let pc = Pollcast::spawn(&["--config", path], &[]);
    let url = format!("http://{}", pc.addr().await);
    let client = reqwest::Client::new();

    // Warm up: connections, buffers and allocator arenas exist before the baseline.
    download(&client, &url, 8 * MIB).await;
    upload(&client, &url, 8 * MIB).await;
    let before = proc_status_bytes(pc.pid(), "VmRSS:");

    let started = Instant::now();
    download(&client, &url, BIG).await;
    upload(&client, &url, BIG).await;
    let took = started.elapsed();

    let peak = proc_status_bytes(pc.pid(), "VmHWM:");
    let after = proc_status_bytes(pc.pid(), "VmRSS:");
    eprintln!(
        "256 MiB down + 256 MiB up through pollcast in {took:?}: RSS before {} KiB, peak {} KiB, after {} KiB",
        before / 1024,
        peak / 1024,
        after / 1024
    );
    assert!(
        peak.saturating_sub(before) < GROWTH_BOUND,
        "pollcast's peak RSS grew by {} MiB (bound {} MiB) while streaming {} MiB each way",
        peak.saturating_sub(before) / MIB,
        GROWTH_BOUND / MIB,
        BIG / MIB
    );
    let status = pc.stop().await;
    assert!(status.success(), "pollcast exits cleanly: {status}");
}
