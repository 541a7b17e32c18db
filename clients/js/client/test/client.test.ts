import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { readFileSync } from "node:fs";
import { Collection, acquire, applyPatch, peek, subscribe } from "../src/index.js";
import type { Change, PatchOperation, SubscribeOptions } from "../src/index.js";
import { FakeEventSource as ES } from "./fake-event-source.js";

beforeEach(() => ES.reset());

const feed = (opts: SubscribeOptions<any> = {}) => {
  const changes: Change[] = [];
  const states: string[] = [];
  const f = subscribe<any>("/sse/items", {
    EventSource: ES,
    onChange: (_items, _state, change) => changes.push(change),
    onState: (s) => states.push(s),
    ...opts,
  });
  return { f, es: ES.all[ES.all.length - 1], changes, states };
};

describe("the default contract", () => {
  it("snapshot, added, updated (item or patch), removed keep the list in pollcast's order", () => {
    const { f, es, changes } = feed();
    expect(f.state).toBe("connecting");
    es.open();
    expect(f.state).toBe("open");
    es.emit("snapshot", { items: [{ id: 1, n: "one" }, { id: "b", n: "two" }] }, "e:1");
    expect(f.items()).toEqual([{ id: 1, n: "one" }, { id: "b", n: "two" }]);
    es.emit("added", { id: 3, item: { id: 3, n: "three" } }, "e:2");
    es.emit("updated", { id: 1, item: { id: 1, n: "ONE" }, patch: [{ op: "replace", path: "/n", value: "ONE" }] });
    es.emit("updated", { id: "b", patch: [{ op: "add", path: "/x", value: [1] }] }, "e:4");
    expect(f.get("b")).toEqual({ id: "b", n: "two", x: [1] });
    es.emit("removed", { id: 3 }, "e:5");
    expect(f.items()).toEqual([{ id: 1, n: "ONE" }, { id: "b", n: "two", x: [1] }]);
    expect(changes.filter((c) => c.type !== "state").map((c) => c.type)).toEqual([
      "snapshot", "added", "updated", "updated", "removed",
    ]);
    expect(f.getSnapshot().lastEventId).toBe("e:5");
    // A new snapshot (resync, or a restart's fresh one) replaces everything.
    es.emit("snapshot", { items: [{ id: 9 }] });
    expect(f.items()).toEqual([{ id: 9 }]);
  });

  it("ignores what is not its contract and changes for unknown ids", () => {
    const { f, es, changes } = feed();
    es.emit("snapshot", "not json {");
    es.emit("snapshot", { nope: 1 });
    es.emit("removed", { id: 7 });
    es.emit("updated", { id: 7, patch: [] });
    expect(f.items()).toEqual([]);
    expect(changes).toEqual([]);
    expect(f.getSnapshot().synced).toBe(false);
  });

  it("a custom id function keys the snapshot", () => {
    const { f, es } = feed({ id: (item: any) => item.key });
    es.emit("snapshot", { items: [{ key: "a" }, { key: "b" }] });
    es.emit("removed", { id: "a" });
    expect(f.items()).toEqual([{ key: "b" }]);
  });

  it("a chunked snapshot replaces the list once, at its end", () => {
    const { f, es, changes } = feed();
    es.emit("snapshot", { items: [{ id: 0 }] });
    es.emit("snapshot_start", { total: 3 });
    es.emit("snapshot_chunk", { items: [{ id: 1 }, { id: 2 }], sent: 2, total: 3 });
    expect(f.items()).toEqual([{ id: 0 }]);
    es.emit("snapshot_chunk", { items: [{ id: 3 }], sent: 3, total: 3 });
    es.emit("snapshot_end", { total: 3 }, "e:9");
    expect(f.items()).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }]);
    expect(changes.map((c) => c.type)).toEqual(["snapshot", "snapshot"]);
  });
});

describe("connection state", () => {
  it("connecting -> open -> stale -> open, reconnects, closed when EventSource gives up", () => {
    const { f, es, states } = feed();
    es.open();
    es.emit("stale", { reason: "upstream returned 500", failures: 1, since: "2026-01-01T00:00:00Z" });
    expect(f.state).toBe("stale");
    expect(f.stale?.reason).toBe("upstream returned 500");
    // Reconnecting during an outage: pollcast re-tells `stale` after the open.
    es.error();
    expect(f.state).toBe("connecting");
    es.open();
    es.emit("stale", { reason: "upstream returned 500", failures: 2, since: "2026-01-01T00:00:00Z" });
    expect(f.state).toBe("stale");
    expect(f.stale?.failures).toBe(2);
    es.emit("recovered", { stale_since: "2026-01-01T00:00:00Z", failures: 3 });
    expect(f.state).toBe("open");
    expect(f.stale).toBeNull();
    // The outage began and ended while disconnected: no `recovered` comes, the open clears it.
    es.emit("stale", { reason: "timeout", failures: 1, since: "2026-01-01T00:01:00Z" });
    es.error();
    es.open();
    expect(f.state).toBe("open");
    expect(f.stale).toBeNull();
    es.error(true);
    expect(f.state).toBe("closed");
    expect(states).toEqual([
      "open", "stale", "connecting", "open", "stale", "open", "stale", "connecting", "open", "closed",
    ]);
  });

  it("close() closes the EventSource", () => {
    const { f, es } = feed();
    f.close();
    expect(es.readyState).toBe(ES.CLOSED);
    expect(f.state).toBe("closed");
  });

  it("passes withCredentials and fails clearly without an EventSource", () => {
    feed({ withCredentials: true });
    expect(ES.all[0].init).toEqual({ withCredentials: true });
    expect(() => subscribe("/sse/x")).toThrow(/no EventSource here/);
  });
});

