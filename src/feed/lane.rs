//! Parked subscribers: idle streams whose next events the feed writes itself.
//!
//! A subscriber on a socket the feed may write to (a plain-TCP HTTP/1.1
//! stream served by `direct`) that has seen everything parks its [`Lane`]
//! in its feed instead of waiting for a signal. When the feed then publishes
//! events that follow exactly the state a parked lane holds, the publishing
//! task writes the shared bytes to every parked socket in turn, one
//! non-blocking vectored write each, and no subscriber task is woken: the
//! one loop over sockets that is the least an SSE server can do per event.
//!
//! A keepalive tick is written the same way: the feed writes the keepalive
//! comment to every parked socket that was silent since the last tick, and
//! wakes no task for it (on a quiet feed, ticks are all the traffic there is).
//!
//! Anything else unparks the lane and wakes its task, which then reads the
//! feed as every subscriber does: a status change, a new epoch, a
//! retirement or shutdown, a socket that would block or failed, and bytes
//! its transport had not finished writing when it parked. A socket
//! that takes part of the events keeps the rest in the lane, and the
//! transport writes it before anything else.
//!
//! This module owns the parked set, the hand-over between the two writers
//! of one socket (the lane's lock decides who may write, so exactly one of
//! them does at any time and bytes are never reordered) and the loop's
//! write to each socket. Every lane lives in one slab, beside the others,
//! and keeps its socket's descriptor: the loop reads contiguous memory and
//! makes one system call per socket, as the least an SSE server can do
//! does. It never blocks on a socket and never decides how bytes are
//! framed for the wire (the transport's [`Framer`] does, once per batch);
//! lock order is the feed's state, then a lane, then the parked set.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use super::{Cursor, Feed};

mod send;
pub(super) use send::Framing;

/// Where a parked subscriber's bytes go.
///
/// Either a socket the feed writes to itself ([`Sink::socket`]: the common
/// case, a plain TCP socket) or anything else that takes bytes without
/// blocking ([`Sink::offer`]).
pub trait Sink: Send + Sync {
    /// The socket's descriptor, and how events are framed on it. Read once,
    /// when the lane is attached: the loop over parked lanes then writes to
    /// the descriptor kept in the lane, and reaches no other memory per
    /// socket. The descriptor must stay open as long as the sink lives.
    fn socket(&self) -> Option<(RawFd, &'static Framer)> {
        None
    }

    /// Write the events `events` (whole SSE events, in order) as far as the
    /// sink takes them now. Bytes accepted in part go, framed, to `rest`.
    /// Asked only of a sink without a [`Sink::socket`].
    fn offer(&self, events: &[Bytes], rest: &mut VecDeque<Bytes>) -> Offered {
        let _ = (events, rest);
        Offered::Nothing
    }
}

/// How one kind of socket carries an event (HTTP/1.1: as one chunk), the
/// same for every socket of that kind: a fan-out frames each of its events
/// once per framer and writes the same bytes to every socket.
pub struct Framer {
    /// The event as the socket carries it; empty for an event the socket
    /// cannot carry (an empty chunk would end an HTTP/1.1 body).
    pub frame: fn(&Bytes) -> Bytes,
}

/// How much of an offer the socket took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Every byte.
    All,
    /// Some: the rest is in `rest`, for the transport to write first.
    Part,
    /// None (the socket is full, or failed): the subscriber's task reads
    /// the events from the feed itself.
    Nothing,
}

/// Lanes per chunk of the arena.
const CHUNK: usize = 64;

/// Every lane of the process, side by side in chunks of [`CHUNK`].
///
/// The loop over a feed's parked set reads one lane per socket; as heap
/// objects of their own, allocated among each subscriber's other objects,
/// those lanes were one cold page each at 10,000 subscribers, and reaching
/// them was much of the loop's gap to the floor's walk over an array of
/// sockets (bench/profiles/README.md). Fixed chunks rather than a slab
/// whose pages double: a slab held up to twice the lanes in use, 0.2 KiB
/// more per subscriber at 1,000. Taken only to add or free a lane, never
/// by the loop.
static ARENA: Mutex<Vec<Room>> = Mutex::new(Vec::new());

