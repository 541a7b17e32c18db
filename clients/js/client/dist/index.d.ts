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
export type Change = {
    type: "snapshot";
} | {
    type: "added" | "updated" | "removed" | "appended";
    id: ItemId;
} | {
    type: "state";
} | {
    type: "ended";
    event: string;
};
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
    readonly ended: {
        event: string;
        data: unknown;
    } | null;
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
    new (url: string, init?: {
        withCredentials?: boolean;
    }): EventSourceLike;
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
export declare const EVENTS: readonly ["snapshot", "added", "updated", "removed", "appended", "stale", "recovered", "snapshot_start", "snapshot_chunk", "snapshot_end"];
type Listener<T> = (snapshot: Snapshot<T>, change: Change) => void;
/** Apply an RFC 6902 patch (add / remove / replace, as pollcast sends) to a copy of `doc`. */
export declare function applyPatch<D>(doc: D, patch: readonly PatchOperation[]): D;
/**
 * The state machine, without a connection: feed it events (`apply`) and
 * connection changes (`setState`), read it as a store (`subscribe` /
 * `getSnapshot`). `subscribe(url)` wires one to an EventSource; anything
 * else that receives pollcast's events (a server-side reader, a test) can too.
 */
export declare class Collection<T = any> {
    private readonly options;
    private readonly byId;
    private readonly listeners;
    private readonly idOf;
    private chunks;
    private lastId;
    private snap;
    constructor(options?: CollectionOptions<T>);
    /** The current view; the same object until something changes. */
    getSnapshot: () => Snapshot<T>;
    /** Call `listener` after every change; returns the unsubscribe function. */
    subscribe: (listener: Listener<T>) => (() => void);
    get(id: ItemId): T | undefined;
    /** Move to `state` (a no-op when already there); `ended` is final. */
    setState(state: ConnectionState, detail?: {
        stale?: StaleInfo | null;
    }): boolean;
    /**
     * Apply one event: its name, its data (parsed JSON) and its SSE id.
     * Returns what changed, or null when the event changed nothing.
     */
    apply(event: string, data: any, lastEventId?: string): Change | null;
    private replace;
    private publish;
}
/** A collection following one URL through an EventSource. */
export declare class Feed<T = any> extends Collection<T> {
    readonly url: string;
    private readonly es;
    constructor(url: string, options?: SubscribeOptions<T>);
    /** The current items, in the order pollcast last told them. */
    items(): T[];
    get state(): ConnectionState;
    get stale(): StaleInfo | null;
    /** Close the connection; the state becomes `closed` (an ended feed stays `ended`). */
    close(): void;
}
/** Follow `url` and keep its items keyed by id. */
export declare function subscribe<T = any>(url: string, options?: SubscribeOptions<T>): Feed<T>;
/** A handle on a shared feed; `release()` once, when done. */
export interface Lease<T> {
    feed: Feed<T>;
    release: () => void;
}
/**
 * One feed (one EventSource) per URL for every user on the page. The first
 * user's options open it. After the last release it lingers `linger` ms
 * (default 0: one macrotask, so an immediate re-acquire such as React
 * StrictMode's remount keeps the same connection), then closes.
 */
export declare function acquire<T = any>(url: string, options?: SubscribeOptions<T> & {
    linger?: number;
}): Lease<T>;
/** The shared feed of `url`, if one is open (never opens one). */
export declare function peek<T = any>(url: string): Feed<T> | undefined;
/** The snapshot every feed starts from (and the server renders). */
export declare const EMPTY: Snapshot<never>;
export {};
