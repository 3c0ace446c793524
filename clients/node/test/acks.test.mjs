// Acks ride with results: a quick handler's ack and result leave in one stream message,
// a slow handler's ack leaves within the hold. Counted on a real `execplan serve`
// through its EXECPLAN_HOPS file (one `server.read` per ConnectRequest it reads, one
// `server.write` per ConnectResponse), on the machine's one monotonic clock.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ExecplanClient, Worker, pb } from "../dist/index.js";
import { Server, finish } from "./server.mjs";

const N = 20;
const CHAIN = `
name: node-ack-chain
tasks:
${Array.from({ length: N }, (_, i) => `  - id: t${i}\n    type: n.quick${i}${i ? `\n    depends_on: [t${i - 1}]` : ""}`).join("\n")}
`;
const SLOW = `
name: node-ack-slow
tasks:
  - id: s
    type: n.slow
`;

/** Run `source` with `register`'s handlers; the server's hops of the run (ns since the start, label). */
async function hopsOf(source, register) {
  const dir = mkdtempSync(join(tmpdir(), "execplan-node-hops-"));
  const sink = join(dir, "hops.txt");
  process.env.EXECPLAN_HOPS = sink;
  const server = await Server.start();
  delete process.env.EXECPLAN_HOPS;
  const client = new ExecplanClient(server.address);
  const worker = new Worker({ address: server.address, slots: 4 });
  register(worker);
  const serving = worker.serve();
  try {
    // Registered first (a run that is not yet started counts from here).
    const { executionId: warm } = await client.start({ source, inputs: {} });
    await finish(client, warm);
    const from = process.hrtime.bigint();
    const { executionId } = await client.start({ source, inputs: {} });
    const done = await finish(client, executionId);
    const to = process.hrtime.bigint();
    assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
    await worker.stop();
    await serving;
    client.close();
    await server.stop(); // the server writes its hops at exit
    return readFileSync(sink, "utf8")
      .trim()
      .split("\n")
      .map((line) => line.split(" "))
      .map(([ns, , label]) => [BigInt(ns), label])
      .filter(([ns]) => ns >= from && ns <= to)
      .map(([ns, label]) => [Number(ns - from) / 1e6, label]);
  } finally {
    await worker.stop();
    client.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("a quick handler's ack and result leave in one stream message", async () => {
  const hops = await hopsOf(CHAIN, (w) => {
    for (let i = 0; i < N; i++) w.task(`n.quick${i}`, () => ({ i }));
  });
  const reads = hops.filter(([, label]) => label === "server.read").length;
  // One message per task (ack and result together), acks ahead of their results 2N. A
  // loaded machine may stall the worker past a hold now and then: an ack alone.
  assert.ok(reads >= N && reads <= 1.5 * N, `${N} tasks took ${reads} worker messages`);
});

test("a slow handler's ack leaves within the hold, long before its result", async () => {
  const hops = await hopsOf(SLOW, (w) => w.task("n.slow", () => new Promise((r) => setTimeout(() => r(1), 400))));
  const dispatched = hops.find(([, label]) => label === "server.write");
  assert.ok(dispatched, "no dispatch written");
  const reads = hops.filter(([ms, label]) => label === "server.read" && ms > dispatched[0]).map(([ms]) => ms - dispatched[0]);
  assert.equal(reads.length, 2, `expected the ack and the result apart, read ${reads.length} messages`);
  // The hold is 5 ms; the rest is the loopback and a shared machine's scheduling.
  assert.ok(reads[0] < 150, `the ack left ${reads[0].toFixed(1)} ms after the dispatch`);
  assert.ok(reads[1] >= 350, `the result came ${reads[1].toFixed(1)} ms after the dispatch`);
});
