//! Feeds: one upstream list, polled once per interval, fanned out to every
//! subscriber.
//!
//! A [`Feed`] owns the shared state of one feed instance: the latest item list,
//! a bounded history of encoded events, and the upstream status. The history is
//! also the broadcast queue: each subscriber is only a [`Cursor`] into it (as in
//! tokio's broadcast channel), which gives resume, fan-out and slow-consumer
//! handling from one structure with no per-subscriber queue. Events are encoded
//! once and shared as `Bytes`.
//!
//! The state lock is a `std::sync::Mutex` held only to copy `Bytes` handles in
//! or out; it is never held across an `.await`.
//!
//! Submodules: [`registry`] (which feeds exist), [`poller`] (the loop that polls
//! one feed), [`cadence`] (how long it waits between polls), [`extract`] (body
//! to items), [`diff`] (what changed), [`contract`] (event names and payloads), [`key`] (what makes two subscribers share a feed),
//! [`id`] (the text of a position: epoch, seq and the entries a client holds),
//! [`object`] (object feeds: one object, appended entries, terminal field),
//! `snapshot` (one version of the list as subscribers are sent it),
//! [`scan`] (the one validating pass over a body), [`stats`] (counters per
//! definition for the status page), [`source`] (where a feed's events come
//! from: its own poll loop or a cluster engine).

pub mod cadence;
pub mod contract;
pub mod defs;
pub mod diff;
pub mod extract;
pub mod id;
pub mod key;
pub mod object;
pub mod poller;
pub mod registry;
pub mod scan;
mod snapshot;
pub mod source;
pub mod stats;
pub mod update;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::FeedConfig;
use contract::{Contract, Render};
use extract::ItemList;
pub use key::FeedKey;
use snapshot::skip;
pub use snapshot::Snapshot;

/// One live feed instance. Dropped state is never reused: a new instance of
/// the same key gets a new epoch, so stale `Last-Event-ID`s cannot replay.
pub struct Feed {
    pub key: FeedKey,
    /// The upstream path this instance polls: `def.poll` with the path
    /// parameters of `key` filled in (no query).
    pub poll_path: String,
    pub def: Arc<FeedConfig>,
    /// The contract bound to this instance's name and path parameters.
    pub render: Arc<Render>,
    /// The encoded `connect` event, sent (without id) first on every stream.
    pub connect: Option<Bytes>,
    /// What a quiet stream sends: a comment, or a configured data event.
    pub keepalive: Bytes,
    state: Mutex<State>,
    /// Bumped after every change of `state` that subscribers must see.
    changed: watch::Sender<u64>,
    subscribers: AtomicUsize,
    /// Keepalive ticks told to this feed's subscribers.
    ticks: AtomicU64,
    /// Cancelled when a config reload removes or changes this feed's
    /// definition: the poll loop stops and subscribers are sent away with a
    /// `retry:` hint, to reconnect to the new definition.
    retired: CancellationToken,
    /// Asks the poller for a poll now (write-through, the refresh endpoint).
    /// A request made during a poll is kept and served right after it.
    refresh: tokio::sync::Notify,
    /// Refresh requests so far: a poll that began before the latest one may
    /// predate a write (see `stragglers`).
    refreshes: AtomicU64,
}

