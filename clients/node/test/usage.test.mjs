// The Node SDK's side of usage (docs/usage.md): ctx.usage checks and numbers reports
// (camelCase keys in snake_case), the outbox sends them before results and keeps them
// until acknowledged (again after a reconnect, in order), Output puts usage beside the
// output; against a real server, usage of a failed attempt counts, a budget pauses and
// setBudget resumes, and usage() adds it up.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ExecplanClient, Output, TaskContext, Worker, usageMessage, pb } from "../dist/index.js";
import { Outbox } from "../dist/outbox.js";
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

const ref = create(pb.AttemptRefSchema, {
  executionId: "e1",
  taskId: "a",
  phase: 1,
  token: { attempt: 1, leaseEpoch: 1n },
});

function report(sequence, cost) {
  return create(pb.UsageReportSchema, { attempt: ref, sequence, usage: { counters: { cost } } });
}

test("ctx.usage numbers reports and sends snake_case counters", () => {
  const sent = [];
  const ctx = new TaskContext({ executionId: "e1", taskId: "a", attempt: 1, leaseEpoch: 1n, idempotencyKey: "k", taskType: "t", workflowName: "w", secrets: {}, traceContext: {}, deadline: undefined }, new AbortController().signal, () => {}, (seq, usage) => sent.push([seq, { ...usage.counters }]));
  ctx.usage({ tokensIn: 1200, tokens_out: 300, cost: 0.0042 });
  ctx.usage({ searches: 2, cost: undefined });
  ctx.usage({});
  assert.deepEqual(sent, [
    [1, { tokens_in: 1200, tokens_out: 300, cost: 0.0042 }],
    [2, { searches: 2 }],
  ]);
});

test("usageMessage refuses what the executor would", () => {
  for (const bad of [{ cost: -1 }, { cost: Infinity }, { cost: NaN }, { cost: 1e16 }, { "9lives": 1 }, { ["a".repeat(65)]: 1 }]) {
    assert.throws(() => usageMessage(bad), RangeError, JSON.stringify(bad));
  }
  assert.throws(() => usageMessage({ cost: "0.1" }), TypeError);
  const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`c${i}`, 1]));
  assert.throws(() => usageMessage(many), RangeError);
  assert.equal(usageMessage({ cost: undefined }), undefined);
});

test("usage leaves before results and stays until acknowledged, then again after a reconnect", () => {
  const box = new Outbox();
  const key = "e1/a/1/1/1";
  box.addUsage(key, report(1, 0.1));
  box.addUsage(key, report(2, 0.2));
  box.results.set(key, create(pb.TaskResultSchema, { attempt: ref, outcome: { case: "output", value: { kind: { case: "nullValue", value: 0 } } } }));
  const request = box.take(0, 10_000);
  assert.deepEqual(request.usage.map((r) => r.sequence), [1, 2]);
  assert.equal(request.results.length, 1);
  box.usageAcked(key, 1);
  box.addUsage(key, report(3, 0.3));
  box.resetConnection(false);
  const again = box.take(0, 10_000);
  assert.deepEqual(again.usage.map((r) => r.sequence), [2, 3]);
  box.usageAcked(key, 2);
  box.usageAcked(key, 3);
  assert.equal(box.usageUnacked.size, 0);
  assert.ok(box.empty());
});

test("results wait while usage is still queued", () => {
  const box = new Outbox();
  const key = "e1/a/1/1/1";
  for (let s = 1; s <= 1501; s++) box.addUsage(key, report(s, 0.001));
  box.results.set(key, create(pb.TaskResultSchema, { attempt: ref, outcome: { case: "output", value: { kind: { case: "nullValue", value: 0 } } } }));
  const first = box.take(0, 10_000);
  assert.equal(first.usage.length, 1000);
  assert.equal(first.results.length, 0);
  const second = box.take(0, 10_000);
  assert.equal(second.usage.length, 501);
  assert.equal(second.results.length, 1);
});

test("a too-big output is replaced but keeps its usage", () => {
  const box = new Outbox();
  box.setLimits(128 * 1024, 256 * 1024);
  const result = create(pb.TaskResultSchema, {
    attempt: ref,
    usage: { counters: { cost: 3 } },
    outcome: { case: "output", value: { kind: { case: "stringValue", value: "x".repeat(200_000) } } },
  });
  const { result: fitted } = box.fit(result);
  assert.equal(fitted.outcome.case, "error");
  assert.equal(fitted.outcome.value.type, "PayloadTooLarge");
  assert.deepEqual({ ...fitted.usage.counters }, { cost: 3 });
});

test("Output wraps a value and its usage", () => {
  const out = new Output({ answer: 42 }, { costUsd: 1 });
  assert.deepEqual(out.value, { answer: 42 });
  assert.deepEqual({ ...usageMessage(out.usage).counters }, { cost_usd: 1 });
});

const BUDGETED = `
name: node-usage
budget: {cost: 1.5}
tasks:
  - {id: a, type: n.spend, retry: {max_attempts: 2, initial_interval: 10ms}}
  - {id: b, type: n.spend, depends_on: [a], estimate: {cost: 1}}
`;

