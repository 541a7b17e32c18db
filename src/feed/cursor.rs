//! Where one subscriber stands in a feed ([`Cursor`]) and what it is sent
//! next ([`Out`]): a cursor placed by a `Last-Event-ID`, then pulled forward
//! through the history (replay, snapshot, status, end).
//!
//! This module owns the reading side of a [`Feed`]; it never changes the
//! feed's state beyond the cursor it is handed, and never encodes an event
//! (the history holds them encoded once).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::snapshot::skip;
use super::{id, Feed, Snapshot, State};

/// Where one subscriber stands in a feed.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    /// Seq of the last state delivered; `None` until the first snapshot.
    at: Option<u64>,
    /// The entries of the `append` array the client holds (`append_each`
    /// feeds): from its `Last-Event-ID` before anything was delivered, then
    /// the held count of the last event delivered. A snapshot leaves out the
    /// entries it counts (see [`Feed::pull`]).
    held: Option<u64>,
    /// The epoch generation `at` belongs to.
    generation: u64,
    /// A `Last-Event-ID` given before the feed had any state (a feed that
    /// takes its state from elsewhere): resolved at the first pull that
    /// finds a snapshot.
    resume: Option<(String, u64)>,
    status_gen: u64,
    told_stale: bool,
    /// The terminal event was handed out; nothing follows it.
    pub ended: bool,
    /// Times this subscriber fell out of the history and was resynced.
    pub resyncs: u64,
    /// `State::syncs` when `resume` was given: an id ahead of this replica
    /// waits for it to catch up until two comparisons later, no longer.
    since: u64,
    /// Counted among the feed's waiting cursors while `Some`.
    waiting: Option<Waiting>,
}

