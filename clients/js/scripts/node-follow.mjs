// Server-side use of @pollcast/client: follow a feed from Node with the
// `eventsource` package injected, printing one JSON line per change
// ({"state", "items", "change"}). tests/frontend_packages.rs drives it.
//
//   node scripts/node-follow.mjs http://127.0.0.1:8080/sse/jobs
import { EventSource } from "eventsource";
import { subscribe } from "@pollcast/client";

let feed;
feed = subscribe(process.argv[2], {
  ...JSON.parse(process.argv[3] ?? "{}"),
  EventSource,
  onChange: (items, state, change) => {
    const { item, ended } = feed?.getSnapshot() ?? {};
    process.stdout.write(JSON.stringify({ state, items, item, ended, change }) + "\n");
  },
});
// Ends when the test closes stdin.
process.stdin.resume();
process.stdin.on("end", () => {
  feed.close();
  process.exit(0);
});
