// The selected task: state, worker, timings, attempts, inputs as written in the
// plan, output or error, and the last progress it reported.
import type { ExecutionEvent } from "../gen/execplan/v1/events_pb.js";
import { type TaskRun, TaskState } from "../gen/execplan/v1/execution_pb.js";
import type { PlanNode } from "../gen/execplan/v1/plan_pb.js";
import { BuiltinKind } from "../gen/execplan/v1/plan_pb.js";
import { bindingText } from "../events.js";
import { clock, duration, phaseName, taskStateName, taskTone, usageText, valueJson, waitKindName, when } from "../format.js";
import { Json } from "./common.js";

export function TaskPanel({
  task,
  node,
  progress,
  output: streamed,
  onClose,
}: {
  task: TaskRun;
  node: PlanNode;
  progress: ExecutionEvent | undefined;
  /** Live partial output (ctx.stream) seen since the page opened, if any. */
  output?: string | undefined;
  version: number;
  onClose: () => void;
}) {
  const inputs = Object.fromEntries(node.bindings.map((b) => [b.name, bindingText(b.value)]));
  const output = valueJson(task.output);
  const reported =
    progress?.kind.case === "taskProgress" ? valueJson(progress.kind.value.progress) : task.progress ? valueJson(task.progress) : undefined;
  return (
    <div class="task-panel" data-testid="task-panel" data-task={task.taskId}>
      <div class="panel-head">
        <h3 class="mono">{task.taskId}</h3>
        <button class="link" onClick={onClose} aria-label="Close task">
          ✕
        </button>
      </div>
      <div>
        <span class={`pill t-${taskTone(task.state)}`} data-testid="task-state">
          {taskStateName(task.state)}
        </span>{" "}
        <span class="muted">
          {task.type}
          {node.builtin !== BuiltinKind.NONE && node.builtin !== BuiltinKind.UNSPECIFIED ? " · built-in" : ""}
        </span>
      </div>
      {task.statusMessage && <p class="muted small">{task.statusMessage}</p>}
      {task.waiting && (
        <p class="small waiting" data-testid="task-waiting">
          Waiting ({waitKindName(task.waiting.kind)}): {task.waiting.message}
          {task.waiting.until ? ` · until ${when(task.waiting.until)}` : ""}
        </p>
      )}
      <dl>
        <dt>Attempt</dt>
        <dd>
          {task.attempt || "–"}
          {task.phase > 1 ? ` (${phaseName(task.phase)})` : ""}
          {node.retry?.maxAttempts ? <span class="muted"> of {node.retry.maxAttempts}</span> : null}
        </dd>
        {task.parentTaskId && (
          <>
            <dt>{task.itemIndex !== undefined ? "Instance of" : "Sub-plan of"}</dt>
            <dd class="mono">
              {task.parentTaskId}
              {task.itemIndex !== undefined ? <span class="muted"> · item {task.itemIndex}</span> : null}
            </dd>
          </>
        )}
        {task.instanceCount > 0 && (
          <>
            <dt>Instances</dt>
            <dd>{task.instanceCount}</dd>
          </>
        )}
        {node.repeat && (
          <>
            <dt>Iteration</dt>
            <dd>
              {task.iteration} <span class="muted">of at most {node.repeat.maxIterations} (until {node.repeat.until?.source})</span>
            </dd>
          </>
        )}
        {task.childExecutionId && (
          <>
            <dt>Child</dt>
            <dd class="mono">
              <a href={`/executions/${encodeURIComponent(task.childExecutionId)}`}>{task.childExecutionId}</a>
            </dd>
          </>
        )}
        {task.subPlanId && (
          <>
            <dt>Sub-plan</dt>
            <dd class="mono">
              <a href={`/plans/${encodeURIComponent(task.subPlanId)}`}>{task.subPlanId.slice(0, 19)}…</a>
            </dd>
          </>
        )}
        {usageText(task.usage?.counters) && (
          <>
            <dt>Usage</dt>
            <dd data-testid="task-usage">{usageText(task.usage?.counters)}</dd>
          </>
        )}
        <dt>Worker</dt>
        <dd class="mono">{task.workerId || "–"}</dd>
        <dt>Queued</dt>
        <dd>{clock(task.queuedAt)}</dd>
        <dt>Started</dt>
        <dd>
          {clock(task.startedAt)}
          {task.startedAt && <span class="muted"> · waited {duration(task.queuedAt, task.startedAt)}</span>}
        </dd>
        <dt>Finished</dt>
        <dd>
          {clock(task.finishedAt)}
          {task.finishedAt && <span class="muted"> · ran {duration(task.startedAt ?? task.queuedAt, task.finishedAt)}</span>}
        </dd>
      </dl>
      {task.error && task.state !== TaskState.SUCCEEDED && (
        <div class="alert error" data-testid="task-error">
          <b>{task.error.type}</b>: {task.error.message}
          {task.error.retryable ? <span class="muted"> (retryable)</span> : null}
        </div>
      )}
      {reported !== undefined && (
        <>
          <h4>Progress</h4>
          <Json value={reported} />
        </>
      )}
      {streamed !== undefined && (
        <>
          <h4>Live output</h4>
          <pre class="stream" data-testid="task-stream">
            {streamed}
          </pre>
        </>
      )}
      <h4>Inputs (as written)</h4>
      <Json value={Object.keys(inputs).length ? inputs : undefined} />
      {node.condition && (
        <p class="small">
          when <code>{node.condition.source}</code>
        </p>
      )}
      <h4>Output</h4>
      <Json value={output} />
      {task.attempts.length > 0 && (
        <>
          <h4>Attempts</h4>
          <table class="table compact">
            <thead>
              <tr>
                <th>#</th>
                <th>Phase</th>
                <th>Worker</th>
                <th>Took</th>
                <th>Usage</th>
                <th>Error</th>
              </tr>
            </thead>
            <tbody>
              {task.attempts.map((a, i) => (
                <tr key={i}>
                  <td>{a.attempt}</td>
                  <td>{phaseName(a.phase)}</td>
                  <td class="mono">{a.workerId}</td>
                  <td>{duration(a.dispatchedAt, a.finishedAt)}</td>
                  <td>{usageText(a.usage?.counters)}</td>
                  <td>{a.error ? `${a.error.type}: ${a.error.message}` : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}
