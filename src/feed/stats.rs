//! Plain counters per feed definition, for the status page: polls by outcome,
//! events published, and the last poll's outcome and latency.
//!
//! This module owns only these numbers. Writers are the poll loops (a few
//! atomic adds and one short lock per poll); the reader is the status sampler.
//! It must never hold anything per user, token or query: everything here is
//! per definition. Prometheus metrics are a separate concern.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Counters of one feed definition, summed over all its feed instances.
#[derive(Debug, Default)]
pub struct DefStats {
    polls_ok: AtomicU64,
    polls_failed: AtomicU64,
    events: AtomicU64,
    /// The wait before the next poll, as last decided by any instance.
    delay_ms: AtomicU64,
    last: Mutex<Option<LastPoll>>,
}

/// The most recent poll of any instance of a definition.
#[derive(Debug, Clone)]
pub struct LastPoll {
    pub ok: bool,
    pub latency: Duration,
    pub at: SystemTime,
    /// Why it failed: the same text subscribers get in `stale.reason`.
    pub error: Option<String>,
}

/// A consistent-enough copy of the counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct StatsSample {
    pub polls_ok: u64,
    pub polls_failed: u64,
    pub events: u64,
    /// Milliseconds the most recent poll loop to finish a poll waits before
    /// its next one (0 before the first poll).
    pub delay_ms: u64,
    pub last: Option<LastPoll>,
}

impl DefStats {
    pub(crate) fn record_poll(&self, latency: Duration, error: Option<&str>) {
        let counter = if error.is_none() {
            &self.polls_ok
        } else {
            &self.polls_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let last = LastPoll {
            ok: error.is_none(),
            latency,
            at: SystemTime::now(),
            error: error.map(str::to_owned),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }

    /// `n` events were published to subscribers (changes, stale, recovered).
    pub(crate) fn record_events(&self, n: usize) {
        self.events.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The poll loop that just polled waits `delay` before the next poll.
    pub(crate) fn record_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    pub fn sample(&self) -> StatsSample {
        StatsSample {
            polls_ok: self.polls_ok.load(Ordering::Relaxed),
            polls_failed: self.polls_failed.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            delay_ms: self.delay_ms.load(Ordering::Relaxed),
            last: self.last.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}
