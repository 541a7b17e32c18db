import { subscribe } from "@pollcast/client";
import { FEED, label } from "./config";
import type { Job } from "./config";

const feed = subscribe<Job>(FEED, {
  onChange: (items, state) => {
    document.getElementById("state")!.textContent = state;
    document.getElementById("list")!.replaceChildren(
      ...items.map((job) => {
        const li = document.createElement("li");
        li.dataset.id = String(job.id);
        li.textContent = label(job);
        return li;
      }),
    );
  },
});
(window as any).pollcastFeed = feed;
