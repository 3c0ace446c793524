/**
 * Workflows as code: typed builders that produce the `execplan.v1.Workflow` message.
 *
 * The option names are the WDL's (`depends_on`, `for_each`, `max_parallel`, `repeat`,
 * `workflow`, `dynamic`, `retry`, `timeouts`, ...), so a workflow built here reads like
 * its YAML, and an agent or a service writes plans without YAML:
 *
 *     import { builder } from "@execplan/client";
 *     const { Workflow, item, output, previous } = builder;
 *     const wf = new Workflow("research", { version: "2", inputs: { question: { type: "string", required: true } } });
 *     const plan = wf.task("plan", "agent.plan", { inputs: { question: wf.input("question") } });
 *     const research = wf.task("research", "agent.research", {
 *       for_each: plan.output.get("questions"), max_parallel: 4, inputs: { question: item },
 *     });
 *     const write = wf.task("write", "agent.write", {
 *       inputs: { notes: research.output, draft: previous },
 *       repeat: { until: output.get("approved"), max_iterations: 3 },
 *     });
 *     wf.output("report", write.output.get("text"));
 *     const message = wf.build();       // execplan.v1.Workflow
 *     const document = wf.toDocument(); // the same, as the YAML/JSON document
 *
 * Durations are "250ms", "30s", "1h30m" or milliseconds; enums their short names
 * ("compensate", "all_done"). Names, enums and durations are checked as the workflow
 * grows (an Error naming the field); the planner checks the rest when it compiles.
 */
import { fromJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { type Workflow as WorkflowMessage, WorkflowSchema } from "./gen/execplan/v1/workflow_pb.js";

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const NAME = /^[a-z0-9][a-z0-9._-]*$/;

/** The source of a CEL expression; `.get()` builds longer ones. */
export class Expr {
  constructor(readonly source: string) {
    if (typeof source !== "string" || !source.trim()) throw new Error("an expression needs a non-empty CEL source");
  }

  /** `tasks.a.output` -> `tasks.a.output.key` (or `["a b"]`, or `[2]`). */
  get(key: string | number): Expr {
    if (typeof key === "number") return new Expr(`${this.source}[${key}]`);
    return new Expr(IDENT.test(key) ? `${this.source}.${key}` : `${this.source}[${JSON.stringify(key)}]`);
  }

  /** The whole-string form used in inputs and outputs: `${{ source }}`. */
  template(): string {
    return "${{ " + this.source + " }}";
  }

  toString(): string {
    return this.source;
  }
}

/** A CEL expression written as text. */
export function expr(source: string): Expr {
  return new Expr(source);
}

/** The runtime variables (docs/runtime-plans.md), each defined only on some tasks. */
export const item = new Expr("item");
export const index = new Expr("index");
export const iteration = new Expr("iteration");
export const previous = new Expr("previous");
export const output = new Expr("output");

export type Duration = string | number;
export type Value = JsonValue | Expr | Value[] | { [key: string]: Value };
type Cel = string | Expr;

export interface RetryPolicy {
  max_attempts?: number;
  initial_interval?: Duration;
  backoff_coefficient?: number;
  max_interval?: Duration;
  jitter?: number;
  non_retryable_errors?: string[];
}
export interface Timeouts {
  schedule_to_start?: Duration;
  start_to_close?: Duration;
  heartbeat?: Duration;
  schedule_to_close?: Duration;
}
export interface CircuitBreaker {
  failure_threshold?: number;
  open_for?: Duration;
  half_open_max_calls?: number;
  failure_rate_threshold?: number;
  window?: Duration;
  on_open?: "park" | "fail_fast";
}
export interface Placement {
  require?: Record<string, string>;
  prefer?: Record<string, string>;
  environment?: string;
}
export interface Resources {
  cpu?: string;
  memory?: string;
  gpu?: number;
}
export interface SideTask {
  type: string;
  inputs?: Record<string, Value>;
  retry?: RetryPolicy;
  timeouts?: Timeouts;
}
export interface Repeat {
  until: Cel;
  max_iterations: number;
}
export interface InputSpec {
  type?: "string" | "number" | "integer" | "boolean" | "object" | "array" | "any";
  required?: boolean;
  default?: JsonValue;
  description?: string;
}
export interface TaskDefaults {
  retry?: RetryPolicy;
  timeouts?: Timeouts;
  circuit_breaker?: CircuitBreaker;
  placement?: Placement;
  resources?: Resources;
  priority?: number;
}
export interface WorkflowOptions {
  version?: string;
  description?: string;
  inputs?: Record<string, InputSpec>;
  defaults?: TaskDefaults;
  on_failure?: "fail_fast" | "continue" | "compensate";
  max_parallel?: number;
  pause_after_failures?: number;
  labels?: Record<string, string>;
}
export interface TaskOptions {
  depends_on?: (Task | string)[];
  inputs?: Record<string, Value>;
  when?: Cel;
  trigger?: "all_success" | "all_done" | "one_success" | "all_failed";
  retry?: RetryPolicy;
  timeouts?: Timeouts;
  fallback?: SideTask;
  compensation?: SideTask;
  circuit_breaker?: CircuitBreaker;
  placement?: Placement;
  resources?: Resources;
  secrets?: string[];
  priority?: number;
  estimated_duration?: Duration;
  description?: string;
  /** One instance per item of the list this CEL expression yields. */
  for_each?: Cel;
  /** Instances of a for_each task at once; 0 = no bound. */
  max_parallel?: number;
  repeat?: Repeat;
  /** With type builtin.workflow: NAME or NAME@VERSION of a registered workflow. */
  workflow?: string;
  /** The task may answer with a sub-workflow (a SubPlan). */
  dynamic?: boolean;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration as proto JSON ("90s", "0.250s"). */
export function duration(value: Duration, what: string): string {
  let ms: number;
  if (typeof value === "number" && Number.isFinite(value) && value >= 0) {
    ms = Math.round(value);
  } else if (typeof value === "string" && /^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(value)) {
    ms = 0;
    for (const [, n, , unit] of value.matchAll(/(\d+(\.\d+)?)(ms|s|m|h|d)/g)) ms += Number(n) * UNIT_MS[unit!]!;
    ms = Math.round(ms);
  } else {
    throw new Error(`${what}: ${JSON.stringify(value)} is not a duration such as 250ms, 30s, 5m or 1h30m`);
  }
  const seconds = Math.floor(ms / 1000);
  const millis = ms % 1000;
  return millis ? `${seconds}.${String(millis).padStart(3, "0")}s` : `${seconds}s`;
}

function enumName(prefix: string, value: string, allowed: string[], what: string): string {
  const name = value.toUpperCase().replace(new RegExp(`^${prefix}_`), "");
  if (!allowed.includes(name)) throw new Error(`${what}: unknown value ${JSON.stringify(value)}; expected one of ${allowed.map((a) => a.toLowerCase()).join(", ")}`);
  return `${prefix}_${name}`;
}

function value(v: Value | undefined, what: string): JsonValue {
  if (v instanceof Expr) return v.template();
  if (v === null || typeof v === "string" || typeof v === "boolean") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new Error(`${what}: ${v} is not a JSON number`);
    return v;
  }
  if (Array.isArray(v)) return v.map((x, i) => value(x, `${what}[${i}]`));
  if (v !== undefined && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    const out: JsonObject = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = value(x as Value, `${what}.${k}`);
    return out;
  }
  throw new Error(`${what}: not a JSON value or an Expr`);
}

function cel(v: Cel, what: string): string {
  if (v instanceof Expr) return v.source;
  if (typeof v !== "string" || !v.trim()) throw new Error(`${what}: expected a CEL expression (string or Expr)`);
  return v;
}

function durations<T extends object>(spec: T, keys: string[], what: string): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(spec)) {
    if (v === undefined) continue;
    out[k] = keys.includes(k) ? duration(v as Duration, `${what}.${k}`) : (v as JsonValue);
  }
  return out;
}

