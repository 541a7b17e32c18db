//! The id grammar of one feed's position: `<epoch>:<seq>`, and for a feed
//! that sends each entry of a growing array as its own event
//! (`events.append_each`) `<epoch>:<seq>.<held>`, where `held` is how many
//! entries of that array the client holds once it has that event.
//!
//! This module owns writing and reading that text (and finding the held count
//! in an event encoded with its id). It must never decide what a position
//! means for a feed (that is the feed's cursor) nor join the positions of
//! several feeds (that is `sse::stream`). The count rides in the id because
//! the id is the only thing EventSource sends back: after a restart (a new
//! epoch) or a resume older than the history, `seq` says nothing any more,
//! but `held` still says which entries the client already has.

/// One feed's id at `seq`, with the held count when the feed keeps one.
pub fn format(epoch: &str, seq: u64, held: Option<u64>) -> String {
    with_held(format!("{epoch}:{seq}"), held)
}

/// An id `<epoch>:<seq>` (made by whoever numbers the feed: this process or
/// the cluster) with the held count after it, when there is one.
pub fn with_held(id: String, held: Option<u64>) -> String {
    match held {
        Some(n) => format!("{id}.{n}"),
        None => id,
    }
}

/// A position read back from a client's id: epoch, seq and the held count
/// (`None` for ids without one: other feeds, or ids of older versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub epoch: String,
    pub seq: u64,
    pub held: Option<u64>,
}

/// Read one feed's id; `None` when it is not one (the client gets a snapshot).
pub fn parse(id: &str) -> Option<Parsed> {
    let (epoch, rest) = id.split_once(':')?;
    let (seq, held) = match rest.split_once('.') {
        Some((seq, held)) => (seq, Some(digits(held)?)),
        None => (rest, None),
    };
    Some(Parsed {
        epoch: epoch.to_owned(),
        seq: seq.parse().ok()?,
        held,
    })
}

/// Plain decimal digits only (`u64::from_str` would also take a `+`): the
/// count is new, so nothing but what pollcast writes is read as one.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The held count in the `id:` line of one encoded event (history entries are
/// encoded with their ids, also by other replicas of a cluster): `None` when
/// the id carries none.
pub fn held_in(event: &[u8]) -> Option<u64> {
    let start = (0..event.len())
        .find(|&p| (p == 0 || event[p - 1] == b'\n') && event[p..].starts_with(b"id: "))?
        + 4;
    let len = event[start..].iter().position(|&c| c == b'\n')?;
    let id = std::str::from_utf8(&event[start..start + len]).ok()?;
    parse(id)?.held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_and_without_a_held_count_round_trip() {
        assert_eq!(format("a1", 7, None), "a1:7");
        assert_eq!(format("a1", 7, Some(12)), "a1:7.12");
        let p = |epoch: &str, seq, held| {
            Some(Parsed {
                epoch: epoch.into(),
                seq,
                held,
            })
        };
        assert_eq!(parse("a1:7"), p("a1", 7, None));
        assert_eq!(parse("a1:7.12"), p("a1", 7, Some(12)));
        assert_eq!(parse("a1:7.0"), p("a1", 7, Some(0)));
        for bad in [
            "a1", "a1:", "a1:x", "a1:7.", "a1:7.x", "a1:7.+1", "a1:7.-1", "a1:7:end",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_held_count_is_read_from_an_encoded_events_id_line() {
        let e = crate::wire::event("a1:3.5", "transaction", b"{\"id: 9\":1}");
        assert_eq!(held_in(&e), Some(5));
        let e = crate::wire::event("a1:3", "transaction", b"{}");
        assert_eq!(held_in(&e), None);
        // A resent snapshot carries its id before its last event.
        let mut b = crate::wire::body("progress", b"{}").to_vec();
        b.extend_from_slice(&crate::wire::event("a1:4.2", "transaction", b"[1]"));
        assert_eq!(held_in(&b), Some(2));
        assert_eq!(held_in(b"data: {}\n\n"), None);
    }
}
