//! A snapshot's events as one shared buffer, and what of them one
//! subscriber is sent: all of them, or (a client that holds the first
//! entries of an `append_each` array) all but those entries.
//!
//! This module owns only the slicing; it must never render (that is
//! `contract`) nor know ids (the subscriber writes the `id:` line where
//! [`Opening::parts`] says).

use bytes::Bytes;

/// A snapshot's events, encoded once: the first event (the snapshot, or the
/// first of a chunked one), then with `append_each` one event per entry of
/// the array, then whatever follows them.
pub struct Opening {
    all: Bytes,
    /// Where each event starts in `all`.
    starts: Vec<usize>,
    /// How many events after the first are entries of the array.
    entries: usize,
}

impl Opening {
    pub(super) fn new(events: &[Bytes], entries: usize) -> Self {
        let mut starts = Vec::with_capacity(events.len());
        let mut len = 0;
        for e in events {
            starts.push(len);
            len += e.len();
        }
        Self {
            all: Bytes::from(events.concat()),
            starts,
            entries,
        }
    }

    /// What a subscriber that holds the first `skip` entries of the array is
    /// sent, as `(head, middle, tail)` with the `id:` line to go before
    /// `tail`, the last event sent (a client cut off midway gets it all
    /// again). The first event always goes; the entries the subscriber holds
    /// are left out. All three empty when snapshots are not sent. Slices of
    /// one shared buffer: nothing is copied per subscriber.
    pub fn parts(&self, skip: usize) -> (Bytes, Bytes, Bytes) {
        let Some(&last) = self.starts.last() else {
            return (Bytes::new(), Bytes::new(), Bytes::new());
        };
        let skip = skip.min(self.entries);
        // `skip > 0` means there are entries, so a second event.
        let Some(&first) = self.starts.get(1).filter(|_| skip > 0) else {
            return (self.all.slice(..last), Bytes::new(), self.all.slice(last..));
        };
        let from = self.starts.get(1 + skip).copied().unwrap_or(self.all.len());
        if from == self.all.len() {
            // Nothing follows the entries: the first event is the last one sent.
            return (Bytes::new(), Bytes::new(), self.all.slice(..first));
        }
        (
            self.all.slice(..first),
            self.all.slice(from..last),
            self.all.slice(last..),
        )
    }
}
