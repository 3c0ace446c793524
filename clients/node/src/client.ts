/**
 * ExecplanClient: the PlannerService, ExecutorService and grpc.health.v1.Health over
 * one grpc-js channel.
 *
 *     const client = new ExecplanClient("127.0.0.1:7070");
 *     const { executionId } = await client.start({ source, inputs: { order: 7 } });
 *     for await (const event of client.watch(executionId)) console.log(event.kind.case);
 *     client.close();
 *
 * Every method throws an ExecplanError subclass (errors.ts) on failure.
 *
 * Retries (one policy, errors.ts RetryPolicy; docs/node.md): a call shed by the
 * server (RESOURCE_EXHAUSTED with RetryInfo) or dropped by it (CANCELLED we did not
 * ask for) is retried, waiting as the policy says (the first retry at once, then
 * full jitter capped at 2 s, or at least the server's delay), until the policy's
 * deadline (60 s without progress); watch() and watchAll() also retry UNAVAILABLE,
 * and watch() resumes after the last event it yielded. A unary call meeting
 * UNAVAILABLE fails at once (the server is down). Every call is safe to repeat:
 * mutating calls carry a requestId.
 */
import { randomUUID } from "node:crypto";
import { create, fromJson, isMessage } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { DEFAULT_RETRY, Retry, UnavailableError, Status, sleep, transient, translate, decodeDetails } from "./errors.js";
import type { RetryPolicy } from "./errors.js";
import type { ExecutionEvent } from "./gen/execplan/v1/events_pb.js";
import type { Execution, ExecutionState } from "./gen/execplan/v1/execution_pb.js";
import {
  CancelExecutionRequestSchema,
  DeleteRateLimitRequestSchema,
  ExecutorService,
  GetExecutionHistoryRequestSchema,
  GetExecutionRequestSchema,
  GetPlanRequestSchema,
  GetUsageRequestSchema,
  ListCircuitBreakersRequestSchema,
  ListExecutionsRequestSchema,
  ListLimitsRequestSchema,
  ListPlansRequestSchema,
  ListWorkersRequestSchema,
  PauseExecutionRequestSchema,
  PurgeCacheRequestSchema,
  PurgeExecutionsRequestSchema,
  RegisterPlanRequestSchema,
  ReplayExecutionRequestSchema,
  ResumeExecutionRequestSchema,
  SendEventRequestSchema,
  SetBudgetRequestSchema,
  SetRateLimitRequestSchema,
  StartExecutionRequestSchema,
  TerminateExecutionRequestSchema,
  UsageGrouping,
  WatchExecutionRequestSchema,
  WatchExecutionsRequestSchema,
  WatchTaskStreamRequestSchema,
} from "./gen/execplan/v1/executor_service_pb.js";
import type {
  CircuitBreakerStatus,
  DeleteRateLimitResponse,
  GetExecutionHistoryResponse,
  GetExecutionResponse,
  GetPlanResponse,
  GetUsageResponse,
  ListCircuitBreakersResponse,
  ListExecutionsResponse,
  ListLimitsResponse,
  ListPlansResponse,
  ListWorkersResponse,
  PlanSummary,
  PurgeCacheResponse,
  PurgeExecutionsResponse,
  RateLimitStatus,
  RegisterPlanResponse,
  ReplayExecutionRequest,
  ReplayExecutionResponse,
  SetBudgetResponse,
  SetRateLimitResponse,
  StartExecutionRequest,
  StartExecutionResponse,
  StartExecutionsResponse,
  StreamChunk,
  WatchExecutionResponse,
  WatchExecutionsResponse,
  WatchTaskStreamResponse,
  WorkerInfo,
} from "./gen/execplan/v1/executor_service_pb.js";
import type { ExecutionPlan } from "./gen/execplan/v1/plan_pb.js";
import { CompilePlanRequestSchema, PlannerService, SourceFormat } from "./gen/execplan/v1/planner_service_pb.js";
import type { CompilePlanResponse } from "./gen/execplan/v1/planner_service_pb.js";
import { BudgetAction, BudgetSchema, type Workflow, WorkflowSchema } from "./gen/execplan/v1/workflow_pb.js";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Health, HealthCheckRequestSchema, HealthCheckResponse_ServingStatus } from "./gen/grpc/health/v1/health_pb.js";
import type { HealthCheckResponse } from "./gen/grpc/health/v1/health_pb.js";
import { makeClient, resolveAddress, unary } from "./rpc.js";
import { Schedules } from "./schedules.js";
import { StartCoalescer } from "./starts.js";
import { toSearchAttributes } from "./search.js";
import type { SearchValue } from "./search.js";
import type { GenericClient } from "./rpc.js";
import { transport } from "./security.js";
import type { SecurityOptions } from "./security.js";