test("a real run: usage of a failed attempt counts, the budget pauses, setBudget resumes", async () => {
  const worker = new Worker({ address: server.address, workerId: "node-usage" });
  worker.task("n.spend", async (inputs, ctx) => {
    ctx.usage({ tokensIn: 100, cost: 0.25 });
    if (ctx.taskId === "a" && ctx.attempt === 1) throw new Error("flaky");
    return new Output({ ok: true }, { cost: 0.25 });
  });
  const serving = worker.serve();
  try {
    const { executionId } = await client.start({ source: BUDGETED });
    let paused;
    for (let i = 0; i < 300; i++) {
      paused = await client.get(executionId);
      if (paused.state === pb.ExecutionState.PAUSED) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(paused.state, pb.ExecutionState.PAUSED);
    assert.deepEqual({ ...paused.usage.counters }, { tokens_in: 200, cost: 0.75 });
    assert.equal(paused.budgetExceeded.taskId, "b");
    const changed = await client.setBudget(executionId, { cost: 5, resume: true });
    assert.equal(changed.budget.cost, 5);
    for await (const event of client.watch(executionId)) {
      if (event.kind.case === "executionCompleted") {
        assert.equal(event.kind.value.state, pb.ExecutionState.SUCCEEDED);
        break;
      }
    }
    const totals = await client.usage({ workflowName: "node-usage", since: 3_600_000 });
    assert.deepEqual({ ...totals.usage.counters }, { tokens_in: 300, cost: 1.25 });
    assert.equal(totals.executions, 1);
    const byTask = await client.usage({ executionId, groupBy: "task" });
    assert.deepEqual(byTask.groups.map((g) => [g.key, g.usage.counters.cost]), [["a", 0.75], ["b", 0.5]]);
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
  }
});

const TASK_BUDGETED = `
name: node-task-budget
tasks:
  - {id: a, type: n.pricey, budget: {cost: 0.5}, retry: {max_attempts: 2, initial_interval: 10ms}}
`;

test("setBudget with taskId raises a task's own budget", async () => {
  const worker = new Worker({ address: server.address, workerId: "node-task-budget" });
  worker.task("n.pricey", async (inputs, ctx) => {
    ctx.usage({ cost: 0.5 });
    if (ctx.attempt === 1) throw new Error("spent, then failed");
    return { ok: true };
  });
  const serving = worker.serve();
  try {
    const { executionId } = await client.start({ source: TASK_BUDGETED });
    let paused;
    for (let i = 0; i < 300; i++) {
      paused = await client.get(executionId);
      if (paused.state === pb.ExecutionState.PAUSED) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(paused.state, pb.ExecutionState.PAUSED);
    assert.equal(paused.budgetExceeded.budgetTaskId, "a");
    const changed = await client.setBudget(executionId, { taskId: "a", cost: 2, resume: true });
    assert.equal(changed.budget.cost, 2);
    for await (const event of client.watch(executionId)) {
      if (event.kind.case === "executionCompleted") {
        assert.equal(event.kind.value.state, pb.ExecutionState.SUCCEEDED);
        break;
      }
    }
    const done = await client.get(executionId);
    assert.equal(done.tasks[0].budget.cost, 2);
    assert.deepEqual({ ...done.usage.counters }, { cost: 1 });
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
  }
});

const CHILD = `
name: node-by-child
version: "1"
tasks:
  - {id: c, type: n.cost, inputs: {cost: 2}}
`;
const PARENT = `
name: node-by-parent
tasks:
  - {id: p, type: n.cost, inputs: {cost: 1}}
  - {id: child, type: builtin.workflow, workflow: node-by-child@1, depends_on: [p]}
`;
const LEAF = `
name: node-by-leaf
inputs: {cost: {type: number, default: 4}}
tasks:
  - {id: l, type: n.cost, inputs: {cost: "\${{ workflow.inputs.cost }}"}}
`;

test("usage({groupBy: 'attribute:customer'}) splits by customer, children under their parent's", async () => {
  const worker = new Worker({ address: server.address, workerId: "node-by-attribute" });
  worker.task("n.cost", async (inputs, ctx) => {
    ctx.usage({ cost: inputs.cost });
    return {};
  });
  const serving = worker.serve();
  try {
    await client.register({ source: CHILD });
    const ids = [
      (await client.start({ source: PARENT, searchAttributes: { customer: "acme" } })).executionId,
      (await client.start({ source: LEAF, searchAttributes: { customer: "globex" } })).executionId,
      (await client.start({ source: LEAF, inputs: { cost: 8 } })).executionId,
    ];
    for (const executionId of ids) {
      for await (const event of client.watch(executionId)) {
        if (event.kind.case === "executionCompleted") {
          assert.equal(event.kind.value.state, pb.ExecutionState.SUCCEEDED);
          break;
        }
      }
    }
    const totals = { cost: 15 };
    const scoped = [];
    for (const workflowName of ["node-by-parent", "node-by-leaf"]) {
      scoped.push(await client.usage({ workflowName, groupBy: "attribute:customer" }));
    }
    const groups = scoped.flatMap((r) => r.groups.map((g) => [g.key, g.usage.counters.cost, g.executions, g.value?.value.case, g.value?.value.value]));
    assert.deepEqual(groups, [
      ['"acme"', 3, 2, "stringValue", "acme"],
      ["(none)", 8, 1, undefined, undefined],
      ['"globex"', 4, 1, "stringValue", "globex"],
    ]);
    assert.equal(scoped[0].usage.counters.cost + scoped[1].usage.counters.cost, totals.cost);
    const acme = await client.usage({ filter: 'customer = "acme"', groupBy: "attribute:customer" });
    assert.deepEqual(acme.groups.map((g) => [g.key, g.usage.counters.cost]), [['"acme"', 3]]);
    await assert.rejects(client.usage({ groupBy: "attribute:" }), (err) => {
      assert.match(err.message, /INVALID_ARGUMENT.*needs group_attribute/);
      assert.deepEqual(err.violations.map((v) => v.field), ["group_attribute"]);
      return true;
    });
    await assert.rejects(client.usage({ groupBy: "customer" }), TypeError);
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
  }
});
