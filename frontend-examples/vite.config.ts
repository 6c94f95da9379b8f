import { resolve } from "node:path";
import { defineConfig } from "vite";

// One dev server for both apps (same origin, so the token signed in on one is seen by
// the other through sessionStorage): http://localhost:5173/dashboard/ and
// http://localhost:5173/session-viewer/. 5173 is in eventlog's default
// EVENTLOG_CORS_ORIGINS.
export default defineConfig({
  root: import.meta.dirname,
  server: { port: 5173, strictPort: true },
  preview: { port: 5173, strictPort: true },
  build: {
    rollupOptions: {
      input: {
        index: resolve(import.meta.dirname, "index.html"),
        dashboard: resolve(import.meta.dirname, "dashboard/index.html"),
        viewer: resolve(import.meta.dirname, "session-viewer/index.html"),
      },
    },
  },
});
