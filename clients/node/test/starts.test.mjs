// ExecplanClient.start() coalesces the starts of one event-loop turn into one
// StartExecutions call (a real `execplan serve` process; calls counted by a client
// interceptor), and every caller still gets its own result or its own error.
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { AlreadyExistsError, ExecplanClient, InvalidArgumentError, NotFoundError, UnavailableError } from "../dist/index.js";
import { ExecutorService, StartExecutionResponseSchema } from "../dist/gen/execplan/v1/executor_service_pb.js";
import { serviceDefinition } from "../dist/rpc.js";
import { Server } from "./server.mjs";

const WAIT = `
name: node-coalesce
inputs: {n: {type: integer, default: 1}}
tasks:
  - id: w
    type: builtin.wait_for_event
    inputs: {event: go, timeout: 5m}
`;
const START = "/execplan.v1.ExecutorService/StartExecution";
const START_MANY = "/execplan.v1.ExecutorService/StartExecutions";

/** A client interceptor counting unary calls by method path. */
function counter() {
  const made = {};
  const interceptor = (options, next) => {
    const path = options.method_definition.path;
    made[path] = (made[path] ?? 0) + 1;
    return new grpc.InterceptingCall(next(options));
  };
  return { made, interceptor };
}

let server;

before(async () => {
  server = await Server.start();
});

after(async () => {
  await server?.stop();
});

test("starts of one turn travel as one StartExecutions; each caller gets its own answer", async () => {
  const { made, interceptor } = counter();
  const client = new ExecplanClient(server.address, { interceptors: [interceptor] });
  try {
    const alone = await client.start({ source: WAIT, inputs: { n: 0 } });
    assert.deepEqual(made, { [START]: 1 });
    const outcomes = await Promise.allSettled([
      ...Array.from({ length: 40 }, (_, n) => client.start({ source: WAIT, inputs: { n } })),
      client.start({ source: WAIT, inputs: { n: "not a number" } }),
      client.start({ planId: "no-such-plan" }),
    ]);
    assert.deepEqual(made, { [START]: 1, [START_MANY]: 1 });
    const started = outcomes.slice(0, 40).map((o) => o.value);
    assert.ok(started.every((s) => s.created));
    assert.equal(new Set([alone.executionId, ...started.map((s) => s.executionId)]).size, 41);
    const [badInput, noPlan] = outcomes.slice(40).map((o) => o.reason);
    // The error a lone start gets: same class, message and field paths (no prefix).
    const lone = await client.start({ source: WAIT, inputs: { n: "not a number" } }).catch((e) => e);
    assert.ok(badInput instanceof InvalidArgumentError);
    assert.equal(badInput.message, lone.message);
    assert.deepEqual(badInput.violations, lone.violations);
    assert.deepEqual(badInput.violations.map((v) => v.field), ["inputs.n"]);
    assert.ok(noPlan instanceof NotFoundError);
  } finally {
    client.close();
  }
});

test("request ids repeated in one turn: the first creates, the same request shares it", async () => {
  const { made, interceptor } = counter();
  const client = new ExecplanClient(server.address, { interceptors: [interceptor] });
  try {
    const [first, again, other] = await Promise.allSettled([
      client.start({ source: WAIT, inputs: { n: 1 }, requestId: "node-same" }),
      client.start({ source: WAIT, inputs: { n: 1 }, requestId: "node-same" }),
      client.start({ source: WAIT, inputs: { n: 2 }, requestId: "node-same" }),
    ]);
    assert.deepEqual(made, { [START_MANY]: 1 });
    assert.equal(first.value.created, true);
    assert.deepEqual([again.value.executionId, again.value.created], [first.value.executionId, false]);
    assert.ok(other.reason instanceof AlreadyExistsError);
    assert.equal(other.reason.reason, "REQUEST_ID_REUSED");
    assert.equal(other.reason.metadata.executionId, first.value.executionId);
  } finally {
    client.close();
  }
});

test("an older server without StartExecutions gets each start alone, from then on", async () => {
  let starts = 0;
  const older = new grpc.Server();
  const definition = serviceDefinition(ExecutorService);
  older.addService(
    { startExecution: definition.startExecution, startExecutions: definition.startExecutions },
    {
      startExecution(call, callback) {
        starts += 1;
        callback(null, create(StartExecutionResponseSchema, { executionId: `e-${call.request.requestId}`, created: true }));
      },
      startExecutions(_call, callback) {
        callback({ code: grpc.status.UNIMPLEMENTED, details: "unknown method" });
      },
    },
  );
  const port = await new Promise((resolve, reject) =>
    older.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const { made, interceptor } = counter();
  const client = new ExecplanClient(`127.0.0.1:${port}`, { interceptors: [interceptor] });
  try {
    for (let turn = 0; turn < 2; turn++) {
      const ids = Array.from({ length: 5 }, (_, n) => `r${n}`);
      const got = await Promise.all(ids.map((requestId) => client.start({ planId: "p", requestId })));
      assert.deepEqual(got.map((g) => g.executionId), ids.map((id) => `e-${id}`));
    }
    assert.deepEqual(made, { [START_MANY]: 1, [START]: 10 });
    assert.equal(starts, 10);
  } finally {
    client.close();
    older.forceShutdown();
  }
});

test("a batch that fails as a whole fails each caller with an error of its own", async () => {
  // Nothing listens there: the one StartExecutions fails UNAVAILABLE (a unary call does
  // not retry it), and every caller gets its own error, as three lone calls would.
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  const client = new ExecplanClient(`127.0.0.1:${port}`);
  try {
    const outcomes = await Promise.allSettled([0, 1, 2].map((n) => client.start({ planId: "p", requestId: `r${n}` })));
    const errors = outcomes.map((o) => o.reason);
    assert.ok(errors.every((e) => e instanceof UnavailableError), String(errors[0]));
    assert.equal(new Set(errors).size, 3);
  } finally {
    client.close();
  }
});
