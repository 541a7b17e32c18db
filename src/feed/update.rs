//! One good poll made ready to publish: the body parsed into items, diffed
//! against the previous list, each change rendered and (at publish) encoded
//! once with its id.
//!
//! This module owns turning a body into an [`Update`] and handing it to the
//! feed. It never touches the network and never changes anything when the
//! body is bad: an error leaves the previous list in place.

use std::sync::Arc;

use bytes::Bytes;

use super::contract::{self, Appended, Events, Poll, Render};
use super::diff::diff;
use super::extract::{extract, ExtractError, ItemList, Skipped};
use super::id::with_held;
use super::object::{appended_entries, extract_object};
use super::Feed;
use crate::budget::retained;
use crate::config::FeedConfig;
use crate::metrics::Metrics;
use crate::trace::TARGET;
use crate::wire as encode;

/// A good poll, ready to publish.
pub struct Update {
    body: Bytes,
    list: Arc<ItemList>,
    first: bool,
    /// `(event name, data)` per change, in order.
    changes: Events,
    /// Per change, the entries of the `append` array a client holds once it
    /// has it (`append_each` feeds; see `feed::id`).
    held: Vec<Option<u64>>,
    /// Items extraction skipped (no usable id, or a repeated one).
    pub skipped: Skipped,
    /// The terminal event, when this poll reached a terminal state.
    terminal: Option<Bytes>,
}

/// Parse and diff a body against the previous one: the whole of poll
/// processing short of publishing. `Ok(None)`: the body is byte-identical to
/// the last one. An error leaves everything untouched.
pub fn prepare(
    def: &FeedConfig,
    render: &Render,
    prev: Option<&(Bytes, Arc<ItemList>)>,
    body: Bytes,
) -> Result<Option<Update>, ExtractError> {
    if prev.is_some_and(|(b, _)| *b == body) {
        return Ok(None);
    }
    let extracting =
        tracing::info_span!(target: TARGET, "extract", body_bytes = body.len()).entered();
    let (list, skipped) = if def.object {
        (
            extract_object(body.clone(), &def.items, &def.id)?,
            Skipped::default(),
        )
    } else {
        extract(body.clone(), &def.items, &def.id)?
    };
    drop(extracting);
    let _diffing = tracing::info_span!(target: TARGET, "diff", items = list.items.len()).entered();
    let (changes, held) = match prev {
        None => (Vec::new(), Vec::new()),
        Some((_, old)) => {
            // Entries appended to the object's array are told as `appended`
            // alone; the array then does not make the object `updated`.
            let appended = match (&def.append, old.items.first(), list.items.first()) {
                (Some(at), Some(a), Some(b)) => {
                    appended_entries(a, b, at).map(|(first, entries)| Appended {
                        item: b,
                        first,
                        entries,
                    })
                }
                _ => None,
            };
            let mut ignore = def.ignore.clone();
            if let (Some(at), Some(_)) = (&def.append, &appended) {
                ignore.push(at.clone());
            }
            let ts = contract::now();
            render.changes_held(&Poll {
                old,
                new: &list,
                changes: &diff(old, &list, &ignore),
                appended,
                ignore: &def.ignore,
                timestamp: &ts,
            })
        }
    };
    let terminal = render.terminal(&list);
    Ok(Some(Update {
        body,
        list: Arc::new(list),
        first: prev.is_none(),
        changes,
        held,
        skipped,
        terminal,
    }))
}

impl Update {
    /// What keeping this update costs the memory budget.
    pub fn retained(&self) -> u64 {
        retained(self.body.len(), self.list.items.len())
    }

    /// The size of the body this update keeps.
    pub(crate) fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Whether this is the feed's first good poll (it publishes a snapshot).
    pub(crate) fn is_first(&self) -> bool {
        self.first
    }

    /// The terminal event, when this poll reached a terminal state.
    pub fn terminal(&self) -> Option<&Bytes> {
        self.terminal.as_ref()
    }

    /// How many events this update publishes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Encode each event once, with the id `id(seq)` for consecutive seqs
    /// from `first_seq`, followed by the event's held count where it has one
    /// (`feed::id`).
    pub fn encode(&self, first_seq: u64, id: impl Fn(u64) -> String) -> Vec<(u64, Bytes)> {
        self.changes
            .iter()
            .zip(first_seq..)
            .enumerate()
            .map(|(n, ((name, data), seq))| {
                let id = with_held(id(seq), self.held.get(n).copied().flatten());
                (seq, encode::event(&id, name, data))
            })
            .collect()
    }

    /// Encode each event once, with the ids `id(seq)` of consecutive seqs
    /// from `first_seq`: nothing when the content did not change, the whole
    /// snapshot again as one entry for `resend` contracts.
    pub(crate) fn events(
        &self,
        render: &Render,
        first_seq: u64,
        id: impl Fn(u64) -> String,
    ) -> Vec<(u64, Bytes)> {
        if self.first || self.changes.is_empty() {
            Vec::new()
        } else if render.contract.resend {
            // The whole snapshot again, as one history entry with the id on
            // its last event (as for a subscriber's first snapshot).
            let (head, tail) = render.snapshot(&self.list);
            let id = encode::id_line(&with_held(id(first_seq), render.held(&self.list)));
            let mut b = Vec::with_capacity(head.len() + id.len() + tail.len());
            for part in [&head, &id, &tail] {
                b.extend_from_slice(part);
            }
            vec![(first_seq, Bytes::from(b))]
        } else {
            self.encode(first_seq, id)
        }
    }

    /// Count this update's events in the metrics.
    pub(crate) fn count(&self, def: &str, metrics: &Metrics) {
        for (name, _) in &self.changes {
            metrics.events(def, name, 1);
        }
    }

    /// The body and the list this update leaves in force.
    pub(crate) fn into_parts(self) -> (Bytes, Arc<ItemList>) {
        (self.body, self.list)
    }

    /// Encode each event once, with its id, and hand everything to the feed.
    pub(crate) fn publish(self, feed: &Feed, metrics: &Metrics) -> (Bytes, Arc<ItemList>) {
        let _publishing =
            tracing::info_span!(target: TARGET, "publish", events = self.changes.len()).entered();
        self.count(&feed.def.name, metrics);
        if !self.first && self.changes.is_empty() {
            feed.replace_list(self.list.clone());
        } else {
            let events = self.events(&feed.render, feed.next_seq(), |seq| feed.id(seq));
            feed.publish(self.list.clone(), events, self.first);
        }
        (self.body, self.list)
    }
}
