// pollcast client: keeps a keyed collection in sync with one pollcast feed
// that speaks the default contract (snapshot / added / updated / removed,
// stale / recovered). Dependency-free ES module, served by pollcast at
// /_pollcast/client.js.
//
//   import { subscribe } from "/_pollcast/client.js";
//   const jobs = subscribe("/sse/jobs?status=running", {
//     onChange: (items, state) => render(items, state),
//   });
//   jobs.items();   // current items, in the order pollcast last told
//   jobs.state;     // "connecting" | "open" | "stale" | "closed"
//   jobs.close();
//
// Resume is EventSource's own: on reconnect the browser sends Last-Event-ID
// and pollcast replays exactly what was missed, or sends a fresh snapshot.

/** Apply an RFC 6902 patch (add / remove / replace, as pollcast sends) to a copy of `doc`. */
export function applyPatch(doc, patch) {
  let root = structuredClone(doc);
  for (const op of patch) {
    const parts = op.path.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
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

/**
 * Follow `url` and keep its items keyed by id.
 * Options: onChange(items, state, change), onState(state, detail),
 * id(item) (the item's id in a snapshot; default item.id, as the feed's `id` pointer),
 * EventSource (a constructor, for tests or polyfills), withCredentials.
 */
export function subscribe(url, options = {}) {
  const ES = options.EventSource || globalThis.EventSource;
  const byId = new Map();
  const idOf = options.id || ((item) => item.id);
  const api = {
    state: "connecting",
    stale: null,
    items: () => Array.from(byId.values()),
    get: (id) => byId.get(id),
    close: () => {
      es.close();
      setState("closed");
    },
  };
  const es = new ES(url, { withCredentials: !!options.withCredentials });

  function setState(state, detail) {
    if (api.state === state) return;
    api.state = state;
    options.onState?.(state, detail);
    options.onChange?.(api.items(), state, { type: "state" });
  }
  function changed(change) {
    options.onChange?.(api.items(), api.state, change);
  }
  function on(name, fn) {
    es.addEventListener(name, (e) => {
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return; // not pollcast's default contract
      }
      fn(data);
    });
  }

  es.addEventListener("open", () => setState(api.stale ? "stale" : "open"));
  es.addEventListener("error", () => {
    // EventSource reconnects by itself unless it gave up (CLOSED).
    setState(es.readyState === ES.CLOSED ? "closed" : "connecting");
  });
  on("snapshot", (d) => {
    byId.clear();
    for (const item of d.items) byId.set(idOf(item), item);
    changed({ type: "snapshot" });
  });
  on("added", (d) => {
    byId.set(d.id, d.item);
    changed({ type: "added", id: d.id });
  });
  on("updated", (d) => {
    const before = byId.get(d.id);
    const item = d.item !== undefined ? d.item : before !== undefined && d.patch ? applyPatch(before, d.patch) : before;
    byId.set(d.id, item);
    changed({ type: "updated", id: d.id });
  });
  on("removed", (d) => {
    byId.delete(d.id);
    changed({ type: "removed", id: d.id });
  });
  on("stale", (d) => {
    api.stale = d;
    setState("stale", d);
  });
  on("recovered", (d) => {
    api.stale = null;
    setState("open", d);
  });
  return api;
}
