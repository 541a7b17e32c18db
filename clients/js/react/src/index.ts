// @pollcast/react: `usePollcast(url)` keeps a component in sync with a
// pollcast feed. Built on useSyncExternalStore over @pollcast/client's shared
// feeds, so every component on the page that follows one URL shares one
// EventSource, StrictMode's double mount does not open a second one
// (the release lingers one macrotask), and concurrent renders read one
// consistent snapshot. Rendering never opens a connection: only the
// subscription does, after commit, so server rendering sees `EMPTY`.
//
//   const { items, state } = usePollcast<Job>("/sse/jobs?status=running");
import { useCallback, useSyncExternalStore } from "react";
import { acquire, peek, EMPTY } from "@pollcast/client";
import type { Snapshot, SubscribeOptions } from "@pollcast/client";

export type { Snapshot, ConnectionState, StaleInfo, ItemId, Change } from "@pollcast/client";

export interface UsePollcastOptions<T>
  extends Pick<SubscribeOptions<T>, "id" | "append" | "terminal" | "EventSource" | "withCredentials"> {
  /** ms a feed stays open after its last component unmounted (default 0). */
  linger?: number;
  /** `false`: follow nothing (e.g. until a URL is known). */
  enabled?: boolean;
}

/** Follow `url` (shared per URL; the first user's options open it). */
export function usePollcast<T = any>(
  url: string | null | undefined,
  options: UsePollcastOptions<T> = {},
): Snapshot<T> {
  const key = options.enabled === false ? null : (url ?? null);
  // Options are read when the subscription starts; a new URL resubscribes.
  const subscribe = useCallback(
    (notify: () => void) => {
      if (key === null) return () => {};
      const lease = acquire<T>(key, options);
      // React compares getSnapshot() once subscribed, so events that arrived
      // between render and this subscription are not missed.
      const off = lease.feed.subscribe(notify);
      return () => {
        off();
        lease.release();
      };
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [key],
  );
  const getSnapshot = useCallback(
    () => (key === null ? EMPTY : (peek<T>(key)?.getSnapshot() ?? EMPTY)) as Snapshot<T>,
    [key],
  );
  return useSyncExternalStore(subscribe, getSnapshot, serverSnapshot as () => Snapshot<T>);
}

const serverSnapshot = () => EMPTY;