/**
 * TLS and token options (`tlsCa`, `tlsCert`, `tlsKey`, `token`, paths or PEM; see
 * security.ts) fall back to $EXECPLAN_TLS_CA/_CERT/_KEY and $EXECPLAN_TOKEN.
 */
export interface ClientOptions extends SecurityOptions {
  channelOptions?: grpc.ChannelOptions;
  /** More grpc-js client interceptors, run after the client's own (the bearer token's). */
  interceptors?: grpc.Interceptor[];
  /** Backoff and deadline of every retry (default DEFAULT_RETRY). */
  retry?: RetryPolicy;
}

/** Which executions watchAll() follows (all when empty). */
export interface WatchAllFilter {
  states?: ExecutionState[];
  workflowName?: string;
}

/** At most one candidate plan for replay(): a plan, a stored plan id, or source. */
export interface ReplayOptions {
  plan?: ExecutionPlan;
  planId?: string;
  source?: string;
}

/** Exactly one of source / plan / planId / workflow. */
/** A Workflow message, or a `builder.Workflow` (anything with `build()`). */
export type WorkflowLike = Workflow | { build(): Workflow };

export interface RegisterOptions {
  source?: string;
  plan?: ExecutionPlan;
  workflow?: WorkflowLike;
}

export interface StartOptions {
  source?: string;
  plan?: ExecutionPlan;
  planId?: string;
  workflow?: WorkflowLike;
  inputs?: JsonObject;
  /** Idempotency key; defaults to a fresh uuid. */
  requestId?: string;
  fairnessKey?: string;
  /** Typed key/values to find the execution by: `{ customer: "acme", priority: 3 }`. */
  searchAttributes?: Record<string, SearchValue>;
  /**
   * W3C trace context (`traceparent`, `tracestate`) to start the execution in; sent
   * as metadata, carried by every dispatch so workers continue the same trace.
   */
  traceContext?: Record<string, string>;
}

export interface StartResult {
  executionId: string;
  planId: string;
  created: boolean;
}

export interface ListOptions {
  states?: ExecutionState[];
  workflowName?: string;
  /** Only the child executions this execution started (builtin.workflow tasks). */
  parentExecutionId?: string;
  pageSize?: number;
  /** The filter language (docs/operations.md): `customer = "acme" AND state = running`. */
  filter?: string;
}

export interface WatchOptions {
  /** Also yield the partial output of its tasks (`ctx.stream`) as StreamChunks, live. */
  stream?: boolean;
}

export interface PurgeOptions {
  /** Which finished executions (the filter language); "" = all finished ones. */
  filter?: string;
  /** At most this many per call (default 1000): call again while `more`. */
  limit?: number;
  dryRun?: boolean;
}

export interface UsageOptions {
  /** One execution (and every child it started). */
  executionId?: string;
  /** The executions of a workflow (and every child they started). */
  workflowName?: string;
  /** From this time on, or this many milliseconds back from now. */
  since?: Date | number;
  until?: Date;
  /**
   * Split the total: by workflow, execution, task, or `attribute:NAME`, the value of
   * the search attribute NAME (an execution without one counts under its nearest
   * ancestor's; `(none)`: no value in its lineage). A group's `key` is the value as a
   * filter writes it (`"acme"`, `3`), its `value` the typed value.
   */
  groupBy?: "" | "workflow" | "execution" | "task" | `attribute:${string}`;
  /** Only the executions this filter finds (the `ls --filter` language), with their children. */
  filter?: string;
}

