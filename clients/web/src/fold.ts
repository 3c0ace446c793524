// Live updates without asking the server again: each event from WatchExecution is
// applied to the view GetExecution returned (the same kinds of change the
// executor's fold makes, for display). When the execution ends, the page fetches
// the authoritative view once; time travel always asks the server (at_sequence).
import { create } from "@bufbuild/protobuf";
import type { ExecutionEvent } from "./gen/execplan/v1/events_pb.js";
import { TimerPurpose } from "./gen/execplan/v1/events_pb.js";
import {
  AttemptRecordSchema,
  ErrorInfoSchema,
  type Execution,
  ExecutionState,
  TaskPhase,
  type TaskRun,
  TaskState,
  type Usage,
  UsageSchema,
} from "./gen/execplan/v1/execution_pb.js";
import { TimeoutKind } from "./gen/execplan/v1/events_pb.js";

export interface Progress {
  value: unknown;
  at: number;
}

function addUsage(into: Usage | undefined, counters: { [name: string]: number }): Usage {
  const out = into ?? create(UsageSchema);
  for (const [name, n] of Object.entries(counters)) out.counters[name] = (out.counters[name] ?? 0) + n;
  return out;
}

/** Applies `event` to `execution` in place; returns false if it was already folded. */
export function apply(execution: Execution, event: ExecutionEvent, progress: Map<string, ExecutionEvent>): boolean {
  if (event.sequence <= execution.lastSequence) return false;
  execution.lastSequence = event.sequence;
  execution.updatedAt = event.recordedAt;
  const at = event.recordedAt;
  const task = (id: string): TaskRun | undefined => execution.tasks.find((t) => t.taskId === id);
  const k = event.kind;
  switch (k.case) {
    case "taskQueued": {
      const t = task(k.value.taskId);
      if (!t) break;
      t.state = TaskState.QUEUED;
      t.phase = k.value.phase;
      t.iteration = k.value.iteration;
      if (!t.queuedAt) t.queuedAt = at;
      break;
    }
    case "taskDispatched": {
      const t = task(k.value.taskId);
      if (!t) break;
      t.state = TaskState.DISPATCHED;
      t.phase = k.value.phase;
      t.attempt = k.value.token?.attempt ?? t.attempt;
      t.workerId = k.value.workerId;
      t.attempts.push(
        create(AttemptRecordSchema, {
          attempt: t.attempt,
          phase: k.value.phase,
          workerId: k.value.workerId,
          leaseEpoch: k.value.token?.leaseEpoch ?? 0n,
          dispatchedAt: at,
        }),
      );
      break;
    }
    case "taskStarted": {
      const t = task(k.value.taskId);
      if (!t) break;
      t.state = TaskState.RUNNING;
      if (!t.startedAt) t.startedAt = at;
      break;
    }
    case "taskSucceeded": {
      const t = task(k.value.taskId);
      if (!t) break;
      t.state = k.value.phase === TaskPhase.COMPENSATION ? TaskState.COMPENSATED : TaskState.SUCCEEDED;
      if (k.value.phase !== TaskPhase.COMPENSATION) t.output = k.value.output;
      t.error = undefined;
      t.finishedAt = at;
      closeAttempt(t, at);
      break;
    }
    case "taskFailed": {
      const t = task(k.value.taskId);
      if (!t) break;
      t.error = k.value.error;
      closeAttempt(t, at, k.value.error);
      if (k.value.final) {
        t.state = k.value.phase === TaskPhase.COMPENSATION ? TaskState.COMPENSATION_FAILED : TaskState.FAILED;
        t.finishedAt = at;
      }
      break;
    }
    case "taskTimedOut": {
      const t = task(k.value.taskId);
      if (!t) break;
      const error = create(ErrorInfoSchema, {
        type: "Timeout",
        message: `${(TimeoutKind[k.value.timeout] ?? "").toLowerCase()} timeout`,
        retryable: !k.value.final,
      });
      t.error = error;
      closeAttempt(t, at, error);
      if (k.value.final) {
        t.state = TaskState.FAILED;
        t.finishedAt = at;
      }
      break;
    }
    case "taskRetryScheduled": {
      const t = task(k.value.taskId);
      if (t) {
        t.state = TaskState.BACKING_OFF;
        t.statusMessage = k.value.reason;
      }
      break;
    }
    case "taskRequeued": {
      const t = task(k.value.taskId);
      if (t) {
        t.state = TaskState.QUEUED;
        t.statusMessage = k.value.reason;
        closeAttempt(t, at);
      }
      break;
    }
    case "taskSkipped": {
      const t = task(k.value.taskId);
      if (t) {
        t.state = TaskState.SKIPPED;
        t.statusMessage = k.value.reason;
        t.finishedAt = at;
      }
      break;
    }
    case "taskParked": {
      const t = task(k.value.taskId);
      if (t) {
        t.state = k.value.parked ? TaskState.PARKED : TaskState.QUEUED;
        t.statusMessage = k.value.parked ? `circuit breaker of ${k.value.breakerType} is open` : "";
      }
      break;
    }
    case "taskCancelled": {
      const t = task(k.value.taskId);
      if (t) {
        t.state = TaskState.CANCELLED;
        t.statusMessage = k.value.reason;
        t.finishedAt = at;
      }
      break;
    }
    case "timerScheduled": {
      const t = task(k.value.taskId);
      const waits = k.value.purpose === TimerPurpose.SLEEP || k.value.purpose === TimerPurpose.EVENT_TIMEOUT;
      if (t && waits && t.state !== TaskState.SUCCEEDED) {
        t.state = TaskState.WAITING;
        if (!t.startedAt) t.startedAt = at;
      }
      break;
    }
    case "taskProgress":
      progress.set(k.value.taskId, event);
      break;
    // Plans that grow at run time: the new tasks (instances, a sub-plan's) come with
    // the page's next GetExecution; here only what changes on a task it has.
    case "taskExpanded": {
      const t = task(k.value.taskId);
      if (t) {
        t.state = TaskState.RUNNING;
        t.instanceCount = k.value.count;
      }
      break;
    }
    case "iterationCompleted": {
      const t = task(k.value.taskId);
      if (t) {
        t.iteration = k.value.iteration;
        closeAttempt(t, at);
      }
      break;
    }
    case "childExecutionStarted": {
      const t = task(k.value.taskId);
      if (t) {
        t.state = TaskState.RUNNING;
        t.childExecutionId = k.value.childExecutionId;
        if (!t.startedAt) t.startedAt = at;
      }
      break;
    }
    case "planRevised": {
      const t = task(k.value.taskId);
      if (t) {
        t.state = TaskState.RUNNING;
        t.subPlanId = k.value.plan?.planId ?? "";
        closeAttempt(t, at);
      }
      break;
    }
    case "executionPaused":
      execution.state = ExecutionState.PAUSED;
      execution.budgetExceeded = k.value.budgetExceeded;
      break;
    case "executionResumed":
      execution.state = ExecutionState.RUNNING;
      execution.budgetExceeded = undefined;
      break;
    case "taskUsage": {
      // The task's, its attempt's and the execution's usage all grow by the report.
      const counters = k.value.usage?.counters ?? {};
      const t = task(k.value.taskId);
      if (t) {
        t.usage = addUsage(t.usage, counters);
        const a = t.attempts.find(
          (r) => r.phase === k.value.phase && r.attempt === k.value.token?.attempt && r.leaseEpoch === k.value.token?.leaseEpoch,
        );
        if (a) a.usage = addUsage(a.usage, counters);
      }
      execution.usage = addUsage(execution.usage, counters);
      break;
    }
    case "budgetChanged":
      execution.budget = k.value.budget;
      break;
    case "compensationStarted":
      execution.state = ExecutionState.COMPENSATING;
      break;
    case "executionCompleted":
      execution.state = k.value.state;
      execution.outputs = k.value.outputs;
      execution.error = k.value.error;
      execution.finishedAt = at;
      break;
    default:
      break;
  }
  return true;
}

function closeAttempt(t: TaskRun, at: ExecutionEvent["recordedAt"], error?: TaskRun["error"]): void {
  const last = t.attempts[t.attempts.length - 1];
  if (last && !last.finishedAt) {
    last.finishedAt = at;
    if (error) last.error = error;
  }
}

/** Per-state counts for the header's progress bar. */
export function counts(execution: Execution): Map<TaskState, number> {
  const result = new Map<TaskState, number>();
  for (const t of execution.tasks) result.set(t.state, (result.get(t.state) ?? 0) + 1);
  return result;
}
