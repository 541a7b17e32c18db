//! The event contract: which event names pollcast sends and what JSON each
//! carries, per feed, from `[feeds.events]` (and `terminal`) in the config.
//!
//! This module owns the mapping from a change (or a snapshot, a feed status, a
//! terminal state) to an event name and a JSON data document. The default
//! contract is a set of built-in templates that render exactly the historical
//! payloads. It must never frame SSE ids (that is `sse::encode` and the feed)
//! and never decide what changed (that is `diff`). Raw item bytes are spliced
//! in as they are: they are valid compact JSON already, so no per-item
//! serialisation happens. Everything here is rendered once per change by the
//! poller (or once per feed for `connect`/`keepalive`), never per subscriber.

use std::time::SystemTime;

use bytes::Bytes;

use super::extract::{Item, ItemList};
use super::object::text_at;
use crate::config::{EventSpec, FeedConfig};
use crate::pointer::Pointer;
use crate::route::Pattern;
use crate::template::{Scope, Slot, Template};
use crate::wire as encode;

/// The default contract's event names.
pub(crate) const SNAPSHOT: &str = "snapshot";
pub(crate) const ADDED: &str = "added";
pub(crate) const UPDATED: &str = "updated";
pub(crate) const REMOVED: &str = "removed";
pub(crate) const STALE: &str = "stale";
pub(crate) const RECOVERED: &str = "recovered";

/// One configured event kind: its SSE name (`""` = unnamed) and data template.
#[derive(Debug, Clone)]
pub struct Kind {
    pub name: String,
    pub data: Template,
}

/// A feed definition's compiled contract. `None` = that kind is not sent.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    pub connect: Option<Kind>,
    pub snapshot: Option<Kind>,
    pub added: Option<Kind>,
    pub updated: Option<Kind>,
    pub removed: Option<Kind>,
    pub appended: Option<Kind>,
    /// `None`: keepalives are `:keepalive` comments.
    pub keepalive: Option<Kind>,
    pub stale: Option<Kind>,
    pub recovered: Option<Kind>,
    pub chunk_size: usize,
    pub chunk_start: Option<Kind>,
    pub chunk: Option<Kind>,
    pub chunk_end: Option<Kind>,
    pub terminal: Option<(Pointer, Vec<(String, Kind)>)>,
    /// `terminal.close`: the terminal event ends the streams (default).
    pub terminal_close: bool,
    pub coalesce: bool,
    pub resend: bool,
    /// One event per poll gathering its changes, and which kinds it gathers
    /// (added, updated, removed).
    pub batch: Option<Kind>,
    pub batch_of: [bool; 3],
    /// `[[feeds.transitions]]`: an item's field reaching a value.
    pub transitions: Vec<Transition>,
    /// Object feeds: the appended array, and whether each entry is its own event.
    pub append: Option<Pointer>,
    pub append_each: bool,
}

/// One compiled `[[feeds.transitions]]` entry.
#[derive(Debug, Clone)]
pub struct Transition {
    pub field: Pointer,
    pub to: String,
    pub kind: Kind,
}

const COMMON: &[Slot] = &[Slot::Feed, Slot::Timestamp];

/// Validate a feed's contract (and its object/path settings) for `config::validate`:
/// `Err((key, message))` with the key relative to the feed.
pub fn check(def: &FeedConfig) -> Result<(), (String, String)> {
    Contract::compile(def).map(|_| ())
}

impl Contract {
    /// A contract that sends nothing but comments; only a fallback.
    pub fn silent() -> Self {
        Self {
            terminal_close: true,
            batch_of: [true; 3],
            ..Self::default()
        }
    }

