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

/** An item id as the upstream wrote it. */
export type ItemId = string | number;

/**
 * `connecting`: not (yet, or no longer) connected; EventSource retries by itself.
 * `open`: connected and current. `stale`: connected, but pollcast's polls of
 * the upstream fail (the last good list stands). `closed`: given up or closed.
 * `ended`: an object feed reached a terminal state; nothing follows.
 */
export type ConnectionState = "connecting" | "open" | "stale" | "closed" | "ended";

/** The data of a `stale` event. */
export interface StaleInfo {
  reason: string;
  failures: number;
  since: string;
}

/** What one event changed. */
export type Change =
  | { type: "snapshot" }
  | { type: "added" | "updated" | "removed" | "appended"; id: ItemId }
  | { type: "state" }
  | { type: "ended"; event: string };

/** One RFC 6902 operation as pollcast sends them (add, remove, replace). */
export interface PatchOperation {
  op: "add" | "remove" | "replace";
  path: string;
  value?: unknown;
}

/** An immutable view of a feed: a new object after every change. */
export interface Snapshot<T> {
  /** The items, in the order pollcast last told them. */
  readonly items: readonly T[];
  readonly state: ConnectionState;
  /** Set while pollcast reports the upstream failing. */
  readonly stale: StaleInfo | null;
  /** Object feeds: the one object (the first item of a list feed). */
  readonly item: T | undefined;
  /** Object feeds: the terminal event that ended the feed. */
  readonly ended: { event: string; data: unknown } | null;
  /** Id of the last event received (what EventSource resumes from). */
  readonly lastEventId: string;
  /** A snapshot has been applied: `items` is pollcast's list, not the initial empty one. */
  readonly synced: boolean;
}

/** What the collection needs of an EventSource (the browser's, a polyfill, Node's `eventsource`). */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: any) => void): void;
  close(): void;
}

/** A constructor of [[EventSourceLike]]s. */
export interface EventSourceConstructor {
  new (url: string, init?: { withCredentials?: boolean }): EventSourceLike;
  readonly CLOSED?: number;
}

export interface CollectionOptions<T> {
  /** The item's id in a snapshot; default `item.id`, as the feed's `id` pointer. */
  id?: (item: T) => ItemId;
  /** Object feeds with `append`: the JSON Pointer of the array `appended` entries go to. */
  append?: string;
  /** Object feeds: the terminal event names (`[feeds.terminal] values`). */
  terminal?: readonly string[];
}

export interface SubscribeOptions<T> extends CollectionOptions<T> {
  /** Called after every change, with the items, the state and what changed. */
  onChange?: (items: T[], state: ConnectionState, change: Change) => void;
  /** Called when the connection state changes; `detail` is a stale/recovered event's data. */
  onState?: (state: ConnectionState, detail?: unknown) => void;
  /** An EventSource constructor (polyfills, Node's `eventsource`, tests); default the global one. */
  EventSource?: EventSourceConstructor;
  withCredentials?: boolean;
}

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
] as const;

type Listener<T> = (snapshot: Snapshot<T>, change: Change) => void;

const unescape = (p: string) => p.replace(/~1/g, "/").replace(/~0/g, "~");

/** Apply an RFC 6902 patch (add / remove / replace, as pollcast sends) to a copy of `doc`. */
export function applyPatch<D>(doc: D, patch: readonly PatchOperation[]): D {
  let root: any = structuredClone(doc);
  for (const op of patch) {
    const parts = op.path.split("/").slice(1).map(unescape);
    if (parts.length === 0) {
      root = op.op === "remove" ? undefined : structuredClone(op.value);
      continue;
    }
    let parent = root;
    for (const p of parts.slice(0, -1)) parent = parent[Array.isArray(parent) ? Number(p) : p];
    const last = parts[parts.length - 1];
    if (Array.isArray(parent)) {
      const i = last === "-" ? parent.length : Number(last);
      if (op.op === "add") parent.splice(i, 0, structuredClone(op.value));
      else if (op.op === "remove") parent.splice(i, 1);
      else parent[i] = structuredClone(op.value);
    } else if (op.op === "remove") {
      delete parent[last];
    } else {
      parent[last] = structuredClone(op.value);
    }
  }
  return root;
}

