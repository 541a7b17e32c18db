//! The events of one poll: each change in the contract's names and shapes,
//! the transitions it made, the entries appended to an object feed's array,
//! and the one event that gathers the poll (`batch`).
//!
//! Rendered once per poll by the poller, never per subscriber. This module
//! must never decide what changed (that is `diff`) nor frame ids.

use std::collections::BTreeSet;

use super::{id_of, text_at, Events, Render};
use crate::feed::diff::{Change, Patch};
use crate::feed::extract::{Item, ItemList};
use crate::feed::object::{entries as entries_of, push_array};
use crate::pointer::Pointer;
use crate::template::Slot;

/// Entries appended to an object feed's array in one poll.
pub struct Appended<'a> {
    /// The object as it is now.
    pub item: &'a Item,
    /// The index of the first new entry in the array.
    pub first: usize,
    /// Each new entry's raw JSON, in order.
    pub entries: Vec<&'a [u8]>,
}

/// One poll as the contract sees it.
pub struct Poll<'a> {
    pub old: &'a ItemList,
    pub new: &'a ItemList,
    pub changes: &'a [Change<'a>],
    pub appended: Option<Appended<'a>>,
    pub ignore: &'a [Pointer],
    pub timestamp: &'a str,
}

/// Where `item` (an element of `list`) sits in it, and the id before it.
fn place<'a>(list: &'a ItemList, item: &Item) -> (Option<usize>, Option<&'a [u8]>) {
    let size = std::mem::size_of::<Item>().max(1);
    let start = list.items.as_ptr() as usize;
    let at = (item as *const Item as usize).wrapping_sub(start) / size;
    match list.items.get(at) {
        Some(i) if std::ptr::eq(i, item) => {
            let after = at
                .checked_sub(1)
                .and_then(|p| list.items.get(p))
                .and_then(id_of);
            (Some(at), after)
        }
        _ => (None, None),
    }
}

impl Render {
    /// Events for the changes of one poll, in order: each change's own event
    /// followed by the transitions it made; then appended entries of an
    /// object feed; then the terminal event of a feed whose streams stay
    /// open, when this poll reached it; then the poll's `batch`. Kinds that
    /// are not sent are left out.
    pub fn changes(&self, p: &Poll<'_>) -> Events {
        self.changes_held(p).0
    }

    /// [`Self::changes`], each event with the number of entries of the
    /// `append` array a client holds once it has that event (`append_each`
    /// feeds only, else `None`): the old length before the appended entries,
    /// one more with each of them, the new length after them. Without
    /// appended entries (the array unchanged or rewritten) every event holds
    /// the new length.
    pub fn changes_held(&self, p: &Poll<'_>) -> (Events, Vec<Option<u64>>) {
        let c = &self.contract;
        let mut out: Events = Vec::with_capacity(p.changes.len());
        let mut gathered: Vec<&Item> = Vec::new();
        for change in p.changes {
            let (kind, item, n) = match change {
                Change::Added(i) => (&c.added, *i, 0),
                Change::Updated { item, .. } => (&c.updated, *item, 1),
                Change::Removed(i) => (&c.removed, *i, 2),
            };
            if c.batch_of[n] {
                gathered.push(item);
            }
            let (index, after) = match change {
                Change::Removed(_) => (None, None),
                _ => place(p.new, item),
            };
            if let Some(kind) = kind {
                let mut ctx = self.ctx(p.timestamp);
                ctx.item = Some(&item.raw);
                ctx.id = id_of(item);
                ctx.index = index;
                ctx.after = after;
                let (patch, fields);
                if let Change::Updated { patch: pt, .. } = change {
                    if kind.data.uses(Slot::Patch) {
                        patch = pt.encode(&item.raw);
                        ctx.patch = Some(&patch);
                    }
                    if kind.data.uses(Slot::Changes) {
                        fields = match pt {
                            Patch::Ops(pt) => changed_fields(pt, p.ignore),
                            Patch::Replace { fields } => names_json(
                                fields
                                    .iter()
                                    .filter(|f| !ignored_whole(f, p.ignore))
                                    .cloned(),
                            ),
                        };
                        ctx.changes = Some(&fields);
                    }
                }
                out.push((kind.name.clone(), kind.data.render(&ctx)));
            }
            if matches!(change, Change::Removed(_)) {
                continue;
            }
            for t in &c.transitions {
                let now = text_at(&item.raw, &t.field);
                if now.as_deref() != Some(t.to.as_str()) {
                    continue;
                }
                // An added item that already holds the value reached it
                // between two polls; an updated one must not have held it.
                let before = p
                    .old
                    .get(item.key())
                    .and_then(|o| text_at(&o.raw, &t.field));
                if before.as_deref() == Some(t.to.as_str()) {
                    continue;
                }
                let mut ctx = self.ctx(p.timestamp);
                ctx.item = Some(&item.raw);
                ctx.id = id_of(item);
                ctx.index = index;
                ctx.after = after;
                out.push((t.kind.name.clone(), t.kind.data.render(&ctx)));
            }
        }
        let appended_from = out.len();
        if let (Some(kind), Some(a)) = (&c.appended, &p.appended) {
            let joined;
            let each: Vec<(usize, &[u8])> = if c.append_each {
                a.entries.iter().enumerate().map(|(n, e)| (n, *e)).collect()
            } else {
                let mut array = Vec::new();
                push_array(&mut array, a.entries.iter().copied());
                joined = array;
                vec![(usize::MAX, &joined[..])]
            };
            for (n, entry) in each {
                let mut ctx = self.ctx(p.timestamp);
                ctx.item = Some(&a.item.raw);
                ctx.id = id_of(a.item);
                let one;
                if n == usize::MAX {
                    ctx.new = Some(entry);
                    ctx.index = Some(a.first);
                } else {
                    one = [b"[", entry, b"]"].concat();
                    ctx.new = Some(&one);
                    ctx.entry = Some(entry);
                    ctx.index = Some(a.first + n);
                }
                out.push((kind.name.clone(), kind.data.render(&ctx)));
            }
        }
        let appended_to = out.len();
        if !c.terminal_close {
            if let Some(item) = p.new.items.first() {
                let was = p.old.items.first().and_then(|o| self.terminal_kind(o));
                if let (Some(kind), None) = (self.terminal_kind(item), was) {
                    let mut ctx = self.ctx(p.timestamp);
                    ctx.item = Some(&item.raw);
                    ctx.id = id_of(item);
                    out.push((kind.name.clone(), kind.data.render(&ctx)));
                }
            }
        }
        if let (Some(kind), false) = (&c.batch, gathered.is_empty()) {
            let mut ids = b"[".to_vec();
            for (n, i) in gathered.iter().enumerate() {
                if n > 0 {
                    ids.push(b',');
                }
                ids.extend_from_slice(id_of(i).unwrap_or(b"null"));
            }
            ids.push(b']');
            let mut ctx = self.ctx(p.timestamp);
            ctx.gathered = Some(&gathered);
            ctx.ids = Some(&ids);
            ctx.count = Some(gathered.len());
            out.push((kind.name.clone(), kind.data.render(&ctx)));
        }
        let mut held = self.held_by(p, out.len(), appended_from..appended_to);
        if c.coalesce {
            let mut seen = std::collections::HashSet::new();
            let keep: Vec<bool> = out.iter().map(|e| seen.insert(e.clone())).collect();
            let mut k = keep.iter();
            out.retain(|_| k.next().copied().unwrap_or(true));
            let mut k = keep.iter();
            held.retain(|_| k.next().copied().unwrap_or(true));
        }
        (out, held)
    }