    /// Compile `def`'s contract; errors name the config key.
    pub fn compile(def: &FeedConfig) -> Result<Self, (String, String)> {
        let sse = Pattern::parse(&def.sse_path()).map_err(|m| ("sse".to_owned(), m))?;
        let poll = Pattern::parse(def.poll_path()).map_err(|m| ("poll".to_owned(), m))?;
        let params = sse.params();
        if let Some(p) = poll.params().into_iter().find(|p| !params.contains(p)) {
            return Err((
                "poll".into(),
                format!(
                    "`{{{p}}}` is not a parameter of the SSE path `{}`",
                    def.sse_path()
                ),
            ));
        }
        if !def.object && (def.append.is_some() || def.terminal.is_some()) {
            let key = if def.append.is_some() {
                "append"
            } else {
                "terminal"
            };
            return Err((
                key.into(),
                "only object feeds (`object = true`) have this".into(),
            ));
        }
        let e = &def.events;
        let obj: &[Slot] = if def.object {
            &[Slot::Item, Slot::Id]
        } else {
            &[]
        };
        let build = |key: &str,
                     spec: &Option<EventSpec>,
                     on: bool,
                     name: &str,
                     data: &str,
                     slots: &[&[Slot]]|
         -> Result<Option<Kind>, (String, String)> {
            let slots: Vec<Slot> = slots.iter().flat_map(|s| s.iter().copied()).collect();
            kind(key, spec.as_ref(), on, name, data, &slots, &params)
        };
        let item: &[Slot] = &[Slot::Item, Slot::Id];
        // Where an added or updated item sits in the new list (list feeds).
        let place: &[Slot] = if def.object {
            &[]
        } else {
            &[Slot::Index, Slot::After]
        };
        let mut batch_of = [false; 3];
        for k in &e.batch_of {
            match k.as_str() {
                "added" => batch_of[0] = true,
                "updated" => batch_of[1] = true,
                "removed" => batch_of[2] = true,
                other => {
                    return Err((
                        "events.batch_of".into(),
                        format!(
                        "`{other}` is not a change kind: use \"added\", \"updated\" or \"removed\""
                    ),
                    ))
                }
            }
        }
        if e.append_each && def.append.is_none() {
            return Err((
                "events.append_each".into(),
                "needs `append` (the array whose entries are sent one by one)".into(),
            ));
        }
        let mut transitions = Vec::new();
        for (n, t) in def.transitions.iter().enumerate() {
            let spec = EventSpec {
                event: t.event.clone(),
                data: t.data.clone(),
                send: None,
            };
            let k = kind(
                &format!("transitions[{n}]"),
                Some(&spec),
                true,
                &t.to,
                r#""{{item}}""#,
                &[COMMON, item, place].concat(),
                &params,
            )?;
            if let Some(kind) = k {
                transitions.push(Transition {
                    field: t.field.clone(),
                    to: t.to.clone(),
                    kind,
                });
            }
        }
        let contract = Self {
            connect: build(
                "events.connect",
                &e.connect,
                false,
                "connected",
                "{}",
                &[COMMON],
            )?,
            snapshot: build(
                "events.snapshot",
                &e.snapshot,
                true,
                SNAPSHOT,
                r#"{"items":"{{items}}"}"#,
                &[COMMON, &[Slot::Items, Slot::Total], obj],
            )?,
            added: build(
                "events.added",
                &e.added,
                true,
                ADDED,
                r#"{"id":"{{id}}","item":"{{item}}"}"#,
                &[COMMON, item, place],
            )?,
            updated: build(
                "events.updated",
                &e.updated,
                true,
                UPDATED,
                r#"{"id":"{{id}}","item":"{{item}}","patch":"{{patch}}"}"#,
                &[COMMON, item, &[Slot::Patch, Slot::Changes], place],
            )?,
            removed: build(
                "events.removed",
                &e.removed,
                true,
                REMOVED,
                r#"{"id":"{{id}}"}"#,
                &[COMMON, item],
            )?,
            appended: build(
                "events.appended",
                &e.appended,
                true,
                "appended",
                r#"{"id":"{{id}}","new":"{{new}}"}"#,
                &[COMMON, item, &[Slot::New, Slot::Entry, Slot::Index]],
            )?,
            keepalive: build(
                "events.keepalive",
                &e.keepalive,
                false,
                "",
                "{}",
                &[&[Slot::Feed]],
            )?,
            stale: build(
                "events.stale",
                &e.stale,
                true,
                STALE,
                r#"{"failures":"{{failures}}","reason":"{{reason}}","since":"{{since}}"}"#,
                &[COMMON, &[Slot::Reason, Slot::Failures, Slot::Since]],
            )?,
            recovered: build(
                "events.recovered",
                &e.recovered,
                true,
                RECOVERED,
                r#"{"failures":"{{failures}}","stale_since":"{{stale_since}}"}"#,
                &[COMMON, &[Slot::StaleSince, Slot::Failures]],
            )?,
            chunk_size: e.chunk_size,
            chunk_start: build(
                "events.chunk_start",
                &e.chunk_start,
                true,
                "snapshot_start",
                r#"{"total":"{{total}}"}"#,
                &[COMMON, &[Slot::Total]],
            )?,
            chunk: build(
                "events.chunk",
                &e.chunk,
                true,
                "snapshot_chunk",
                r#"{"items":"{{chunk}}","sent":"{{sent}}","total":"{{total}}"}"#,
                &[COMMON, &[Slot::Chunk, Slot::Sent, Slot::Total]],
            )?,
            chunk_end: build(
                "events.chunk_end",
                &e.chunk_end,
                true,
                "snapshot_end",
                r#"{"total":"{{total}}"}"#,
                &[COMMON, &[Slot::Total]],
            )?,
            terminal: match &def.terminal {
                None => None,
                Some(t) => {
                    if t.values.is_empty() {
                        return Err(("terminal".into(), "`values` names no terminal value".into()));
                    }
                    let mut values = Vec::new();
                    for (value, spec) in &t.values {
                        let k = kind(
                            &format!("terminal.values.{value}"),
                            Some(spec),
                            true,
                            value,
                            r#""{{item}}""#,
                            &[Slot::Feed, Slot::Timestamp, Slot::Item, Slot::Id],
                            &params,
                        )?;
                        if let Some(k) = k {
                            values.push((value.clone(), k));
                        }
                    }
                    Some((t.field.clone(), values))
                }
            },
            terminal_close: def.terminal.as_ref().map_or(true, |t| t.close),
            coalesce: e.coalesce,
            resend: e.resend,
            batch: build(
                "events.batch",
                &e.batch,
                false,
                "batch",
                r#"{"ids":"{{ids}}","count":"{{count}}"}"#,
                &[COMMON, &[Slot::Ids, Slot::Count, Slot::Items]],
            )?,
            batch_of,
            transitions,
            append: def.append.clone(),
            append_each: e.append_each,
        };
        Ok(contract)
    }
}

