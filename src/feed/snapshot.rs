//! One version of a feed's item list as subscribers are sent it: encoded
//! lazily, once, for all of them, and how much of it a subscriber that
//! already holds some entries of an `append_each` array may skip.
//!
//! It must never decide when a subscriber gets a snapshot (that is the
//! feed's cursor) nor write ids (that is `sse::stream`).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::contract::{Opening, Render};
use super::extract::ItemList;

/// One version of the item list, encoded lazily and at most once.
pub struct Snapshot {
    pub list: Arc<ItemList>,
    render: Arc<Render>,
    /// The entries of the `append` array a client holds once it has this
    /// snapshot (`append_each` feeds; see [`super::id`]).
    pub held: Option<u64>,
    encoded: OnceLock<Opening>,
}

/// How many entries of the `append` array a snapshot may leave out for a
/// client that holds `client` of them, when it has `now`: all it holds, or
/// none (everything, as for a new client) when the client's count is unknown
/// (an id of an older version) or beyond the array (it shrank or was
/// rewritten: what the client holds cannot be trusted).
pub(super) fn skip(client: Option<u64>, now: Option<u64>) -> usize {
    match (client, now) {
        (Some(c), Some(n)) if c <= n => usize::try_from(c).unwrap_or(0),
        _ => 0,
    }
}

impl Snapshot {
    pub(super) fn new(list: Arc<ItemList>, render: &Arc<Render>) -> Self {
        Self {
            held: render.held(&list),
            list,
            render: render.clone(),
            encoded: OnceLock::new(),
        }
    }

    /// The encoded snapshot as `(head, tail)`, built by the first subscriber
    /// that needs it; the `id:` line goes between the two (on the last event).
    pub fn encoded(&self) -> (Bytes, Bytes) {
        let (head, _, tail) = self.encoded_from(0);
        (head, tail)
    }

    /// The encoded snapshot for a client that holds the first `skip` entries
    /// of the `append` array: `(head, middle, tail)`, the `id:` line between
    /// `middle` and `tail` (see [`Opening::parts`]).
    pub fn encoded_from(&self, skip: usize) -> (Bytes, Bytes, Bytes) {
        self.encoded
            .get_or_init(|| self.render.snapshot_events(&self.list))
            .parts(skip)
    }
}
