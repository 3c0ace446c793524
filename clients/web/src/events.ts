// One line per event for the timeline, and the plan's input bindings as written.
import type { ExecutionEvent } from "./gen/execplan/v1/events_pb.js";
import { TimeoutKind, TimerPurpose } from "./gen/execplan/v1/events_pb.js";
import { ExecutionState } from "./gen/execplan/v1/execution_pb.js";
import type { BindingValue } from "./gen/execplan/v1/plan_pb.js";
import type { Budget } from "./gen/execplan/v1/workflow_pb.js";
import { amount, phaseName, usageText, valueJson } from "./format.js";

/** A budget's limits as "cost 20 · tokens 2,000,000". */
export function budgetText(budget: Budget | undefined): string {
  return budgetLimits(budget)
    .map(([name, limit]) => `${name} ${amount(limit)}`)
    .join(" · ");
}

/** [name, limit] of every limit a budget sets, sorted by name. */
export function budgetLimits(budget: Budget | undefined): Array<[string, number]> {
  if (!budget) return [];
  const out: Array<[string, number]> = Object.entries(budget.counters);
  if (budget.cost !== undefined) out.push(["cost", budget.cost]);
  if (budget.tokens !== undefined) out.push(["tokens", budget.tokens]);
  return out.sort(([a], [b]) => a.localeCompare(b));
}

export interface EventLine {
  kind: string;
  task: string;
  text: string;
  tone: string;
}

function short(v: unknown, max = 80): string {
  const s = JSON.stringify(v);
  if (s === undefined) return "";
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

function phase(p: number): string {
  const name = phaseName(p);
  return name && name !== "main" ? ` (${name})` : "";
}

export function describeEvent(e: ExecutionEvent): EventLine {
  const k = e.kind;
  const line = (kind: string, task: string, text: string, tone = "neutral"): EventLine => ({ kind, task, text, tone });
  switch (k.case) {
    case "executionStarted":
      return line("execution started", "", `${k.value.workflowName} ${short(k.value.inputs ?? {})}`, "running");
    case "taskQueued":
      return line("queued", k.value.taskId, `${k.value.iteration ? `iteration ${k.value.iteration}, ` : ""}attempt ${k.value.attempt}${phase(k.value.phase)}`, "queued");
    case "taskDispatched":
      return line("dispatched", k.value.taskId, `to ${k.value.workerId}, attempt ${k.value.token?.attempt ?? 0}${phase(k.value.phase)}`, "queued");
    case "taskStarted":
      return line("started", k.value.taskId, `on ${k.value.workerId}${phase(k.value.phase)}`, "running");
    case "taskSucceeded":
      return line("succeeded", k.value.taskId, short(valueJson(k.value.output)) + phase(k.value.phase), "succeeded");
    case "taskFailed":
      return line(
        k.value.final ? "failed" : "attempt failed",
        k.value.taskId,
        `${k.value.error?.type ?? ""}: ${k.value.error?.message ?? ""}${phase(k.value.phase)}`,
        k.value.final ? "failed" : "backoff",
      );
    case "taskTimedOut":
      return line("timed out", k.value.taskId, `${(TimeoutKind[k.value.timeout] ?? "").toLowerCase()}${k.value.final ? " (final)" : ""}`, k.value.final ? "failed" : "backoff");
    case "taskRetryScheduled":
      return line("retry scheduled", k.value.taskId, `attempt ${k.value.nextAttempt}${k.value.reason ? ` · ${k.value.reason}` : ""}`, "backoff");
    case "taskRequeued":
      return line("requeued", k.value.taskId, k.value.reason, "queued");
    case "taskSkipped":
      return line("skipped", k.value.taskId, k.value.reason, "skipped");
    case "taskParked":
      return line(k.value.parked ? "parked" : "unparked", k.value.taskId, `breaker ${k.value.breakerType}`, "backoff");
    case "taskCancelled":
      return line("cancelled", k.value.taskId, k.value.reason, "cancelled");
    case "timerScheduled":
      return line("timer set", k.value.taskId, (TimerPurpose[k.value.purpose] ?? "").toLowerCase().replace(/_/g, " "), "neutral");
    case "timerFired":
      return line("timer fired", k.value.taskId, (TimerPurpose[k.value.purpose] ?? "").toLowerCase().replace(/_/g, " "), "neutral");
    case "externalEventReceived":
      return line("event received", k.value.taskId, `${k.value.name} ${short(valueJson(k.value.data))}`, "running");
    case "executionPaused":
      return line("paused", "", k.value.reason, "paused");
    case "executionResumed":
      return line("resumed", "", "", "running");
    case "executionCancelRequested":
      return line(k.value.terminate ? "terminate requested" : "cancel requested", "", k.value.reason, "cancelled");
    case "compensationStarted":
      return line("compensation started", "", `${k.value.taskIds.join(", ")} · ${k.value.reason}`, "compensated");
    case "taskProgress":
      return line("progress", k.value.taskId, short(valueJson(k.value.progress)), "running");
    case "taskExpanded":
      return line("expanded", k.value.taskId, `${k.value.count} instance${k.value.count === 1 ? "" : "s"}`, "running");
    case "iterationCompleted":
      return line("iteration done", k.value.taskId, `iteration ${k.value.iteration} · until ${k.value.done} · ${short(valueJson(k.value.output))}`, k.value.done ? "succeeded" : "running");
    case "planRevised":
      return line("plan revised", k.value.taskId, `revision ${k.value.revision}: ${k.value.plan?.nodes.length ?? 0} tasks, ${(k.value.plan?.planId ?? "").slice(0, 19)}…`, "running");
    case "childExecutionStarted":
      return line("child started", k.value.taskId, `${k.value.childExecutionId} (${k.value.workflowName}${k.value.workflowVersion ? `@${k.value.workflowVersion}` : ""})`, "running");
    case "childExecutionEnded":
      return line("child ended", k.value.taskId, `${k.value.childExecutionId}: ${ExecutionState[k.value.state] ?? ""}`, k.value.state === ExecutionState.SUCCEEDED ? "succeeded" : "failed");
    case "taskUsage":
      return line("usage", k.value.taskId, usageText(k.value.usage?.counters), "neutral");
    case "budgetChanged":
      return line("budget changed", "", `${budgetText(k.value.budget)}${k.value.reason ? ` · ${k.value.reason}` : ""}`, "running");
    case "executionCompleted": {
      const state = ExecutionState[k.value.state] ?? "";
      const err = k.value.error ? ` · ${k.value.error.type}: ${k.value.error.message}` : "";
      return line("execution completed", k.value.failedTaskId, state + err, state === "SUCCEEDED" ? "succeeded" : "failed");
    }
    default:
      return line(k.case ?? "unknown", "", "", "neutral");
  }
}

export function bindingText(v: BindingValue | undefined): unknown {
  const k = v?.kind;
  switch (k?.case) {
    case "literal":
      return valueJson(k.value);
    case "expression":
      return `\${{ ${k.value.source} }}`;
    case "template":
      return k.value.parts.map((p) => (p.kind.case === "text" ? p.kind.value : `\${{ ${p.kind.value?.source ?? ""} }}`)).join("");
    case "struct":
      return Object.fromEntries(k.value.fields.map((f) => [f.name, bindingText(f.value)]));
    case "list":
      return k.value.items.map(bindingText);
    default:
      return null;
  }
}