export interface BudgetOptions {
  cost?: number;
  tokens?: number;
  /** Limits of other counters, by name. */
  counters?: Record<string, number>;
  onExceeded?: "pause" | "fail";
  /** Also resume the execution if it is paused. */
  resume?: boolean;
  reason?: string;
  requestId?: string;
  /** Change this task's own budget (one the workflow gives it) instead of the execution's. */
  taskId?: string;
}

/** A token bucket: `units` per `periodMs`, holding `burst` (0 or absent: `units`). */
export interface RateLimitOptions {
  units: number;
  periodMs: number;
  burst?: number;
}

const GROUPING: Record<string, UsageGrouping> = {
  "": UsageGrouping.UNSPECIFIED,
  workflow: UsageGrouping.WORKFLOW,
  execution: UsageGrouping.EXECUTION,
  task: UsageGrouping.TASK,
};
/** `groupBy: "attribute:customer"`: a group per value of a search attribute. */
const BY_ATTRIBUTE = "attribute:";

export interface ControlOptions {
  reason?: string;
  requestId?: string;
}

export class ExecplanClient {
  readonly address: string;
  private readonly executor: GenericClient;
  private readonly planner: GenericClient;
  private readonly healthClient: GenericClient;
  private readonly retry: RetryPolicy;
  /** Schedules: `client.schedules.create("nightly", { cron: "0 2 * * *", source })`... */
  readonly schedules: Schedules;
  private readonly starts: StartCoalescer;

  constructor(address?: string, options: ClientOptions = {}) {
    this.address = resolveAddress(address);
    this.retry = options.retry ?? DEFAULT_RETRY;
    const own = transport(options);
    const secured = { ...own, interceptors: [...own.interceptors, ...(options.interceptors ?? [])] };
    this.executor = makeClient(ExecutorService, this.address, secured, options.channelOptions);
    this.schedules = new Schedules((method, request) => this.call(this.executor, method, request));
    this.starts = new StartCoalescer(
      (request, trace) => this.call<StartExecutionResponse>(this.executor, "startExecution", request, traceMetadata(trace)),
      (request, trace) => this.call<StartExecutionsResponse>(this.executor, "startExecutions", request, traceMetadata(trace)),
    );
    // Same target and options: grpc-js shares one subchannel between both clients.
    this.planner = makeClient(PlannerService, this.address, secured, options.channelOptions);
    this.healthClient = makeClient(Health, this.address, secured, options.channelOptions);
  }

  close(): void {
    this.executor.close();
    this.planner.close();
    this.healthClient.close();
  }

  /**
   * `grpc.health.v1.Health/Check` of `service` ("" = the server as a whole, or
   * "execplan.v1.ExecutorService", ...): "SERVING", or "NOT_SERVING" once a graceful
   * shutdown began. An unknown service throws NotFoundError.
   */
  async health(service = ""): Promise<string> {
    const res = await this.call<HealthCheckResponse>(this.healthClient, "check", create(HealthCheckRequestSchema, { service }));
    return HealthCheckResponse_ServingStatus[res.status];
  }

  async compile(source: string): Promise<ExecutionPlan> {
    const res = await this.call<CompilePlanResponse>(this.planner, "compilePlan", create(CompilePlanRequestSchema, {
      definition: { case: "source", value: source },
    }));
    if (!res.plan) throw new Error("CompilePlan returned no plan");
    return res.plan;
  }

