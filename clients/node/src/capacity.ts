/**
 * What a worker can run at once besides its slots (WorkerRegistration.capacity): the
 * executor places a task only where its `resources` fit what is free.
 *
 *     new Worker({ capacity: { cpu: 8, memory: "16Gi", gpu: 1, "model-slots": 2 } })
 *     new Worker()   // cpu: this machine's cores, memory: its RAM, gpu: 0
 *
 * cpu and memory are Kubernetes quantities (`"500m"`, `2`, `"8Gi"`); gpu and custom
 * counters are integers. `null` for cpu or memory leaves them undeclared (not
 * checked on this worker); gpu and custom counters not declared are 0.
 */
import { availableParallelism, totalmem } from "node:os";
import { create } from "@bufbuild/protobuf";
import { WorkerCapacitySchema } from "./gen/execplan/v1/worker_service_pb.js";
import type { WorkerCapacity } from "./gen/execplan/v1/worker_service_pb.js";

export type Capacity = Record<string, string | number | null>;

const SUFFIX: Record<string, number> = {
  "": 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40,
};
const QUANTITY = /^(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|[mkMGT])?$/;
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function quantity(value: string | number, what: string): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`${what}: must be a finite number >= 0`);
    return value;
  }
  const m = QUANTITY.exec(value.trim());
  if (!m) throw new RangeError(`${what}: invalid quantity ${JSON.stringify(value)} (expected e.g. 2, 500m, 8Gi)`);
  return Number(m[1]) * SUFFIX[m[2] ?? ""]!;
}

/** The registration message of `capacity` (undefined: this machine's cpu and memory). */
export function encodeCapacity(capacity?: Capacity): WorkerCapacity {
  if (capacity === undefined) {
    return create(WorkerCapacitySchema, { cpuMillis: BigInt(availableParallelism() * 1000), memoryBytes: BigInt(totalmem()) });
  }
  const out = create(WorkerCapacitySchema, {});
  for (const [name, value] of Object.entries(capacity)) {
    if (name === "cpu" || name === "memory") {
      if (value === null) continue;
      const n = quantity(value, name) * (name === "cpu" ? 1000 : 1);
      if (name === "cpu") out.cpuMillis = BigInt(Math.ceil(n));
      else out.memoryBytes = BigInt(Math.ceil(n));
    } else if (!NAME.test(name)) {
      throw new RangeError(`capacity name ${JSON.stringify(name)} must match [a-z0-9][a-z0-9._-]*`);
    } else if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
      throw new RangeError(`capacity ${name}: expected an integer >= 0`);
    } else if (name === "gpu") {
      out.gpu = value;
    } else {
      out.custom[name] = BigInt(value);
    }
  }
  return out;
}
