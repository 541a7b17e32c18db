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
//! Anything else unparks the lane and wakes its task, which then reads the
//! feed as every subscriber does: a status change, a keepalive tick, a new
//! epoch, a retirement or shutdown, a socket that would block or failed,
//! and bytes its transport had not finished writing when it parked. A socket
//! that takes part of the events keeps the rest in the lane, and the
//! transport writes it before anything else.
//!
//! This module owns the parked set and the hand-over between the two writers
//! of one socket: the lane's lock decides who may write, so exactly one of
//! them does at any time and bytes are never reordered. It never blocks on a
//! socket and never frames bytes for the wire (the [`Sink`] does); lock
//! order is the feed's state, then a lane, then the parked set.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use super::{Cursor, Feed};

/// Where a parked subscriber's bytes go: its socket, written without
/// blocking, framed as its transport needs.
pub trait Sink: Send + Sync {
    /// Write the events `events` (whole SSE events, in order) as far as the
    /// socket takes them now. Bytes accepted in part go, framed, to `rest`.
    fn offer(&self, events: &[Bytes], rest: &mut VecDeque<Bytes>) -> Offered;
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

/// One subscriber's place in its feed's parked set.
#[derive(Default)]
pub struct Lane {
    state: Mutex<LaneState>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct LaneState {
    /// Set by the transport once it knows the socket can be shared.
    sink: Option<Arc<dyn Sink>>,
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
}

/// Where a resumed subscriber stands after the feed wrote to its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    pub at: u64,
    pub held: Option<u64>,
}

impl Lane {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport can take writes from the feed through `sink`.
    pub fn attach(&self, sink: Arc<dyn Sink>) {
        self.lock().sink = Some(sink);
    }

    /// The transport wrote everything it had queued and waits for the
    /// subscriber: a parked lane may now be written to by the feed.
    pub fn arm(&self) {
        let mut s = self.lock();
        if s.parked {
            s.armed = true;
        }
    }

    /// Bytes of a write the socket took in part: the transport writes them
    /// before anything else. Empty almost always.
    pub fn take_rest(&self) -> VecDeque<Bytes> {
        std::mem::take(&mut self.lock().rest)
    }

    /// Ready once the feed unparked the lane.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.lock().woken {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Unpark (the subscriber has something to do): the feed writes no
    /// more. `Some` with the position reached when the feed wrote events
    /// since the lane parked.
    pub fn resume(&self) -> Option<Resumed> {
        let mut s = self.lock();
        s.parked = false;
        s.armed = false;
        s.woken = false;
        let written = std::mem::take(&mut s.written);
        (written > 0).then_some(Resumed {
            at: s.at,
            held: s.held,
        })
    }

    /// The subscriber is gone: nothing is written to its socket again, and
    /// the socket is not kept open by the parked set.
    pub fn close(&self) {
        let mut s = self.lock();
        s.parked = false;
        s.armed = false;
        s.sink = None;
        s.rest.clear();
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

    /// Write `batch` if this lane is parked right before it. `true`: still
    /// parked (and kept in the set).
    fn deliver(&self, batch: &Batch<'_>) -> bool {
        let mut s = self.lock();
        if !s.parked {
            s.listed = false;
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
        let offered = match &st.sink {
            Some(sink) => sink.offer(batch.events, &mut st.rest),
            None => Offered::Nothing,
        };
        if offered != Offered::Nothing {
            st.at = batch.last;
            st.held = batch.held;
            st.written += batch.events.len() as u64;
            let n = batch.events.len() as u64;
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
    pub events: &'a [Bytes],
    pub count: &'a FanCount,
}

/// What a feed wrote to parked sockets so far.
#[derive(Debug, Default)]
pub struct FanCount {
    /// Events written (in whole or begun).
    pub written: AtomicU64,
    /// Writes the socket took in part, finished by the subscriber's task.
    pub partial: AtomicU64,
}

/// A feed's parked lanes.
#[derive(Default)]
pub(super) struct Parked {
    lanes: Vec<Arc<Lane>>,
    /// Lanes whose subscriber is gone are dropped when the set reaches this
    /// size (doubled each time: amortised, never a scan per park).
    prune_at: usize,
}

impl Feed {
    /// Park `lane` for the subscriber at `cursor`, if it has seen everything
    /// and nothing but new events can come next. `false`: wait for the
    /// feed's signal instead.
    pub fn park(&self, lane: &Arc<Lane>, cursor: &Cursor) -> bool {
        let st = self.state();
        let current = st.end.is_none() && cursor.is_current(st.seq, st.generation, st.status_gen);
        if !current {
            return false;
        }
        let mut l = lane.lock();
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
        if !l.listed {
            l.listed = true;
            let mut p = self.parked();
            if p.lanes.len() >= p.prune_at {
                // The set's own reference is the last one once a subscriber
                // is gone (its transport and stream both dropped theirs).
                p.lanes.retain(|l| Arc::strong_count(l) > 1);
                p.prune_at = (p.lanes.len() * 2).max(64);
            }
            p.lanes.push(lane.clone());
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
        let _one = self.fanning.lock().unwrap_or_else(|e| e.into_inner());
        let mut lanes = std::mem::take(&mut self.parked().lanes);
        if lanes.is_empty() {
            return;
        }
        let (started, parked) = (std::time::Instant::now(), lanes.len());
        lanes.retain(|lane| lane.deliver(&batch));
        tracing::debug!(
            feed = %self.def.name,
            parked,
            still_parked = lanes.len(),
            took = ?started.elapsed(),
            "events written to parked subscribers"
        );
        let mut p = self.parked();
        // Lanes parked meanwhile join the ones kept.
        lanes.append(&mut p.lanes);
        p.lanes = lanes;
    }

    /// Unpark and wake every parked lane (anything but new events changed).
    pub(super) fn wake_parked(&self) {
        let _one = self.fanning.lock().unwrap_or_else(|e| e.into_inner());
        let lanes = std::mem::take(&mut self.parked().lanes);
        for lane in lanes {
            let s = lane.lock();
            lane.wake(s);
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
            .filter(|l| {
                let s = l.lock();
                s.parked && s.armed
            })
            .count()
    }
}

#[cfg(test)]
mod tests;
