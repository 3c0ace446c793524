// Worker against a real `execplan serve` process: happy path, typed failures,
// cancellation, reconnect across a server restart, drain.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import { ExecplanClient, NonRetryableError, Worker, errorInfo, pb } from "../dist/index.js";
import { Server, finish, waitFor } from "./server.mjs";

const ONE = (type, extra = "") => `
name: node-${type.replace(/\W/g, "-")}
inputs: {x: {type: integer, default: 1}}
${extra}
tasks:
  - id: a
    type: ${type}
    inputs: {x: "\${{ workflow.inputs.x }}"}
    retry: {max_attempts: 3, initial_interval: 50ms, non_retryable_errors: [CardDeclined]}
    timeouts: {start_to_close: 60s, heartbeat: 30s}
outputs:
  out: "\${{ tasks.a.output }}"
`;

const CHAIN = `
name: node-chain
inputs: {x: {type: integer, required: true}}
tasks:
  - id: a
    type: n.add
    inputs: {x: "\${{ workflow.inputs.x }}"}
  - id: b
    type: n.double
    inputs: {v: "\${{ tasks.a.output.v }}"}
outputs:
  v: "\${{ tasks.b.output.v }}"
`;

class CardDeclined extends Error {}

let server;
let client;
const workers = [];

function startWorker(register, options = {}) {
  const worker = new Worker({ address: server.address, slots: 4, labels: { lang: "node" }, ...options });
  register(worker);
  const serving = worker.serve();
  workers.push({ worker, serving });
  return { worker, serving };
}

before(async () => {
  server = await Server.start();
  client = new ExecplanClient(server.address);
});

afterEach(async () => {
  for (const { worker, serving } of workers.splice(0)) {
    await worker.stop();
    await serving.catch(() => undefined);
  }
});

after(async () => {
  client?.close();
  await server?.stop();
});

test("happy path: data flows between tasks; ctx carries the attempt", async () => {
  const seen = [];
  startWorker((w) =>
    w
      .task("n.add", async (inputs, ctx) => {
        seen.push(ctx);
        ctx.heartbeat({ step: "adding" });
        return { v: inputs.x + 1 };
      })
      .task("n.double", (inputs) => ({ v: inputs.v * 2 })),
  );
  const { executionId } = await client.start({ source: CHAIN, inputs: { x: 20 } });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
  assert.deepEqual(done.outputs, { v: 42 });
  const ctx = seen[0];
  assert.equal(ctx.executionId, executionId);
  assert.equal(ctx.taskId, "a");
  assert.equal(ctx.attempt, 1);
  assert.ok(ctx.idempotencyKey);
  assert.equal(ctx.taskType, "n.add");
  assert.equal(typeof ctx.traceContext, "object");
  assert.equal(ctx.signal.aborted, false);
});

test("failures: error type is the class name; NonRetryableError and listed types are final", async () => {
  let flaky = 0;
  startWorker((w) =>
    w
      .task("n.declined", () => {
        throw new CardDeclined("card declined");
      })
      .task("n.fatal", () => {
        throw new NonRetryableError("bad input");
      })
      .task("n.flaky", () => {
        flaky += 1;
        if (flaky < 3) throw new TypeError(`try ${flaky}`);
        return "third time";
      }),
  );
  for (const [type, errorType] of [["n.declined", "CardDeclined"], ["n.fatal", "NonRetryableError"]]) {
    const { executionId } = await client.start({ source: ONE(type) });
    const done = await finish(client, executionId);
    assert.equal(done.state, pb.ExecutionState.FAILED, type);
    const task = done.tasks[0];
    assert.equal(task.error.type, errorType);
    assert.equal(task.attempt, 1, `${type} is not retried`);
    if (type === "n.fatal") assert.equal(task.error.retryable, false);
  }
  const { executionId } = await client.start({ source: ONE("n.flaky") });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
  assert.equal(done.tasks[0].attempt, 3);
  assert.equal(done.tasks[0].attempts[0].error.type, "TypeError");
  assert.deepEqual(done.outputs, { out: "third time" });
});

test("a thrown value with no string form fails the attempt; the worker lives on", async () => {
  // String(Object.create(null)) throws: errorInfo threw in the rejection callback, an
  // unhandled rejection that ended the worker process (this test's, here).
  startWorker((w) =>
    w.task("n.opaque", () => {
      throw Object.create(null);
    }),
  );
  const { executionId } = await client.start({ source: ONE("n.opaque") });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.FAILED);
  const task = done.tasks[0];
  assert.equal(task.attempt, 3);
  assert.deepEqual([task.error.type, task.error.message], ["Error", "(a thrown value that cannot be read)"]);
  const getter = errorInfo({ get message() { throw new Error("no"); } });
  assert.deepEqual([getter.type, getter.message], ["Error", "[object Object]"]);
});

