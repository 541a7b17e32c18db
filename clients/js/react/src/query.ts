// TanStack Query adapter: keep an existing query's cache in sync from a
// pollcast feed. The query stays as it is (its queryFn still loads the first
// data and serves refetches); drop `refetchInterval` and add one line:
//
//   const jobs = useQuery({ queryKey: ["jobs"], queryFn: fetchJobs });
//   usePollcastQuery(["jobs"], "/sse/jobs");
//
// Every snapshot replaces the query's data, added/updated (patches applied)/
// removed change it, so every component reading ["jobs"] re-renders with live
// data. The feed is @pollcast/client's shared one: one EventSource per URL,
// whether components use this, usePollcast, or both.
import { useEffect } from "react";
import { useQueryClient } from "@tanstack/react-query";
import type { QueryClient, QueryKey } from "@tanstack/react-query";
import { acquire } from "@pollcast/client";
import type { Snapshot } from "@pollcast/client";
import type { UsePollcastOptions } from "./index.js";

export interface PollcastQueryOptions<T, D> extends UsePollcastOptions<T> {
  /** Shape the items into the query's data (default: the items array). */
  select?: (items: T[], snapshot: Snapshot<T>) => D;
  /** A QueryClient other than the one from QueryClientProvider. */
  queryClient?: QueryClient;
}

/**
 * Write the feed's items into `queryKey`'s cache from the first snapshot on.
 * Returns nothing; read the data with your own useQuery.
 */
export function syncQuery<T = any, D = T[]>(
  queryClient: QueryClient,
  queryKey: QueryKey,
  url: string,
  options: PollcastQueryOptions<T, D> = {},
): () => void {
  const lease = acquire<T>(url, options);
  const select = options.select ?? ((items: T[]) => items as unknown as D);
  const write = (snap: Snapshot<T>) => {
    queryClient.setQueryData<D>(queryKey, select(snap.items.slice(), snap));
  };
  // A feed already open has its snapshot: write it at once.
  const current = lease.feed.getSnapshot();
  if (current.synced) write(current);
  const off = lease.feed.subscribe((snap, change) => {
    // Until pollcast told a snapshot, the query's own data stands.
    if (!snap.synced || change.type === "state") return;
    write(snap);
  });
  return () => {
    off();
    lease.release();
  };
}

/** Keep `queryKey`'s data in sync with the pollcast feed at `url` while mounted. */
export function usePollcastQuery<T = any, D = T[]>(
  queryKey: QueryKey,
  url: string | null | undefined,
  options: PollcastQueryOptions<T, D> = {},
): void {
  const contextClient = useQueryClient();
  const client = options.queryClient ?? contextClient;
  const keyHash = JSON.stringify(queryKey);
  const enabled = options.enabled !== false && !!url;
  useEffect(
    () => (enabled && url ? syncQuery(client, queryKey, url, options) : undefined),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [client, keyHash, url, enabled],
  );
}
