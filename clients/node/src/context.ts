/** TaskContext: what a handler knows about its attempt, and how it talks back. */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Value } from "@bufbuild/protobuf/wkt";
import type { Usage } from "./gen/execplan/v1/execution_pb.js";
import { usageMessage } from "./usage.js";
import type { UsageCounters } from "./usage.js";
import type { SearchAttributeValue } from "./gen/execplan/v1/execution_pb.js";
import { toSearchAttributes } from "./search.js";
import { toValue } from "./values.js";
import type { SearchValue } from "./search.js";

/** One piece of partial output as `ctx.stream` hands it to the worker. */
export type StreamPiece = { case: "text"; value: string } | { case: "data"; value: Uint8Array } | { case: "json"; value: JsonValue };

/** The server takes at most 64 KiB per chunk: text and bytes are split, JSON refused. */
export const MAX_CHUNK_BYTES = 64 * 1024;
const MAX_CHUNK_CHARS = MAX_CHUNK_BYTES / 4; // UTF-8: at most four bytes per character

export function piecesOf(chunk: string | Uint8Array | JsonValue): StreamPiece[] {
  if (typeof chunk === "string") {
    const pieces: StreamPiece[] = [];
    for (let i = 0; i < Math.max(chunk.length, 1); i += MAX_CHUNK_CHARS) pieces.push({ case: "text", value: chunk.slice(i, i + MAX_CHUNK_CHARS) });
    return pieces;
  }
  if (chunk instanceof Uint8Array) {
    const pieces: StreamPiece[] = [];
    for (let i = 0; i < Math.max(chunk.length, 1); i += MAX_CHUNK_BYTES) pieces.push({ case: "data", value: chunk.subarray(i, i + MAX_CHUNK_BYTES) });
    return pieces;
  }
  if (JSON.stringify(chunk ?? null).length > MAX_CHUNK_BYTES) throw new RangeError(`a JSON chunk is at most ${MAX_CHUNK_BYTES} bytes; split it`);
  return [{ case: "json", value: chunk }];
}

/** Why the previous attempt of a task failed (`TaskContext.previousError`). */
export interface PreviousError {
  type: string;
  message: string;
  details: JsonObject;
}

export interface AttemptInfo {
  executionId: string;
  taskId: string;
  attempt: number;
  leaseEpoch: bigint;
  idempotencyKey: string;
  taskType: string;
  workflowName: string;
  secrets: Readonly<Record<string, string>>;
  traceContext: Readonly<Record<string, string>>;
  deadline: Date | undefined;
  previousError?: PreviousError | undefined;
}

export class TaskContext {
  readonly executionId: string;
  readonly taskId: string;
  /** 1-based attempt number in the current phase. */
  readonly attempt: number;
  readonly leaseEpoch: bigint;
  /** Stable across re-leases of this attempt: use it for side effects. */
  readonly idempotencyKey: string;
  readonly taskType: string;
  readonly workflowName: string;
  /** Secret values resolved at dispatch; never stored by the executor. */
  readonly secrets: Readonly<Record<string, string>>;
  /** W3C trace context (`traceparent`, `tracestate`) of the task attempt's span. */
  readonly traceContext: Readonly<Record<string, string>>;
  /** start_to_close deadline, if the plan sets one. */
  readonly deadline: Date | undefined;
  /** Aborted when the executor cancels the attempt or the worker stops. */
  readonly signal: AbortSignal;
  /**
   * The error of this task's previous attempt (`type`, `message`, `details`),
   * undefined on a first attempt. A dynamic task whose sub-plan was refused finds
   * `PlanInvalid` here, with the planner's diagnostics in `details`.
   */
  readonly previousError: PreviousError | undefined;

  /** @internal latest progress, sent with the next heartbeat. */
  progress: Value | undefined = undefined;
  /** @internal progress changed since the last heartbeat. */
  progressDirty = false;
  /** @internal usage reports of this attempt so far (they are numbered 1, 2, ...). */
  private usageReports = 0;
  /** @internal search attributes set since the last heartbeat (or result). */
  pendingAttributes: Record<string, SearchAttributeValue> = {};

