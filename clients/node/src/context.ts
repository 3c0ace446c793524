/** TaskContext: what a handler knows about its attempt, and how it talks back. */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Usage } from "./gen/execplan/v1/execution_pb.js";
import { usageMessage } from "./usage.js";
import type { UsageCounters } from "./usage.js";

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
  progress: JsonValue | undefined = undefined;
  /** @internal progress changed since the last heartbeat. */
  progressDirty = false;
  /** @internal usage reports of this attempt so far (they are numbered 1, 2, ...). */
  private usageReports = 0;

  constructor(
    info: AttemptInfo,
    signal: AbortSignal,
    private readonly onHeartbeat: () => void,
    private readonly onUsage: (sequence: number, usage: Usage) => void = () => {},
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
   * this only sends the latest progress sooner (rate-limited).
   */
  heartbeat(progress?: JsonValue): void {
    if (progress !== undefined) {
      this.progress = progress;
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

  /** Throws the abort reason if the attempt was cancelled. */
  throwIfCancelled(): void {
    this.signal.throwIfAborted();
  }
}
