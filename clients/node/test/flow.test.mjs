// Flow control with Node workers against a real server (docs/flow-control.md): the
// capacity a Node worker declares places tasks by their `resources`, and a
// RateLimited thrown by a Node handler pauses the rate-limit key for its retry-after.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ExecplanClient, RateLimited, Worker, pb } from "../dist/index.js";
import { Server } from "./server.mjs";

let server;
let client;

before(async () => {
  server = await Server.start();
  client = new ExecplanClient(server.address);
});

after(async () => {
  client?.close();
  await server?.stop();
});

async function finished(executionId) {
  for await (const event of client.watch(executionId)) {
    if (event.kind.case === "executionCompleted") break;
  }
  return client.get(executionId);
}

const PLACED = `
name: node-placed
tasks:
  - {id: embed, type: n.where, resources: {gpu: 1, custom: {model-slots: 1}}}
  - {id: prep, type: n.where, resources: {cpu: "2"}}
`;

test("a GPU task runs on the Node worker that declares a GPU, never on the other", async () => {
  const cpu = new Worker({ address: server.address, workerId: "node-cpu", capacity: { cpu: 4, memory: "8Gi" } });
  const gpu = new Worker({ address: server.address, workerId: "node-gpu", capacity: { cpu: 1, gpu: 1, "model-slots": 1 } });
  for (const [worker, name] of [[cpu, "node-cpu"], [gpu, "node-gpu"]]) worker.task("n.where", async () => name);
  const serving = [cpu.serve()];
  try {
    const { executionId } = await client.start({ source: PLACED });
    let waiting;
    for (let i = 0; i < 500; i++) {
      waiting = (await client.get(executionId)).tasks.find((t) => t.taskId === "embed");
      if (waiting.waiting?.kind === pb.WaitKind.UNPLACEABLE) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(waiting.waiting.kind, pb.WaitKind.UNPLACEABLE);
    assert.equal(waiting.waiting.name, "gpu");
    serving.push(gpu.serve());
    const done = await finished(executionId);
    assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
    const ranOn = Object.fromEntries(done.tasks.map((t) => [t.taskId, t.output.kind.value]));
    assert.equal(ranOn.embed, "node-gpu");
    assert.equal(ranOn.prep, "node-cpu"); // two CPUs do not fit on the one of node-gpu
    const workers = Object.fromEntries((await client.listWorkers()).map((w) => [w.workerId, w]));
    assert.equal(workers["node-gpu"].resources.gpu, 1);
    assert.deepEqual({ ...workers["node-gpu"].resources.custom }, { "model-slots": 1n });
    assert.equal(workers["node-cpu"].resources.cpuMillis, 4000n);
  } finally {
    await Promise.all([cpu.stop(), gpu.stop()]);
    await Promise.all(serving.map((s) => s.catch(() => undefined)));
  }
});

const THROTTLED = `
name: node-throttled
rate_limits: [{name: node-api, rate: 100/s, burst: 100}]
tasks:
  - id: call
    type: n.call
    inputs: {model: m1}
    rate_limits: [{name: node-api, key: "inputs.model"}]
    retry: {max_attempts: 3, initial_interval: 10ms}
`;

test("RateLimited from a Node handler delays the retry by its retry-after", async () => {
  const starts = [];
  const worker = new Worker({ address: server.address, workerId: "node-throttled" });
  worker.task("n.call", async (inputs, ctx) => {
    starts.push(Date.now());
    if (ctx.attempt === 1) throw new RateLimited("provider answered 429", { retryAfterMs: 1500 });
    return "ok";
  });
  const serving = worker.serve();
  try {
    const { executionId } = await client.start({ source: THROTTLED });
    const done = await finished(executionId);
    assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
    const [first] = done.tasks[0].attempts;
    assert.equal(first.error.type, "RateLimited");
    assert.equal(first.error.retryAfter.seconds, 1n);
    assert.equal(first.error.retryAfter.nanos, 500_000_000);
    assert.equal(starts.length, 2);
    assert.ok(starts[1] - starts[0] >= 1400, `retried after ${starts[1] - starts[0]} ms`);
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
  }
});
