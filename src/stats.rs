//! Live counts of what pollcast holds: feeds, poll loops, subscribers, tasks,
//! open file descriptors, and how often slow clients were resynced or cut off.
//! Served as JSON at `/_pollcast/stats`; the leak and soak tests read them.
//!
//! This module owns counting only. It must never change behaviour, and it
//! must stay cheap: everything is an atomic or a count taken on request.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::BoxBody;

/// Event counters shared by the registry, the subscribers and the listener.
#[derive(Debug, Default)]
pub struct Counters {
    /// Subscribers that fell out of the history and got a fresh snapshot.
    pub resyncs: AtomicU64,
    /// Client connections closed because a write made no progress for `sse.write_timeout`.
    pub write_timeouts: AtomicU64,
}

impl Counters {
    pub(crate) fn add_resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_write_timeout(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

/// What `/_pollcast/stats` answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Live feed instances.
    pub feeds: usize,
    /// Running poll loops (one per feed; briefly more while one exits).
    pub pollers: usize,
    /// Connected SSE subscribers over all feeds.
    pub subscribers: usize,
    /// Tasks alive in the runtime (connections, poll loops, pool background tasks).
    pub tasks: usize,
    /// Open file descriptors of the process (`/proc/self/fd`); `null` where unavailable.
    pub open_fds: Option<usize>,
    /// Resyncs since start (see [`Counters::resyncs`]).
    pub resyncs: u64,
    /// Connections cut by the write timeout since start.
    pub write_timeouts: u64,
}

impl Stats {
    pub fn collect(now: &Counts) -> Self {
        Self {
            feeds: now.feeds,
            pollers: now.pollers,
            subscribers: now.subscribers,
            tasks: tokio::runtime::Handle::try_current()
                .map(|h| h.metrics().num_alive_tasks())
                .unwrap_or(0),
            open_fds: open_fds(),
            resyncs: now.resyncs,
            write_timeouts: now.write_timeouts,
        }
    }

    /// The JSON response for `/_pollcast/stats`.
    pub fn response(now: &Counts) -> Response<BoxBody> {
        let body = serde_json::to_vec(&Self::collect(now)).unwrap_or_default();
        crate::response::uncached(StatusCode::OK, "application/json", Bytes::from(body))
    }
}

/// The live counts a snapshot reads, taken by whoever holds the feeds (the
/// start-up context), so this module never imports the registry.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub feeds: usize,
    pub pollers: usize,
    pub subscribers: usize,
    pub resyncs: u64,
    pub write_timeouts: u64,
}

impl Counts {
    /// `feeds`, `pollers`, `subscribers` as given, with `counters` read now.
    pub fn new(feeds: usize, pollers: usize, subscribers: usize, counters: &Counters) -> Self {
        Self {
            feeds,
            pollers,
            subscribers,
            resyncs: counters.resyncs.load(Ordering::Relaxed),
            write_timeouts: counters.write_timeouts.load(Ordering::Relaxed),
        }
    }
}

/// Open file descriptors of this process, not counting the one used to count them.
pub fn open_fds() -> Option<usize> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(n.saturating_sub(1))
}
