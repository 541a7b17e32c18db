//! The process's own resource use, for the standard Prometheus `process_*`
//! metrics: CPU time, resident and virtual memory, open and maximum file
//! descriptors, start time. Read from `/proc/self` through `procfs` at
//! scrape time, the way Prometheus' own client libraries do.
//!
//! This module owns reading those numbers and the standard names they are
//! exported under (Prometheus' client libraries' names, without pollcast's
//! prefix). It must never fail a scrape: where `/proc` cannot be read
//! (another OS, a locked-down sandbox) a reading is `None` and the series are
//! left out.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// One reading of the process's resource use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// The process's resource use now; `None` where `/proc/self` is unreadable.
#[cfg(target_os = "linux")]
pub fn usage() -> Option<Usage> {
    use procfs::process::{LimitValue, Process};

    let me = Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let max_fds = match me.limits().ok()?.max_open_files.soft_limit {
        LimitValue::Value(n) => Some(n),
        LimitValue::Unlimited => None,
    };
    Some(Usage {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: stat.rss.saturating_mul(procfs::page_size()),
        virtual_bytes: stat.vsize,
        open_fds: me.fd_count().ok()? as u64,
        max_fds,
        // The kernel counts the start in ticks since boot.
        start_time_seconds: procfs::boot_time_secs().ok()? as f64 + stat.starttime as f64 / ticks,
    })
}

/// The process's resource use now; `None` where `/proc/self` is unreadable.
#[cfg(not(target_os = "linux"))]
pub fn usage() -> Option<Usage> {
    None
}

/// The standard `process_*` series, read from `/proc/self` at each scrape
/// (the names and meanings of Prometheus' client libraries).
#[derive(Debug)]
pub(super) struct Collector;

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(u) = usage() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(u.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<&Unit>, f64); 5] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(&Unit::Bytes),
                u.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(&Unit::Bytes),
                u.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                u.open_fds as f64,
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch in seconds.",
                Some(&Unit::Seconds),
                u.start_time_seconds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit).",
                None,
                // An unlimited soft limit has no number: the series is left out.
                u.max_fds.map_or(f64::NAN, |m| m as f64),
            ),
        ];
        for (name, help, unit, value) in gauges {
            if value.is_nan() {
                continue;
            }
            let g = ConstGauge::new(value);
            g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let u = usage().expect("/proc/self is readable on Linux");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64();
        assert!(u.start_time_seconds > now - 3600.0 && u.start_time_seconds <= now + 1.0);
        assert!(u.resident_bytes > 0 && u.virtual_bytes >= u.resident_bytes);
        assert!(u.open_fds >= 3, "stdin, stdout, stderr at least: {u:?}");
        assert!(u.max_fds.map_or(true, |m| m >= u.open_fds));
        assert!(u.cpu_seconds >= 0.0);
    }
}
