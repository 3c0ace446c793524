// Pause, resume, cancel, terminate, send an event and replay: each offered only
// when the execution's state allows it and shown disabled (with the reason) when
// the token's role may not make the call. The server checks both again.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, executor, requestId } from "../api.js";
import { type Execution, ExecutionState } from "../gen/execplan/v1/execution_pb.js";
import type { ReplayExecutionResponse } from "../gen/execplan/v1/executor_service_pb.js";
import { TERMINAL } from "../format.js";
import { denial, useSession } from "../session.js";
import { Alert, Modal } from "./common.js";

type Dialog = "pause" | "cancel" | "terminate" | "event" | null;

export function Actions({ execution }: { execution: Execution; onChanged: () => void; onReplayed: () => void }) {
  const session = useSession();
  const [dialog, setDialog] = useState<Dialog>(null);
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<{ kind: "error" | "info"; text: string } | null>(null);
  const [replay, setReplay] = useState<ReplayExecutionResponse | null>(null);
  const id = execution.executionId;
  const terminal = TERMINAL.has(execution.state);

  const run = async (what: string, call: () => Promise<unknown>) => {
    setBusy(true);
    setMessage(null);
    try {
      await call();
      setMessage({ kind: "info", text: `${what}: done` });
      setDialog(null);
    } catch (e) {
      setMessage({ kind: "error", text: describe(e) });
    } finally {
      setBusy(false);
    }
  };

  const button = (label: string, method: string, enabled: boolean, onClick: () => void, danger = false): ComponentChildren => {
    const why = denial(session, method);
    return (
      <button
        class={danger ? "danger" : ""}
        disabled={!!why || !enabled || busy}
        title={why ?? (enabled ? "" : `Not while ${ExecutionState[execution.state].toLowerCase()}`)}
        onClick={onClick}
        data-action={label.toLowerCase().replace(/ /g, "-")}
      >
        {label}
      </button>
    );
  };

  const readOnly = ["PauseExecution", "CancelExecution", "TerminateExecution", "SendEvent"].every((m) => denial(session, m));
  return (
    <div class="actions">
      <div class="buttons">
        {execution.state === ExecutionState.PAUSED
          ? button("Resume", "ResumeExecution", true, () => run("Resume", () => executor.resumeExecution({ executionId: id, requestId: requestId() })))
          : button("Pause", "PauseExecution", execution.state === ExecutionState.RUNNING, () => setDialog("pause"))}
        {button("Send event", "SendEvent", !terminal, () => setDialog("event"))}
        {button("Cancel", "CancelExecution", !terminal, () => setDialog("cancel"), true)}
        {button("Terminate", "TerminateExecution", !terminal, () => setDialog("terminate"), true)}
        {button("Replay", "ReplayExecution", true, () =>
          run("Replay", async () => setReplay(await executor.replayExecution({ executionId: id }))),
        )}
      </div>
      {readOnly && (
        <div class="muted small" data-testid="read-only">
          Read-only: your role ({session.role}) may look but not steer.
        </div>
      )}
      {message && (
        <div data-testid="action-message">
          <Alert kind={message.kind}>{message.text}</Alert>
        </div>
      )}
      {(dialog === "pause" || dialog === "cancel" || dialog === "terminate") && (
        <ReasonDialog
          what={dialog}
          busy={busy}
          onClose={() => setDialog(null)}
          onSubmit={(reason) => {
            const base = { executionId: id, reason, requestId: requestId() };
            if (dialog === "pause") return run("Pause", () => executor.pauseExecution(base));
            if (dialog === "cancel") return run("Cancel", () => executor.cancelExecution(base));
            return run("Terminate", () => executor.terminateExecution(base));
          }}
        />
      )}
      {dialog === "event" && <EventDialog busy={busy} onClose={() => setDialog(null)} onSubmit={(name, data) => run("Send event", () => executor.sendEvent({ executionId: id, name, data, requestId: requestId() }))} />}
      {replay && <ReplayDialog result={replay} onClose={() => setReplay(null)} />}
    </div>
  );
}

const EXPLAIN = {
  pause: "No new tasks are dispatched; running attempts finish. Resume continues.",
  cancel: "No new tasks; running attempts are cancelled and completed tasks are compensated if the workflow says so.",
  terminate: "Stops now, without compensation.",
};

function ReasonDialog({ what, busy, onClose, onSubmit }: { what: "pause" | "cancel" | "terminate"; busy: boolean; onClose: () => void; onSubmit: (reason: string) => void }) {
  const [reason, setReason] = useState("");
  const title = what[0].toUpperCase() + what.slice(1) + " execution";
  return (
    <Modal title={title} onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          onSubmit(reason || `from the web console`);
        }}
      >
        <p class="muted">{EXPLAIN[what]}</p>
        <label>
          Reason
          <input name="reason" value={reason} placeholder="from the web console" onInput={(e) => setReason((e.target as HTMLInputElement).value)} autoFocus />
        </label>
        <div class="modal-foot">
          <button type="button" onClick={onClose}>
            Keep running
          </button>
          <button type="submit" class={what === "pause" ? "primary" : "danger"} disabled={busy} data-testid="confirm">
            {title}
          </button>
        </div>
      </form>
    </Modal>
  );
}

function EventDialog({ busy, onClose, onSubmit }: { busy: boolean; onClose: () => void; onSubmit: (name: string, data: ReturnType<typeof fromJson<typeof ValueSchema>>) => void }) {
  const [name, setName] = useState("");
  const [data, setData] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  return (
    <Modal title="Send event" onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          try {
            const parsed = data.trim() ? JSON.parse(data) : null;
            onSubmit(name.trim(), fromJson(ValueSchema, parsed));
          } catch (err) {
            setProblem(`data is not JSON: ${(err as Error).message}`);
          }
        }}
      >
        <p class="muted">Delivered to a task waiting in builtin.wait_for_event for this name.</p>
        <label>
          Name
          <input name="name" value={name} required autoFocus onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Data (JSON, optional)
          <textarea name="data" rows={5} value={data} placeholder='{"by": "ada"}' onInput={(e) => setData((e.target as HTMLTextAreaElement).value)} />
        </label>
        {problem && <Alert>{problem}</Alert>}
        <div class="modal-foot">
          <button type="button" onClick={onClose}>
            Close
          </button>
          <button type="submit" class="primary" disabled={busy || !name.trim()} data-testid="confirm">
            Send
          </button>
        </div>
      </form>
    </Modal>
  );
}

function ReplayDialog({ result, onClose }: { result: ReplayExecutionResponse; onClose: () => void }) {
  return (
    <Modal title="Replay" onClose={onClose}>
      <div data-testid="replay-result">
        {result.deterministic ? (
          <Alert kind="info">
            Deterministic: replaying {String(result.events)} events reproduced every recorded decision.
          </Alert>
        ) : (
          <Alert>
            Diverged at event #{String(result.divergence?.sequence ?? 0n)}: expected <code>{result.divergence?.expected}</code>, the scheduler decided{" "}
            <code>{result.divergence?.actual || "nothing"}</code>.
          </Alert>
        )}
      </div>
      <div class="modal-foot">
        <button onClick={onClose}>Close</button>
      </div>
    </Modal>
  );
}