describe("object feeds", () => {
  it("the object, appended entries, and a terminal event that ends the feed", () => {
    const { f, es } = feed({ append: "/transactions", terminal: ["completed", "failed"] });
    es.open();
    es.emit("snapshot", { items: [{ id: "j1", status: "running", transactions: [{ n: 1 }] }] });
    expect(f.getSnapshot().item).toEqual({ id: "j1", status: "running", transactions: [{ n: 1 }] });
    es.emit("appended", { id: "j1", new: [{ n: 2 }, { n: 3 }] });
    expect(f.getSnapshot().item?.transactions).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    // The same poll's `updated` carried the whole object already: not twice.
    es.emit("updated", { id: "j1", item: { id: "j1", status: "running", transactions: [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }] } });
    es.emit("appended", { id: "j1", new: [{ n: 4 }] });
    expect(f.getSnapshot().item?.transactions).toHaveLength(4);
    es.emit("completed", { id: "j1", status: "completed", transactions: [] }, "e:7:end");
    const s = f.getSnapshot();
    expect(s.state).toBe("ended");
    expect(s.ended?.event).toBe("completed");
    expect(s.item?.status).toBe("completed");
    expect(es.readyState).toBe(ES.CLOSED);
    // Nothing moves an ended feed.
    es.error(true);
    es.emit("added", { id: 2, item: { id: 2 } });
    expect(f.state).toBe("ended");
    expect(f.items()).toHaveLength(1);
  });

  it("an id ending in :end is terminal even when the name was not configured", () => {
    const c = new Collection();
    c.apply("snapshot", { items: [{ id: 1, status: "running" }] });
    expect(c.apply("done", { id: 1, status: "done" }, "a:4:end")).toEqual({ type: "ended", event: "done" });
    expect(c.getSnapshot().state).toBe("ended");
  });
});

describe("a store any framework can wrap", () => {
  it("getSnapshot is stable until a change, and listeners unsubscribe", () => {
    const c = new Collection<{ id: number }>();
    const seen: number[] = [];
    const off = c.subscribe((s) => seen.push(s.items.length));
    const a = c.getSnapshot();
    expect(c.getSnapshot()).toBe(a);
    c.apply("snapshot", { items: [{ id: 1 }] });
    const b = c.getSnapshot();
    expect(b).not.toBe(a);
    expect(a.items).toEqual([]); // an old snapshot is never mutated
    c.apply("removed", { id: 5 });
    expect(c.getSnapshot()).toBe(b);
    off();
    c.apply("added", { id: 2, item: { id: 2 } });
    expect(seen).toEqual([1]);
  });
});

describe("shared feeds", () => {
  afterEach(() => vi.useRealTimers());

  it("one EventSource per URL; the last release closes it after the linger", async () => {
    vi.useFakeTimers();
    const a = acquire("/sse/s", { EventSource: ES });
    const b = acquire("/sse/s", { EventSource: ES });
    const other = acquire("/sse/t", { EventSource: ES });
    expect(ES.all.map((e) => e.url)).toEqual(["/sse/s", "/sse/t"]);
    expect(a.feed).toBe(b.feed);
    a.release();
    a.release(); // twice is once
    b.release();
    // Re-acquired before the timer (StrictMode's remount): the same connection.
    const c = acquire("/sse/s", { EventSource: ES });
    expect(c.feed).toBe(a.feed);
    vi.runAllTimers();
    expect(ES.all[0].readyState).not.toBe(ES.CLOSED);
    c.release();
    expect(peek("/sse/s")).toBe(a.feed);
    vi.runAllTimers();
    expect(ES.all[0].readyState).toBe(ES.CLOSED);
    expect(peek("/sse/s")).toBeUndefined();
    const d = acquire("/sse/s", { EventSource: ES });
    expect(d.feed).not.toBe(a.feed);
    expect(ES.all).toHaveLength(3);
    d.release();
    other.release();
    vi.runAllTimers();
  });
});

describe("the server's own patches", () => {
  // Recorded from a real pollcast stream by tests/frontend_packages.rs.
  const cases: { name: string; before: unknown; after: unknown; patch: PatchOperation[] }[] = JSON.parse(
    readFileSync(new URL("./server-patches.json", import.meta.url), "utf8"),
  );

  it("the fixture has cases", () => expect(cases.length).toBeGreaterThan(10));

  for (const c of cases) {
    it(`applies: ${c.name}`, () => {
      const before = structuredClone(c.before);
      expect(applyPatch(c.before, c.patch)).toEqual(c.after);
      expect(c.before).toEqual(before); // the input is not changed
      // Through the state machine, from an `updated` that carries only the patch.
      const col = new Collection();
      col.apply("snapshot", { items: [c.before] });
      col.apply("updated", { id: (c.before as any).id, patch: c.patch });
      expect(col.getSnapshot().items).toEqual([c.after]);
    });
  }
});