    /// The held count of each of `n` events of a poll whose appended entry
    /// events (one per entry with `append_each`) are `entries`.
    fn held_by(&self, p: &Poll<'_>, n: usize, entries: std::ops::Range<usize>) -> Vec<Option<u64>> {
        let c = &self.contract;
        let (true, Some(at)) = (c.append_each, &c.append) else {
            return vec![None; n];
        };
        let (before, after) = match &p.appended {
            Some(a) if !entries.is_empty() => (a.first, a.first + a.entries.len()),
            _ => {
                let now = p
                    .new
                    .items
                    .first()
                    .map_or(0, |item| entries_of(item, at).len());
                (now, now)
            }
        };
        (0..n)
            .map(|i| {
                let held = if i < entries.start {
                    before
                } else if i < entries.end {
                    before + (i - entries.start) + 1
                } else {
                    after
                };
                Some(held as u64)
            })
            .collect()
    }
}

/// The top-level fields an RFC 6902 patch touches, as a sorted JSON array of
/// names, leaving out fields whose changes are ignored as a whole.
pub(super) fn changed_fields(patch: &json_patch::Patch, ignore: &[Pointer]) -> Vec<u8> {
    let mut names = BTreeSet::new();
    for op in &patch.0 {
        let path = match op {
            json_patch::PatchOperation::Add(o) => &o.path,
            json_patch::PatchOperation::Remove(o) => &o.path,
            json_patch::PatchOperation::Replace(o) => &o.path,
            json_patch::PatchOperation::Move(o) => &o.path,
            json_patch::PatchOperation::Copy(o) => &o.path,
            json_patch::PatchOperation::Test(o) => &o.path,
        };
        let text = path.to_string();
        let Ok(p) = Pointer::parse(&text) else {
            continue;
        };
        if let Some(first) = p.tokens().first() {
            if !ignored_whole(first, ignore) {
                names.insert(first.clone());
            }
        }
    }
    names_json(names)
}

/// Whether changes of top-level field `name` are ignored as a whole.
fn ignored_whole(name: &str, ignore: &[Pointer]) -> bool {
    ignore
        .iter()
        .any(|i| i.tokens().len() == 1 && i.tokens()[0] == name)
}

/// Field names as a sorted JSON array.
fn names_json(names: impl IntoIterator<Item = String>) -> Vec<u8> {
    let names: BTreeSet<String> = names.into_iter().collect();
    serde_json::to_vec(&names).unwrap_or_else(|_| b"[]".to_vec())
}