/// Resolve one kind from its spec and defaults, validating name and template.
fn kind(
    key: &str,
    spec: Option<&EventSpec>,
    on_by_default: bool,
    name: &str,
    data: &str,
    slots: &[Slot],
    params: &[String],
) -> Result<Option<Kind>, (String, String)> {
    let on = spec
        .map(|s| s.send.unwrap_or(true))
        .unwrap_or(on_by_default);
    if !on {
        return Ok(None);
    }
    let name = spec
        .and_then(|s| s.event.clone())
        .unwrap_or_else(|| name.to_owned());
    // A line break would end the `event:` line early and corrupt framing;
    // `""` is the one allowed non-name: unnamed events (`message`).
    if !name.is_empty() && !crate::config::valid_event_name(&name) {
        return Err((
            key.into(),
            format!(
                "event name {name:?} is not usable: use printable ASCII without spaces, `:` or line breaks (at most 128 bytes), or \"\" for unnamed `message` events"
            ),
        ));
    }
    let scope = Scope { slots, params };
    let data = match spec.and_then(|s| s.data.as_ref()) {
        Some(v) => Template::compile(v, &scope),
        None => Template::from_json(data, &scope),
    }
    .map_err(|e| (key.to_owned(), format!("data: {e}")))?;
    Ok(Some(Kind { name, data }))
}

