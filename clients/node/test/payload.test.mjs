// Task outputs and the message limit, Node worker against a real `execplan serve`
// with a 1 MiB message limit (so the server advertises an output limit of
// 1 MiB - 64 KiB). An output over it fails its attempt with PayloadTooLarge instead
// of breaking the stream (before: re-sent after every reconnect, the task stayed
// RUNNING); results that fit one by one but not together go in separate messages.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ExecplanClient, Worker, pb } from "../dist/index.js";
import { Server } from "./server.mjs";

const MIB = 1024 * 1024;
const LIMIT = MIB - 64 * 1024;

const BIG = `
name: node-big-output
inputs: {size: {type: integer, required: true}}
tasks:
  - {id: a, type: n.big, inputs: {size: "\${{ workflow.inputs.size }}"}, retry: {max_attempts: 3}}
`;

const FOUR = `
name: node-four-outputs
tasks:
${[0, 1, 2, 3].map((i) => `  - {id: t${i}, type: n.together}`).join("\n")}
`;

let server;
let client;

before(async () => {
  server = await Server.start(["--max-message-mib", "1"]);
  client = new ExecplanClient(server.address);
});

after(async () => {
  client?.close();
  await server?.stop();
});

/** Runs `source` with `worker` serving; returns the execution_completed event. */
async function run(worker, source, inputs = {}) {
  const serving = worker.serve();
  try {
    const { executionId } = await client.start({ source, inputs });
    // Watched, not read back: GetExecution would carry every output in one message.
    for await (const event of client.watch(executionId)) {
      if (event.kind.case === "executionCompleted") return event.kind.value;
    }
    throw new Error("the watch ended without executionCompleted");
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
  }
}

function logger(warnings) {
  return { info: () => undefined, warn: (m) => warnings.push(m) };
}

test("an output over the server's limit fails the attempt with PayloadTooLarge", async () => {
  const warnings = [];
  let calls = 0;
  const worker = new Worker({ address: server.address, logger: logger(warnings) });
  worker.task("n.big", (inputs) => {
    calls += 1;
    return "x".repeat(inputs.size);
  });
  const completed = await run(worker, BIG, { size: 3 * MIB });
  assert.equal(completed.state, pb.ExecutionState.FAILED);
  assert.equal(completed.error.type, "PayloadTooLarge");
  assert.match(completed.error.message, new RegExp(`exceeds the server's limit of ${LIMIT} bytes`));
  assert.equal(calls, 1, "not retryable: one attempt");
  assert.deepEqual(warnings.filter((w) => w.includes("stream lost")), []);
});

test("outputs that fit alone but not together all arrive", async () => {
  const warnings = [];
  const worker = new Worker({ address: server.address, slots: 4, logger: logger(warnings) });
  let arrived = 0;
  let release;
  const all = new Promise((r) => (release = r));
  worker.task("n.together", async () => {
    if (++arrived === 4) release();
    await all; // the four results are ready in the same tick
    return "y".repeat(LIMIT - 100);
  });
  const completed = await run(worker, FOUR);
  assert.equal(completed.state, pb.ExecutionState.SUCCEEDED, completed.error?.message);
  assert.deepEqual(warnings.filter((w) => w.includes("stream lost")), []);
});