/// One chunk of the arena and which of its places are taken.
struct Room {
    chunk: Arc<Chunk>,
    taken: u64,
}

struct Chunk {
    cells: [Cell; CHUNK],
}

/// A lane's place: its chunk (kept alive by whoever names it), its index
/// there, and the generation of the place when it was named: a place
/// freed and taken again has a new generation, so a parked set's stale
/// entry never reaches the new lane.
#[derive(Clone)]
struct Place {
    chunk: Arc<Chunk>,
    index: u32,
    generation: u32,
}

impl Place {
    fn cell(&self) -> &Cell {
        &self.chunk.cells[self.index as usize]
    }

    /// The place still holds the lane it was named for. Exact under the
    /// cell's lock (the generation changes only under it), a hint without.
    fn current(&self) -> bool {
        self.cell().generation.load(Ordering::Acquire) == self.generation
    }
}

/// One subscriber's handle on its place in its feed's parked set. The
/// place itself lives in the arena, and is freed when the handle drops.
pub struct Lane {
    place: Place,
}

/// What the parked set reads and writes of a lane.
#[derive(Default)]
struct Cell {
    state: Mutex<LaneState>,
    waker: AtomicWaker,
    /// Advanced, under `state`'s lock, each time the place is freed.
    generation: AtomicU32,
}

#[derive(Default)]
struct LaneState {
    /// Set by the transport once it knows the socket can be shared.
    sink: Option<Arc<dyn Sink>>,
    /// The sink's socket, when the feed writes to it itself: open as long
    /// as `sink` is set, and cleared with it.
    socket: Option<(RawFd, &'static Framer)>,
    /// The subscriber is idle: the feed may write to its socket.
    parked: bool,
    /// The transport has nothing of its own in flight: what it queued
    /// before the subscriber parked was written.
    armed: bool,
    /// The feed unparked the lane; the subscriber's task must look.
    woken: bool,
    /// In the feed's parked set (at most once).
    listed: bool,
    /// The subscriber's position as of parking, advanced by each write.
    at: u64,
    held: Option<u64>,
    generation: u64,
    status_gen: u64,
    /// Events the feed wrote since the subscriber last resumed.
    written: u64,
    /// Framed bytes of a write the socket took in part.
    rest: VecDeque<Bytes>,
    /// The error the socket reported to the feed's write: the transport's
    /// to end the connection with.
    failed: Option<std::io::ErrorKind>,
    /// Keepalive ticks accounted for, and whether anything was written
    /// since the last of them (as the subscriber's stream keeps them).
    quiet: Quiet,
}

/// Where a subscriber stands with keepalives: the feed's tick count it has
/// accounted for, and whether it wrote anything since that tick. A stream
/// that was silent for a whole tick period writes a keepalive.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Quiet {
    pub ticks: u64,
    pub spoke: bool,
}

/// What a subscriber's task takes back when its lane is unparked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unparked {
    /// Where it stands, when the feed wrote events since it parked.
    pub moved: Option<Resumed>,
    /// Its keepalive reckoning, as the feed left it.
    pub quiet: Quiet,
}

/// Where a resumed subscriber stands after the feed wrote to its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    pub at: u64,
    pub held: Option<u64>,
}

