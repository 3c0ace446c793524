import type { ComponentChildren } from "preact";
import { ExecutionState } from "../gen/execplan/v1/execution_pb.js";
import { executionStateName, executionTone } from "../format.js";

export function StatePill({ state }: { state: ExecutionState }) {
  return (
    <span class={`pill s-${executionTone(state)}`} data-state={ExecutionState[state]}>
      {executionStateName(state)}
    </span>
  );
}

export function Alert({ children, kind = "error" }: { children: ComponentChildren; kind?: "error" | "info" }) {
  return (
    <div class={`alert ${kind}`} role={kind === "error" ? "alert" : "status"}>
      {children}
    </div>
  );
}

/** Task counts as a stacked bar: one segment per state tone. */
export function ProgressBar({ counts }: { counts: { [state: string]: number } }) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  if (!total) return <span class="muted">–</span>;
  const order = ["SUCCEEDED", "COMPENSATED", "RUNNING", "DISPATCHED", "WAITING", "QUEUED", "BACKING_OFF", "PARKED", "FAILED", "COMPENSATION_FAILED", "CANCELLED", "SKIPPED", "PENDING"];
  const done = (counts.SUCCEEDED ?? 0) + (counts.SKIPPED ?? 0) + (counts.COMPENSATED ?? 0);
  return (
    <span class="progress" title={Object.entries(counts).map(([k, v]) => `${k.toLowerCase()}: ${v}`).join(", ")}>
      <span class="bar">
        {order
          .filter((s) => counts[s])
          .map((s) => (
            <span key={s} class={`seg c-${s.toLowerCase()}`} style={{ width: `${(100 * counts[s]) / total}%` }} />
          ))}
      </span>
      <span class="muted small">
        {done}/{total}
      </span>
    </span>
  );
}

export function Json({ value }: { value: unknown }) {
  if (value === undefined || value === null) return <span class="muted">–</span>;
  return <pre class="json">{JSON.stringify(value, null, 2)}</pre>;
}

export function Modal({ title, children, onClose }: { title: string; children: ComponentChildren; onClose: () => void }) {
  return (
    <div class="modal-back" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div class="modal card" role="dialog" aria-label={title}>
        <div class="modal-head">
          <h3>{title}</h3>
          <button class="link" onClick={onClose} aria-label="Close">
            ✕
          </button>
        </div>
        {children}
      </div>
    </div>
  );
}
