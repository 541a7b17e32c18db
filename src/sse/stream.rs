//! One subscriber's stream: cursors into the feeds it follows (usually one;
//! several when feeds share an SSE path), turned into body frames.
//!
//! Event ids: a stream following one feed forwards each event's shared bytes
//! untouched, id `<epoch>:<seq>` (`<epoch>:<seq>.<held>` for a feed that sends
//! each entry of a growing array as its own event, see `feed::id`). A stream
//! following several feeds writes its own `id:` line, the position in every
//! feed joined with `,` in config order (`<epochA>:<seqA>,<epochB>:<seqB>`,
//! `-` for a feed not yet seen), followed by the shared body (a zero-copy
//! slice). Each part is checked against its own feed on resume, so an id is
//! never ambiguous. A terminal event's id ends in `:end`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};

use crate::body::{BoxBody, BoxError};
use crate::config::SseConfig;
use crate::feed::lane::{Lane, Quiet};
use crate::feed::registry::Subscription;
use crate::feed::{Cursor, Out};
use crate::limits::Permit;
use crate::wire as encode;

/// Resolves when the subscriber's admission is withdrawn (`check` mode).
type Revoked = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Suffix of a terminal event's id; a reconnect carrying it gets 204.
pub const END_SUFFIX: &str = ":end";

/// What [`Subscriber::pending`] found in the queue.
enum Pending {
    /// A frame to write now.
    Frame(Bytes),
    /// An entry was split into smaller ones; look again.
    Again,
    /// Nothing queued.
    Empty,
}

/// One followed feed.
struct Follow {
    sub: Subscription,
    changed: watch::Receiver<u64>,
    cursor: Cursor,
    /// Seq (and held count) of the last event written for this feed (for
    /// composite ids).
    at: Option<(u64, Option<u64>)>,
    /// The client's own part of its composite id, while `at` is `None`, for
    /// a feed whose ids count held entries: written back instead of `-`, so
    /// a reconnect before this feed sends anything (it has no state yet, as
    /// after a restart) does not lose the count.
    resumed: Option<String>,
}

/// Follows one or more feeds for one client. Owns nothing shared but its
/// [`Subscription`]s and its limits [`Permit`]; dropping it (client gone)
/// releases them.
pub struct Subscriber {
    follows: Vec<Follow>,
    /// Output waiting to be written, with the index of the feed it came from.
    pending: VecDeque<(usize, Out)>,
    /// Keepalive ticks seen, and whether anything was written since the last.
    ticks: u64,
    wrote: bool,
    /// The feeds were read and have not signalled since.
    current: bool,
    retry: Duration,
    shutdown: CancellationToken,
    done: bool,
    /// Held, never read: dropping it frees the slot.
    _permit: Option<Permit>,
    revoked: Option<Revoked>,
    /// The transport lets the feed write to this client's socket while
    /// the stream is idle (see `feed::lane`): parked instead of woken.
    lane: Option<std::sync::Arc<Lane>>,
    waiting: Wait,
    /// The last wait's future, kept for its allocation (never parked
    /// streams only).
    signal: Option<ReusableBoxFuture<'static, bool>>,
}

/// What an idle subscriber waits for.
enum Wait {
    No,
    /// Its lane: the feed writes new events itself, wakes it for the rest.
    Parked,
    /// Its feeds' next signal (the future in `signal`).
    Signal,
}

