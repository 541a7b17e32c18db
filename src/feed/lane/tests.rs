use std::sync::atomic::AtomicUsize;

use futures_util::task::{waker, ArcWake};

use super::*;
use crate::config::FeedConfig;
use crate::feed::extract::{self, ItemList};
use crate::feed::{FeedKey, Out};
use crate::pointer::Pointer;
use crate::wire as encode;

/// A socket that takes `room` bytes, then would block.
struct Fake {
    taken: Mutex<Vec<u8>>,
    room: Mutex<usize>,
}

impl Fake {
    fn with_room(room: usize) -> Arc<Self> {
        Arc::new(Self {
            taken: Mutex::new(Vec::new()),
            room: Mutex::new(room),
        })
    }

    fn taken(&self) -> String {
        String::from_utf8_lossy(&self.taken.lock().expect("lock")).into_owned()
    }
}

impl Sink for Fake {
    fn offer(&self, events: &[Bytes], rest: &mut VecDeque<Bytes>) -> Offered {
        let mut room = self.room.lock().expect("lock");
        let mut taken = self.taken.lock().expect("lock");
        let before = taken.len();
        let mut left = Vec::new();
        for e in events {
            let n = e.len().min(*room);
            taken.extend_from_slice(&e[..n]);
            *room -= n;
            if n < e.len() {
                left.push(e.slice(n..));
            }
        }
        match taken.len() - before {
            0 => Offered::Nothing,
            _ if left.is_empty() => Offered::All,
            _ => {
                rest.extend(left);
                Offered::Part
            }
        }
    }
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl ArcWake for Wakes {
    fn wake_by_ref(me: &Arc<Self>) {
        me.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn feed() -> Feed {
    Feed::new(
        FeedKey::new(0, String::new(), None, None),
        Arc::new(FeedConfig::new("t", "/t")),
        8,
    )
}

fn list() -> Arc<ItemList> {
    let (l, _) = extract::extract(
        Bytes::from_static(b"[]"),
        &Pointer::default(),
        &Pointer::parse("/id").expect("p"),
    )
    .expect("list");
    Arc::new(l)
}

fn event(f: &Feed, name: &str) -> (u64, Bytes) {
    let seq = f.next_seq();
    (seq, encode::event(&f.id(seq), name, b"{}"))
}

fn publish(f: &Feed, names: &[&str]) -> Vec<Bytes> {
    let mut events = Vec::new();
    for name in names {
        let seq = f.next_seq() + events.len() as u64;
        events.push((seq, encode::event(&f.id(seq), name, b"{}")));
    }
    let bytes = events.iter().map(|(_, b)| b.clone()).collect();
    f.publish(list(), events, false);
    bytes
}

/// What the feed has for `c` that it did not write to the socket.
fn unread(f: &Feed, c: &mut Cursor) -> usize {
    let mut out: VecDeque<Out> = VecDeque::new();
    f.pull(c, &mut out);
    out.len()
}

/// The feed's first snapshot, and a subscriber's cursor that has read it.
fn first_read(f: &Feed) -> Cursor {
    f.publish(list(), vec![], true);
    let mut c = f.cursor(None);
    assert_eq!(unread(f, &mut c), 1, "the first snapshot");
    c
}

/// A feed with its first snapshot, a subscriber that has read it, and its
/// lane on `sink`, parked and armed, watched by a counting waker.
fn parked(f: &Feed, sink: Arc<impl Sink + 'static>) -> (Cursor, Arc<Lane>, Arc<Wakes>) {
    let c = first_read(f);
    let lane = Lane::new();
    lane.attach(sink);
    assert!(f.park(&lane, &c, Quiet::default()));
    lane.arm();
    let wakes = Arc::new(Wakes::default());
    let w = waker(wakes.clone());
    assert!(lane.poll_woken(&mut Context::from_waker(&w)).is_pending());
    (c, lane, wakes)
}

#[test]
fn new_events_are_written_to_a_parked_socket_without_waking_its_task() {
    let f = feed();
    let sink = Fake::with_room(usize::MAX);
    let (mut c, lane, wakes) = parked(&f, sink.clone());
    let one = publish(&f, &["added"]);
    let two = publish(&f, &["updated", "removed"]);
    let want: String = one
        .iter()
        .chain(&two)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(sink.taken(), want);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "the task slept through");
    assert_eq!(f.fanned_out().written.load(Ordering::Relaxed), 3);
    // Woken later (the feed retires), the subscriber stands after what was
    // written.
    f.retire();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    let to = lane.resume().moved.expect("events were written");
    assert_eq!(to.at, f.head());
    c.advance(to);
    assert_eq!(unread(&f, &mut c), 0, "nothing is sent twice");
}

#[test]
fn a_lane_whose_transport_still_writes_is_woken_not_written() {
    let f = feed();
    let mut c = first_read(&f);
    let lane = Lane::new();
    let sink = Fake::with_room(usize::MAX);
    lane.attach(sink.clone());
    assert!(f.park(&lane, &c, Quiet::default())); // parked, never armed
    publish(&f, &["added"]);
    assert_eq!(sink.taken(), "", "bytes of its own may be in flight");
    assert!(lane.resume().moved.is_none());
    assert_eq!(
        unread(&f, &mut c),
        1,
        "the subscriber reads the event itself"
    );
}

#[test]
fn a_socket_that_takes_part_keeps_the_rest_for_its_task() {
    let f = feed();
    let sink = Fake::with_room(10);
    let (mut c, lane, wakes) = parked(&f, sink.clone());
    let sent = publish(&f, &["added"]);
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "the task finishes the write"
    );
    assert_eq!(f.fanned_out().partial.load(Ordering::Relaxed), 1);
    let rest: Vec<u8> = lane.take_rest().iter().flat_map(|b| b.to_vec()).collect();
    assert_eq!(sink.taken().as_bytes(), &sent[0][..10]);
    assert_eq!(rest, &sent[0][10..]);
    c.advance(lane.resume().moved.expect("begun, so delivered"));
    assert_eq!(unread(&f, &mut c), 0);
    // Not parked any more: the next event is the subscriber's to read.
    publish(&f, &["updated"]);
    assert_eq!(sink.taken().len(), 10);
    assert_eq!(unread(&f, &mut c), 1);
}

#[test]
fn a_full_socket_leaves_the_events_to_the_task() {
    let f = feed();
    let sink = Fake::with_room(0);
    let (mut c, lane, wakes) = parked(&f, sink);
    publish(&f, &["added"]);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert!(lane.take_rest().is_empty());
    assert!(lane.resume().moved.is_none(), "nothing was written");
    assert_eq!(unread(&f, &mut c), 1);
    assert_eq!(f.fanned_out().written.load(Ordering::Relaxed), 0);
}

#[test]
fn anything_but_new_events_and_ticks_wakes_parked_lanes() {
    type Change = fn(&Feed);
    let changes: [(&str, Change); 4] = [
        ("stale", |f| {
            f.set_stale(Bytes::from_static(b"event: stale\n\n"))
        }),
        ("retire", |f| f.retire()),
        ("end", |f| f.finish(Bytes::from_static(b"event: done\n\n"))),
        ("a first snapshot again", |f| {
            f.publish(list(), vec![], true)
        }),
    ];
    for (name, change) in changes {
        let f = feed();
        let sink = Fake::with_room(usize::MAX);
        let (_c, lane, wakes) = parked(&f, sink.clone());
        change(&f);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "{name}");
        publish(&f, &["added"]);
        assert_eq!(sink.taken(), "", "{name}: unparked, not written");
        assert!(lane.resume().moved.is_none(), "{name}");
    }
}

