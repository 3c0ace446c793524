// Flow control with Node workers against a real server (docs/flow-control.md): the
// capacity a Node worker declares places tasks by their `resources`, and a
// RateLimited thrown by a Node handler delays the retry by its retry-after; the
// client's listLimits, setRateLimit (live), deleteRateLimit and purgeCache.
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

const SLOW = `
name: node-slow
tasks:
  - {id: a, type: n.tick, rate_limits: [{name: node-slow}]}
  - {id: b, type: n.tick, rate_limits: [{name: node-slow}]}
`;

test("listLimits shows a waiting task; setRateLimit changes the bucket live; deleteRateLimit", async () => {
  const worker = new Worker({ address: server.address, workerId: "node-ticks" });
  worker.task("n.tick", async () => Date.now());
  const serving = worker.serve();
  try {
    const set = await client.setRateLimit("node-slow", { units: 1, periodMs: 60_000, burst: 1 });
    assert.equal(set.name, "node-slow");
    assert.equal(set.units, 1n);
    assert.equal(set.burst, 1n);
    const { executionId } = await client.start({ source: SLOW });
    let limits;
    for (let i = 0; i < 500; i++) {
      limits = await client.listLimits("node-slow");
      if (limits.waiting.length === 1) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(limits.waiting.length, 1);
    const [waiting] = limits.waiting;
    assert.equal(waiting.executionId, executionId);
    assert.equal(waiting.waiting.kind, pb.WaitKind.RATE_LIMIT);
    assert.match(waiting.waiting.message, /rate limit node-slow is empty for/);
    const changed = Date.now();
    await client.setRateLimit("node-slow", { units: 100, periodMs: 1000, burst: 10 });
    const done = await finished(executionId);
    assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
    assert.ok(Date.now() - changed < 10_000);
    assert.equal(await client.deleteRateLimit("node-slow"), true);
    assert.equal(await client.deleteRateLimit("node-slow"), false);
    await assert.rejects(client.setRateLimit("Bad Name", { units: 1, periodMs: 1000 }), (e) => e.code === 3);
    await assert.rejects(client.setRateLimit("x", { units: 1.5, periodMs: 1000 }), RangeError);
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
  }
});

const CACHED = `
name: node-cached
tasks:
  - {id: ask, type: n.answer, inputs: {q: hello}, cache: {ttl: 1h}}
`;

test("a cached answer completes without a call; purgeCache forgets it", async () => {
  let calls = 0;
  const worker = new Worker({ address: server.address, workerId: "node-cache" });
  worker.task("n.answer", async (inputs) => {
    calls += 1;
    return `answer to ${inputs.q}`;
  });
  const serving = worker.serve();
  try {
    for (let run = 0; run < 2; run++) {
      const { executionId } = await client.start({ source: CACHED });
      assert.equal((await finished(executionId)).state, pb.ExecutionState.SUCCEEDED);
    }
    assert.equal(calls, 1);
    assert.equal(await client.purgeCache({ taskType: "n.answer" }), 1);
    assert.equal(await client.purgeCache({ taskType: "n.answer" }), 0);
    const { executionId } = await client.start({ source: CACHED });
    assert.equal((await finished(executionId)).state, pb.ExecutionState.SUCCEEDED);
    assert.equal(calls, 2);
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
  }
});