function retry(r: RetryPolicy, what: string): JsonObject {
  return durations(r, ["initial_interval", "max_interval"], what);
}
function timeouts(t: Timeouts, what: string): JsonObject {
  return durations(t, ["schedule_to_start", "start_to_close", "heartbeat", "schedule_to_close"], what);
}
function breaker(b: CircuitBreaker, what: string): JsonObject {
  const out = durations(b, ["open_for", "window"], what);
  if (b.on_open) out["on_open"] = enumName("BREAKER_OPEN_ACTION", b.on_open, ["PARK", "FAIL_FAST"], `${what}.on_open`);
  return out;
}
function side(s: SideTask, what: string): JsonObject {
  const out: JsonObject = { type: s.type };
  if (s.inputs) out["inputs"] = value(s.inputs, `${what}.inputs`);
  if (s.retry) out["retry"] = retry(s.retry, `${what}.retry`);
  if (s.timeouts) out["timeouts"] = timeouts(s.timeouts, `${what}.timeouts`);
  return out;
}
function defaults(d: TaskDefaults): JsonObject {
  const out: JsonObject = {};
  if (d.retry) out["retry"] = retry(d.retry, "defaults.retry");
  if (d.timeouts) out["timeouts"] = timeouts(d.timeouts, "defaults.timeouts");
  if (d.circuit_breaker) out["circuit_breaker"] = breaker(d.circuit_breaker, "defaults.circuit_breaker");
  if (d.placement) out["placement"] = { ...d.placement } as JsonObject;
  if (d.resources) out["resources"] = { ...d.resources } as JsonObject;
  if (d.priority !== undefined) out["priority"] = d.priority;
  return out;
}

/** One task of a Workflow; refer to its result as `task.output.get(...)`. */
export class Task {
  constructor(
    readonly id: string,
    /** @internal */ readonly doc: JsonObject,
  ) {}
  get output(): Expr {
    return new Expr(`tasks.${this.id}.output`);
  }
  get status(): Expr {
    return new Expr(`tasks.${this.id}.status`);
  }
  get error(): Expr {
    return new Expr(`tasks.${this.id}.error`);
  }
}

const TRIGGERS = ["ALL_SUCCESS", "ALL_DONE", "ONE_SUCCESS", "ALL_FAILED"];
const ON_FAILURE = ["FAIL_FAST", "CONTINUE", "COMPENSATE"];
const INPUT_TYPES = ["STRING", "NUMBER", "INTEGER", "BOOLEAN", "OBJECT", "ARRAY", "ANY"];

/** A workflow built in code (see the module comment). */
export class Workflow {
  private readonly head: JsonObject;
  private readonly declared: Set<string>;
  private readonly taskList: Task[] = [];
  private readonly outputs: JsonObject = {};

  constructor(
    readonly name: string,
    options: WorkflowOptions = {},
  ) {
    if (!NAME.test(name)) throw new Error(`workflow name ${JSON.stringify(name)} must match [a-z0-9][a-z0-9._-]*`);
    const o = options;
    this.head = { name };
    if (o.version) this.head["version"] = o.version;
    if (o.description) this.head["description"] = o.description;
    this.declared = new Set(Object.keys(o.inputs ?? {}));
    if (o.inputs && Object.keys(o.inputs).length) {
      const inputs: JsonObject = {};
      for (const [k, spec] of Object.entries(o.inputs)) {
        const s: JsonObject = {};
        if (spec.type) s["type"] = enumName("INPUT_TYPE", spec.type, INPUT_TYPES, `inputs.${k}.type`);
        if (spec.required) s["required"] = true;
        if (spec.default !== undefined) s["default"] = spec.default;
        if (spec.description) s["description"] = spec.description;
        inputs[k] = s;
      }
      this.head["inputs"] = inputs;
    }
    if (o.defaults) this.head["defaults"] = defaults(o.defaults);
    if (o.on_failure) this.head["on_failure"] = enumName("ON_FAILURE", o.on_failure, ON_FAILURE, "on_failure");
    if (o.max_parallel) this.head["max_parallel"] = o.max_parallel;
    if (o.pause_after_failures) this.head["pause_after_failures"] = o.pause_after_failures;
    if (o.labels) this.head["labels"] = { ...o.labels };
  }

