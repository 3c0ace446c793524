/**
 * Coalescing of `ExecplanClient.start()` calls into StartExecutions (the Python
 * SDK's `_starts.py`, same rules).
 *
 * Calls of `start()` made before the event loop's next check phase (a
 * `Promise.all(items.map((i) => client.start(i)))`, callbacks of one I/O event) with
 * the same trace context are sent as ONE StartExecutions call (`setImmediate`, no
 * timer); a call alone is sent as StartExecution, as before. One batch call costs the
 * server gRPC's per-call work once instead of once per start, and the server
 * commits the batch's executions together.
 *
 * Each caller still gets what StartExecution would have given it: its own result, or
 * its own error of the same class with the same details (the server's
 * `requests[i].` prefix is taken off the field paths). An item refused with a status
 * a lone StartExecution would be retried on (RESOURCE_EXHAUSTED with RetryInfo) is
 * retried on its own as a StartExecution under the client's retry policy, after the
 * server's delay; retries are safe, every start carries its requestId. A batch call that fails as a
 * whole fails each caller with its own copy of the error. A server without
 * StartExecutions answers UNIMPLEMENTED: the client remembers it and sends every
 * start alone from then on.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Backoff, ExecplanError, Status, fromStatus, sleep, transient } from "./errors.js";
import type { FieldViolation } from "./errors.js";
import { StartExecutionRequestSchema, StartExecutionsRequestSchema } from "./gen/execplan/v1/executor_service_pb.js";
import type {
  StartExecutionRequest,
  StartExecutionResponse,
  StartExecutionsRequest,
  StartExecutionsResponse,
} from "./gen/execplan/v1/executor_service_pb.js";

/**
 * The server's bounds: at most 1,000 items, and a request under its message limit
 * (64 MiB by default, at least 1 MiB: --max-message-mib). A bigger start goes alone.
 */
export const MAX_ITEMS = 1000;
export const MAX_BYTES = 512 * 1024;

type TraceContext = Record<string, string>;
export type StartOne = (request: StartExecutionRequest, trace: TraceContext) => Promise<StartExecutionResponse>;
export type StartMany = (request: StartExecutionsRequest, trace: TraceContext) => Promise<StartExecutionsResponse>;

interface Waiting {
  request: StartExecutionRequest;
  resolve: (response: StartExecutionResponse) => void;
  reject: (error: unknown) => void;
}

interface Batch {
  items: Waiting[];
  bytes: number;
}

const ITEM_PREFIX = /^requests\[\d+\]\./;

export class StartCoalescer {
  private readonly pending = new Map<string, { trace: TraceContext; batches: Batch[] }>();
  /** False once a server answered UNIMPLEMENTED: every start goes alone. */
  private batches = true;

  constructor(
    private readonly startOne: StartOne,
    private readonly startMany: StartMany,
  ) {}

  start(request: StartExecutionRequest, trace: TraceContext): Promise<StartExecutionResponse> {
    if (!this.batches) return this.startOne(request, trace);
    const key = JSON.stringify(Object.entries(trace).sort());
    let group = this.pending.get(key);
    if (!group) {
      group = { trace, batches: [{ items: [], bytes: 0 }] };
      this.pending.set(key, group);
      setImmediate(() => this.flush(key));
    }
    const bytes = toBinary(StartExecutionRequestSchema, request).length;
    let batch = group.batches[group.batches.length - 1];
    if (batch.items.length && (batch.items.length >= MAX_ITEMS || batch.bytes + bytes > MAX_BYTES)) {
      batch = { items: [], bytes: 0 };
      group.batches.push(batch);
    }
    batch.bytes += bytes;
    return new Promise<StartExecutionResponse>((resolve, reject) => {
      batch.items.push({ request, resolve, reject });
    });
  }

  private flush(key: string): void {
    const group = this.pending.get(key);
    this.pending.delete(key);
    for (const batch of group?.batches ?? []) void this.send(batch.items, group!.trace);
  }

  private async send(items: Waiting[], trace: TraceContext): Promise<void> {
    if (items.length === 1 || !this.batches) {
      for (const item of items) this.startOne(item.request, trace).then(item.resolve, item.reject);
      return;
    }
    let response: StartExecutionsResponse;
    try {
      response = await this.startMany(create(StartExecutionsRequestSchema, { requests: items.map((i) => i.request) }), trace);
    } catch (err) {
      if (err instanceof ExecplanError && err.code === Status.UNIMPLEMENTED) {
        this.batches = false; // an older server: one at a time from now on
        return this.send(items, trace);
      }
      for (const item of items) item.reject(copyOf(err));
      return;
    }
    items.forEach((item, index) => {
      const result = response.results[index]?.result;
      if (result?.case === "started") {
        item.resolve(result.value);
      } else if (result?.case === "error") {
        const error = unprefixed(fromStatus(result.value));
        // As `call` does: UNAVAILABLE is not retried (one address: the server is down).
        if (error.code !== Status.UNAVAILABLE && transient(error.code, error.retryAfterMs)) {
          // Shed for now: on its own, under the client's retry policy, after the
          // server's delay.
          sleep(new Backoff().nextDelayMs(error.retryAfterMs))
            .then(() => this.startOne(item.request, trace))
            .then(item.resolve, item.reject);
        } else {
          item.reject(error);
        }
      } else {
        item.reject(new ExecplanError("no result for this start in the batch", { code: Status.INTERNAL }));
      }
    });
  }
}

/** One error object per caller, so that no two callers share (and mutate) one. */
function copyOf(err: unknown): unknown {
  return err instanceof ExecplanError ? remade(err, [...err.violations]) : err;
}

/** The item's error as StartExecution names its fields (`inputs.n`, not `requests[3].inputs.n`). */
function unprefixed(error: ExecplanError): ExecplanError {
  if (!error.violations.some((v) => ITEM_PREFIX.test(v.field))) return error;
  return remade(error, error.violations.map((v) => ({ ...v, field: v.field.replace(ITEM_PREFIX, "") })));
}

/** A new error of `error`'s class with the same details and these `violations`. */
function remade(error: ExecplanError, violations: FieldViolation[]): ExecplanError {
  const Cls = error.constructor as typeof ExecplanError;
  return new Cls(error.details, {
    code: error.code,
    violations,
    retryAfterMs: error.retryAfterMs,
    reason: error.reason,
    metadata: { ...error.metadata },
    cause: error.cause,
  });
}
