// @pollcast/client: keeps a keyed collection in sync with one pollcast feed
// that speaks the default contract (snapshot / added / updated / removed,
// stale / recovered; object feeds' appended entries and terminal events).
// Dependency-free ES module. pollcast serves this very file (the package's
// dist/index.js, byte for byte) at /_pollcast/client.js.
//
//   import { subscribe } from "@pollcast/client";   // or "/_pollcast/client.js"
//   const jobs = subscribe("/sse/jobs?status=running", {
//     onChange: (items, state) => render(items, state),
//   });
//   jobs.items();        // current items, in the order pollcast last told
//   jobs.state;          // "connecting" | "open" | "stale" | "closed" | "ended"
//   jobs.subscribe(fn);  // any store: subscribe/getSnapshot
//   jobs.close();
//
// Resume is EventSource's own: on reconnect it sends Last-Event-ID and
// pollcast replays exactly what was missed, or sends a fresh snapshot.
/** The events of the default contract a collection listens to. */
export const EVENTS = [
    "snapshot",
    "added",
    "updated",
    "removed",
    "appended",
    "stale",
    "recovered",
    "snapshot_start",
    "snapshot_chunk",
    "snapshot_end",
];
const unescape = (p) => p.replace(/~1/g, "/").replace(/~0/g, "~");
/** Apply an RFC 6902 patch (add / remove / replace, as pollcast sends) to a copy of `doc`. */
export function applyPatch(doc, patch) {
    let root = structuredClone(doc);
    for (const op of patch) {
        const parts = op.path.split("/").slice(1).map(unescape);
        if (parts.length === 0) {
            root = op.op === "remove" ? undefined : structuredClone(op.value);
            continue;
        }
        let parent = root;
        for (const p of parts.slice(0, -1))
            parent = parent[Array.isArray(parent) ? Number(p) : p];
        const last = parts[parts.length - 1];
        if (Array.isArray(parent)) {
            const i = last === "-" ? parent.length : Number(last);
            if (op.op === "add")
                parent.splice(i, 0, structuredClone(op.value));
            else if (op.op === "remove")
                parent.splice(i, 1);
            else
                parent[i] = structuredClone(op.value);
        }
        else if (op.op === "remove") {
            delete parent[last];
        }
        else {
            parent[last] = structuredClone(op.value);
        }
    }
    return root;
}
function pointerGet(doc, pointer) {
    let at = doc;
    for (const p of pointer.split("/").slice(1).map(unescape)) {
        if (at === null || typeof at !== "object")
            return undefined;
        at = at[Array.isArray(at) ? Number(p) : p];
    }
    return at;
}
const sameJson = (a, b) => JSON.stringify(a) === JSON.stringify(b);
/**
 * The state machine, without a connection: feed it events (`apply`) and
 * connection changes (`setState`), read it as a store (`subscribe` /
 * `getSnapshot`). `subscribe(url)` wires one to an EventSource; anything
 * else that receives pollcast's events (a server-side reader, a test) can too.
 */
