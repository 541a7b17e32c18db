// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StrictMode, act } from "react";
import { createRoot } from "react-dom/client";
import { renderToString } from "react-dom/server";
import { QueryClient, QueryClientProvider, useQuery } from "@tanstack/react-query";
import { usePollcast } from "../src/index.js";
import { usePollcastQuery } from "../src/query.js";
import { FakeEventSource as ES } from "../../client/test/fake-event-source.js";

(globalThis as any).IS_REACT_ACT_ENVIRONMENT = true;

function List({ url, label }: { url: string; label: string }) {
  const { items, state } = usePollcast<{ id: number; n: string }>(url, { EventSource: ES });
  return (
    <div data-label={label} data-state={state}>
      {items.map((i) => i.n).join(",")}
    </div>
  );
}

let root: ReturnType<typeof createRoot> | null = null;
let host: HTMLElement;
beforeEach(() => {
  ES.reset();
  host = document.createElement("div");
  document.body.replaceChildren(host);
});
afterEach(async () => {
  await act(async () => root?.unmount());
  root = null;
  // let shared feeds' linger timers close them
  await new Promise((r) => setTimeout(r, 5));
});

// Events delivered inside act(), then the timers TanStack Query notifies on.
const deliver = (f: () => void) =>
  act(async () => {
    f();
    await new Promise((r) => setTimeout(r, 5));
  });
const text = (label: string) => host.querySelector(`[data-label="${label}"]`)?.textContent;
const mount = async (ui: React.ReactNode) => {
  root = createRoot(host);
  await act(async () => root!.render(ui));
};

describe("usePollcast", () => {
  it("StrictMode's double mount and two components: one EventSource, both render its events", async () => {
    await mount(
      <StrictMode>
        <List url="/sse/items" label="a" />
        <List url="/sse/items" label="b" />
        <List url="/sse/other" label="c" />
      </StrictMode>,
    );
    // StrictMode double-invokes effects; the lingering release keeps the connection.
    await act(async () => new Promise((r) => setTimeout(r, 5)));
    expect(ES.all.map((e) => [e.url, e.readyState])).toEqual([
      ["/sse/items", ES.CONNECTING],
      ["/sse/other", ES.CONNECTING],
    ]);
    const es = ES.all[0];
    await act(async () => {
      es.open();
      es.emit("snapshot", { items: [{ id: 1, n: "one" }] });
      es.emit("added", { id: 2, item: { id: 2, n: "two" } });
      es.emit("updated", { id: 1, patch: [{ op: "replace", path: "/n", value: "ONE" }] });
    });
    expect(text("a")).toBe("ONE,two");
    expect(text("b")).toBe("ONE,two");
    expect(text("c")).toBe("");
    expect(host.querySelector('[data-label="a"]')?.getAttribute("data-state")).toBe("open");
    await act(async () => es.emit("removed", { id: 2 }));
    expect(text("b")).toBe("ONE");
  });

  it("unmounting the last component closes the connection", async () => {
    await mount(<List url="/sse/items" label="a" />);
    await act(async () => root!.render(<div />));
    await act(async () => new Promise((r) => setTimeout(r, 5)));
    expect(ES.all).toHaveLength(1);
    expect(ES.all[0].readyState).toBe(ES.CLOSED);
  });

  it("server rendering opens nothing and renders the empty connecting state", () => {
    const html = renderToString(<List url="/sse/items" label="a" />);
    expect(html).toContain('data-state="connecting"');
    expect(ES.all).toHaveLength(0);
  });
});

describe("usePollcastQuery", () => {
  it("keeps an existing query's cache in sync: snapshot replaces, patches apply, removed deletes", async () => {
    const client = new QueryClient();
    let fetches = 0;
    function Jobs() {
      const { data } = useQuery({
        queryKey: ["jobs"],
        queryFn: async () => {
          fetches += 1;
          return [{ id: 1, n: "fetched" }];
        },
      });
      usePollcastQuery(["jobs"], "/sse/jobs", { EventSource: ES });
      return <div data-label="q">{(data ?? []).map((j) => j.n).join(",")}</div>;
    }
    function Reader() {
      const { data } = useQuery<{ id: number; n: string }[]>({ queryKey: ["jobs"], queryFn: async () => [], enabled: false });
      return <div data-label="r">{(data ?? []).length}</div>;
    }
    await mount(
      <StrictMode>
        <QueryClientProvider client={client}>
          <Jobs />
          <Reader />
        </QueryClientProvider>
      </StrictMode>,
    );
    await act(async () => new Promise((r) => setTimeout(r, 5)));
    expect(text("q")).toBe("fetched");
    expect(ES.all).toHaveLength(1);
    const es = ES.all[0];
    // Open but no snapshot yet: the fetched data stands.
    await deliver(() => es.open());
    expect(text("q")).toBe("fetched");
    await deliver(() => es.emit("snapshot", { items: [{ id: 1, n: "one" }, { id: 2, n: "two" }] }));
    expect(text("q")).toBe("one,two");
    expect(text("r")).toBe("2");
    await deliver(() => {
      es.emit("updated", { id: 2, patch: [{ op: "replace", path: "/n", value: "TWO" }] });
      es.emit("removed", { id: 1 });
    });
    expect(text("q")).toBe("TWO");
    expect(text("r")).toBe("1");
    expect(fetches).toBe(1);
  });
});