/// A cursor's place among its feed's cursors waiting for the replica to
/// catch up: counted while held, uncounted when dropped, so a subscriber
/// that disconnects while waiting never leaves the feed waking every
/// subscriber at each sync for nobody.
#[derive(Debug)]
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn on(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Clone for Waiting {
    fn clone(&self) -> Self {
        Self::on(&self.0)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a subscriber must send next, in order. Ids are left to the
/// subscriber (a stream following several feeds writes composite ids); the
/// shared bytes are never copied.
pub enum Out {
    /// Bytes without an id (retry hint, keepalive, connect event).
    Bytes(Bytes),
    /// A history event, encoded once with this feed's own `id:` line first
    /// (whose held count is `held`).
    Event {
        seq: u64,
        held: Option<u64>,
        bytes: Bytes,
    },
    /// A body that needs an `id:` line for state `seq` (and held count
    /// `held`) in front of it (stale/recovered, and the terminal event when
    /// `end`).
    Tagged {
        seq: u64,
        held: Option<u64>,
        body: Bytes,
        end: bool,
    },
    /// The (lazily encoded) snapshot of state `seq`, without the first
    /// `skip` entries of the `append` array (the client holds them).
    Snapshot {
        seq: u64,
        snap: Arc<Snapshot>,
        skip: usize,
    },
}

impl Cursor {
    /// Seq of the last state delivered (or resumed from), if any.
    pub fn position(&self) -> Option<u64> {
        self.at
    }

    /// The held count that goes with [`Self::position`] in ids.
    pub fn held(&self) -> Option<u64> {
        self.held
    }

    /// Whether this cursor has seen everything of a state at `seq` (with
    /// that generation and status), so that only new events can come next.
    pub(super) fn is_current(&self, seq: u64, generation: u64, status_gen: u64) -> bool {
        self.resume.is_none()
            && !self.ended
            && self.at == Some(seq)
            && self.generation == generation
            && self.status_gen == status_gen
    }

    /// The feed wrote events to this subscriber's socket while it was
    /// parked (see `lane`): it stands where those left it.
    pub fn advance(&mut self, to: super::lane::Resumed) {
        self.at = Some(to.at);
        self.held = to.held;
    }
}

impl Feed {
    /// A cursor for a new subscriber, positioned by its `Last-Event-ID` when
    /// that id belongs to this feed instance and is within the history.
    ///
    /// The held count of an `append_each` feed's id is kept whether or not
    /// the position is: a snapshot sent instead (after a restart, or an id
    /// older than the history) then leaves out the entries the client holds.
    pub fn cursor(&self, last_event_id: Option<&str>) -> Cursor {
        let append_each = self.render.contract.append_each;
        // A count in the id of a feed that keeps none is not one of its ids
        // (as it never was): the client gets a snapshot.
        let parsed = last_event_id
            .and_then(id::parse)
            .filter(|p| append_each || p.held.is_none());
        let held = parsed.as_ref().and_then(|p| p.held);
        let parsed = parsed.map(|p| (p.epoch, p.seq));
        let st = self.state();
        let mut cursor = Cursor {
            generation: st.generation,
            since: st.syncs,
            held,
            ..Cursor::default()
        };
        if st.snapshot.is_none() {
            // Nothing to judge the id against yet: decided at the first pull.
            cursor.resume = parsed;
        } else if parsed.as_ref().is_some_and(|(e, s)| st.is_behind(e, *s)) {
            // Told by a replica a moment ahead of this one: decided once
            // this one caught up (see `pull`).
            cursor.resume = parsed;
        } else {
            cursor.at = parsed
                .filter(|(epoch, _)| **epoch == *st.epoch)
                .map(|(_, seq)| seq)
                .filter(|&c| st.can_replay_from(c));
        }
        cursor
    }

    /// Copy what `cursor` has not seen yet into `out`, and advance it.
    ///
    /// Order: a status change (`stale`/`recovered`) comes before the events
    /// that follow it, except for a subscriber's first snapshot, which comes
    /// before everything. A status event's id is the last position the
    /// subscriber was sent (see `pull_status`), so resuming from it replays
    /// everything after it.
    pub fn pull(&self, cursor: &mut Cursor, out: &mut impl Extend<Out>) {
        let st = self.state();
        if let (Some((epoch, seq)), Some(_)) = (&cursor.resume, &st.snapshot) {
            if st.is_behind(epoch, *seq) && st.syncs < cursor.since + 2 {
                // Nothing yet: this replica has not caught up with the id.
                if cursor.waiting.is_none() {
                    cursor.waiting = Some(Waiting::on(&st.waiting));
                }
                return;
            }
            cursor.waiting = None;
            if **epoch == *st.epoch && st.can_replay_from(*seq) {
                cursor.at = Some(*seq);
            }
            cursor.generation = st.generation;
            cursor.resume = None;
        }
        let fresh = cursor.at.is_none();
        if !fresh {
            self.pull_status(&st, cursor, out);
        }
        let cur = st.seq;
        let same = cursor.generation == st.generation;
        match cursor.at {
            Some(c) if same && c == cur => {}
            Some(c) if same && st.can_replay_from(c) => {
                let start = st.history.partition_point(|k| k.seq <= c);
                for k in st.history.range(start..) {
                    out.extend([Out::Event {
                        seq: k.seq,
                        held: k.held,
                        bytes: k.bytes.clone(),
                    }]);
                    cursor.held = k.held;
                }
                cursor.at = Some(cur);
            }
            _ => {
                if let Some(snap) = &st.snapshot {
                    if cursor.at.is_some() {
                        cursor.resyncs += 1;
                    }
                    out.extend([Out::Snapshot {
                        seq: cur,
                        snap: snap.clone(),
                        skip: skip(cursor.held, snap.held),
                    }]);
                    cursor.at = Some(cur);
                    cursor.held = snap.held;
                    cursor.generation = st.generation;
                }
            }
        }
        if fresh {
            self.pull_status(&st, cursor, out);
        }
        if let (Some(end), false, Some(_)) = (&st.end, cursor.ended, cursor.at) {
            out.extend([Out::Tagged {
                seq: st.seq,
                held: cursor.held,
                body: end.clone(),
                end: true,
            }]);
            cursor.ended = true;
        }
    }

    fn pull_status(&self, st: &State, cursor: &mut Cursor, out: &mut impl Extend<Out>) {
        if cursor.status_gen == st.status_gen {
            return;
        }
        cursor.status_gen = st.status_gen;
        let body = match (&st.stale, cursor.told_stale) {
            (Some(stale), false) => {
                cursor.told_stale = true;
                stale.clone()
            }
            (None, true) => {
                cursor.told_stale = false;
                st.recovered.clone()
            }
            _ => return,
        };
        // An empty body: this contract does not send the status kind.
        if body.is_empty() {
            return;
        }
        // A status event carries the position this subscriber has actually
        // been sent (never the feed's latest seq): a client that reconnects
        // with its id must still be replayed every event it has not seen, and
        // ids on a stream never go down. Before any position (no snapshot
        // yet) it has no id, so the client's own resume id stands.
        match cursor.at {
            Some(seq) => out.extend([Out::Tagged {
                seq,
                held: cursor.held,
                body,
                end: false,
            }]),
            None => out.extend([Out::Bytes(body)]),
        }
    }
}

impl State {
    /// Whether `seq` of `epoch` is a little ahead of this state taken from
    /// the cluster: an id another replica told before this one caught up.
    fn is_behind(&self, epoch: &str, seq: u64) -> bool {
        self.remote
            && *self.epoch == *epoch
            && seq > self.seq
            && seq - self.seq <= self.capacity as u64
    }

    /// Whether a subscriber that has seen everything up to `c` can be brought
    /// up to date from the history alone.
    fn can_replay_from(&self, c: u64) -> bool {
        let Some(base) = self.base else { return false };
        if c < base || c > self.seq {
            return false;
        }
        match self.history.front() {
            Some(oldest) => c + 1 >= oldest.seq,
            None => c == self.seq,
        }
    }
}