export class Collection {
    options;
    byId = new Map();
    listeners = new Set();
    idOf;
    chunks = null;
    lastId = "";
    snap;
    constructor(options = {}) {
        this.options = options;
        this.idOf = options.id ?? ((item) => item.id);
        this.snap = {
            items: [],
            state: "connecting",
            stale: null,
            item: undefined,
            ended: null,
            lastEventId: "",
            synced: false,
        };
    }
    /** The current view; the same object until something changes. */
    getSnapshot = () => this.snap;
    /** Call `listener` after every change; returns the unsubscribe function. */
    subscribe = (listener) => {
        this.listeners.add(listener);
        return () => {
            this.listeners.delete(listener);
        };
    };
    get(id) {
        return this.byId.get(id);
    }
    /** Move to `state` (a no-op when already there); `ended` is final. */
    setState(state, detail) {
        const stale = detail && "stale" in detail ? (detail.stale ?? null) : this.snap.stale;
        if (this.snap.state === "ended")
            return false;
        if (this.snap.state === state && this.snap.stale === stale)
            return false;
        this.publish({ state, stale }, { type: "state" });
        return true;
    }
    /**
     * Apply one event: its name, its data (parsed JSON) and its SSE id.
     * Returns what changed, or null when the event changed nothing.
     */
    apply(event, data, lastEventId = "") {
        if (lastEventId)
            this.lastId = lastEventId;
        if (this.snap.state === "ended")
            return null;
        if (data === null || typeof data !== "object")
            return null;
        const terminal = this.options.terminal?.includes(event) || lastEventId.endsWith(":end");
        if (terminal) {
            // pollcast's default terminal data is the object itself.
            if (this.byId.size <= 1 && data && typeof data === "object" && !Array.isArray(data)) {
                this.byId.clear();
                this.byId.set(this.idOf(data), data);
            }
            return this.publish({ state: "ended", ended: { event, data } }, { type: "ended", event });
        }
        switch (event) {
            case "snapshot":
                if (!Array.isArray(data.items))
                    return null;
                this.replace(data.items);
                return this.publish({ synced: true }, { type: "snapshot" });
            case "snapshot_start":
                this.chunks = [];
                return null;
            case "snapshot_chunk":
                if (this.chunks && Array.isArray(data.items))
                    this.chunks.push(...data.items);
                return null;
            case "snapshot_end":
                if (!this.chunks)
                    return null;
                this.replace(this.chunks);
                this.chunks = null;
                return this.publish({ synced: true }, { type: "snapshot" });
            case "added":
                this.byId.set(data.id, data.item);
                return this.publish({}, { type: "added", id: data.id });
            case "updated": {
                const before = this.byId.get(data.id);
                const item = data.item !== undefined
                    ? data.item
                    : before !== undefined && Array.isArray(data.patch)
                        ? applyPatch(before, data.patch)
                        : before;
                if (item === undefined)
                    return null;
                this.byId.set(data.id, item);
                return this.publish({}, { type: "updated", id: data.id });
            }
            case "removed":
                if (!this.byId.delete(data.id))
                    return null;
                return this.publish({}, { type: "removed", id: data.id });
            case "appended": {
                const at = this.options.append;
                const before = this.byId.get(data.id) ?? this.snap.item;
                if (at === undefined || before === undefined || !Array.isArray(data.new))
                    return null;
                const item = structuredClone(before);
                const list = pointerGet(item, at);
                if (!Array.isArray(list))
                    return null;
                // The same poll's `updated` may already have carried the whole object.
                if (!sameJson(list.slice(list.length - data.new.length), data.new) || data.new.length === 0) {
                    list.push(...data.new);
                }
                this.byId.set(this.idOf(item), item);
                return this.publish({}, { type: "appended", id: data.id });
            }
            case "stale":
                return this.setState("stale", { stale: data }) ? { type: "state" } : null;
            case "recovered":
                return this.setState(this.snap.state === "stale" ? "open" : this.snap.state, { stale: null })
                    ? { type: "state" }
                    : null;
            default:
                return null;
        }
    }
    replace(items) {
        this.byId.clear();
        for (const item of items)
            this.byId.set(this.idOf(item), item);
    }
    publish(patch, change) {
        const items = Array.from(this.byId.values());
        this.snap = { ...this.snap, ...patch, items, item: items[0], lastEventId: this.lastId };
        for (const l of Array.from(this.listeners))
            l(this.snap, change);
        return change;
    }
}
/** A collection following one URL through an EventSource. */
export class Feed extends Collection {
    url;
    es;
    constructor(url, options = {}) {
        super(options);
        this.url = url;
        const ES = options.EventSource ?? globalThis.EventSource;
        if (!ES) {
            throw new Error("@pollcast/client: no EventSource here; pass options.EventSource (on Node, the eventsource package)");
        }
        const CLOSED = ES.CLOSED ?? 2;
        this.subscribe((snap, change) => {
            if (change.type === "state")
                options.onState?.(snap.state, snap.stale ?? undefined);
            options.onChange?.(snap.items.slice(), snap.state, change);
        });
        const es = new ES(url, { withCredentials: !!options.withCredentials });
        this.es = es;
        // pollcast re-tells `stale` to a stream that opens during an outage, and
        // tells no `recovered` to one that missed the end of it: a (re)open is
        // current until told otherwise.
        es.addEventListener("open", () => this.setState("open", { stale: null }));
        es.addEventListener("error", () => {
            // EventSource reconnects by itself unless it gave up (CLOSED).
            this.setState(es.readyState === CLOSED ? "closed" : "connecting");
        });
        const names = new Set([...EVENTS, ...(options.terminal ?? [])]);
        for (const name of names) {
            es.addEventListener(name, (e) => {
                let data;
                try {
                    data = JSON.parse(e.data);
                }
                catch {
                    return; // not pollcast's default contract
                }
                this.apply(name, data, e.lastEventId ?? "");
                if (this.getSnapshot().state === "ended")
                    es.close();
            });
        }
    }
    /** The current items, in the order pollcast last told them. */
    items() {
        return this.getSnapshot().items.slice();
    }
    get state() {
        return this.getSnapshot().state;
    }
    get stale() {
        return this.getSnapshot().stale;
    }
    /** Close the connection; the state becomes `closed` (an ended feed stays `ended`). */
    close() {
        this.es.close();
        this.setState("closed");
    }
}
/** Follow `url` and keep its items keyed by id. */
export function subscribe(url, options = {}) {
    return new Feed(url, options);
}
const shared = new Map();
/**
 * One feed (one EventSource) per URL for every user on the page. The first
 * user's options open it. After the last release it lingers `linger` ms
 * (default 0: one macrotask, so an immediate re-acquire such as React
 * StrictMode's remount keeps the same connection), then closes.
 */
export function acquire(url, options = {}) {
    let entry = shared.get(url);
    if (!entry) {
        entry = { feed: subscribe(url, options), users: 0, timer: undefined };
        shared.set(url, entry);
    }
    const e = entry;
    if (e.timer !== undefined)
        clearTimeout(e.timer);
    e.timer = undefined;
    e.users += 1;
    let released = false;
    return {
        feed: e.feed,
        release: () => {
            if (released)
                return;
            released = true;
            e.users -= 1;
            if (e.users > 0)
                return;
            e.timer = setTimeout(() => {
                if (e.users > 0 || shared.get(url) !== e)
                    return;
                shared.delete(url);
                e.feed.close();
            }, options.linger ?? 0);
        },
    };
}
/** The shared feed of `url`, if one is open (never opens one). */
export function peek(url) {
    return shared.get(url)?.feed;
}
/** The snapshot every feed starts from (and the server renders). */
export const EMPTY = Object.freeze({
    items: Object.freeze([]),
    state: "connecting",
    stale: null,
    item: undefined,
    ended: null,
    lastEventId: "",
    synced: false,
});