/// A contract bound to one feed instance (its name and path parameters).
pub struct Render {
    pub contract: Contract,
    feed: String,
    params: Vec<String>,
}

/// An item's id, or none (an object without an id field renders `null`).
fn id_of(item: &Item) -> Option<&[u8]> {
    Some(item.id()).filter(|id| !id.is_empty())
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The current time as a JSON string, ISO 8601 / RFC 3339 in UTC with milliseconds.
pub fn now() -> String {
    timestamp(SystemTime::now())
}

fn timestamp(t: SystemTime) -> String {
    json_str(&humantime::format_rfc3339_millis(t).to_string())
}

/// Events of one poll, `(name, data)` in order.
pub type Events = Vec<(String, Vec<u8>)>;

impl Render {
    /// `params` are the path parameter values, in the SSE pattern's order.
    pub fn new(contract: Contract, feed: &str, params: &[String]) -> Self {
        Self {
            contract,
            feed: json_str(feed),
            params: params.iter().map(|p| json_str(p)).collect(),
        }
    }

    fn ctx<'a>(&'a self, timestamp: &'a str) -> Ctx<'a> {
        Ctx {
            feed: &self.feed,
            params: &self.params,
            timestamp,
            ..Ctx::default()
        }
    }

    fn body(kind: &Kind, ctx: &Ctx<'_>) -> Bytes {
        encode::body(&kind.name, &kind.data.render(ctx))
    }

    /// The `connect` event (no id), rendered once per feed instance.
    pub fn connect(&self) -> Option<Bytes> {
        let ts = now();
        let kind = self.contract.connect.as_ref()?;
        Some(Self::body(kind, &self.ctx(&ts)))
    }

    /// What a subscriber sends after a quiet `sse.keepalive`.
    pub fn keepalive(&self) -> Bytes {
        match &self.contract.keepalive {
            Some(kind) => Self::body(kind, &self.ctx("null")),
            None => encode::comment("keepalive"),
        }
    }

    /// The snapshot as `(head, tail)`: the `id:` line goes between them, so it
    /// lands on the LAST event (a client that loses a chunked snapshot midway
    /// resumes from before it). Both empty when snapshots are not sent.
    pub fn snapshot(&self, list: &ItemList) -> (Bytes, Bytes) {
        let (head, _, tail) = self.snapshot_events(list).parts(0);
        (head, tail)
    }

    /// The snapshot's events, encoded once for every subscriber; see
    /// [`Opening::parts`] for what one subscriber is sent of them.
    pub fn snapshot_events(&self, list: &ItemList) -> Opening {
        let ts = now();
        let c = &self.contract;
        let total = list.items.len();
        let mut events = Vec::new();
        let mut entries = 0;
        if c.chunk_size > 0 {
            let mut ctx = self.ctx(&ts);
            ctx.total = Some(total);
            if let Some(k) = &c.chunk_start {
                events.push(Self::body(k, &ctx));
            }
            if let Some(k) = &c.chunk {
                let mut sent = 0;
                for chunk in list.items.chunks(c.chunk_size) {
                    sent += chunk.len();
                    let mut ctx = self.ctx(&ts);
                    ctx.total = Some(total);
                    ctx.chunk = Some(chunk);
                    ctx.sent = Some(sent);
                    events.push(Self::body(k, &ctx));
                }
            }
            match &c.chunk_end {
                Some(k) => events.push(Self::body(k, &ctx)),
                // As it always was: the id line before all of them.
                None => events = vec![Bytes::from(events.concat())],
            }
        } else if let Some(k) = &c.snapshot {
            let mut ctx = self.ctx(&ts);
            ctx.items = Some(&list.items);
            ctx.total = Some(total);
            if let Some(first) = list.items.first() {
                ctx.item = Some(&first.raw);
                ctx.id = id_of(first);
            }
            events.push(Self::body(k, &ctx));
            entries = self.opening(list, &ts, &mut events);
        }
        Opening::new(&events, entries)
    }

    /// How many entries of the `append` array a client holds once it has
    /// `list` (its snapshot, or the event that led to it): `append_each`
    /// feeds only, else `None` (their ids carry no count).
    pub fn held(&self, list: &ItemList) -> Option<u64> {
        let c = &self.contract;
        let (true, Some(at)) = (c.append_each, &c.append) else {
            return None;
        };
        let n = list
            .items
            .first()
            .map_or(0, |item| super::object::entries(item, at).len());
        Some(n as u64)
    }

    /// What follows the snapshot of an object feed, pushed onto `out`: each
    /// entry of the `append` array (`append_each`), and the terminal event of
    /// a feed whose streams stay open (`terminal.close = false`) once it
    /// holds. Returns how many entry events it pushed.
    fn opening(&self, list: &ItemList, ts: &str, out: &mut Vec<Bytes>) -> usize {
        let c = &self.contract;
        let mut entries = 0;
        let Some(item) = list.items.first() else {
            return entries;
        };
        if let (true, Some(kind), Some(at)) = (c.append_each, &c.appended, &c.append) {
            for (n, entry) in super::object::entries(item, at).into_iter().enumerate() {
                let mut ctx = self.ctx(ts);
                ctx.item = Some(&item.raw);
                ctx.id = id_of(item);
                let new = [b"[", entry, b"]"].concat();
                ctx.new = Some(&new);
                ctx.entry = Some(entry);
                ctx.index = Some(n);
                out.push(Self::body(kind, &ctx));
                entries += 1;
            }
        }
        if !c.terminal_close {
            if let Some(kind) = self.terminal_kind(item) {
                let mut ctx = self.ctx(ts);
                ctx.item = Some(&item.raw);
                ctx.id = id_of(item);
                out.push(Self::body(kind, &ctx));
            }
        }
        entries
    }

    /// The terminal kind whose value `item`'s status field holds, if any.
    fn terminal_kind(&self, item: &Item) -> Option<&Kind> {
        let (field, values) = self.contract.terminal.as_ref()?;
        let value = text_at(&item.raw, field)?;
        values.iter().find(|(v, _)| *v == value).map(|(_, k)| k)
    }

    /// `stale`: the upstream is failing; the last good snapshot still stands.
    /// Empty when not sent.
    pub fn stale(&self, reason: &str, failures: u32, since: SystemTime) -> Bytes {
        let Some(k) = &self.contract.stale else {
            return Bytes::new();
        };
        let (ts, reason, since) = (now(), json_str(reason), timestamp(since));
        let mut ctx = self.ctx(&ts);
        ctx.reason = Some(&reason);
        ctx.failures = Some(failures);
        ctx.since = Some(&since);
        Self::body(k, &ctx)
    }

    /// `recovered`: polls succeed again. Empty when not sent.
    pub fn recovered(&self, stale_since: SystemTime, failures: u32) -> Bytes {
        let Some(k) = &self.contract.recovered else {
            return Bytes::new();
        };
        let (ts, since) = (now(), timestamp(stale_since));
        let mut ctx = self.ctx(&ts);
        ctx.stale_since = Some(&since);
        ctx.failures = Some(failures);
        Self::body(k, &ctx)
    }

    /// The terminal event when an object feed's status field holds a terminal value.
    /// `None` when streams stay open (`terminal.close = false`): the event is
    /// then an ordinary change (see `changes`).
    pub fn terminal(&self, list: &ItemList) -> Option<Bytes> {
        if !self.contract.terminal_close {
            return None;
        }
        let item = list.items.first()?;
        let kind = self.terminal_kind(item)?;
        let ts = now();
        let mut ctx = self.ctx(&ts);
        ctx.item = Some(&item.raw);
        ctx.id = id_of(item);
        Some(Self::body(kind, &ctx))
    }
}

mod changes;
mod ctx;
mod opening;
pub use changes::{Appended, Poll};
use ctx::Ctx;
pub use opening::Opening;

#[cfg(test)]
mod tests;
