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
//! `snapshot` (one version of the list as subscribers are sent it), `cursor`
//! (where a subscriber stands and what it is sent next), [`lane`] (idle
//! subscribers whose sockets the feed writes new events to itself),
//! [`scan`] (the one validating pass over a body), [`stats`] (counters per
//! definition for the status page), [`source`] (where a feed's events come
//! from: its own poll loop or a cluster engine).

pub mod cadence;
pub mod contract;
mod cursor;
pub mod defs;
pub mod diff;
pub mod extract;
pub mod id;
pub mod key;
pub mod lane;
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
pub use cursor::{Cursor, Out};
use extract::ItemList;
pub use key::FeedKey;
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
    /// Idle subscribers whose sockets the feed writes new events to itself
    /// (see [`lane`]), and the lock that keeps one fan-out at a time.
    parked: Mutex<lane::Parked>,
    fanning: Mutex<()>,
    /// What was written to parked sockets.
    fanned: lane::FanCount,
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
    /// Cursors waiting for this replica to catch up with their id: each
    /// holds its place in this count (`cursor::Waiting`) while it waits, so a
    /// subscriber that goes away while waiting is uncounted with its cursor.
    waiting: Arc<AtomicUsize>,
}

/// One history event, encoded with its id, and the held count of that id
/// (read back from it: events may come encoded from another replica).
struct Kept {
    seq: u64,
    bytes: Bytes,
    held: Option<u64>,
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
                waiting: Arc::new(AtomicUsize::new(0)),
            }),
            changed: watch::channel(0).0,
            subscribers: AtomicUsize::new(0),
            ticks: AtomicU64::new(0),
            retired: CancellationToken::new(),
            parked: Mutex::default(),
            fanning: Mutex::new(()),
            fanned: lane::FanCount::default(),
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
        self.signal();
        self.wake_parked();
    }

    /// Tell the subscribers waiting on the change signal (parked ones are
    /// written to or woken separately).
    fn signal(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A keepalive tick (see `registry`'s ticker): subscribers silent since
    /// the previous tick send a keepalive. Parked ones are written it by
    /// the feed; their tasks sleep on.
    pub(crate) fn tick(&self) {
        let now = self.ticks.fetch_add(1, Ordering::AcqRel) + 1;
        self.signal();
        self.keep_parked_alive(now);
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

    /// Publish a new item list with the events that lead to it. Events are
    /// `(seq, encoded)` with consecutive seqs after the current one; with no
    /// events the list still gets a new seq when it is the first one.
    pub(crate) fn publish(&self, list: Arc<ItemList>, events: Vec<(u64, Bytes)>, first: bool) {
        // Built (its held count read) before the lock is taken.
        let snap = Arc::new(Snapshot::new(list, &self.render));
        let events: Vec<Kept> = events.into_iter().map(|(s, b)| self.kept(s, b)).collect();
        let appended = Appended::of(&events);
        let (prev, generation, status_gen) = {
            let mut st = self.state();
            let prev = st.seq;
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
            (prev, st.generation, st.status_gen)
        };
        self.signal();
        if first {
            self.wake_parked();
        } else {
            self.fan_out_appended(appended, prev, generation, status_gen);
        }
    }

    /// Write events appended right after `prev` to the parked lanes (or
    /// wake them when the events do not follow `prev`).
    fn fan_out_appended(&self, appended: Appended, prev: u64, generation: u64, status_gen: u64) {
        let Some((first, last, held)) = appended.range else {
            return;
        };
        if first != prev + 1 || last - first + 1 != appended.bytes.len() as u64 {
            self.wake_parked();
            return;
        }
        self.fan_out(lane::Batch {
            first,
            last,
            held,
            generation,
            status_gen,
            count: &self.fanned,
            events: lane::Framing::new(&appended.bytes),
        });
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
        let (appended, prev, generation, status_gen) = {
            let mut st = self.state();
            let prev = st.seq;
            let mut restarted = false;
            if *st.epoch != *applied.epoch || applied.reset {
                if *st.epoch != *applied.epoch {
                    st.epoch = applied.epoch;
                    st.generation += 1;
                }
                st.history.clear();
                restarted = true;
            }
            st.base = Some(applied.base);
            st.remote = true;
            let mut appended = Appended::default();
            for kept in events {
                if !matches!(st.history.back(), Some(last) if kept.seq <= last.seq) {
                    appended.push(&kept);
                    st.history.push_back(kept);
                }
            }
            st.seq = applied.seq;
            while st.history.len() > st.capacity {
                st.history.pop_front();
            }
            st.snapshot = Some(snap);
            // Only events that continue this replica's own state and end at
            // the new one can be written as they are; anything else (a new
            // epoch, a reset, a jump) is read by each subscriber.
            let ends_at_seq = match appended.range {
                Some((_, last, _)) => last == st.seq,
                None => st.seq == prev,
            };
            let follows = !restarted && ends_at_seq;
            (
                follows.then_some(appended),
                prev,
                st.generation,
                st.status_gen,
            )
        };
        self.signal();
        match appended {
            Some(appended) => self.fan_out_appended(appended, prev, generation, status_gen),
            None => self.wake_parked(),
        }
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

    /// Cursors counted as waiting for this replica to catch up.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.state().waiting.load(Ordering::Acquire)
    }

    /// This replica compared its state with the cluster's (whether or not
    /// anything changed): subscribers waiting to catch up look again.
    pub(crate) fn synced(&self) {
        let wake = {
            let mut st = self.state();
            st.syncs += 1;
            st.waiting.load(Ordering::Acquire) > 0
        };
        if wake {
            // Only cursors that wait for the catch-up care: none is parked.
            self.signal();
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
        self.wake();
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
        self.wake();
    }

    /// Reach the terminal state: every stream tells `body` and ends.
    pub(crate) fn finish(&self, body: Bytes) {
        self.state().end = Some(body);
        self.wake();
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

/// The events one publish appended, as parked lanes are written them.
#[derive(Default)]
struct Appended {
    /// Seqs of the first and last event and the last one's held count.
    range: Option<(u64, u64, Option<u64>)>,
    bytes: Vec<Bytes>,
}

impl Appended {
    fn of(events: &[Kept]) -> Self {
        let mut appended = Self {
            range: None,
            bytes: Vec::with_capacity(events.len()),
        };
        for k in events {
            appended.push(k);
        }
        appended
    }

    /// One more event, after the others (its bytes shared, not copied).
    fn push(&mut self, k: &Kept) {
        let first = self.range.map_or(k.seq, |(first, _, _)| first);
        self.range = Some((first, k.seq, k.held));
        self.bytes.push(k.bytes.clone());
    }
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

#[cfg(test)]
mod tests;