test("errorInfo sets ErrorInfo.retry (and retryable, for older servers)", () => {
  const plain = errorInfo(new CardDeclined("no"));
  assert.deepEqual([plain.type, plain.retry, plain.retryable], ["CardDeclined", pb.ErrorRetry.RETRYABLE, true]);
  const fatal = errorInfo(new NonRetryableError("bad"));
  assert.deepEqual([fatal.retry, fatal.retryable], [pb.ErrorRetry.NON_RETRYABLE, false]);
  const flagged = errorInfo(Object.assign(new Error("x"), { retryable: false }));
  assert.equal(flagged.retry, pb.ErrorRetry.NON_RETRYABLE);
});

test("cancellation aborts the handler's signal and sends no result", async () => {
  let aborted;
  let started = false;
  startWorker((w) =>
    w.task("n.slow", (inputs, ctx) => {
      started = true;
      return new Promise((_, reject) => {
        ctx.signal.addEventListener("abort", () => {
          aborted = ctx.signal.reason;
          reject(ctx.signal.reason);
        });
      });
    }),
  );
  const { executionId } = await client.start({ source: ONE("n.slow") });
  await waitFor(() => started, 10_000, "handler start");
  await client.cancel(executionId, { reason: "user" });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.CANCELLED);
  await waitFor(() => aborted !== undefined, 10_000, "abort signal");
  assert.equal(aborted.name, "CancelledError");
});

test("reconnects after a server restart (same port, same db) and delivers the result", async () => {
  let calls = 0;
  let release;
  const gate = new Promise((r) => (release = r));
  startWorker((w) =>
    w.task("n.gated", async (inputs) => {
      calls += 1;
      await gate;
      return { v: inputs.x * 10 };
    }),
  );
  const { executionId } = await client.start({ source: ONE("n.gated"), inputs: { x: 7 } });
  await waitFor(() => calls === 1, 10_000, "handler start");
  await server.restart();
  // Let the worker reconnect and re-register its running attempt, then finish it.
  await new Promise((r) => setTimeout(r, 500));
  release();
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
  assert.deepEqual(done.outputs, { out: { v: 70 } });
  assert.equal(calls, 1, "the running attempt was reconciled, not re-dispatched");
});

test("drain finishes running work, sends its result, then resolves", async () => {
  let started = false;
  const { worker, serving } = startWorker((w) =>
    w.task("n.drain", async (inputs) => {
      started = true;
      await new Promise((r) => setTimeout(r, 500));
      return { v: inputs.x };
    }),
  );
  const { executionId } = await client.start({ source: ONE("n.drain"), inputs: { x: 5 } });
  await waitFor(() => started, 10_000, "handler start");
  const t0 = Date.now();
  await worker.drain("test");
  await serving;
  assert.ok(Date.now() - t0 >= 300, "drain waited for the running attempt");
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
  assert.deepEqual(done.outputs, { out: { v: 5 } });
});

test("heartbeats keep an attempt alive past its heartbeat timeout", async () => {
  startWorker((w) =>
    w.task("n.beat", async (inputs, ctx) => {
      for (let i = 0; i < 5; i++) {
        ctx.heartbeat({ i });
        await new Promise((r) => setTimeout(r, 500));
      }
      return { beats: 5 };
    }),
  );
  const source = `
name: node-beat
tasks:
  - id: a
    type: n.beat
    timeouts: {heartbeat: 1s, start_to_close: 30s}
    retry: {max_attempts: 1}
`;
  const { executionId } = await client.start({ source });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED, JSON.stringify(done.tasks[0]?.error));
});

test("a fatal status (INVALID_ARGUMENT registration) rejects serve() without retrying", async () => {
  const worker = new Worker({ address: server.address }); // no task types: refused
  await assert.rejects(worker.serve(), (err) => {
    assert.equal(err.name, "InvalidArgumentError");
    assert.ok(err.violations.some((v) => v.field === "register.task_types"));
    return true;
  });
});

test("a server drain (SIGTERM) lets the running attempt finish; the worker then comes back to the restarted server", async () => {
  let runs = 0;
  const { serving } = startWorker((w) =>
    w.task("n.server-drain", async (inputs) => {
      runs += 1;
      await new Promise((r) => setTimeout(r, 300));
      return { v: inputs.x };
    }),
  );
  let settled = false;
  serving.then(
    () => (settled = true),
    () => (settled = true),
  );
  const first = await client.start({ source: ONE("n.server-drain"), inputs: { x: 3 } });
  await waitFor(() => runs === 1, 10_000, "handler start");
  await server.kill("SIGTERM", 10_000); // the attempt finishes and is delivered during the drain
  assert.equal(settled, false, "a server shutting down must not end the worker");
  await server.restart();
  const done = await finish(client, first.executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
  assert.deepEqual(done.outputs, { out: { v: 3 } });
  const second = await client.start({ source: ONE("n.server-drain"), inputs: { x: 4 } });
  assert.equal((await finish(client, second.executionId)).state, pb.ExecutionState.SUCCEEDED);
  assert.equal(runs, 2);
});