#[test]
fn a_cursor_behind_the_feed_does_not_park() {
    let f = feed();
    f.publish(list(), vec![], true);
    let c = f.cursor(None); // has not read the snapshot
    let lane = Lane::new();
    lane.attach(Fake::with_room(usize::MAX));
    assert!(!f.park(&lane, &c, Quiet::default()));
    let mut c = c;
    unread(&f, &mut c);
    let e = event(&f, "added");
    f.publish(list(), vec![e], false); // moved on before it parked
    assert!(!f.park(&lane, &c, Quiet::default()));
    // Without a socket to share, a lane never parks.
    unread(&f, &mut c);
    assert!(!f.park(&Lane::new(), &c, Quiet::default()));
}

#[test]
fn a_lane_parked_after_the_state_moved_on_is_not_written_twice() {
    let f = feed();
    let sink = Fake::with_room(usize::MAX);
    let (_c, lane, _wakes) = parked(&f, sink.clone());
    // As if it parked at seq 3 while a fan-out of 2..=3 was on its way.
    lane.cell().lock().at = 3;
    let events = [Bytes::from_static(b"x")];
    let batch = Batch {
        first: 2,
        last: 3,
        held: None,
        generation: 0,
        status_gen: 0,
        count: &f.fanned,
        events: Framing::new(&events),
    };
    assert!(
        lane.cell().deliver(lane.place.generation, &batch),
        "still parked"
    );
    assert_eq!(sink.taken(), "");
}

