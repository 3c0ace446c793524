// A Node worker for test_node_worker_rejections.py: `wait` runs until its AbortSignal
// fires and prints `aborted: REASON`; `quick` answers at once.
//   node tests/clients/node/rejected_worker.mjs ADDRESS
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = process.env.EXECPLAN_NODE_PACKAGE || resolve(here, "../../../clients/node");
const { Worker } = await import(pathToFileURL(resolve(pkg, "dist/index.js")).href);

const worker = new Worker({ address: process.argv[2], workerId: "w-node" });
worker.task("wait", (inputs, ctx) =>
  new Promise((_, reject) => {
    console.log("started");
    ctx.signal.addEventListener("abort", () => {
      console.log(`aborted: ${ctx.signal.reason?.message ?? ctx.signal.reason}`);
      reject(ctx.signal.reason);
    });
  }),
);
worker.task("quick", async () => ({ quick: true }));
await worker.run();