impl Subscriber {
    /// `last_event_id` is the client's resume position: one id, or (several
    /// feeds) a composite id as described in the module doc.
    pub fn new(
        subs: Vec<Subscription>,
        last_event_id: Option<&str>,
        cfg: &SseConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let n = subs.len();
        let parts: Vec<Option<&str>> = match last_event_id {
            None => vec![None; n],
            Some(id) if n == 1 => vec![Some(id)],
            Some(id) => {
                let p: Vec<&str> = id.split(',').collect();
                if p.len() == n {
                    p.into_iter().map(|s| (s != "-").then_some(s)).collect()
                } else {
                    vec![None; n]
                }
            }
        };
        let mut pending = VecDeque::new();
        pending.push_back((0, Out::Bytes(encode::retry(cfg.retry))));
        if let Some(connect) = subs.first().and_then(|s| s.feed.connect.clone()) {
            pending.push_back((0, Out::Bytes(connect)));
        }
        let follows: Vec<Follow> = subs
            .into_iter()
            .zip(parts)
            .map(|(sub, id)| {
                let cursor = sub.feed.cursor(id);
                // A valid resume position is carried into every composite id
                // from the first one on: a feed that sends nothing before the
                // next reconnect must not count as never seen.
                let at = cursor.position().map(|seq| (seq, cursor.held()));
                let resumed = id.filter(|_| cursor.held().is_some()).map(str::to_owned);
                Follow {
                    cursor,
                    changed: sub.feed.watch(),
                    at,
                    resumed,
                    sub,
                }
            })
            .collect();
        let follows_ticks = follows.first().map_or(0, |f: &Follow| f.sub.feed.ticks());
        Self {
            follows,
            pending,
            ticks: follows_ticks,
            wrote: false,
            current: false,
            retry: cfg.retry,
            shutdown,
            done: false,
            _permit: None,
            revoked: None,
            lane: None,
            waiting: Wait::No,
            signal: None,
        }
    }

    /// Park in `lane` while idle, when the transport attached a socket to it.
    pub fn parks_in(mut self, lane: Option<std::sync::Arc<Lane>>) -> Self {
        self.lane = lane;
        self
    }

    /// Keep `permit` (a limits slot) for as long as the stream lives.
    pub fn hold(mut self, permit: Permit) -> Self {
        self._permit = Some(permit);
        self
    }

    /// End the stream, without a `retry:` hint, when `revoked` resolves.
    pub fn revoked_by(
        mut self,
        revoked: Option<impl Future<Output = ()> + Send + 'static>,
    ) -> Self {
        self.revoked = revoked.map(|f| Box::pin(f) as Revoked);
        self
    }

    /// Count a stream closed because its admission was withdrawn.
    fn cut_off(&self) {
        if let Some(f) = self.follows.first() {
            f.sub.metrics.cut_off(&f.sub.feed.def.name);
        }
    }

    /// The `id:` line for an event of feed `i` at `seq` (held count `held`).
    fn id_line(&mut self, i: usize, seq: u64, held: Option<u64>, end: bool) -> Bytes {
        let suffix = if end { END_SUFFIX } else { "" };
        if self.follows.len() == 1 {
            let id = self.follows[0].sub.feed.id_held(seq, held);
            return encode::id_line(&format!("{id}{suffix}"));
        }
        self.follows[i].at = Some((seq, held));
        let parts: Vec<String> = self
            .follows
            .iter()
            .map(|f| match (f.at, &f.resumed) {
                (Some((s, h)), _) => f.sub.feed.id_held(s, h),
                (None, Some(part)) => part.clone(),
                (None, None) => "-".to_owned(),
            })
            .collect();
        encode::id_line(&format!("{}{suffix}", parts.join(",")))
    }