#[test]
fn gone_subscribers_leave_the_parked_set() {
    let f = feed();
    let c = first_read(&f);
    let live = Lane::new();
    live.attach(Fake::with_room(usize::MAX));
    assert!(f.park(&live, &c, Quiet::default()));
    for _ in 0..1000 {
        let lane = Lane::new();
        lane.attach(Fake::with_room(usize::MAX));
        assert!(f.park(&lane, &c, Quiet::default()));
        lane.close();
    }
    let len = f.parked().lanes.len();
    assert!(len < 200, "{len} lanes kept for one live subscriber");
    // Parking twice lists a lane once.
    assert!(f.park(&live, &c, Quiet::default()));
    let count = f
        .parked()
        .lanes
        .iter()
        .filter(|p| Arc::ptr_eq(&p.chunk, &live.place.chunk) && p.index == live.place.index)
        .count();
    assert_eq!(count, 1);
}

#[test]
fn a_closed_lane_holds_no_socket() {
    let f = feed();
    let sink = Fake::with_room(usize::MAX);
    let (_c, lane, _w) = parked(&f, sink.clone());
    lane.close();
    assert_eq!(
        Arc::strong_count(&sink),
        1,
        "only the test holds the socket"
    );
    publish(&f, &["added"]);
    assert_eq!(sink.taken(), "");
}

#[test]
fn a_dropped_lane_frees_its_place_and_its_socket() {
    let f = feed();
    let old = Fake::with_room(usize::MAX);
    let (_c, lane, _w) = parked(&f, old.clone());
    let place = lane.place.clone();
    drop(lane); // the subscriber went without closing its lane
    assert!(!place.current(), "the place is free");
    assert_eq!(Arc::strong_count(&old), 1, "only the test holds the socket");
    // A new subscriber may get the same place; the feed's stale key must not
    // reach it: the other feed's events are not written to its socket.
    let new = Fake::with_room(usize::MAX);
    let other = feed();
    let (_c2, _lane2, _w2) = parked(&other, new.clone());
    publish(&f, &["added"]);
    assert_eq!(new.taken(), "", "a stale key wrote to a new subscriber");
    assert_eq!(old.taken(), "");
    assert_eq!(f.parked().lanes.len(), 0, "the stale key left the set");
}

/// A real socket (one end of a Unix stream pair) written by the feed
/// itself, events framed as `<` event `>`.
struct Socket(std::os::unix::net::UnixStream);

static ANGLED: Framer = Framer {
    frame: |e| {
        if e.is_empty() {
            return Bytes::new();
        }
        Bytes::from([b"<", &e[..], b">"].concat())
    },
};