function pointerGet(doc: any, pointer: string): any {
  let at = doc;
  for (const p of pointer.split("/").slice(1).map(unescape)) {
    if (at === null || typeof at !== "object") return undefined;
    at = at[Array.isArray(at) ? Number(p) : p];
  }
  return at;
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * The state machine, without a connection: feed it events (`apply`) and
 * connection changes (`setState`), read it as a store (`subscribe` /
 * `getSnapshot`). `subscribe(url)` wires one to an EventSource; anything
 * else that receives pollcast's events (a server-side reader, a test) can too.
 */
export class Collection<T = any> {
  private readonly byId = new Map<ItemId | undefined, T>();
  private readonly listeners = new Set<Listener<T>>();
  private readonly idOf: (item: T) => ItemId;
  private chunks: T[] | null = null;
  private lastId = "";
  private snap: Snapshot<T>;

  constructor(private readonly options: CollectionOptions<T> = {}) {
    this.idOf = options.id ?? ((item: any) => item.id);
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
  getSnapshot = (): Snapshot<T> => this.snap;

  /** Call `listener` after every change; returns the unsubscribe function. */
  subscribe = (listener: Listener<T>): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  get(id: ItemId): T | undefined {
    return this.byId.get(id);
  }

  /** Move to `state` (a no-op when already there); `ended` is final. */
  setState(state: ConnectionState, detail?: { stale?: StaleInfo | null }): boolean {
    const stale = detail && "stale" in detail ? (detail.stale ?? null) : this.snap.stale;
    if (this.snap.state === "ended") return false;
    if (this.snap.state === state && this.snap.stale === stale) return false;
    this.publish({ state, stale }, { type: "state" });
    return true;
  }

  /**
   * Apply one event: its name, its data (parsed JSON) and its SSE id.
   * Returns what changed, or null when the event changed nothing.
   */
  apply(event: string, data: any, lastEventId = ""): Change | null {
    if (lastEventId) this.lastId = lastEventId;
    if (this.snap.state === "ended") return null;
    if (data === null || typeof data !== "object") return null;
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
        if (!Array.isArray(data.items)) return null;
        this.replace(data.items);
        return this.publish({ synced: true }, { type: "snapshot" });
      case "snapshot_start":
        this.chunks = [];
        return null;
      case "snapshot_chunk":
        if (this.chunks && Array.isArray(data.items)) this.chunks.push(...data.items);
        return null;
      case "snapshot_end":
        if (!this.chunks) return null;
        this.replace(this.chunks);
        this.chunks = null;
        return this.publish({ synced: true }, { type: "snapshot" });
      case "added":
        this.byId.set(data.id, data.item);
        return this.publish({}, { type: "added", id: data.id });
      case "updated": {
        const before = this.byId.get(data.id);
        const item =
          data.item !== undefined
            ? data.item
            : before !== undefined && Array.isArray(data.patch)
              ? applyPatch(before, data.patch)
              : before;
        if (item === undefined) return null;
        this.byId.set(data.id, item);
        return this.publish({}, { type: "updated", id: data.id });
      }
      case "removed":
        if (!this.byId.delete(data.id)) return null;
        return this.publish({}, { type: "removed", id: data.id });
      case "appended": {
        const at = this.options.append;
        const before: any = this.byId.get(data.id) ?? this.snap.item;
        if (at === undefined || before === undefined || !Array.isArray(data.new)) return null;
        const item = structuredClone(before);
        const list = pointerGet(item, at);
        if (!Array.isArray(list)) return null;
        // The same poll's `updated` may already have carried the whole object.
        if (!sameJson(list.slice(list.length - data.new.length), data.new) || data.new.length === 0) {
          list.push(...data.new);
        }
        this.byId.set(this.idOf(item), item);
        return this.publish({}, { type: "appended", id: data.id });
      }
      case "stale":
        return this.setState("stale", { stale: data as StaleInfo }) ? { type: "state" } : null;
      case "recovered":
        return this.setState(this.snap.state === "stale" ? "open" : this.snap.state, { stale: null })
          ? { type: "state" }
          : null;
      default:
        return null;
    }
  }

  private replace(items: T[]) {
    this.byId.clear();
    for (const item of items) this.byId.set(this.idOf(item), item);
  }

  private publish(patch: Partial<Snapshot<T>>, change: Change): Change {
    const items = Array.from(this.byId.values());
    this.snap = { ...this.snap, ...patch, items, item: items[0], lastEventId: this.lastId };
    for (const l of Array.from(this.listeners)) l(this.snap, change);
    return change;
  }
}

/** A collection following one URL through an EventSource. */
export class Feed<T = any> extends Collection<T> {
  private readonly es: EventSourceLike;

  constructor(
    readonly url: string,
    options: SubscribeOptions<T> = {},
  ) {
    super(options);
    const ES = options.EventSource ?? (globalThis as any).EventSource;
    if (!ES) {
      throw new Error(
        "@pollcast/client: no EventSource here; pass options.EventSource (on Node, the eventsource package)",
      );
    }
    const CLOSED = ES.CLOSED ?? 2;
    this.subscribe((snap, change) => {
      if (change.type === "state") options.onState?.(snap.state, snap.stale ?? undefined);
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
    const names = new Set<string>([...EVENTS, ...(options.terminal ?? [])]);
    for (const name of names) {
      es.addEventListener(name, (e: { data: string; lastEventId?: string }) => {
        let data: unknown;
        try {
          data = JSON.parse(e.data);
        } catch {
          return; // not pollcast's default contract
        }
        this.apply(name, data, e.lastEventId ?? "");
        if (this.getSnapshot().state === "ended") es.close();
      });
    }
  }

  /** The current items, in the order pollcast last told them. */
  items(): T[] {
    return this.getSnapshot().items.slice();
  }

  get state(): ConnectionState {
    return this.getSnapshot().state;
  }

  get stale(): StaleInfo | null {
    return this.getSnapshot().stale;
  }

  /** Close the connection; the state becomes `closed` (an ended feed stays `ended`). */
  close(): void {
    this.es.close();
    this.setState("closed");
  }
}

/** Follow `url` and keep its items keyed by id. */
export function subscribe<T = any>(url: string, options: SubscribeOptions<T> = {}): Feed<T> {
  return new Feed<T>(url, options);
}

/** A handle on a shared feed; `release()` once, when done. */
export interface Lease<T> {
  feed: Feed<T>;
  release: () => void;
}

interface Entry {
  feed: Feed<any>;
  users: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const shared = new Map<string, Entry>();

/**
 * One feed (one EventSource) per URL for every user on the page. The first
 * user's options open it. After the last release it lingers `linger` ms
 * (default 0: one macrotask, so an immediate re-acquire such as React
 * StrictMode's remount keeps the same connection), then closes.
 */
export function acquire<T = any>(
  url: string,
  options: SubscribeOptions<T> & { linger?: number } = {},
): Lease<T> {
  let entry = shared.get(url);
  if (!entry) {
    entry = { feed: subscribe(url, options), users: 0, timer: undefined };
    shared.set(url, entry);
  }
  const e = entry;
  if (e.timer !== undefined) clearTimeout(e.timer);
  e.timer = undefined;
  e.users += 1;
  let released = false;
  return {
    feed: e.feed as Feed<T>,
    release: () => {
      if (released) return;
      released = true;
      e.users -= 1;
      if (e.users > 0) return;
      e.timer = setTimeout(() => {
        if (e.users > 0 || shared.get(url) !== e) return;
        shared.delete(url);
        e.feed.close();
      }, options.linger ?? 0);
    },
  };
}

/** The shared feed of `url`, if one is open (never opens one). */
export function peek<T = any>(url: string): Feed<T> | undefined {
  return shared.get(url)?.feed as Feed<T> | undefined;
}

/** The snapshot every feed starts from (and the server renders). */
export const EMPTY: Snapshot<never> = Object.freeze({
  items: Object.freeze([]) as readonly never[],
  state: "connecting" as ConnectionState,
  stale: null,
  item: undefined,
  ended: null,
  lastEventId: "",
  synced: false,
});
