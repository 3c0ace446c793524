// Worker capacity declarations and a provider's 429 on the wire, without a server.
import assert from "node:assert/strict";
import { test } from "node:test";
import { RateLimited, Worker, encodeCapacity, errorInfo, pb } from "../dist/index.js";

test("capacity: declared values, machine defaults and bad names", () => {
  const declared = new Worker({ capacity: { cpu: "500m", memory: "8Gi", gpu: 1, "model-slots": 2 } }).capacity;
  assert.equal(declared.cpuMillis, 500n);
  assert.equal(declared.memoryBytes, 8n * 2n ** 30n);
  assert.equal(declared.gpu, 1);
  assert.deepEqual({ ...declared.custom }, { "model-slots": 2n });
  const machine = new Worker().capacity;
  assert.ok(machine.cpuMillis >= 1000n && machine.memoryBytes > 0n && machine.gpu === 0);
  assert.equal(encodeCapacity({ gpu: 2 }).cpuMillis, 0n); // undeclared: not checked
  for (const bad of [{ cpu: "lots" }, { gpu: -1 }, { "Bad Name": 1 }, { gpu: 1.5 }]) {
    assert.throws(() => new Worker({ capacity: bad }), RangeError);
  }
});

test("RateLimited carries retry_after, capped at an hour", () => {
  const info = errorInfo(new RateLimited("openai: 429", { retryAfterMs: 2500 }));
  assert.equal(info.type, "RateLimited");
  assert.equal(info.retry, pb.ErrorRetry.RETRYABLE);
  assert.equal(info.retryAfter.seconds, 2n);
  assert.equal(info.retryAfter.nanos, 500_000_000);
  assert.equal(errorInfo(new RateLimited("x", { retryAfterMs: 1e12 })).retryAfter.seconds, 3600n);
  assert.equal(errorInfo(new Error("x")).retryAfter, undefined);
  assert.throws(() => new RateLimited("x", { retryAfterMs: -1 }), RangeError);
});
