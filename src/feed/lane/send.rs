//! The write of one fan-out to one parked sink: the bytes framed once for
//! every socket of a kind, one non-blocking vectored write per socket, and
//! what the socket did not take kept, in order, for its subscriber's task.
//!
//! Owns no state of its own: the lane's lock, held by the caller, is what
//! makes the write safe. Never blocks and never retries: a socket that
//! would block is its subscriber's task's business.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, RawFd};
use std::rc::Rc;

use bytes::Bytes;

use super::{Framer, LaneState, Offered};

/// Whole SSE events one fan-out writes (new events, or a keepalive), and
/// the same events as the last framer asked for framed them.
pub(in crate::feed) struct Framing<'a> {
    events: &'a [Bytes],
    cache: RefCell<Option<Framed>>,
}

/// A fan-out's events framed by one framer (empty frames left out).
struct Framed {
    by: &'static Framer,
    frames: Rc<[Bytes]>,
}

impl<'a> Framing<'a> {
    pub(in crate::feed) fn new(events: &'a [Bytes]) -> Self {
        Self {
            events,
            cache: RefCell::new(None),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// The events framed by `framer`: framed once for every socket of its
    /// kind (in practice there is one kind, and it is framed once).
    fn framed(&self, framer: &'static Framer) -> Rc<[Bytes]> {
        let mut cache = self.cache.borrow_mut();
        match &*cache {
            Some(f) if std::ptr::eq(f.by, framer) => f.frames.clone(),
            _ => {
                let frames: Rc<[Bytes]> = self
                    .events
                    .iter()
                    .map(framer.frame)
                    .filter(|f| !f.is_empty())
                    .collect();
                *cache = Some(Framed {
                    by: framer,
                    frames: frames.clone(),
                });
                frames
            }
        }
    }
}

/// Write `events` to the lane's sink as far as it takes them now. The
/// caller holds the lane's lock.
pub(super) fn offer(lane: &mut LaneState, events: &Framing<'_>) -> Offered {
    match (lane.socket, &lane.sink) {
        (Some((fd, framer)), Some(_)) => match send(fd, events.framed(framer), &mut lane.rest) {
            Ok(offered) => offered,
            Err(e) => {
                // The socket reports its error once: kept for the
                // transport, which ends the connection with it (a write
                // timeout must be counted as one).
                lane.failed = Some(e.kind());
                Offered::Nothing
            }
        },
        (None, Some(sink)) => sink.offer(events.events, &mut lane.rest),
        (_, None) => Offered::Nothing,
    }
}

/// Frames per vectored write (the kernel's limit is 1,024 slices).
const FRAMES_PER_WRITE: usize = 64;

/// Write `frames` to the socket `fd` as far as it takes them now, without
/// blocking; the bytes it did not take go to `rest`, in order. An error
/// other than a full socket before anything was written is the socket's.
fn send(fd: RawFd, frames: Rc<[Bytes]>, rest: &mut VecDeque<Bytes>) -> io::Result<Offered> {
    // SAFETY: `fd` is the descriptor of the socket the lane's sink owns; the
    // caller holds the lane's lock, under which the sink and `fd` are only
    // ever cleared together, so the descriptor is open (and not reused)
    // for the whole of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&fd);
    let mut wrote = false;
    for (g, group) in frames.chunks(FRAMES_PER_WRITE).enumerate() {
        let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE];
        for (slot, frame) in slices.iter_mut().zip(group) {
            *slot = IoSlice::new(frame);
        }
        let total: usize = group.iter().map(Bytes::len).sum();
        let n = match socket.send_vectored(&slices[..group.len()]) {
            Ok(n) => n,
            Err(e) if !wrote && e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            // Full (or failed after a part: the next write finds out).
            Err(_) => 0,
        };
        if n == total {
            wrote = true;
            continue;
        }
        if n == 0 && !wrote {
            return Ok(Offered::Nothing);
        }
        keep(&frames[g * FRAMES_PER_WRITE..], n, rest);
        return Ok(Offered::Part);
    }
    Ok(Offered::All)
}

/// The bytes of `frames` after the first `written`, into `rest` (as
/// zero-copy slices).
pub(super) fn keep(frames: &[Bytes], mut written: usize, rest: &mut VecDeque<Bytes>) {
    for frame in frames {
        if written >= frame.len() {
            written -= frame.len();
            continue;
        }
        rest.push_back(frame.slice(written..));
        written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_a_partial_write_is_the_frames_after_it() {
        let frames = [
            Bytes::from_static(b"<data: a>"),
            Bytes::from_static(b""),
            Bytes::from_static(b"<data: bc>"),
        ];
        let whole = b"<data: a><data: bc>";
        for written in 0..whole.len() {
            let mut rest = VecDeque::new();
            keep(&frames, written, &mut rest);
            let got: Vec<u8> = rest.iter().flat_map(|b| b.to_vec()).collect();
            assert_eq!(got, &whole[written..], "after {written} bytes");
        }
    }
}
