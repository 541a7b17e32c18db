import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["client/test/**/*.test.ts", "react/test/**/*.test.{ts,tsx}"],
  },
});