struct State {
    /// The first half of every event id: random per instance, or the
    /// cluster's epoch of this feed (see [`Feed::apply`]).
    epoch: Arc<str>,
    /// Bumped whenever `epoch` changes: a cursor of an older generation
    /// is brought up to date with a snapshot.
    generation: u64,
    /// Id of the latest state (the last event, or the first snapshot).
    seq: u64,
    /// Seq of the first snapshot; nothing before it can be replayed.
    base: Option<u64>,
    history: VecDeque<Kept>,
    capacity: usize,
    snapshot: Option<Arc<Snapshot>>,
    status_gen: u64,
    /// Encoded `stale` body while the upstream is failing.
    stale: Option<Bytes>,
    /// Encoded `recovered` body of the last recovery.
    recovered: Bytes,
    /// Encoded terminal event once an object feed reached a terminal state:
    /// the feed no longer changes and every stream ends after telling it.
    end: Option<Bytes>,
    /// The state comes from elsewhere (the cluster, see [`Feed::apply`]):
    /// an id a little ahead of it may be one another replica already told.
    remote: bool,
    /// Times this replica compared its state with the cluster's ([`Feed::synced`]).
    syncs: u64,
    /// Cursors waiting for this replica to catch up with their id.
    waiting: usize,
}

/// One history event, encoded with its id, and the held count of that id
/// (read back from it: events may come encoded from another replica).
struct Kept {
    seq: u64,
    bytes: Bytes,
    held: Option<u64>,
}

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
    waiting: bool,
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
}

impl Feed {
    pub fn new(key: FeedKey, def: Arc<FeedConfig>, history: usize) -> Self {
        // Validated at startup; the fallback only serves hand-built configs.
        let poll_path = match (
            crate::route::Pattern::parse(def.poll_path()),
            crate::route::Pattern::parse(&def.sse_path()),
        ) {
            (Ok(poll), Ok(sse)) => poll.fill(&sse.params(), &key.params),
            _ => def.poll_path().to_owned(),
        };
        // A config that exists was validated, so compiling cannot fail; code
        // that builds configs by hand gets the default contract rather than a panic.
        let contract = Contract::compile(&def).unwrap_or_else(|(k, m)| {
            tracing::error!(feed = %def.name, key = %k, "invalid contract, using the default: {m}");
            Contract::compile(&FeedConfig::new(&def.name, "/"))
                .unwrap_or_else(|_| Contract::silent())
        });
        let render = Arc::new(Render::new(contract, &def.name, &key.params));
        Self {
            poll_path,
            key,
            def,
            connect: render.connect(),
            keepalive: render.keepalive(),
            render,
            state: Mutex::new(State {
                epoch: local_epoch().into(),
                generation: 0,
                seq: 0,
                base: None,
                history: VecDeque::new(),
                capacity: history.max(1),
                snapshot: None,
                status_gen: 0,
                stale: None,
                recovered: Bytes::new(),
                end: None,
                remote: false,
                syncs: 0,
                waiting: 0,
            }),
            changed: watch::channel(0).0,
            subscribers: AtomicUsize::new(0),
            ticks: AtomicU64::new(0),
            retired: CancellationToken::new(),
            refresh: tokio::sync::Notify::new(),
            refreshes: AtomicU64::new(0),
        }
    }

    /// End this instance: its definition was removed or changed by a reload.
    pub fn retire(&self) {
        self.retired.cancel();
        self.wake();
    }

    /// Wake every subscriber to look again: at a keepalive tick, when the
    /// feed retires, when the poll loop ends (shutdown). The feed's one
    /// change signal carries all of them, so a waiting subscriber waits on
    /// one thing only.
    pub fn wake(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A keepalive tick (see `registry`'s ticker): subscribers silent since
    /// the previous tick send a keepalive.
    pub(crate) fn tick(&self) {
        self.ticks.fetch_add(1, Ordering::AcqRel);
        self.wake();
    }

    /// Keepalive ticks so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Acquire)
    }

    /// Resolves once [`Feed::retire`] was called.
    pub fn retired(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.retired.cancelled()
    }

    pub fn is_retired(&self) -> bool {
        self.retired.is_cancelled()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated
        // in a way that matters more than stopping: recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn id(&self, seq: u64) -> String {
        format!("{}:{seq}", self.state().epoch)
    }

    /// The id of state `seq` for a client that holds `held` entries of the
    /// `append` array (`None`: ids without a count, as every feed but
    /// `append_each` ones has).
    pub fn id_held(&self, seq: u64, held: Option<u64>) -> String {
        id::format(&self.state().epoch, seq, held)
    }

    /// The epoch of this feed's ids now.
    pub fn epoch(&self) -> Arc<str> {
        self.state().epoch.clone()
    }

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

    /// Poll again as soon as possible instead of waiting for the interval.
    pub fn refresh(&self) {
        // Counted before the poller is woken, so a poll it starts sees the new count.
        self.refreshes.fetch_add(1, Ordering::AcqRel);
        self.refresh.notify_one();
    }

    /// How many refreshes were asked for so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Acquire)
    }