    /// The next frame to write, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next frame to write, `Ready(None)` when the stream ends. Each
    /// turn is named after its moment: [`Self::poll_wait`] (a wait begun
    /// earlier), [`Self::poll_revoked`] (every frame), [`Self::pending`]
    /// (write what is queued), [`Self::read_feeds`] (after a signal),
    /// [`Self::start_wait`] (until the next signal).
    ///
    /// Written as a poll function, not an `async fn`: the stream is most of
    /// what an idle subscriber costs, and a future would reserve room for
    /// the largest wait (several feeds' signals) in every subscriber.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            std::task::ready!(self.poll_wait(cx));
            // A subscriber that is never idle (busy feed, catching up) must
            // still have its rechecks run and obeyed: the revocation is
            // polled on every frame, not only while waiting.
            if !self.done && self.poll_revoked(cx) {
                self.end_revoked();
            }
            match self.pending() {
                Pending::Frame(b) => return Poll::Ready(Some(b)),
                Pending::Again => continue,
                Pending::Empty => {}
            }
            if self.done {
                return Poll::Ready(None);
            }
            // Read the feeds only when they signalled since the last read:
            // a read that found the state current needs no second one
            // before the next signal.
            if !self.current && self.read_feeds() {
                continue;
            }
            // Idle subscribers are most of them: waiting holds no queue.
            self.pending = VecDeque::new();
            self.start_wait();
        }
    }

    /// Whether the admission was withdrawn (`check` mode), polled once.
    fn poll_revoked(&mut self, cx: &mut Context<'_>) -> bool {
        self.revoked
            .as_mut()
            .is_some_and(|f| f.as_mut().poll(cx).is_ready())
    }

    /// The reconnect that follows a revocation meets the refusal itself.
    fn end_revoked(&mut self) {
        self.cut_off();
        self.revoked = None;
        self.pending.clear();
        self.done = true;
    }

    /// Take the next queued output and turn it into a frame to write.
    fn pending(&mut self) -> Pending {
        let Some((i, out)) = self.pending.pop_front() else {
            return Pending::Empty;
        };
        self.wrote = true;
        match out {
            Out::Bytes(b) => Pending::Frame(b),
            Out::Event { seq, held, bytes } => {
                if self.follows.len() == 1 {
                    return Pending::Frame(bytes);
                }
                // Swap the feed's own `id:` line for the composite one.
                // Only an id line starts with `id: ` at a line start:
                // data lines start with `data: `.
                let start = (0..bytes.len())
                    .find(|&p| (p == 0 || bytes[p - 1] == b'\n') && bytes[p..].starts_with(b"id: "))
                    .unwrap_or(0);
                let end = bytes[start..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(start, |p| start + p + 1);
                let id = self.id_line(i, seq, held, false);
                self.pending.push_front((i, Out::Bytes(bytes.slice(end..))));
                self.pending.push_front((i, Out::Bytes(id)));
                if start == 0 {
                    return Pending::Again;
                }
                Pending::Frame(bytes.slice(..start))
            }
            Out::Tagged {
                seq,
                held,
                body,
                end,
            } => {
                if end {
                    // Nothing may follow the terminal event.
                    self.pending.clear();
                    self.done = true;
                }
                let id = self.id_line(i, seq, held, end);
                self.pending.push_front((i, Out::Bytes(body)));
                Pending::Frame(id)
            }
            Out::Snapshot { seq, snap, skip } => {
                let f = &self.follows[i].sub;
                f.metrics.snapshot_sent(&f.feed.def.name);
                // The entries of the array the client holds are left out.
                let (head, middle, tail) = snap.encoded_from(skip);
                let id = self.id_line(i, seq, snap.held, false);
                if tail.is_empty() {
                    // Snapshots are not sent: a bare id still moves
                    // EventSource's Last-Event-ID without an event.
                    let mut b = id.to_vec();
                    b.push(b'\n');
                    return Pending::Frame(Bytes::from(b));
                }
                self.pending.push_front((i, Out::Bytes(tail)));
                self.pending.push_front((i, Out::Bytes(id)));
                if !middle.is_empty() {
                    self.pending.push_front((i, Out::Bytes(middle)));
                }
                if head.is_empty() {
                    return Pending::Again;
                }
                Pending::Frame(head)
            }
        }
    }

    /// After a signal: queue what the feeds have for this subscriber (and a
    /// keepalive when a whole tick passed in silence), or the end of the
    /// stream on shutdown or retirement. `true` when there is something to do.
    fn read_feeds(&mut self) -> bool {
        // Mark the current version seen before reading the state, so a
        // change (or tick, retirement, shutdown) signalled after the
        // reads below wakes us.
        for f in &mut self.follows {
            f.changed.borrow_and_update();
        }
        if self.shutdown.is_cancelled() {
            // Come back soon, to this replica or another one.
            self.pending
                .push_back((0, Out::Bytes(encode::retry(self.retry))));
            self.done = true;
            return true;
        }
        if self.follows.iter().any(|f| f.sub.feed.is_retired()) {
            // A reload removed or changed the definition: come back
            // soon, to whatever now serves this path.
            self.cut_off();
            self.pending
                .push_back((0, Out::Bytes(encode::retry(self.retry))));
            self.done = true;
            return true;
        }
        for (i, f) in self.follows.iter_mut().enumerate() {
            let resyncs = f.cursor.resyncs;
            // Straight into the queue: no scratch queue allocated per turn.
            f.sub
                .feed
                .pull(&mut f.cursor, &mut Queue(i, &mut self.pending));
            if f.cursor.resyncs != resyncs {
                f.sub.metrics.resynced(&f.sub.feed.def.name);
                f.sub.counters.add_resync();
            }
        }
        let ticks = self.follows[0].sub.feed.ticks();
        if ticks != self.ticks {
            // Silent for a whole tick period: say we are alive.
            if !self.wrote && self.pending.is_empty() {
                let keepalive = self.follows[0].sub.feed.keepalive.clone();
                self.pending.push_back((0, Out::Bytes(keepalive)));
            }
            self.ticks = ticks;
            self.wrote = false;
        }
        self.current = true;
        !self.pending.is_empty()
    }

    /// Idle: wait until the next signal. One signal per feed carries
    /// changes, keepalive ticks, retirement and shutdown; only a `check`
    /// revocation has its own. A stream that can park waits for its lane
    /// instead: the feed writes new events to the socket itself and wakes
    /// it for anything else.
    fn start_wait(&mut self) {
        if self.park() {
            // A stream that parks once parks from then on: the box of an
            // earlier wait (before its first write was flushed) goes.
            self.signal = None;
            self.waiting = Wait::Parked;
            return;
        }
        // Owned copies of the receivers (same version seen): the future
        // outlives this borrow, and its box is reused from wait to wait.
        let mut one = (self.follows.len() == 1).then(|| self.follows[0].changed.clone());
        let mut many: Vec<watch::Receiver<u64>> = match one {
            Some(_) => Vec::new(),
            None => self.follows.iter().map(|f| f.changed.clone()).collect(),
        };
        let signalled = async move {
            let r = match &mut one {
                Some(rx) => rx.changed().await,
                None => {
                    futures_util::future::select_all(many.iter_mut().map(|rx| rx.changed().boxed()))
                        .await
                        .0
                }
            };
            // The feed is gone.
            r.is_err()
        };
        match &mut self.signal {
            Some(f) => f.set(signalled),
            None => self.signal = Some(ReusableBoxFuture::new(signalled)),
        }
        self.waiting = Wait::Signal;
    }

    /// A wait begun by [`Self::start_wait`]: `Ready` once it is over (or
    /// none was begun). A withdrawn admission ends any wait first. A parked
    /// lane is resumed before anything is written, so the feed and this
    /// stream never write to the socket at once.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if matches!(self.waiting, Wait::No) {
            return Poll::Ready(());
        }
        let revoked_now = self.poll_revoked(cx);
        match self.waiting {
            Wait::No => {}
            Wait::Parked => {
                if let Some(lane) = self.lane.as_deref() {
                    if !revoked_now {
                        std::task::ready!(lane.poll_woken(cx));
                    }
                    let back = lane.resume();
                    // Ticks the feed took care of while parked (and what
                    // it wrote) count as this stream's own.
                    self.ticks = back.quiet.ticks;
                    self.wrote = back.quiet.spoke;
                    if let Some(to) = back.moved {
                        if let Some(f) = self.follows.first_mut() {
                            f.cursor.advance(to);
                        }
                        self.wrote = true;
                    }
                }
            }
            Wait::Signal => {
                if let (false, Some(signal)) = (revoked_now, &mut self.signal) {
                    if std::task::ready!(signal.poll(cx)) {
                        self.done = true;
                    }
                }
            }
        }
        self.waiting = Wait::No;
        self.current = false;
        if revoked_now {
            self.end_revoked();
        }
        Poll::Ready(())
    }

    /// Park in the lane, if there is one the feed can write to and this
    /// stream follows one feed and has seen all of it.
    fn park(&mut self) -> bool {
        match (&self.lane, self.follows.as_slice()) {
            (Some(lane), [one]) => {
                let quiet = Quiet {
                    ticks: self.ticks,
                    spoke: self.wrote,
                };
                one.sub.feed.park(lane, &one.cursor, quiet)
            }
            _ => false,
        }
    }

    /// The response body: this stream itself, boxed once.
    pub fn into_body(self) -> BoxBody {
        self.boxed_unsync()
    }
}

impl http_body::Body for Subscriber {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut()
            .poll_next(cx)
            .map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Gone: the feed must not write to the socket again, nor keep it.
        if let Some(lane) = &self.lane {
            lane.close();
        }
    }
}

/// Output of feed `.0`, queued with its index.
struct Queue<'a>(usize, &'a mut VecDeque<(usize, Out)>);

impl Extend<Out> for Queue<'_> {
    fn extend<T: IntoIterator<Item = Out>>(&mut self, outs: T) {
        let i = self.0;
        self.1.extend(outs.into_iter().map(|o| (i, o)));
    }
}

#[cfg(test)]
mod tests;