  async start(options: StartOptions): Promise<StartResult> {
    const request = create(StartExecutionRequestSchema, {
      definition: definition(options),
      inputs: options.inputs ?? {},
      requestId: options.requestId ?? randomUUID(),
      fairnessKey: options.fairnessKey ?? "",
      searchAttributes: toSearchAttributes(options.searchAttributes),
    });
    // Coalesced with the other starts of this event-loop turn (starts.ts).
    const res = await this.starts.start(request, options.traceContext ?? {});
    return { executionId: res.executionId, planId: res.planId, created: res.created };
  }

  async get(executionId: string, atSequence = 0n): Promise<Execution> {
    const res = await this.call<GetExecutionResponse>(this.executor, "getExecution", create(GetExecutionRequestSchema, {
      executionId,
      atSequence: BigInt(atSequence),
    }));
    if (!res.execution) throw new Error("GetExecution returned no execution");
    return res.execution;
  }

  /** Every matching execution, following page tokens. */
  async *list(options: ListOptions = {}): AsyncGenerator<Execution> {
    const request = create(ListExecutionsRequestSchema, {
      states: options.states ?? [],
      workflowName: options.workflowName ?? "",
      parentExecutionId: options.parentExecutionId ?? "",
      pageSize: options.pageSize ?? 100,
      filter: options.filter ?? "",
    });
    for (;;) {
      const res = await this.call<ListExecutionsResponse>(this.executor, "listExecutions", request);
      yield* res.executions;
      if (!res.nextPageToken) return;
      request.pageToken = res.nextPageToken;
    }
  }

  /** Every event after `afterSequence`, all pages. */
  async *history(executionId: string, afterSequence: bigint | number = 0n, pageSize = 1000): AsyncGenerator<ExecutionEvent> {
    const request = create(GetExecutionHistoryRequestSchema, {
      executionId,
      afterSequence: BigInt(afterSequence),
      pageSize,
    });
    for (;;) {
      const res = await this.call<GetExecutionHistoryResponse>(this.executor, "getExecutionHistory", request);
      yield* res.events;
      if (!res.nextPageToken) return;
      request.pageToken = res.nextPageToken;
    }
  }

  /**
   * Events after `afterSequence`, ending with `execution_completed`. When the stream
   * breaks (UNAVAILABLE, shed with RESOURCE_EXHAUSTED, dropped with CANCELLED, or
   * ended early by a restarting server) it reconnects as the retry policy says and
   * asks for events after the last one yielded: nothing is missed and nothing is
   * yielded twice; only a failure outlasting the policy's deadline is thrown.
   * Breaking out of the loop cancels the call.
   *
   * `{ stream: true }`: also the partial output of its tasks (`ctx.stream`) as
   * StreamChunks, interleaved with the events as they happen (live only: chunks sent
   * while reconnecting are not seen).
   */
  watch(executionId: string, afterSequence?: bigint | number, options?: { stream?: false }): AsyncGenerator<ExecutionEvent>;
  watch(executionId: string, afterSequence: bigint | number, options: { stream: true }): AsyncGenerator<ExecutionEvent | StreamChunk>;
  async *watch(executionId: string, afterSequence: bigint | number = 0n, options: WatchOptions = {}): AsyncGenerator<ExecutionEvent | StreamChunk> {
    let last = BigInt(afterSequence);
    const retry = new Retry(this.retry);
    for (;;) {
      const request = create(WatchExecutionRequestSchema, { executionId, afterSequence: last, stream: options.stream ?? false });
      const call = (this.executor.watchExecution as (r: unknown) => grpc.ClientReadableStream<WatchExecutionResponse>)
        .call(this.executor, request);
      let failure: grpc.ServiceError | undefined;
      try {
        for await (const res of call) {
          const chunk = (res as WatchExecutionResponse).chunk;
          if (chunk) {
            yield chunk;
            continue;
          }
          const event = (res as WatchExecutionResponse).event;
          if (!event || event.sequence <= last) continue; // an overlap must not duplicate
          last = event.sequence;
          retry.progressed();
          yield event;
          if (event.kind.case === "executionCompleted") return;
        }
      } catch (err) {
        failure = retryableStreamError(err);
      } finally {
        call.cancel();
      }
      await waitToRetry(retry, failure);
    }
  }

