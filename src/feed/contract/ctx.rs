//! The values of one rendering, as the template sees them: raw JSON per
//! placeholder, spliced in without building values.

use super::super::extract::Item;
use super::super::object::{find_raw, push_array};
use crate::pointer::Pointer;
use crate::template::{Slot, Vars};

/// The values available to one rendering.
#[derive(Default)]
pub(super) struct Ctx<'a> {
    pub(super) feed: &'a str,
    pub(super) params: &'a [String],
    pub(super) timestamp: &'a str,
    pub(super) items: Option<&'a [Item]>,
    pub(super) chunk: Option<&'a [Item]>,
    pub(super) item: Option<&'a [u8]>,
    pub(super) id: Option<&'a [u8]>,
    pub(super) patch: Option<&'a [u8]>,
    pub(super) changes: Option<&'a [u8]>,
    pub(super) new: Option<&'a [u8]>,
    pub(super) total: Option<usize>,
    pub(super) sent: Option<usize>,
    pub(super) reason: Option<&'a str>,
    pub(super) failures: Option<u32>,
    pub(super) since: Option<&'a str>,
    pub(super) stale_since: Option<&'a str>,
    /// `{{items}}` of a batch: the items it gathers.
    pub(super) gathered: Option<&'a [&'a Item]>,
    pub(super) ids: Option<&'a [u8]>,
    pub(super) count: Option<usize>,
    pub(super) index: Option<usize>,
    pub(super) after: Option<&'a [u8]>,
    pub(super) entry: Option<&'a [u8]>,
}

impl Vars for Ctx<'_> {
    fn write(&self, slot: Slot, out: &mut Vec<u8>) -> bool {
        let bytes =
            |out: &mut Vec<u8>, b: Option<&[u8]>| b.map(|b| out.extend_from_slice(b)).is_some();
        let number = |out: &mut Vec<u8>, n: Option<u64>| {
            n.map(|n| out.extend_from_slice(n.to_string().as_bytes()))
                .is_some()
        };
        let items = |out: &mut Vec<u8>, l: Option<&[Item]>| {
            l.map(|l| push_array(out, l.iter().map(|i| &i.raw[..])))
                .is_some()
        };
        match slot {
            Slot::Items if self.gathered.is_some() => {
                let l = self.gathered.unwrap_or_default();
                push_array(out, l.iter().map(|i| &i.raw[..]));
                true
            }
            Slot::Ids => bytes(out, self.ids),
            Slot::Count => number(out, self.count.map(|n| n as u64)),
            Slot::Index => number(out, self.index.map(|n| n as u64)),
            Slot::After => bytes(out, self.after),
            Slot::Entry => bytes(out, self.entry),
            Slot::Field(_) => false,
            Slot::Items => items(out, self.items),
            Slot::Chunk => items(out, self.chunk),
            Slot::Item => bytes(out, self.item),
            Slot::Id => bytes(out, self.id),
            Slot::Patch => bytes(out, self.patch),
            Slot::Changes => bytes(out, self.changes),
            Slot::New => bytes(out, self.new),
            Slot::Total => number(out, self.total.map(|n| n as u64)),
            Slot::Sent => number(out, self.sent.map(|n| n as u64)),
            Slot::Failures => number(out, self.failures.map(u64::from)),
            Slot::Timestamp => bytes(out, Some(self.timestamp.as_bytes())),
            Slot::Feed => bytes(out, Some(self.feed.as_bytes())),
            Slot::Reason => bytes(out, self.reason.map(str::as_bytes)),
            Slot::Since => bytes(out, self.since.map(str::as_bytes)),
            Slot::StaleSince => bytes(out, self.stale_since.map(str::as_bytes)),
            Slot::Path(i) => bytes(out, self.params.get(i).map(|s| s.as_bytes())),
        }
    }

    fn field(&self, at: &Pointer, out: &mut Vec<u8>) -> bool {
        let Some(raw) = self.item.and_then(|i| find_raw(i, at)) else {
            return false;
        };
        out.extend_from_slice(raw);
        true
    }
}
