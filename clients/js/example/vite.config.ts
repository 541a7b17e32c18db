import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `base: "./"`: the built app works under any path pollcast passes through.
// `npm run dev` proxies the feed and the API to a pollcast on :8080
// (`pollcast --demo`, or yours: POLLCAST_URL).
const pollcast = process.env.POLLCAST_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "./",
  plugins: [react()],
  build: {
    rollupOptions: { input: { main: "index.html", plain: "plain.html" } },
  },
  server: { proxy: { "/sse": pollcast, "/api": pollcast } },
});
