/**
 * Schedules through the client: `ExecplanClient.schedules`.
 *
 *     await client.schedules.create("nightly-report", { cron: "0 2 * * *", timeZone: "Europe/Paris", source });
 *     for await (const s of client.schedules.list()) console.log(s.name, s.paused);
 *     await client.schedules.pause("nightly-report", "migration");
 *     await client.schedules.backfill("nightly-report", new Date("2026-01-01"), new Date("2026-01-02"));
 *
 * Durations are milliseconds; times are Dates. Overlap: "skip" (default), "buffer",
 * "allow". What they mean and how slots fire once: docs/operations.md.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { JsonObject } from "@bufbuild/protobuf";
import { DurationSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Duration } from "@bufbuild/protobuf/wkt";
import {
  BackfillScheduleRequestSchema,
  CreateScheduleRequestSchema,
  DeleteScheduleRequestSchema,
  GetScheduleRequestSchema,
  ListSchedulesRequestSchema,
  PauseScheduleRequestSchema,
  ResumeScheduleRequestSchema,
} from "./gen/execplan/v1/executor_service_pb.js";
import type {
  BackfillScheduleResponse,
  CreateScheduleRequest,
  CreateScheduleResponse,
  DeleteScheduleResponse,
  GetScheduleResponse,
  ListSchedulesResponse,
  PauseScheduleResponse,
  ResumeScheduleResponse,
} from "./gen/execplan/v1/executor_service_pb.js";
import type { ExecutionPlan } from "./gen/execplan/v1/plan_pb.js";
import { SourceFormat } from "./gen/execplan/v1/planner_service_pb.js";
import { ScheduleOverlapPolicy, ScheduleSpecSchema } from "./gen/execplan/v1/schedule_pb.js";
import type { Schedule } from "./gen/execplan/v1/schedule_pb.js";
import { toSearchAttributes } from "./search.js";
import type { SearchValue } from "./search.js";

export type Overlap = "skip" | "buffer" | "allow" | "";

export interface ScheduleOptions {
  /** Five cron fields (minute hour day month weekday), evaluated in `timeZone`. */
  cron?: string;
  /** An interval in ms instead of cron (at least 1000). */
  everyMs?: number;
  offsetMs?: number;
  /** IANA zone of the cron fields ("Europe/Paris"); default UTC. */
  timeZone?: string;
  jitterMs?: number;
  overlap?: Overlap;
  catchupWindowMs?: number;
  startAt?: Date;
  endAt?: Date;
  /** Exactly one of source / plan / planId. */
  source?: string;
  plan?: ExecutionPlan;
  planId?: string;
  inputs?: JsonObject;
  fairnessKey?: string;
  searchAttributes?: Record<string, SearchValue>;
  paused?: boolean;
  requestId?: string;
}

const OVERLAP: Record<Overlap, ScheduleOverlapPolicy> = {
  "": ScheduleOverlapPolicy.UNSPECIFIED,
  skip: ScheduleOverlapPolicy.SKIP,
  buffer: ScheduleOverlapPolicy.BUFFER,
  allow: ScheduleOverlapPolicy.ALLOW,
};

function duration(ms: number | undefined): Duration | undefined {
  if (ms === undefined) return undefined;
  const whole = Math.floor(ms / 1000);
  return create(DurationSchema, { seconds: BigInt(whole), nanos: Math.round((ms - whole * 1000) * 1e6) });
}

function overlap(policy: Overlap | undefined): ScheduleOverlapPolicy {
  const value = OVERLAP[policy ?? ""];
  if (value === undefined) throw new TypeError(`overlap is one of skip, buffer, allow; not ${JSON.stringify(policy)}`);
  return value;
}

type Call = <O>(method: string, request: unknown) => Promise<O>;

export class Schedules {
  constructor(private readonly call: Call) {}

  /** Creating the same schedule again returns it (`created` false); another definition is AlreadyExistsError. */
  async create(name: string, options: ScheduleOptions): Promise<CreateScheduleResponse> {
    const given = [options.source, options.plan, options.planId].filter((v) => v !== undefined);
    if (given.length !== 1) throw new TypeError("schedules.create() needs exactly one of source, plan, planId");
    let definition: CreateScheduleRequest["definition"];
    if (options.source !== undefined) definition = { case: "source", value: options.source };
    else if (options.plan !== undefined) definition = { case: "plan", value: options.plan };
    else definition = { case: "planId", value: options.planId! };
    const request = create(CreateScheduleRequestSchema, {
      name,
      spec: create(ScheduleSpecSchema, {
        cron: options.cron ?? "",
        interval: duration(options.everyMs),
        offset: duration(options.offsetMs),
        timeZone: options.timeZone ?? "",
        jitter: duration(options.jitterMs),
        overlap: overlap(options.overlap ?? "skip"),
        catchupWindow: duration(options.catchupWindowMs),
        startAt: options.startAt ? timestampFromDate(options.startAt) : undefined,
        endAt: options.endAt ? timestampFromDate(options.endAt) : undefined,
      }),
      definition,
      format: options.source !== undefined ? SourceFormat.AUTO : SourceFormat.UNSPECIFIED,
      inputs: options.inputs ?? {},
      fairnessKey: options.fairnessKey ?? "",
      searchAttributes: toSearchAttributes(options.searchAttributes),
      paused: options.paused ?? false,
      requestId: options.requestId ?? randomUUID(),
    });
    return this.call<CreateScheduleResponse>("createSchedule", request);
  }

  async get(name: string): Promise<Schedule> {
    const res = await this.call<GetScheduleResponse>("getSchedule", create(GetScheduleRequestSchema, { name }));
    if (!res.schedule) throw new Error("GetSchedule returned no schedule");
    return res.schedule;
  }

  /** Every schedule, by name, following page tokens. */
  async *list(pageSize = 100): AsyncGenerator<Schedule> {
    const request = create(ListSchedulesRequestSchema, { pageSize });
    for (;;) {
      const res = await this.call<ListSchedulesResponse>("listSchedules", request);
      yield* res.schedules;
      if (!res.nextPageToken) return;
      request.pageToken = res.nextPageToken;
    }
  }

  /** True when it existed; runs it started go on. */
  async delete(name: string): Promise<boolean> {
    const res = await this.call<DeleteScheduleResponse>("deleteSchedule", create(DeleteScheduleRequestSchema, { name, requestId: randomUUID() }));
    return res.deleted;
  }

  async pause(name: string, reason = ""): Promise<Schedule | undefined> {
    const res = await this.call<PauseScheduleResponse>("pauseSchedule", create(PauseScheduleRequestSchema, { name, reason, requestId: randomUUID() }));
    return res.schedule;
  }

  /** Slots that came due while paused are not run. */
  async resume(name: string): Promise<Schedule | undefined> {
    const res = await this.call<ResumeScheduleResponse>("resumeSchedule", create(ResumeScheduleRequestSchema, { name, requestId: randomUUID() }));
    return res.schedule;
  }

  /** Runs every slot in [start, end] that has not run (at most 1,000); overlap "" = the schedule's own. */
  async backfill(name: string, start: Date, end: Date, policy: Overlap = ""): Promise<BackfillScheduleResponse> {
    const request = create(BackfillScheduleRequestSchema, {
      name,
      start: timestampFromDate(start),
      end: timestampFromDate(end),
      overlap: overlap(policy),
      requestId: randomUUID(),
    });
    return this.call<BackfillScheduleResponse>("backfillSchedule", request);
  }
}