  /** `workflow.inputs.NAME` of a declared input. */
  input(name: string): Expr {
    if (!this.declared.has(name)) throw new Error(`input ${JSON.stringify(name)} is not declared (WorkflowOptions.inputs)`);
    return new Expr(`workflow.inputs.${name}`);
  }

  get tasks(): readonly Task[] {
    return this.taskList;
  }

  /** Add a task (the WDL's names); returns it for references from other tasks. */
  task(id: string, type: string, options: TaskOptions = {}): Task {
    if (!IDENT.test(id)) throw new Error(`task id ${JSON.stringify(id)} must match [A-Za-z_][A-Za-z0-9_]*`);
    if (this.taskList.some((t) => t.id === id)) throw new Error(`task id ${JSON.stringify(id)} is used twice`);
    const o = options;
    const at = `tasks.${id}`;
    const doc: JsonObject = { id, type };
    if (o.depends_on?.length) doc["depends_on"] = o.depends_on.map((d) => (d instanceof Task ? d.id : d));
    if (o.inputs) doc["inputs"] = value(o.inputs, `${at}.inputs`);
    if (o.when !== undefined) doc["when"] = cel(o.when, `${at}.when`);
    if (o.trigger) doc["trigger"] = enumName("TRIGGER_RULE", o.trigger, TRIGGERS, `${at}.trigger`);
    if (o.retry) doc["retry"] = retry(o.retry, `${at}.retry`);
    if (o.timeouts) doc["timeouts"] = timeouts(o.timeouts, `${at}.timeouts`);
    if (o.fallback) doc["fallback"] = side(o.fallback, `${at}.fallback`);
    if (o.compensation) doc["compensation"] = side(o.compensation, `${at}.compensation`);
    if (o.circuit_breaker) doc["circuit_breaker"] = breaker(o.circuit_breaker, `${at}.circuit_breaker`);
    if (o.placement) doc["placement"] = { ...o.placement } as JsonObject;
    if (o.resources) doc["resources"] = { ...o.resources } as JsonObject;
    if (o.secrets?.length) doc["secrets"] = [...o.secrets];
    if (o.priority !== undefined) doc["priority"] = o.priority;
    if (o.estimated_duration !== undefined) doc["estimated_duration"] = duration(o.estimated_duration, `${at}.estimated_duration`);
    if (o.description) doc["description"] = o.description;
    if (o.for_each !== undefined) doc["for_each"] = cel(o.for_each, `${at}.for_each`);
    if (o.max_parallel) doc["max_parallel"] = o.max_parallel;
    if (o.repeat) doc["repeat"] = { until: cel(o.repeat.until, `${at}.repeat.until`), max_iterations: o.repeat.max_iterations };
    if (o.workflow) doc["workflow"] = o.workflow;
    if (o.dynamic) doc["dynamic"] = true;
    const task = new Task(id, doc);
    this.taskList.push(task);
    return task;
  }

  /** A workflow output: a literal, an Expr, or a structure with Exprs inside. */
  output(name: string, v: Value): void {
    this.outputs[name] = value(v, `outputs.${name}`);
  }

  /** The workflow document (what a YAML or JSON file would hold). */
  toDocument(): JsonObject {
    const doc: JsonObject = { ...this.head, tasks: this.taskList.map((t) => ({ ...t.doc })) };
    if (Object.keys(this.outputs).length) doc["outputs"] = { ...this.outputs };
    return doc;
  }

  /** The `execplan.v1.Workflow` message. */
  build(): WorkflowMessage {
    return fromJson(WorkflowSchema, this.toDocument());
  }
}