  /**
   * The partial output of a running execution's tasks (of one, with `taskId`) from
   * now on, until the execution (or that task) ends (WatchTaskStream). Not
   * resumable: chunks are not stored. A subscriber too slow to keep up is dropped by
   * the server (ResourceExhaustedError, reason SUBSCRIBER_TOO_SLOW).
   */
  async *watchTaskStream(executionId: string, taskId = ""): AsyncGenerator<StreamChunk> {
    const request = create(WatchTaskStreamRequestSchema, { executionId, taskId });
    const call = (this.executor.watchTaskStream as (r: unknown) => grpc.ClientReadableStream<WatchTaskStreamResponse>)
      .call(this.executor, request);
    try {
      for await (const res of call) {
        const chunk = (res as WatchTaskStreamResponse).chunk;
        if (chunk) yield chunk;
      }
    } catch (err) {
      throw translate(err);
    } finally {
      call.cancel();
    }
  }

  /**
   * Deletes up to `limit` finished executions matching `filter` (PurgeExecutions,
   * admin); call again while `more`. `dryRun`: lists them, deletes nothing.
   */
  async purge(options: PurgeOptions = {}): Promise<PurgeExecutionsResponse> {
    const request = create(PurgeExecutionsRequestSchema, {
      filter: options.filter ?? "",
      limit: options.limit ?? 1000,
      dryRun: options.dryRun ?? false,
    });
    return this.call<PurgeExecutionsResponse>(this.executor, "purgeExecutions", request);
  }

  /**
   * State changes of many executions (WatchExecutions), as `Execution` views;
   * reconnects like watch(). There is no sequence to resume from: changes made
   * while disconnected arrive only as later changes, so use list() to catch up if
   * that matters. Breaking out of the loop cancels the call; it ends when the
   * server ends the stream (it is shutting down).
   */
  async *watchAll(filter: WatchAllFilter = {}): AsyncGenerator<Execution> {
    // batched: the changes a round commits together come in one message (a server
    // that predates it sends one a message, in `execution`).
    const request = create(WatchExecutionsRequestSchema, {
      states: filter.states ?? [],
      workflowName: filter.workflowName ?? "",
      batched: true,
    });
    const retry = new Retry(this.retry);
    for (;;) {
      const call = (this.executor.watchExecutions as (r: unknown) => grpc.ClientReadableStream<WatchExecutionsResponse>)
        .call(this.executor, request);
      let failure: grpc.ServiceError | undefined;
      try {
        for await (const res of call) {
          const { execution, executions } = res as WatchExecutionsResponse;
          retry.progressed();
          if (executions.length > 0) yield* executions;
          else if (execution) yield execution;
        }
        return;
      } catch (err) {
        failure = retryableStreamError(err);
      } finally {
        call.cancel();
      }
      await waitToRetry(retry, failure);
    }
  }

  async pause(executionId: string, options: ControlOptions = {}): Promise<ExecutionState> {
    return this.control("pauseExecution", PauseExecutionRequestSchema, executionId, options);
  }

  async resume(executionId: string, options: Omit<ControlOptions, "reason"> = {}): Promise<ExecutionState> {
    const request = create(ResumeExecutionRequestSchema, { executionId, requestId: options.requestId ?? randomUUID() });
    return (await this.call<{ state: ExecutionState }>(this.executor, "resumeExecution", request)).state;
  }

  async cancel(executionId: string, options: ControlOptions = {}): Promise<ExecutionState> {
    return this.control("cancelExecution", CancelExecutionRequestSchema, executionId, options);
  }

  async terminate(executionId: string, options: ControlOptions = {}): Promise<ExecutionState> {
    return this.control("terminateExecution", TerminateExecutionRequestSchema, executionId, options);
  }

