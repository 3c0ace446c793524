// Names, colours and times, shared by every page.
import { toJson } from "@bufbuild/protobuf";
import { type Timestamp, ValueSchema, type Value, timestampDate } from "@bufbuild/protobuf/wkt";
import { ExecutionState, TaskPhase, TaskState, WaitKind } from "./gen/execplan/v1/execution_pb.js";

export function executionStateName(s: ExecutionState): string {
  return (ExecutionState[s] ?? "UNSPECIFIED").replace(/_/g, " ");
}

export function taskStateName(s: TaskState): string {
  return (TaskState[s] ?? "UNSPECIFIED").replace(/_/g, " ");
}

export function phaseName(p: TaskPhase): string {
  return (TaskPhase[p] ?? "").toLowerCase();
}

/** CSS class of a state: the palette lives in styles.css (`.s-running` ...). */
export function executionTone(s: ExecutionState): string {
  switch (s) {
    case ExecutionState.RUNNING:
      return "running";
    case ExecutionState.PAUSED:
      return "paused";
    case ExecutionState.COMPENSATING:
    case ExecutionState.COMPENSATED:
      return "compensated";
    case ExecutionState.SUCCEEDED:
      return "succeeded";
    case ExecutionState.FAILED:
    case ExecutionState.COMPENSATION_FAILED:
      return "failed";
    case ExecutionState.CANCELLED:
    case ExecutionState.TERMINATED:
      return "cancelled";
    default:
      return "pending";
  }
}

export function taskTone(s: TaskState): string {
  switch (s) {
    case TaskState.QUEUED:
    case TaskState.DISPATCHED:
      return "queued";
    case TaskState.RUNNING:
      return "running";
    case TaskState.BACKING_OFF:
    case TaskState.PARKED:
      return "backoff";
    case TaskState.WAITING:
      return "waiting";
    case TaskState.SUCCEEDED:
      return "succeeded";
    case TaskState.FAILED:
    case TaskState.COMPENSATION_FAILED:
      return "failed";
    case TaskState.SKIPPED:
      return "skipped";
    case TaskState.CANCELLED:
      return "cancelled";
    case TaskState.COMPENSATED:
      return "compensated";
    default:
      return "pending";
  }
}

export const TERMINAL = new Set([
  ExecutionState.SUCCEEDED,
  ExecutionState.FAILED,
  ExecutionState.COMPENSATED,
  ExecutionState.COMPENSATION_FAILED,
  ExecutionState.CANCELLED,
  ExecutionState.TERMINATED,
]);

export function date(ts: Timestamp | undefined): Date | undefined {
  return ts && (ts.seconds !== 0n || ts.nanos !== 0) ? timestampDate(ts) : undefined;
}

export function clock(ts: Timestamp | undefined): string {
  const d = date(ts);
  return d ? d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0") : "–";
}

export function when(ts: Timestamp | undefined): string {
  const d = date(ts);
  if (!d) return "–";
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString(undefined, { hour12: false }) : d.toLocaleString(undefined, { hour12: false });
}

export function ago(ts: Timestamp | undefined, now = Date.now()): string {
  const d = date(ts);
  if (!d) return "–";
  const s = Math.max(0, Math.round((now - d.getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function duration(from: Timestamp | undefined, to: Timestamp | undefined): string {
  const a = date(from);
  const b = date(to);
  if (!a || !b) return "–";
  return ms(b.getTime() - a.getTime());
}

export function ms(n: number): string {
  if (n < 1000) return `${Math.max(0, Math.round(n))} ms`;
  if (n < 60_000) return `${(n / 1000).toFixed(n < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(n / 60_000);
  return `${m}m ${Math.round((n % 60_000) / 1000)}s`;
}

export function valueJson(v: Value | undefined): unknown {
  return v === undefined ? undefined : toJson(ValueSchema, v);
}

export function pretty(v: unknown): string {
  return v === undefined ? "" : JSON.stringify(v, null, 2);
}

export function shortId(id: string): string {
  return id.length > 14 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id;
}

/** "concurrency limit", "rate limit", "resources", "unplaceable". */
export function waitKindName(k: WaitKind): string {
  return (WaitKind[k] ?? "").replaceAll("_", " ").toLowerCase();
}

/** An amount for people: whole numbers grouped (1,200,000), others to 4 significant digits. */
export function amount(n: number): string {
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  if (Math.abs(n) >= 100) return n.toLocaleString("en-US", { maximumFractionDigits: 2 });
  return String(Number(n.toPrecision(Math.abs(n) < 0.01 ? 6 : 4)));
}

/** Usage counters as "cost 0.42 · tokens_in 1,200", sorted by name; "" when none. */
export function usageText(counters: { [name: string]: number } | undefined): string {
  const names = Object.keys(counters ?? {}).sort();
  return names.map((n) => `${n} ${amount(counters![n]!)}`).join(" · ");
}

/** What counts toward a budget limit (`tokens` counts tokens_in + tokens_out + tokens). */
export function spentToward(limit: string, counters: { [name: string]: number } | undefined): number {
  const names = limit === "tokens" ? ["tokens", "tokens_in", "tokens_out"] : [limit];
  return names.reduce((sum, n) => sum + (counters?.[n] ?? 0), 0);
}
