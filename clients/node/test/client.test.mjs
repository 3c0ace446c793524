// ExecplanClient against a real `execplan serve` process.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { AlreadyExistsError, ExecplanClient, InvalidArgumentError, NotFoundError, pb } from "../dist/index.js";
import { Server, finish, waitFor } from "./server.mjs";

const WAIT = `
name: node-wait
inputs: {who: {type: string, default: ada}}
tasks:
  - id: wait
    type: builtin.wait_for_event
    inputs: {event: go, timeout: 5m}
outputs:
  data: "\${{ tasks.wait.output.data }}"
`;

const TYPED = `
name: node-typed
inputs: {x: {type: integer, required: true}}
tasks:
  - id: wait
    type: builtin.wait_for_event
    inputs: {event: go, timeout: 5m}
`;

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

test("health reports SERVING through the vendored grpc.health.v1 protos", async () => {
  assert.equal(await client.health(), "SERVING");
  assert.equal(await client.health("execplan.v1.ExecutorService"), "SERVING");
  await assert.rejects(client.health("no.such.Service"), NotFoundError);
});

test("compile returns a plan", async () => {
  const plan = await client.compile(WAIT);
  assert.match(plan.planId, /^sha256:/);
  assert.equal(plan.workflowName, "node-wait");
  assert.equal(plan.nodes.length, 1);
  // A stored plan starts by id.
  const { planId } = await client.start({ plan });
  assert.equal(planId, plan.planId);
});

test("start, get, sendEvent, watch, history", async () => {
  const started = await client.start({ source: WAIT, inputs: { who: "grace" }, requestId: "req-1" });
  assert.equal(started.created, true);
  const again = await client.start({ source: WAIT, inputs: { who: "grace" }, requestId: "req-1" });
  assert.deepEqual([again.executionId, again.created], [started.executionId, false]);
  // The same request_id with another request: ALREADY_EXISTS, with google.rpc.ErrorInfo.
  await assert.rejects(client.start({ source: WAIT, inputs: { who: "ada" }, requestId: "req-1" }), (err) => {
    assert.ok(err instanceof AlreadyExistsError);
    assert.equal(err.reason, "REQUEST_ID_REUSED");
    assert.equal(err.metadata.executionId, started.executionId);
    return true;
  });
  const running = await client.get(started.executionId);
  assert.equal(running.state, pb.ExecutionState.RUNNING);
  assert.deepEqual(running.inputs, { who: "grace" });
  await waitFor(async () => (await client.get(started.executionId)).tasks[0]?.state === pb.TaskState.WAITING, 10_000, "waiting");
  assert.equal(await client.sendEvent(started.executionId, "go", { by: "node" }), "wait");
  const done = await finish(client, started.executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
  assert.deepEqual(done.outputs, { data: { by: "node" } });
  const history = [];
  for await (const e of client.history(started.executionId, 0, 2)) history.push(e);
  assert.equal(history.at(-1).kind.case, "executionCompleted");
  assert.deepEqual(history.map((e) => e.sequence), history.map((_, i) => BigInt(i + 1)));
  // Watch from a sequence resumes after it.
  const tail = [];
  for await (const e of client.watch(started.executionId, history.at(-3).sequence)) tail.push(e.kind.case);
  assert.deepEqual(tail, history.slice(-2).map((e) => e.kind.case));
});

test("list follows page tokens", async () => {
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await client.start({ source: WAIT, inputs: { who: `p${i}` } })).executionId);
  const seen = [];
  for await (const e of client.list({ workflowName: "node-wait", pageSize: 1 })) seen.push(e.executionId);
  for (const id of ids) assert.ok(seen.includes(id), `${id} listed`);
  assert.equal(new Set(seen).size, seen.length);
  for (const id of ids) await client.terminate(id, { reason: "cleanup" });
});

test("pause, resume, cancel, terminate", async () => {
  const a = (await client.start({ source: WAIT })).executionId;
  assert.equal(await client.pause(a, { reason: "look" }), pb.ExecutionState.PAUSED);
  assert.equal((await client.get(a)).state, pb.ExecutionState.PAUSED);
  assert.equal(await client.resume(a), pb.ExecutionState.RUNNING);
  await client.cancel(a, { reason: "no" });
  assert.equal((await finish(client, a)).state, pb.ExecutionState.CANCELLED);
  const b = (await client.start({ source: WAIT })).executionId;
  await client.terminate(b, { reason: "now" });
  assert.equal((await finish(client, b)).state, pb.ExecutionState.TERMINATED);
});

test("INVALID_ARGUMENT carries BadRequest violations", async () => {
  await assert.rejects(client.start({ source: TYPED, inputs: { x: "nope" } }), (err) => {
    assert.ok(err instanceof InvalidArgumentError);
    assert.equal(err.code, 3);
    assert.ok(err.violations.some((v) => v.field === "inputs.x"), JSON.stringify(err.violations));
    return true;
  });
  await assert.rejects(client.get("no-such-execution"), NotFoundError);
});

test("watch reconnects across a server restart and resumes after the last event", async () => {
  const id = (await client.start({ source: WAIT })).executionId;
  const kinds = [];
  const seqs = [];
  const watching = (async () => {
    for await (const e of client.watch(id)) {
      kinds.push(e.kind.case);
      seqs.push(e.sequence);
    }
  })();
  await waitFor(() => kinds.length >= 2, 10_000, "first events");
  await server.restart();
  await waitFor(async () => (await client.get(id).catch(() => undefined))?.tasks[0]?.state === pb.TaskState.WAITING, 15_000, "waiting after restart");
  await client.sendEvent(id, "go", 1);
  await watching;
  assert.equal(kinds.at(-1), "executionCompleted");
  assert.deepEqual(seqs, seqs.map((_, i) => BigInt(i + 1)), "no gap, no duplicate");
});