  /** Delivers a named event; returns the id of the task that consumed it ("" if none waited). */
  async sendEvent(executionId: string, name: string, data: JsonValue = null, requestId?: string): Promise<string> {
    const request = create(SendEventRequestSchema, { executionId, name, data: fromJson(ValueSchema, data), requestId: requestId ?? randomUUID() });
    return (await this.call<{ taskId: string }>(this.executor, "sendEvent", request)).taskId;
  }

  /** Stores a plan (RegisterPlan) so that start({ planId }) can refer to it; returns its id. */
  async registerPlan(plan: ExecutionPlan): Promise<string> {
    return (await this.register({ plan })).planId;
  }

  /**
   * Registers a workflow by name (RegisterPlan): builtin.workflow tasks and
   * `getPlan("", { workflow: "NAME@VERSION" })` find it. Exactly one of a YAML/JSON
   * `source`, a compiled `plan` or a `workflow` (message or builder). A non-empty
   * version is immutable: another plan under it throws AlreadyExistsError with
   * reason VERSION_EXISTS.
   */
  async register(options: RegisterOptions): Promise<RegisterPlanResponse> {
    const given = [options.source, options.plan, options.workflow].filter((v) => v !== undefined);
    if (given.length !== 1) throw new TypeError("register() needs exactly one of source, plan, workflow");
    const request = create(RegisterPlanRequestSchema, {
      plan: options.plan,
      source: options.source ?? "",
      format: options.source !== undefined ? SourceFormat.AUTO : SourceFormat.UNSPECIFIED,
      workflow: options.workflow !== undefined ? workflowMessage(options.workflow) : undefined,
    });
    return this.call<RegisterPlanResponse>(this.executor, "registerPlan", request);
  }

  /**
   * A stored plan by id, or a registered one by `workflow` ("NAME" = the latest
   * version, "NAME@VERSION"); NotFoundError when unknown.
   */
  async getPlan(planId: string, options: { workflow?: string } = {}): Promise<ExecutionPlan> {
    const res = await this.call<GetPlanResponse>(this.executor, "getPlan", create(GetPlanRequestSchema, { planId, workflow: options.workflow ?? "" }));
    if (!res.plan) throw new Error("GetPlan returned no plan");
    return res.plan;
  }

  /**
   * Replays an execution's history (ReplayExecution): `deterministic`, `divergence`,
   * `events`. With a candidate (at most one of plan, planId, source) also
   * `compatible`, `incompatibilities` and `candidatePlanId`: whether the running
   * instance could continue on that plan.
   */
  async replay(executionId: string, candidate: ReplayOptions = {}): Promise<ReplayExecutionResponse> {
    const given = [candidate.plan, candidate.planId, candidate.source].filter((v) => v !== undefined);
    if (given.length > 1) throw new TypeError("replay() takes at most one of plan, planId, source");
    let value: ReplayExecutionRequest["candidate"] = { case: undefined };
    if (candidate.plan !== undefined) value = { case: "plan", value: candidate.plan };
    else if (candidate.planId !== undefined) value = { case: "planId", value: candidate.planId };
    else if (candidate.source !== undefined) value = { case: "source", value: candidate.source };
    return this.call<ReplayExecutionResponse>(this.executor, "replayExecution", create(ReplayExecutionRequestSchema, { executionId, candidate: value }));
  }

  /** Circuit breakers per task type (ListCircuitBreakers); all known ones when `taskTypes` is empty. */
  async listCircuitBreakers(taskTypes: string[] = []): Promise<CircuitBreakerStatus[]> {
    const request = create(ListCircuitBreakersRequestSchema, { taskTypes });
    return (await this.call<ListCircuitBreakersResponse>(this.executor, "listCircuitBreakers", request)).breakers;
  }

