// Which feed the example follows: `?feed=/sse/jobs&api=/api/jobs` (the
// defaults match `pollcast --demo`). The page must be served through
// pollcast (same origin as the feed), or by `vite` with its proxy.
const params = new URLSearchParams(globalThis.location?.search ?? "");
export const FEED = params.get("feed") ?? "/sse/jobs";
export const API = params.get("api") ?? "/api/jobs";

export interface Job {
  id: string | number;
  name?: string;
  status?: string;
}

export const label = (j: Job) => [j.name, j.status].filter((x) => x !== undefined).join(": ") || String(j.id);
