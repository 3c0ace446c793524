// Live output, progress, search attributes, filters, purge and schedules from Node,
// against a real `execplan serve` process.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ExecplanClient, NotFoundError, Worker, fromSearchAttributes, pb } from "../dist/index.js";
import { Server, finish } from "./server.mjs";

const TALK = `
name: node-talk
tasks:
  - id: gate
    type: builtin.wait_for_event
    inputs: {event: go, timeout: 1m}
  - id: talk
    type: n.talk
    depends_on: [gate]
outputs:
  text: "\${{ tasks.talk.output.text }}"
`;

const TAG = `
name: node-tag
tasks:
  - id: tag
    type: n.tag
`;

const QUICK = `
name: node-quick
tasks:
  - id: nap
    type: builtin.sleep
    inputs: {duration: 1ms}
`;

const REPORT = `
name: node-report
tasks:
  - id: report
    type: n.report
`;

let server;
let client;
const workers = [];

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
  client.close();
  await server.stop();
});

function startWorker(register) {
  const worker = new Worker({ address: server.address, slots: 4 });
  register(worker);
  workers.push({ worker, serving: worker.serve() });
}

test("ctx.stream reaches a watching client live; progress is recorded", async () => {
  startWorker((w) =>
    w.task("n.talk", async (_inputs, ctx) => {
      for (const word of ["node ", "streams ", "tokens"]) {
        ctx.stream(word);
        ctx.heartbeat({ word });
        await new Promise((r) => setTimeout(r, 20));
      }
      ctx.stream({ done: true });
      ctx.stream(new TextEncoder().encode("!"));
      await new Promise((r) => setTimeout(r, 1100)); // past the progress interval
      return { text: "node streams tokens" };
    }),
  );
  const { executionId } = await client.start({ source: TALK });
  const seen = [];
  const watching = (async () => {
    for await (const item of client.watch(executionId, 0n, { stream: true })) {
      if (item.$typeName === "execplan.v1.StreamChunk") seen.push(item);
      else if (item.kind.case === "executionStarted") await client.sendEvent(executionId, "go");
      else if (item.kind.case === "executionCompleted") return item;
    }
  })();
  const done = await watching;
  assert.equal(done.kind.value.outputs.text, "node streams tokens");
  assert.deepEqual(
    seen.filter((c) => c.content.case === "text").map((c) => c.content.value),
    ["node ", "streams ", "tokens"],
  );
  assert.deepEqual(toJson(ValueSchema, seen.find((c) => c.content.case === "json").content.value), { done: true });
  assert.equal(new TextDecoder().decode(seen.find((c) => c.content.case === "data").content.value), "!");
  assert.deepEqual(seen.map((c) => c.index), seen.map((_, i) => BigInt(i + 1)));
  const history = [];
  for await (const e of client.history(executionId)) history.push(e);
  const progress = history.filter((e) => e.kind.case === "taskProgress").map((e) => toJson(ValueSchema, e.kind.value.progress));
  assert.ok(progress.length >= 1 && progress.length <= 3, `progress events: ${progress.length}`);
  assert.deepEqual(progress.at(-1), { word: "tokens" });
});

test("progress reported just before the result is recorded", async () => {
  startWorker((w) =>
    w.task("n.report", async (_inputs, ctx) => {
      ctx.heartbeat({ step: "last" });
      return {}; // at once: the progress must not be lost with the attempt
    }),
  );
  for (let i = 0; i < 3; i++) {
    const { executionId } = await client.start({ source: REPORT });
    await finish(client, executionId);
    const kinds = [];
    const progress = [];
    for await (const e of client.history(executionId)) {
      kinds.push(e.kind.case);
      if (e.kind.case === "taskProgress") progress.push(toJson(ValueSchema, e.kind.value.progress));
    }
    assert.deepEqual(progress, [{ step: "last" }], kinds.join(", "));
    assert.ok(kinds.indexOf("taskProgress") < kinds.indexOf("taskSucceeded"), kinds.join(", "));
  }
});

const REFUSE = `
name: node-refuse
tasks:
  - id: report
    type: n.refuse
outputs:
  refused: "\${{ tasks.report.output.refused }}"
`;

test("progress that is not JSON throws where it is reported; the attempt still ends", async () => {
  startWorker((w) =>
    w.task("n.refuse", async (_inputs, ctx) => {
      const refused = [];
      const circular = {};
      circular.self = circular;
      for (const progress of [{ big: 10n }, circular]) {
        try {
          ctx.heartbeat(progress);
        } catch (err) {
          refused.push(err instanceof TypeError);
        }
      }
      ctx.heartbeat({ step: "fine" });
      return { refused };
    }),
  );
  const { executionId } = await client.start({ source: REFUSE });
  const done = await finish(client, executionId);
  assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
  assert.deepEqual(done.outputs, { refused: [true, true] });
  const progress = [];
  for await (const e of client.history(executionId)) {
    if (e.kind.case === "taskProgress") progress.push(toJson(ValueSchema, e.kind.value.progress));
  }
  assert.deepEqual(progress, [{ step: "fine" }]);
});