    /// Resolves when [`Feed::refresh`] was called (also before this call).
    pub(crate) async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    pub(crate) fn add_subscriber(&self) {
        self.subscribers.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn remove_subscriber(&self) {
        self.subscribers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Copy what `cursor` has not seen yet into `out`, and advance it.
    ///
    /// Order: a status change (`stale`/`recovered`) comes before the events
    /// that follow it, except for a subscriber's first snapshot, which comes
    /// before everything. A status event's id is the last position the
    /// subscriber was sent (see `pull_status`), so resuming from it replays
    /// everything after it.
    pub fn pull(&self, cursor: &mut Cursor, out: &mut VecDeque<Out>) {
        let mut st = self.state();
        if let (Some((epoch, seq)), Some(_)) = (&cursor.resume, &st.snapshot) {
            if st.is_behind(epoch, *seq) && st.syncs < cursor.since + 2 {
                // Nothing yet: this replica has not caught up with the id.
                if !cursor.waiting {
                    cursor.waiting = true;
                    st.waiting += 1;
                }
                return;
            }
            if cursor.waiting {
                cursor.waiting = false;
                st.waiting = st.waiting.saturating_sub(1);
            }
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
                    out.push_back(Out::Event {
                        seq: k.seq,
                        held: k.held,
                        bytes: k.bytes.clone(),
                    });
                    cursor.held = k.held;
                }
                cursor.at = Some(cur);
            }
            _ => {
                if let Some(snap) = &st.snapshot {
                    if cursor.at.is_some() {
                        cursor.resyncs += 1;
                    }
                    out.push_back(Out::Snapshot {
                        seq: cur,
                        snap: snap.clone(),
                        skip: skip(cursor.held, snap.held),
                    });
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
            out.push_back(Out::Tagged {
                seq: st.seq,
                held: cursor.held,
                body: end.clone(),
                end: true,
            });
            cursor.ended = true;
        }
    }

    fn pull_status(&self, st: &State, cursor: &mut Cursor, out: &mut VecDeque<Out>) {
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
            Some(seq) => out.push_back(Out::Tagged {
                seq,
                held: cursor.held,
                body,
                end: false,
            }),
            None => out.push_back(Out::Bytes(body)),
        }
    }

    /// Publish a new item list with the events that lead to it. Events are
    /// `(seq, encoded)` with consecutive seqs after the current one; with no
    /// events the list still gets a new seq when it is the first one.
    pub(crate) fn publish(&self, list: Arc<ItemList>, events: Vec<(u64, Bytes)>, first: bool) {
        // Built (its held count read) before the lock is taken.
        let snap = Arc::new(Snapshot::new(list, &self.render));
        let events: Vec<Kept> = events.into_iter().map(|(s, b)| self.kept(s, b)).collect();
        {
            let mut st = self.state();
            if first {
                st.seq += 1;
                st.base = Some(st.seq);
            }
            for kept in events {
                st.seq = kept.seq;
                st.history.push_back(kept);
            }
            while st.history.len() > st.capacity {
                st.history.pop_front();
            }
            st.snapshot = Some(snap);
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Take the state of this feed from elsewhere (the cluster): ids in
    /// `epoch`, latest state `seq`, nothing replayable before `base`,
    /// `events` (consecutive, encoded with their ids) leading up to `seq`.
    /// A different epoch starts a new generation (every subscriber gets a
    /// snapshot); `reset` replaces the history instead of extending it.
    pub(crate) fn apply(&self, applied: Applied) {
        let snap = Arc::new(Snapshot::new(applied.list, &self.render));
        let events: Vec<Kept> = applied
            .events
            .into_iter()
            .map(|(s, b)| self.kept(s, b))
            .collect();
        {
            let mut st = self.state();
            if *st.epoch != *applied.epoch || applied.reset {
                if *st.epoch != *applied.epoch {
                    st.epoch = applied.epoch;
                    st.generation += 1;
                }
                st.history.clear();
            }
            st.base = Some(applied.base);
            st.remote = true;
            for kept in events {
                if !matches!(st.history.back(), Some(last) if kept.seq <= last.seq) {
                    st.history.push_back(kept);
                }
            }
            st.seq = applied.seq;
            while st.history.len() > st.capacity {
                st.history.pop_front();
            }
            st.snapshot = Some(snap);
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Start over under a new local epoch with nothing to replay (the
    /// cluster went away; this replica polls on its own). Subscribers get
    /// one snapshot at the next publish.
    pub(crate) fn local_epoch(&self) {
        let mut st = self.state();
        st.epoch = local_epoch().into();
        st.remote = false;
        st.generation += 1;
        st.seq = 0;
        st.base = None;
        st.history.clear();
        st.snapshot = None;
    }

    /// This replica compared its state with the cluster's (whether or not
    /// anything changed): subscribers waiting to catch up look again.
    pub(crate) fn synced(&self) {
        let wake = {
            let mut st = self.state();
            st.syncs += 1;
            st.waiting > 0
        };
        if wake {
            self.changed.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    /// Replace the list without an event (bytes changed, content did not).
    pub(crate) fn replace_list(&self, list: Arc<ItemList>) {
        let snap = Arc::new(Snapshot::new(list, &self.render));
        self.state().snapshot = Some(snap);
    }

    /// A history event; only `append_each` feeds' ids carry a held count.
    fn kept(&self, seq: u64, bytes: Bytes) -> Kept {
        let held = if self.render.contract.append_each {
            id::held_in(&bytes)
        } else {
            None
        };
        Kept { seq, bytes, held }
    }

    /// Seq of the latest state.
    pub(crate) fn head(&self) -> u64 {
        self.state().seq
    }

    /// The seq the next event will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.state().seq + 1
    }

    /// Enter (or stay in) the failing state with an encoded `stale` body.
    pub(crate) fn set_stale(&self, body: Bytes) {
        {
            let mut st = self.state();
            if st.stale.is_some() {
                return;
            }
            st.stale = Some(body);
            st.status_gen += 1;
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Leave the failing state with an encoded `recovered` body.
    pub(crate) fn set_recovered(&self, body: Bytes) {
        {
            let mut st = self.state();
            if st.stale.take().is_none() {
                return;
            }
            st.recovered = body;
            st.status_gen += 1;
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Reach the terminal state: every stream tells `body` and ends.
    pub(crate) fn finish(&self, body: Bytes) {
        self.state().end = Some(body);
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub fn is_finished(&self) -> bool {
        self.state().end.is_some()
    }

    pub fn is_stale(&self) -> bool {
        self.state().stale.is_some()
    }

    /// Printable, credential-free name for logs.
    pub fn label(&self) -> String {
        self.key.label_of(&self.def)
    }
}

/// A random epoch for ids numbered by this process alone.
fn local_epoch() -> String {
    format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

/// State handed to [`Feed::apply`].
pub(crate) struct Applied {
    pub epoch: Arc<str>,
    pub seq: u64,
    pub base: u64,
    pub list: Arc<ItemList>,
    pub events: Vec<(u64, Bytes)>,
    pub reset: bool,
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

#[cfg(test)]
mod tests;
