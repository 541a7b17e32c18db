// React hook over pollcast's client module: the component re-renders with the
// current items and connection state; EventSource resumes by itself.
//
//   import { usePollcast } from "./use-pollcast.js";
//   function Jobs() {
//     const { items, state } = usePollcast("/sse/jobs?status=running");
//     return (
//       <>
//         {state !== "open" && <Banner state={state} />}
//         <ul>{items.map((j) => <li key={j.id}>{j.name}: {j.status}</li>)}</ul>
//       </>
//     );
//   }
import { useEffect, useState } from "react";
import { subscribe } from "/_pollcast/client.js";

export function usePollcast(url, options = {}) {
  const [view, setView] = useState({ items: [], state: "connecting" });
  useEffect(() => {
    const feed = subscribe(url, {
      ...options,
      onChange: (items, state) => setView({ items, state }),
    });
    return () => feed.close();
    // Reconnect only when the URL changes.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [url]);
  return view;
}