const PAIR = `
name: node-pair
tasks:
  - {id: talk, type: n.pair}
  - {id: other, type: n.pair}
`;

test("watchTaskStream yields one task's chunks live and ends when that task ends", async () => {
  let watching = false; // set once the watch has seen a chunk: the subscription is live
  startWorker((w) =>
    w.task("n.pair", async (_inputs, ctx) => {
      while (!watching) {
        ctx.stream(`${ctx.taskId}-tick`);
        await new Promise((r) => setTimeout(r, 20));
      }
      for (const word of ["a", "b", "c"]) ctx.stream(`${ctx.taskId}-${word}`);
      return {};
    }),
  );
  const { executionId } = await client.start({ source: PAIR });
  const seen = [];
  for await (const chunk of client.watchTaskStream(executionId, "talk")) {
    assert.equal(chunk.taskId, "talk");
    seen.push(chunk.content.value);
    watching = true;
  }
  // The loop ended by itself: the stream is closed once `talk` has ended.
  const words = seen.filter((w) => w !== "talk-tick");
  assert.deepEqual(words, ["talk-a", "talk-b", "talk-c"]);
  await finish(client, executionId);
});

test("search attributes at start and from a task; list filters by them", async () => {
  const batch = `b${Date.now()}`;
  startWorker((w) =>
    w.task("n.tag", async (_inputs, ctx) => {
      ctx.setSearchAttributes({ stage: "tagged", score: 0.5 });
      return {};
    }),
  );
  const first = await client.start({ source: TAG, searchAttributes: { batch, customer: "acme", priority: 3, due: new Date("2026-01-31T00:00:00Z") } });
  const second = await client.start({ source: QUICK, searchAttributes: { batch, customer: "globex", priority: 9n } });
  await finish(client, first.executionId);
  await finish(client, second.executionId);
  const list = async (filter) => {
    const found = [];
    for await (const e of client.list({ filter: `batch = "${batch}" AND ${filter}` })) found.push(e.executionId);
    return found;
  };
  assert.deepEqual(await list("customer = acme"), [first.executionId]);
  assert.deepEqual(await list("priority > 5"), [second.executionId]);
  assert.deepEqual(await list('stage = "tagged" AND score < 1'), [first.executionId]);
  assert.deepEqual((await list("due >= 2026-01-31")).length, 1);
  const got = await client.get(first.executionId);
  const attrs = fromSearchAttributes(got.searchAttributes);
  assert.equal(attrs.customer, "acme");
  assert.equal(attrs.priority, 3n);
  assert.equal(attrs.stage, "tagged");
  assert.equal(attrs.due.toISOString(), "2026-01-31T00:00:00.000Z");
  await assert.rejects(
    async () => {
      for await (const _ of client.list({ filter: "state = sleeping" })) break;
    },
    (err) => err.violations?.[0]?.field === "filter",
  );
  const purged = await client.purge({ filter: `batch = "${batch}"` });
  assert.equal(purged.purged, 2);
  assert.deepEqual(await list("state = succeeded"), []);
});

test("schedules: create, list, pause, backfill, delete", async () => {
  const name = `node-${Date.now()}`;
  const created = await client.schedules.create(name, { everyMs: 1000, source: QUICK, overlap: "allow" });
  assert.equal(created.created, true);
  assert.equal(created.schedule.name, name);
  await new Promise((r) => setTimeout(r, 2500));
  const runs = [];
  for await (const e of client.list({ filter: `execplan_schedule = "${name}"` })) runs.push(e);
  assert.ok(runs.length >= 1, `runs: ${runs.length}`);
  const listed = [];
  for await (const s of client.schedules.list()) listed.push(s.name);
  assert.ok(listed.includes(name));
  const paused = await client.schedules.pause(name, "test");
  assert.equal(paused.paused, true);
  const end = new Date(Date.now() - 60_000);
  const start = new Date(end.getTime() - 2000);
  const filled = await client.schedules.backfill(name, start, end);
  assert.equal(filled.slots, filled.started + filled.alreadyRun);
  assert.equal(await client.schedules.delete(name), true);
  await assert.rejects(client.schedules.get(name), (err) => err instanceof NotFoundError);
});
