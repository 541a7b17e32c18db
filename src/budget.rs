//! The feed memory budget (`[limits] max_feed_memory`): how many bytes the
//! retained state of every live feed together may take, so memory is bounded
//! by one number instead of `max_feeds` × `[upstream] max_body`.
//!
//! This module owns the one counter and the [`Charge`] each feed holds: a
//! feed reserves an estimate when it is created (the last size of its
//! definition, so a flood of new feeds on a large list is refused before
//! their first polls fetch anything), and resizes its charge to what each
//! successful poll retains. A charge is released when dropped, so no path
//! can leak one. It must never decide what a feed does when refused (that is
//! `feed::poller`: the poll counts as failed and the old list stays) and
//! holds its lock only to read or write one hint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The shared budget; one per server.
pub struct Budget {
    /// Bytes; 0 = unbounded.
    cap: u64,
    used: AtomicU64,
    /// The latest retained size per feed definition (index), the estimate a
    /// new feed of that definition reserves.
    hints: Mutex<HashMap<usize, u64>>,
}

/// The bytes one feed holds of the budget; returned on drop.
pub struct Charge {
    budget: Arc<Budget>,
    def: usize,
    held: u64,
}

/// What one successful poll keeps: the body (items are slices of it, no
/// copy), its encoded snapshot (about as large again, built for the first
/// subscriber) and per item its slot and index entry.
pub fn retained(body_len: usize, items: usize) -> u64 {
    const PER_ITEM: usize = 64;
    (body_len as u64)
        .saturating_mul(2)
        .saturating_add((items as u64).saturating_mul(PER_ITEM as u64))
}

impl Budget {
    pub fn new(cap: u64) -> Arc<Self> {
        Arc::new(Self {
            cap,
            used: AtomicU64::new(0),
            hints: Mutex::new(HashMap::new()),
        })
    }

    /// The configured cap in bytes (0: unbounded).
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    fn hints(&self) -> std::sync::MutexGuard<'_, HashMap<usize, u64>> {
        self.hints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take `bytes` more, unless that would pass the cap. A budget that is
    /// exactly full refuses even a zero-byte request: a new feed always
    /// costs something once it polls.
    fn take(&self, bytes: u64) -> bool {
        if self.cap == 0 {
            self.used.fetch_add(bytes, Ordering::AcqRel);
            return true;
        }
        let need = bytes.max(1);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used.saturating_add(need) <= self.cap).then_some(used + bytes)
            })
            .is_ok()
    }

    fn give(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The charge of a new feed of definition `def`, reserving the last
    /// retained size seen for that definition; `None` when it does not fit.
    pub fn reserve(self: &Arc<Self>, def: usize) -> Option<Charge> {
        let hint = self.hints().get(&def).copied().unwrap_or(0);
        self.take(hint).then(|| Charge {
            budget: self.clone(),
            def,
            held: hint,
        })
    }
}

impl Charge {
    /// Hold `bytes` instead of what is held now. Growing past the cap is
    /// refused (`false`) and leaves the charge as it was.
    pub fn resize(&mut self, bytes: u64) -> bool {
        if bytes > self.held {
            if !self.budget.take(bytes - self.held) {
                return false;
            }
        } else {
            self.budget.give(self.held - bytes);
        }
        self.held = bytes;
        self.budget.hints().insert(self.def, bytes);
        true
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_cap_and_are_returned_on_drop() {
        let b = Budget::new(100);
        let mut a = b.reserve(0).expect("empty budget");
        assert!(a.resize(60));
        // The next feed of the definition reserves its last size: no room.
        assert!(b.reserve(0).is_none());
        // Another definition has no hint yet; it fits while bytes are left.
        let mut c = b.reserve(1).expect("room left");
        assert!(!c.resize(41), "growing past the cap is refused");
        assert_eq!(c.held(), 0);
        assert!(c.resize(40));
        assert_eq!(b.used(), 100);
        assert!(
            b.reserve(1).is_none(),
            "a full budget refuses even a zero hint"
        );
        assert!(a.resize(10), "shrinking always succeeds");
        assert_eq!(b.used(), 50);
        drop((a, c));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn zero_is_unbounded_and_retained_counts_body_snapshot_and_items() {
        let b = Budget::new(0);
        let mut a = b.reserve(0).expect("unbounded");
        assert!(a.resize(u64::MAX / 2));
        assert!(b.reserve(0).is_some());
        assert_eq!(retained(1000, 10), 2000 + 640);
    }
}