impl Sink for Socket {
    fn socket(&self) -> Option<(RawFd, &'static Framer)> {
        use std::os::fd::AsRawFd;
        Some((self.0.as_raw_fd(), &ANGLED))
    }
}

/// A socket pair whose first end is non-blocking: the sink, and the peer.
fn socket_pair() -> (Arc<Socket>, std::os::unix::net::UnixStream) {
    let (ours, peer) = std::os::unix::net::UnixStream::pair().expect("pair");
    ours.set_nonblocking(true).expect("non-blocking");
    (Arc::new(Socket(ours)), peer)
}

/// What the peer can read now.
fn read_now(peer: &mut std::os::unix::net::UnixStream) -> String {
    use std::io::Read;
    peer.set_nonblocking(true).expect("non-blocking");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_parked_socket_gets_each_event_framed_by_its_transport() {
    let f = feed();
    let (sink, mut peer) = socket_pair();
    let mut c = first_read(&f);
    let lane = Lane::new();
    lane.attach(sink.clone());
    assert!(f.park(&lane, &c, Quiet::default()));
    lane.arm();
    let one = publish(&f, &["added"]);
    let two = publish(&f, &["updated", "removed"]);
    let want: String = one
        .iter()
        .chain(&two)
        .map(|b| format!("<{}>", String::from_utf8_lossy(b)))
        .collect();
    assert_eq!(read_now(&mut peer), want);
    let to = lane.resume().moved.expect("events were written");
    c.advance(to);
    assert_eq!(unread(&f, &mut c), 0, "nothing is sent twice");
    // Closed, the lane lets go of the socket.
    lane.close();
    assert_eq!(Arc::strong_count(&sink), 1);
}

#[test]
fn a_full_parked_socket_leaves_the_events_to_the_task() {
    use std::io::Write;
    let f = feed();
    let (sink, mut peer) = socket_pair();
    let (_c, lane, wakes) = parked(&f, sink.clone());
    // The peer reads nothing: fill the socket until it would block.
    let mut filled = 0;
    loop {
        match (&sink.0).write(&[b'.'; 4096]) {
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    publish(&f, &["added"]);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task is woken");
    assert!(lane.resume().moved.is_none(), "nothing was written");
    assert!(lane.take_rest().is_empty());
    let got = read_now(&mut peer);
    assert_eq!(got.len(), filled, "only the filler reached the peer");
    assert!(!got.contains('<'));
}

#[test]
fn live_lanes_never_share_a_place_and_freed_places_are_taken_again() {
    let lanes: Vec<_> = (0..3 * CHUNK).map(|_| Lane::new()).collect();
    let mut seen = std::collections::HashSet::new();
    for l in &lanes {
        let at = (Arc::as_ptr(&l.place.chunk) as usize, l.place.index);
        assert!(seen.insert(at), "two live lanes in one place");
    }
    // Freed, a place comes back with a new generation.
    let old = lanes[0].place.clone();
    drop(lanes);
    assert!(!old.current());
    let again: Vec<_> = (0..3 * CHUNK).map(|_| Lane::new()).collect();
    for l in &again {
        assert!(l.place.current());
        let s = l.cell().lock();
        assert!(s.sink.is_none() && !s.parked && !s.listed, "a fresh lane");
    }
}

fn keepalive(f: &Feed) -> String {
    String::from_utf8_lossy(&f.keepalive).into_owned()
}

#[test]
fn a_tick_writes_the_keepalive_to_a_silent_parked_socket_without_waking_its_task() {
    let f = feed();
    let sink = Fake::with_room(usize::MAX);
    let (_c, lane, wakes) = parked(&f, sink.clone());
    f.tick();
    assert_eq!(sink.taken(), keepalive(&f));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "the task slept through");
    assert_eq!(f.fanned_out().keepalives.load(Ordering::Relaxed), 1);
    assert_eq!(f.parked_lanes(), 1, "still parked");
    // Its task, once back, knows the tick was taken care of.
    let back = lane.resume();
    assert_eq!(back.moved, None);
    assert_eq!(
        back.quiet,
        Quiet {
            ticks: 1,
            spoke: false
        }
    );
}

#[test]
fn a_parked_socket_that_got_events_since_the_last_tick_gets_no_keepalive() {
    let f = feed();
    let sink = Fake::with_room(usize::MAX);
    let (_c, lane, wakes) = parked(&f, sink.clone());
    let event = publish(&f, &["added"]);
    f.tick();
    let event = String::from_utf8_lossy(&event[0]).into_owned();
    assert_eq!(sink.taken(), event, "no keepalive after an event");
    // Silent for the whole of the next period: now it is said.
    f.tick();
    assert_eq!(sink.taken(), format!("{event}{}", keepalive(&f)));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    assert_eq!(f.fanned_out().keepalives.load(Ordering::Relaxed), 1);
    assert_eq!(lane.resume().quiet.ticks, 2);
}

#[test]
fn a_lane_that_parked_knowing_of_the_tick_is_not_written_it_again() {
    let f = feed();
    let c = first_read(&f);
    let sink = Fake::with_room(usize::MAX);
    let lane = Lane::new();
    lane.attach(sink.clone());
    // Its stream saw tick 1 (and wrote the keepalive) just before parking,
    // while the feed was on its way to tell the parked lanes of it.
    let quiet = Quiet {
        ticks: 1,
        spoke: false,
    };
    assert!(f.park(&lane, &c, quiet));
    lane.arm();
    f.keep_parked_alive(1);
    assert_eq!(sink.taken(), "");
    assert_eq!(f.parked_lanes(), 1);
}

#[test]
fn at_a_tick_a_full_or_busy_socket_is_left_to_its_task() {
    // Full: nothing written, the task is woken and still owes the keepalive.
    let f = feed();
    let (_c, lane, wakes) = parked(&f, Fake::with_room(0));
    f.tick();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(lane.resume().quiet.ticks, 0, "the tick is the task's");
    assert_eq!(f.fanned_out().keepalives.load(Ordering::Relaxed), 0);
    // Its transport still writing: woken, not written.
    let f = feed();
    let c = first_read(&f);
    let sink = Fake::with_room(usize::MAX);
    let lane = Lane::new();
    lane.attach(sink.clone());
    assert!(f.park(&lane, &c, Quiet::default())); // never armed
    f.tick();
    assert_eq!(sink.taken(), "");
    assert_eq!(lane.resume().quiet.ticks, 0);
    // Taken in part: the rest is the task's to write, the tick is done.
    let f = feed();
    let (_c, lane, wakes) = parked(&f, Fake::with_room(3));
    f.tick();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    let rest: Vec<u8> = lane.take_rest().iter().flat_map(|b| b.to_vec()).collect();
    assert_eq!(rest, &f.keepalive[3..]);
    assert_eq!(lane.resume().quiet.ticks, 1);
}

#[test]
fn a_keepalive_reaches_a_parked_socket_framed_by_its_transport() {
    let f = feed();
    let (sink, mut peer) = socket_pair();
    let _parked = parked(&f, sink);
    f.tick();
    assert_eq!(read_now(&mut peer), format!("<{}>", keepalive(&f)));
}

#[test]
fn a_socket_that_fails_the_feeds_write_hands_its_error_to_the_transport() {
    let f = feed();
    let (sink, peer) = socket_pair();
    let (_c, lane, wakes) = parked(&f, sink);
    drop(peer);
    publish(&f, &["added"]);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task is woken");
    // The socket says why only once, and it said it to the feed.
    assert_eq!(lane.take_failure(), Some(std::io::ErrorKind::BrokenPipe));
    assert_eq!(lane.take_failure(), None);
    assert!(lane.resume().moved.is_none(), "nothing was written");
}