impl Lane {
    pub fn new() -> Arc<Self> {
        let mut arena = ARENA.lock().unwrap_or_else(|e| e.into_inner());
        let room = match arena.iter_mut().position(|r| r.taken != u64::MAX) {
            Some(i) => &mut arena[i],
            None => {
                arena.push(Room {
                    chunk: Arc::new(Chunk {
                        cells: std::array::from_fn(|_| Cell::default()),
                    }),
                    taken: 0,
                });
                let last = arena.len() - 1;
                &mut arena[last]
            }
        };
        let index = room.taken.trailing_ones();
        room.taken |= 1 << index;
        let chunk = room.chunk.clone();
        let generation = chunk.cells[index as usize]
            .generation
            .load(Ordering::Acquire);
        Arc::new(Self {
            place: Place {
                chunk,
                index,
                generation,
            },
        })
    }

    fn cell(&self) -> &Cell {
        self.place.cell()
    }

    /// The transport can take writes from the feed through `sink`.
    pub fn attach(&self, sink: Arc<dyn Sink>) {
        let mut s = self.cell().lock();
        s.socket = sink.socket();
        s.sink = Some(sink);
    }

    /// The transport wrote everything it had queued and waits for the
    /// subscriber: a parked lane may now be written to by the feed.
    pub fn arm(&self) {
        let mut s = self.cell().lock();
        if s.parked {
            s.armed = true;
        }
    }

    /// Bytes of a write the socket took in part: the transport writes them
    /// before anything else. Empty almost always.
    pub fn take_rest(&self) -> VecDeque<Bytes> {
        std::mem::take(&mut self.cell().lock().rest)
    }

    /// The error the socket reported to a write of the feed's (reported by
    /// the socket once, so the transport must take it from here).
    pub fn take_failure(&self) -> Option<std::io::ErrorKind> {
        self.cell().lock().failed.take()
    }

    /// Ready once the feed unparked the lane.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        let cell = self.cell();
        cell.waker.register(cx.waker());
        if cell.lock().woken {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Unpark (the subscriber has something to do): the feed writes no
    /// more. Says where the subscriber stands when the feed wrote events
    /// since the lane parked, and how its keepalives stand.
    pub fn resume(&self) -> Unparked {
        let mut s = self.cell().lock();
        s.parked = false;
        s.armed = false;
        s.woken = false;
        let written = std::mem::take(&mut s.written);
        Unparked {
            moved: (written > 0).then_some(Resumed {
                at: s.at,
                held: s.held,
            }),
            quiet: s.quiet,
        }
    }

    /// The subscriber is gone: nothing is written to its socket again, and
    /// the socket is not kept open by the parked set.
    pub fn close(&self) {
        let mut s = self.cell().lock();
        s.parked = false;
        s.armed = false;
        s.sink = None;
        s.socket = None;
        s.rest.clear();
        s.failed = None;
    }
}

impl Drop for Lane {
    /// The place is freed: emptied (the socket let go) and given a new
    /// generation under its lock, so the parked sets that still name it
    /// find it gone, then offered to the next lane.
    fn drop(&mut self) {
        let cell = self.cell();
        let mut s = cell.lock();
        let old = std::mem::take(&mut *s);
        cell.generation.fetch_add(1, Ordering::Release);
        drop(s);
        // The socket and the waker are let go of outside the lock.
        drop((old, cell.waker.take()));
        let mut arena = ARENA.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = arena
            .iter()
            .position(|r| Arc::ptr_eq(&r.chunk, &self.place.chunk))
        else {
            return;
        };
        arena[i].taken &= !(1 << self.place.index);
        // An empty chunk is given back unless it is the only one with room
        // (parked sets that still name it hold it until they prune).
        if arena[i].taken == 0 && arena.iter().filter(|r| r.taken != u64::MAX).count() > 1 {
            arena.swap_remove(i);
        }
    }
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The place still holds the lane of `generation` and it is parked;
    /// otherwise it leaves the parked set.
    fn still_parked(&self, s: &mut LaneState, generation: u32) -> bool {
        if self.generation.load(Ordering::Acquire) != generation {
            return false; // freed: the place may be another lane's now
        }
        if !s.parked {
            s.listed = false;
            return false;
        }
        true
    }

