//! What a pollcast child process holds, read from outside: resident memory
//! from /proc, live counts from `/_pollcast/stats`.

use std::net::SocketAddr;

use serde_json::Value;

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// `GET /_pollcast/stats` on pollcast at `addr`.
pub async fn stats(addr: SocketAddr) -> Value {
    reqwest::get(format!("http://{addr}/_pollcast/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json")
}
