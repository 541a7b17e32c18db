import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { QueryClient, QueryClientProvider, useQuery } from "@tanstack/react-query";
import { usePollcast } from "@pollcast/react";
import { usePollcastQuery } from "@pollcast/react/query";
import { API, FEED, label } from "./config";
import type { Job } from "./config";

/** The jobs list with the hook. Two of these on the page share one EventSource. */
function JobsWithHook({ title }: { title: string }) {
  const { items, state, stale } = usePollcast<Job>(FEED);
  return (
    <section data-list={title}>
      <h2>{title}</h2>
      {state !== "open" && (
        <p className="banner" data-state={state}>
          {state === "stale" ? `live updates paused: ${stale?.reason}` : state}
        </p>
      )}
      <ul>
        {items.map((job) => (
          <li key={job.id} data-id={job.id}>
            {label(job)}
          </li>
        ))}
      </ul>
    </section>
  );
}

async function fetchJobs(): Promise<Job[]> {
  const r = await fetch(API);
  if (!r.ok) throw new Error(`${API}: ${r.status}`);
  return r.json();
}

/** The same list as a team already has it with TanStack Query, plus one line. */
function JobsWithQuery() {
  const { data, status } = useQuery({ queryKey: ["jobs"], queryFn: fetchJobs }); // was: refetchInterval: 5000
  usePollcastQuery(["jobs"], FEED);
  return (
    <section data-list="query">
      <h2>TanStack Query</h2>
      {status === "pending" && <p>loading</p>}
      <ul>
        {(data ?? []).map((job) => (
          <li key={job.id} data-id={job.id}>
            {label(job)}
          </li>
        ))}
      </ul>
    </section>
  );
}

/** Connection state for a banner, read from the same shared feed. */
function Status() {
  const { state } = usePollcast(FEED);
  return (
    <p>
      connection: <b id="state">{state}</b>
    </p>
  );
}

const queryClient = new QueryClient();

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <QueryClientProvider client={queryClient}>
      <Status />
      <JobsWithHook title="hook" />
      <JobsWithHook title="hook-again" />
      <JobsWithQuery />
    </QueryClientProvider>
  </StrictMode>,
);