  /** Stored plans (ListPlans), newest first, following page tokens; of one workflow if named. */
  async *listPlans(options: { workflowName?: string; pageSize?: number } = {}): AsyncGenerator<PlanSummary> {
    const request = create(ListPlansRequestSchema, {
      workflowName: options.workflowName ?? "",
      pageSize: options.pageSize ?? 100,
    });
    for (;;) {
      const res = await this.call<ListPlansResponse>(this.executor, "listPlans", request);
      yield* res.plans;
      if (!res.nextPageToken) return;
      request.pageToken = res.nextPageToken;
    }
  }

  /** Workers connected to the server answering (ListWorkers); all when `taskTypes` is empty. */
  async listWorkers(taskTypes: string[] = []): Promise<WorkerInfo[]> {
    const request = create(ListWorkersRequestSchema, { taskTypes });
    return (await this.call<ListWorkersResponse>(this.executor, "listWorkers", request)).workers;
  }

  /**
   * Concurrency limits and token buckets with their levels per key, and the tasks
   * waiting for them or for resources (ListLimits; `execplan limits`); of one name
   * when given. docs/flow-control.md.
   */
  async listLimits(name = ""): Promise<ListLimitsResponse> {
    return this.call<ListLimitsResponse>(this.executor, "listLimits", create(ListLimitsRequestSchema, { name }));
  }

