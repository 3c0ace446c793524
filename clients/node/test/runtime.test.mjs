// Plans that grow at runtime with Node workers and the Node client, against a real
// `execplan serve` process: for_each with max_parallel measured in the worker, repeat,
// a child workflow registered from a builder, cancel reaching the children, and the
// repair loop of an agent-written sub-plan (SubPlan, ctx.previousError).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import { ExecplanClient, SubPlan, Worker, builder, pb } from "../dist/index.js";
import { Server, finish } from "./server.mjs";

const { Workflow, item, index, iteration, previous, output } = builder;

let server;
let client;
const workers = [];

function startWorker(register, slots = 16) {
  const worker = new Worker({ address: server.address, slots });
  register(worker);
  workers.push({ worker, serving: worker.serve() });
  return worker;
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("for_each: one instance per item, max_parallel at once, output in item order", async () => {
  let running = 0;
  let peak = 0;
  const seen = [];
  startWorker((w) =>
    w
      .task("rn.plan", (inputs) => ({ items: Array.from({ length: inputs.n }, (_, k) => `q${k}`) }))
      .task("rn.research", async (inputs, ctx) => {
        running += 1;
        peak = Math.max(peak, running);
        seen.push(ctx.taskId);
        await sleep(40);
        running -= 1;
        return { answer: `a-${inputs.q}`, i: inputs.i };
      }),
  );
  const wf = new Workflow("rn-fan", { inputs: { n: { type: "integer", default: 10 } } });
  const plan = wf.task("plan", "rn.plan", { inputs: { n: wf.input("n") } });
  const research = wf.task("research", "rn.research", {
    for_each: plan.output.get("items"),
    max_parallel: 3,
    inputs: { q: item, i: index },
  });
  wf.output("third", research.output.get(2).get("answer"));
  wf.output("count", builder.expr("size(tasks.research.output)"));
  const { executionId } = await client.start({ workflow: wf });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED, JSON.stringify(done.error));
  assert.deepEqual(done.outputs, { third: "a-q2", count: 10 });
  assert.equal(peak, 3);
  assert.deepEqual(seen.sort(), Array.from({ length: 10 }, (_, k) => `research[${k}]`).sort());
  const instance = done.tasks.find((t) => t.taskId === "research[4]");
  assert.equal(instance.parentTaskId, "research");
  assert.equal(instance.itemIndex, 4);
  assert.equal(done.tasks.find((t) => t.taskId === "research").instanceCount, 10);
});

test("repeat: previous and iteration until `until` holds", async () => {
  const rounds = [];
  startWorker((w) =>
    w.task("rn.draft", (inputs) => {
      rounds.push(inputs.round);
      return { score: inputs.round + 1, text: `v${inputs.round + 1}`, before: inputs.previous?.text ?? null };
    }),
  );
  const wf = new Workflow("rn-loop");
  const draft = wf.task("draft", "rn.draft", {
    inputs: { previous, round: iteration },
    repeat: { until: output.get("score").source + " >= 3", max_iterations: 5 },
  });
  wf.output("final", draft.output);
  const { executionId } = await client.start({ workflow: wf });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED, JSON.stringify(done.error));
  assert.deepEqual(done.outputs, { final: { score: 3, text: "v3", before: "v2" } });
  assert.deepEqual(rounds, [0, 1, 2]);
});

test("child workflows: registered from a builder, one per item; cancel reaches them", async () => {
  const child = new Workflow("rn-review", { version: "1", inputs: { draft: { type: "string", required: true } } });
  const check = child.task("check", "rn.check", { inputs: { draft: child.input("draft") } });
  child.output("verdict", check.output.get("verdict"));
  const registered = await client.register({ workflow: child });
  assert.equal(registered.workflowName, "rn-review");
  assert.equal((await client.getPlan("", { workflow: "rn-review@1" })).planId, registered.planId);

  const parent = new Workflow("rn-parent");
  const reviews = parent.task("review", "builtin.workflow", {
    workflow: "rn-review",
    for_each: "['a', 'b']",
    inputs: { draft: item },
  });
  parent.output("verdicts", builder.expr("tasks.review.output.map(r, r.verdict)"));
  startWorker((w) => w.task("rn.check", (inputs) => ({ verdict: `ok-${inputs.draft}` })));
  const { executionId } = await client.start({ workflow: parent });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED, JSON.stringify(done.error));
  assert.deepEqual(done.outputs, { verdicts: ["ok-a", "ok-b"] });
  const children = [];
  for await (const e of client.list({ parentExecutionId: executionId })) children.push(e);
  assert.equal(children.length, 2);
  assert.ok(children.every((c) => c.parentExecutionId === executionId));
  assert.ok(reviews.id === "review");

  // Now children that wait until cancelled: cancelling the parent reaches them.
  const slowChild = new Workflow("rn-slow", { version: "1" });
  slowChild.task("wait", "rn.wait");
  await client.register({ workflow: slowChild });
  const waiting = new Workflow("rn-waiting");
  waiting.task("kids", "builtin.workflow", { workflow: "rn-slow@1", for_each: "[1, 2]" });
  startWorker((w) => w.task("rn.wait", (inputs, ctx) => new Promise((resolve) => ctx.signal.addEventListener("abort", () => resolve("stopped")))));
  const started = await client.start({ workflow: waiting });
  let ids = [];
  for (let i = 0; i < 200 && ids.length < 2; i++) {
    const now = await client.get(started.executionId);
    ids = now.tasks.filter((t) => t.childExecutionId).map((t) => t.childExecutionId);
    if (ids.length < 2) await sleep(25);
  }
  assert.equal(ids.length, 2);
  await client.cancel(started.executionId, { reason: "enough" });
  assert.equal((await finish(client, started.executionId)).state, pb.ExecutionState.CANCELLED);
  for (const id of ids) assert.equal((await finish(client, id)).state, pb.ExecutionState.CANCELLED);
});

test("SubPlan: an invalid sub-plan fails with PlanInvalid; the next attempt reads it and repairs", async () => {
  const seen = [];
  startWorker((w) =>
    w
      .task("rn.agent", (inputs, ctx) => {
        seen.push(ctx.previousError);
        const sub = new Workflow("rn-sub", { inputs: { goal: { type: "string" } } });
        const a = sub.task("a", "rn.step");
        sub.task("b", "rn.step", { depends_on: [ctx.previousError ? a : "nope"] });
        sub.output("goal", sub.input("goal"));
        sub.output("last", builder.expr("tasks.b.output"));
        return new SubPlan(sub, { goal: inputs.goal });
      })
      .task("rn.step", (inputs, ctx) => ctx.taskId),
  );
  const wf = new Workflow("rn-agent");
  wf.task("agent", "rn.agent", { dynamic: true, inputs: { goal: "ship" }, retry: { max_attempts: 3, initial_interval: "10ms" } });
  wf.output("result", builder.expr("tasks.agent.output"));
  const { executionId } = await client.start({ workflow: wf });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED, JSON.stringify(done.error));
  assert.deepEqual(done.outputs, { result: { goal: "ship", last: "agent/b" } });
  assert.equal(seen[0], undefined);
  assert.equal(seen[1].type, "PlanInvalid");
  assert.match(seen[1].message, /tasks\[1\]\.depends_on\[0\]/);
  assert.equal(seen[1].details.diagnostics[0].code, "unknown-dependency");
  assert.equal(done.planRevisions.length, 1);
});