    /// Unpark and wake the subscriber's task (it is out of the parked set).
    fn wake(&self, mut s: MutexGuard<'_, LaneState>) {
        s.listed = false;
        if s.parked {
            s.parked = false;
            s.armed = false;
            s.woken = true;
            drop(s);
            self.waker.wake();
        }
    }

    /// Write `batch` if this lane is parked right before it and still the
    /// lane of `generation`. `true`: still parked (and kept in the set).
    fn deliver(&self, generation: u32, batch: &Batch<'_>) -> bool {
        let mut s = self.lock();
        if !self.still_parked(&mut s, generation) {
            return false;
        }
        if s.generation != batch.generation || s.status_gen != batch.status_gen || !s.armed {
            self.wake(s);
            return false;
        }
        if s.at == batch.last {
            return true; // parked after this batch was published
        }
        if s.at + 1 != batch.first {
            self.wake(s);
            return false;
        }
        let st = &mut *s;
        let offered = send::offer(st, &batch.events);
        if offered != Offered::Nothing {
            let n = batch.events.len() as u64;
            st.at = batch.last;
            st.held = batch.held;
            st.written += n;
            st.quiet.spoke = true;
            batch.count.written.fetch_add(n, Ordering::Relaxed);
        }
        if offered == Offered::Part {
            batch.count.partial.fetch_add(1, Ordering::Relaxed);
        }
        if offered == Offered::All {
            return true;
        }
        self.wake(s);
        false
    }

    /// Keepalive tick `now`: write `keepalive` if this lane is parked and
    /// was silent since the last tick. `true`: still parked.
    fn keep_alive(
        &self,
        generation: u32,
        now: u64,
        keepalive: &Framing<'_>,
        count: &FanCount,
    ) -> bool {
        let mut s = self.lock();
        if !self.still_parked(&mut s, generation) {
            return false;
        }
        if !s.armed {
            // The transport still writes: its task takes the tick itself.
            self.wake(s);
            return false;
        }
        if s.quiet.ticks >= now {
            return true; // parked after this tick, knowing of it
        }
        let offered = if s.quiet.spoke {
            Offered::All // not silent: nothing to say
        } else {
            let offered = send::offer(&mut s, keepalive);
            if offered != Offered::Nothing {
                count.keepalives.fetch_add(1, Ordering::Relaxed);
            }
            offered
        };
        if offered != Offered::Nothing {
            // The tick is taken care of: the task must not say it again.
            s.quiet = Quiet {
                ticks: now,
                spoke: false,
            };
        }
        if offered == Offered::All {
            return true;
        }
        self.wake(s);
        false
    }
}

/// Events appended by one publish, as the parked lanes are written them.
pub(super) struct Batch<'a> {
    /// Seqs of the first and last event.
    pub first: u64,
    pub last: u64,
    /// Held count of the last event's id.
    pub held: Option<u64>,
    pub generation: u64,
    pub status_gen: u64,
    pub count: &'a FanCount,
    /// The events, framed once per kind of socket.
    pub events: Framing<'a>,
}

/// What a feed wrote to parked sockets so far.
#[derive(Debug, Default)]
pub struct FanCount {
    /// Events written (in whole or begun).
    pub written: AtomicU64,
    /// Writes the socket took in part, finished by the subscriber's task.
    pub partial: AtomicU64,
    /// Keepalives written (in whole or begun) at ticks.
    pub keepalives: AtomicU64,
}

/// A feed's parked lanes, by their places in the arena.
#[derive(Default)]
pub(super) struct Parked {
    lanes: Vec<Place>,
    /// Places whose lane is gone are dropped when the set reaches this
    /// size (doubled each time: amortised, never a scan per park).
    prune_at: usize,
}