  /**
   * Registers or changes the token bucket `name` on the server (SetRateLimit; `execplan
   * limits set`): `units` per `periodMs`, holding `burst` (default: `units`). Takes
   * effect at once on every replica and wins over workflows' declarations of the name.
   */
  async setRateLimit(name: string, options: RateLimitOptions): Promise<RateLimitStatus> {
    const { units, periodMs, burst = 0 } = options;
    for (const [field, value] of [["units", units], ["periodMs", periodMs], ["burst", burst]] as const) {
      if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${field} must be a whole number >= 0, not ${value}`);
    }
    const request = create(SetRateLimitRequestSchema, { name, units: BigInt(units), period: durationFromMs(periodMs), burst: BigInt(burst) });
    const status = (await this.call<SetRateLimitResponse>(this.executor, "setRateLimit", request)).rateLimit;
    if (status === undefined) throw new Error("SetRateLimit answered without the bucket");
    return status;
  }

  /** Removes a bucket registered on the server (DeleteRateLimit); false when there was none. */
  async deleteRateLimit(name: string): Promise<boolean> {
    const request = create(DeleteRateLimitRequestSchema, { name });
    return (await this.call<DeleteRateLimitResponse>(this.executor, "deleteRateLimit", request)).deleted;
  }

  /**
   * Removes task result cache entries (PurgeCache; `execplan cache purge`): all, of one
   * task type, or one key of it (as CacheHit.key shows it). Returns how many.
   */
  async purgeCache(options: { taskType?: string; key?: string } = {}): Promise<number> {
    const request = create(PurgeCacheRequestSchema, { taskType: options.taskType ?? "", key: options.key ?? "" });
    return Number((await this.call<PurgeCacheResponse>(this.executor, "purgeCache", request)).purged);
  }

  /**
   * Usage recorded over a time range, added up (GetUsage): of one execution or of a
   * workflow's executions, child executions included; of everything when neither is given.
   */
  async usage(options: UsageOptions = {}): Promise<GetUsageResponse> {
    const grouping = options.groupBy ?? "";
    const byAttribute = grouping.startsWith(BY_ATTRIBUTE);
    const groupBy = byAttribute ? UsageGrouping.ATTRIBUTE : GROUPING[grouping];
    if (groupBy === undefined) throw new TypeError(`groupBy must be one of ${Object.keys(GROUPING).join(", ")} or ${BY_ATTRIBUTE}NAME`);
    const since = typeof options.since === "number" ? new Date(Date.now() - options.since) : options.since;
    const request = create(GetUsageRequestSchema, {
      executionId: options.executionId ?? "",
      workflowName: options.workflowName ?? "",
      since: since ? timestampFromDate(since) : undefined,
      until: options.until ? timestampFromDate(options.until) : undefined,
      groupBy,
      groupAttribute: byAttribute ? grouping.slice(BY_ATTRIBUTE.length) : "",
      filter: options.filter ?? "",
    });
    return this.call<GetUsageResponse>(this.executor, "getUsage", request);
  }

  /**
   * Change a running execution's budget (SetBudget): the limits given replace those
   * in force, the others stay; `resume` also resumes it when it is paused.
   */
  async setBudget(executionId: string, options: BudgetOptions): Promise<SetBudgetResponse> {
    const budget = create(BudgetSchema, {
      cost: options.cost,
      tokens: options.tokens,
      counters: options.counters ?? {},
      onExceeded: options.onExceeded === "fail" ? BudgetAction.FAIL : options.onExceeded === "pause" ? BudgetAction.PAUSE : BudgetAction.UNSPECIFIED,
    });
    const request = create(SetBudgetRequestSchema, {
      executionId,
      budget,
      resume: options.resume ?? false,
      reason: options.reason ?? "",
      requestId: options.requestId ?? randomUUID(),
      taskId: options.taskId ?? "",
    });
    return this.call<SetBudgetResponse>(this.executor, "setBudget", request);
  }

  private async control(
    method: string,
    schema: typeof PauseExecutionRequestSchema | typeof CancelExecutionRequestSchema | typeof TerminateExecutionRequestSchema,
    executionId: string,
    options: ControlOptions,
  ): Promise<ExecutionState> {
    const request = create(schema, { executionId, reason: options.reason ?? "", requestId: options.requestId ?? randomUUID() });
    return (await this.call<{ state: ExecutionState }>(this.executor, method, request)).state;
  }

  /** A unary call; shed or dropped calls are retried (see the module comment). */
  private async call<O>(client: GenericClient, method: string, request: unknown, metadata?: grpc.Metadata): Promise<O> {
    const retry = new Retry(this.retry);
    for (;;) {
      try {
        return await unary<unknown, O>(client, method, request, metadata);
      } catch (err) {
        const e = err as grpc.ServiceError;
        const { retryAfterMs } = decodeDetails(e);
        // One address: UNAVAILABLE means the server is down, so it fails at once.
        if (e.code === Status.UNAVAILABLE || !transient(e.code, retryAfterMs)) throw translate(err);
        const delay = retry.delayMs(retryAfterMs);
        if (delay === undefined) throw translate(err);
        await sleep(delay);
      }
    }
  }
}

/** A transient stream failure as it is (to throw past the deadline); throws the rest. */
function retryableStreamError(err: unknown): grpc.ServiceError {
  const e = err as grpc.ServiceError;
  if (typeof e?.code !== "number" || !transient(e.code, decodeDetails(e).retryAfterMs)) throw translate(err);
  return e;
}

/** Sleep before a stream's next try; past the deadline, throw its last failure. */
async function waitToRetry(retry: Retry, failure: grpc.ServiceError | undefined): Promise<void> {
  const delay = retry.delayMs(failure ? decodeDetails(failure).retryAfterMs : undefined);
  if (delay !== undefined) return sleep(delay);
  if (failure) throw translate(failure);
  throw new UnavailableError("the server kept ending the stream early", { code: Status.UNAVAILABLE });
}

function traceMetadata(trace: Record<string, string>): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(trace)) metadata.set(k, v);
  return metadata;
}

function definition(options: StartOptions): StartExecutionRequest["definition"] {
  const given = [options.source, options.plan, options.planId, options.workflow].filter((v) => v !== undefined);
  if (given.length !== 1) throw new TypeError("start() needs exactly one of source, plan, planId, workflow");
  if (options.source !== undefined) return { case: "source", value: options.source };
  if (options.plan !== undefined) return { case: "plan", value: options.plan };
  if (options.planId !== undefined) return { case: "planId", value: options.planId };
  return { case: "workflow", value: workflowMessage(options.workflow!) };
}

function workflowMessage(workflow: WorkflowLike): Workflow {
  return isMessage(workflow, WorkflowSchema) ? workflow : (workflow as { build(): Workflow }).build();
}
