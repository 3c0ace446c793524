// Builds the console into the Python package (execplan/console/static), which the
// server serves from memory; `npm run dev` proxies RPCs to a local `execplan serve`.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const outDir = fileURLToPath(new URL("../../service/execplan/console/static", import.meta.url));
const rpc = process.env.EXECPLAN_CONSOLE_URL ?? "http://127.0.0.1:8070";

export default defineConfig({
  build: {
    outDir,
    emptyOutDir: true,
    // One chunk for the app, one per heavy library: cached apart across releases.
    rolldownOptions: {
      output: {
        codeSplitting: {
          groups: [
            { name: "layout", test: /node_modules[\\/]@dagrejs/ },
            { name: "protobuf", test: /node_modules[\\/]@(bufbuild|connectrpc)/ },
          ],
        },
      },
    },
    chunkSizeWarningLimit: 800,
  },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  server: {
    proxy: {
      "/execplan.v1.": { target: rpc, changeOrigin: true },
      "/console/session": { target: rpc, changeOrigin: true },
    },
  },
});