  constructor(
    info: AttemptInfo,
    signal: AbortSignal,
    private readonly onHeartbeat: () => void,
    private readonly onUsage: (sequence: number, usage: Usage) => void = () => {},
    private readonly onStream: (pieces: StreamPiece[]) => void = () => {},
  ) {
    this.executionId = info.executionId;
    this.taskId = info.taskId;
    this.attempt = info.attempt;
    this.leaseEpoch = info.leaseEpoch;
    this.idempotencyKey = info.idempotencyKey;
    this.taskType = info.taskType;
    this.workflowName = info.workflowName;
    this.secrets = info.secrets;
    this.traceContext = info.traceContext;
    this.deadline = info.deadline;
    this.previousError = info.previousError;
    this.signal = signal;
  }

  /** The W3C `traceparent` header value, if the dispatch carried one. */
  get traceparent(): string | undefined {
    return this.traceContext["traceparent"];
  }

  get cancelled(): boolean {
    return this.signal.aborted;
  }

  /**
   * Record progress (JSON) for the executor; heartbeats flow anyway every interval,
   * this only sends the latest progress sooner (rate-limited). Throws a TypeError
   * here, where it is reported, for progress JSON cannot hold (a bigint, a circular
   * object); converted later it would fail the heartbeat or the result instead.
   */
  heartbeat(progress?: JsonValue): void {
    if (progress !== undefined) {
      this.progress = toValue(progress);
      this.progressDirty = true;
    }
    this.onHeartbeat();
  }

  /**
   * Report what this attempt used since the last call (amounts add up): tokens, money
   * and any counter of your own (`{ searches: 1 }`). Sent at once and counted even if
   * the handler then throws or times out (docs/usage.md). Throws a RangeError or
   * TypeError for a bad name or amount.
   */
  usage(counters: UsageCounters): void {
    const message = usageMessage(counters);
    if (message) this.onUsage(++this.usageReports, message);
  }

  /**
   * Send partial output (LLM tokens, log lines) to whoever watches the execution now
   * (`execplan watch ID --stream`, `client.watch(id, { stream: true })`): text, bytes
   * or a JSON value. Returns at once. Chunks are live only, never stored: the
   * handler's return value stays the task's output. If the connection cannot keep
   * up (8 MiB waiting), newer chunks are dropped.
   */
  stream(chunk: string | Uint8Array | JsonValue): void {
    if (this.signal.aborted) return;
    this.onStream(piecesOf(chunk));
  }

  /**
   * Set search attributes of the execution (`{ customer: "acme", priority: 3 }`;
   * null removes one). Sent with the next heartbeat (asked for now) or the result,
   * and recorded as an event. Types: string, number, bigint, boolean, Date.
   */
  setSearchAttributes(attributes: Readonly<Record<string, SearchValue>>): void {
    for (const [name, value] of Object.entries(attributes)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(name)) throw new RangeError(`search attribute ${JSON.stringify(name)}: a name matches [A-Za-z_][A-Za-z0-9_]* and is at most 64 characters`);
      if (name.startsWith("execplan_")) throw new RangeError(`search attribute ${JSON.stringify(name)}: names starting with 'execplan_' belong to the server`);
      if (typeof value === "string" && Buffer.byteLength(value) > 1024) throw new RangeError(`search attribute ${JSON.stringify(name)}: a string value is at most 1024 bytes`);
    }
    Object.assign(this.pendingAttributes, toSearchAttributes(attributes));
    this.onHeartbeat();
  }

  /** @internal the attributes set since the last take. */
  takeSearchAttributes(): Record<string, SearchAttributeValue> {
    const taken = this.pendingAttributes;
    this.pendingAttributes = {};
    return taken;
  }

  /** Throws the abort reason if the attempt was cancelled. */
  throwIfCancelled(): void {
    this.signal.throwIfAborted();
  }
}