impl Feed {
    /// Park `lane` for the subscriber at `cursor`, if it has seen everything
    /// and nothing but new events can come next; `quiet` is how its
    /// keepalives stand. `false`: wait for the feed's signal instead.
    pub fn park(&self, lane: &Arc<Lane>, cursor: &Cursor, quiet: Quiet) -> bool {
        let st = self.state();
        let current = st.end.is_none() && cursor.is_current(st.seq, st.generation, st.status_gen);
        if !current {
            return false;
        }
        let mut l = lane.cell().lock();
        if l.sink.is_none() {
            return false;
        }
        l.parked = true;
        l.armed = false;
        l.woken = false;
        l.at = st.seq;
        l.held = cursor.held();
        l.generation = st.generation;
        l.status_gen = st.status_gen;
        l.quiet = quiet;
        if !l.listed {
            l.listed = true;
            let mut p = self.parked();
            if p.lanes.len() >= p.prune_at {
                // A gone subscriber's place has a new generation (read
                // without its lock: a lane's lock is never taken under
                // another's).
                p.lanes.retain(Place::current);
                p.prune_at = (p.lanes.len() * 2).max(64);
            }
            p.lanes.push(lane.place.clone());
        }
        true
    }

    fn parked(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `batch` to every parked lane right before it; wake the others.
    /// Called after the state holds the batch and the watchers were told.
    pub(super) fn fan_out(&self, batch: Batch<'_>) {
        // One fan-out at a time per feed: a second one must see the lanes
        // the first keeps.
        let started = std::time::Instant::now();
        let Some((parked, still_parked)) =
            self.visit_parked(|place| place.cell().deliver(place.generation, &batch))
        else {
            return;
        };
        tracing::debug!(
            feed = %self.def.name,
            parked,
            still_parked,
            took = ?started.elapsed(),
            "events written to parked subscribers"
        );
    }

    /// Visit every lane of the parked set, one visit at a time per feed (a
    /// second one must see the lanes the first keeps); `keep` says whether
    /// the lane stays. `None` when none was parked, else the lanes before
    /// and after.
    fn visit_parked(&self, keep: impl FnMut(&Place) -> bool) -> Option<(usize, usize)> {
        let _one = self.fanning.lock().unwrap_or_else(|e| e.into_inner());
        let mut lanes = std::mem::take(&mut self.parked().lanes);
        if lanes.is_empty() {
            return None;
        }
        let before = lanes.len();
        lanes.retain(keep);
        let after = lanes.len();
        let mut p = self.parked();
        // Lanes parked meanwhile join the ones kept.
        lanes.append(&mut p.lanes);
        p.lanes = lanes;
        Some((before, after))
    }

    /// Keepalive tick `now`: write the feed's keepalive to every parked
    /// lane that was silent since the last tick, without waking its task.
    pub(super) fn keep_parked_alive(&self, now: u64) {
        let keepalive = [self.keepalive.clone()];
        let keepalive = Framing::new(&keepalive);
        self.visit_parked(|place| {
            let cell = place.cell();
            cell.keep_alive(place.generation, now, &keepalive, &self.fanned)
        });
    }

    /// Unpark and wake every parked lane (anything but new events changed).
    pub(super) fn wake_parked(&self) {
        let _one = self.fanning.lock().unwrap_or_else(|e| e.into_inner());
        let lanes = std::mem::take(&mut self.parked().lanes);
        for place in lanes {
            let cell = place.cell();
            let s = cell.lock();
            if place.current() {
                cell.wake(s);
            }
        }
    }

    /// What this feed wrote to parked sockets so far.
    pub fn fanned_out(&self) -> &FanCount {
        &self.fanned
    }

    /// Subscribers parked now whose transport has nothing in flight (the
    /// ones the next events are written to by the feed).
    pub fn parked_lanes(&self) -> usize {
        let lanes = self.parked().lanes.clone();
        lanes
            .iter()
            .filter(|place| {
                let s = place.cell().lock();
                place.current() && s.parked && s.armed
            })
            .count()
    }
}

#[cfg(test)]
mod tests;
