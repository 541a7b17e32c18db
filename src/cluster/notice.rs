//! The leader's announcement of a write, carrying the write itself: a
//! follower whose local state is exactly the one the write started from
//! applies it from the message, without reading Redis.
//!
//! The `publish` script sends `<hash> <rev> <tail>` on the events channel,
//! where the tail (made here by the leader) holds the epoch, the sequence
//! the write started from, the new sequence, the body, the terminal
//! event and the events, each as `<len>:<bytes>`. A tail is left empty when
//! the write is large or starts a new epoch; a status write sends the hash
//! alone. Either way a follower reads the state then, as it does on any gap,
//! so this module only makes the common case cheaper: it never decides what
//! a follower applies. It never touches Redis or a feed.

use bytes::Bytes;

/// The most a tail carries (body and events together); a larger write is
/// announced without it.
const MAX_TAIL: usize = 64 * 1024;

/// A write as announced, ready to apply on top of `(epoch, from, rev - 1)`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Notice {
    pub rev: u64,
    pub epoch: String,
    /// The sequence the write started from.
    pub from: u64,
    pub seq: u64,
    pub body: Bytes,
    pub end: Bytes,
    pub events: Vec<(u64, Bytes)>,
}

/// A write to announce, as the leader holds it.
pub(super) struct Tail<'a> {
    pub epoch: &'a str,
    pub from: u64,
    pub seq: u64,
    pub body: &'a [u8],
    pub end: &'a [u8],
    pub events: &'a [(u64, Bytes)],
}

/// The tail of a write's announcement; empty when it would be too large.
pub(super) fn encode(t: &Tail<'_>) -> Vec<u8> {
    let size = t.body.len() + t.events.iter().map(|(_, e)| e.len() + 24).sum::<usize>();
    if size > MAX_TAIL {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(size + 128);
    let mut field = |b: &[u8]| {
        out.extend_from_slice(b.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(b);
    };
    field(t.epoch.as_bytes());
    field(t.from.to_string().as_bytes());
    field(t.seq.to_string().as_bytes());
    field(t.body);
    field(t.end);
    for (s, e) in t.events {
        field(s.to_string().as_bytes());
        field(e);
    }
    out
}

/// Split a message into the feed's hash and the write it carries, if any.
/// Anything malformed carries nothing (the follower reads instead).
pub(super) fn decode(payload: &[u8]) -> Option<(&str, Option<Notice>)> {
    let (hash, rest) = match payload.iter().position(|b| *b == b' ') {
        Some(i) => (&payload[..i], Some(&payload[i + 1..])),
        None => (payload, None),
    };
    let hash = std::str::from_utf8(hash).ok()?;
    Some((hash, rest.and_then(notice)))
}

fn notice(rest: &[u8]) -> Option<Notice> {
    let sp = rest.iter().position(|b| *b == b' ')?;
    let rev = number(&rest[..sp])?;
    let mut r = Reader(&rest[sp + 1..]);
    if r.0.is_empty() {
        return None;
    }
    let epoch = String::from_utf8(r.field()?.to_vec()).ok()?;
    let from = number(r.field()?)?;
    let seq = number(r.field()?)?;
    let body = Bytes::copy_from_slice(r.field()?);
    let end = Bytes::copy_from_slice(r.field()?);
    let mut events = Vec::new();
    while !r.0.is_empty() {
        let s = number(r.field()?)?;
        events.push((s, Bytes::copy_from_slice(r.field()?)));
    }
    Some(Notice {
        rev,
        epoch,
        from,
        seq,
        body,
        end,
        events,
    })
}

fn number(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn field(&mut self) -> Option<&'a [u8]> {
        let colon = self.0.iter().position(|b| *b == b':')?;
        let len: usize = std::str::from_utf8(&self.0[..colon]).ok()?.parse().ok()?;
        let start = colon + 1;
        let end = start.checked_add(len)?;
        let f = self.0.get(start..end)?;
        self.0 = &self.0[end..];
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_round_trips_through_the_scripts_message() {
        let events = vec![(5, Bytes::from_static(b"id: e:5\ndata: {\"a\":1}\n\n"))];
        let tail = encode(&Tail {
            epoch: "e1",
            from: 4,
            seq: 5,
            body: b"[{\"id\":1}]",
            end: b"",
            events: &events,
        });
        // What the script sends: hash, rev, then the tail.
        let mut msg = b"abc 7 ".to_vec();
        msg.extend_from_slice(&tail);
        let (hash, n) = decode(&msg).unwrap();
        assert_eq!(hash, "abc");
        let n = n.unwrap();
        assert_eq!((n.rev, n.epoch.as_str(), n.from, n.seq), (7, "e1", 4, 5));
        assert_eq!(&n.body[..], b"[{\"id\":1}]");
        assert_eq!(n.events, events);
    }

    #[test]
    fn a_bare_or_empty_or_broken_message_carries_no_write() {
        assert_eq!(decode(b"abc").unwrap(), ("abc", None));
        assert_eq!(decode(b"abc 7 ").unwrap(), ("abc", None));
        assert_eq!(decode(b"abc 7 9:short").unwrap(), ("abc", None));
        let big = vec![b'x'; MAX_TAIL + 1];
        let t = Tail {
            epoch: "e",
            from: 0,
            seq: 1,
            body: &big,
            end: b"",
            events: &[],
        };
        assert!(encode(&t).is_empty());
    }
}
