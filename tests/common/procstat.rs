//! What a pollcast child process holds, read from outside: resident memory
//! from /proc (its live counts: [`super::scrape_stats_at`]).

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
