// Stored plans by workflow and version; one plan's graph, its declared inputs and
// a form that starts an execution of it.
import { useEffect, useState } from "preact/hooks";
import type { JsonObject } from "@bufbuild/protobuf";
import { describe, executor, requestId } from "../api.js";
import { Alert, Json } from "../components/common.js";
import { Graph } from "../components/graph.js";
import type { ExecutionPlan, PlanInput } from "../gen/execplan/v1/plan_pb.js";
import { InputType } from "../gen/execplan/v1/workflow_pb.js";
import type { PlanSummary } from "../gen/execplan/v1/executor_service_pb.js";
import { valueJson, when } from "../format.js";
import { bindingText } from "../events.js";
import { layoutPlan } from "../layout.js";
import { navigate } from "../router.js";
import { denial, useSession } from "../session.js";

export function PlansPage() {
  const [plans, setPlans] = useState<PlanSummary[] | null>(null);
  const [tokens, setTokens] = useState<string[]>([""]);
  const [next, setNext] = useState("");
  const [workflow, setWorkflow] = useState(new URLSearchParams(location.search).get("workflow") ?? "");
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    executor.listPlans({ workflowName: workflow, pageSize: 50, pageToken: tokens[tokens.length - 1] }).then(
      (res) => {
        setPlans(res.plans);
        setNext(res.nextPageToken);
      },
      (e) => setError(describe(e)),
    );
  }, [workflow, tokens]);
  return (
    <section class="page">
      <div class="page-head">
        <h1>Plans</h1>
        <div class="spacer" />
        {workflow && (
          <button class="link" onClick={() => (setWorkflow(""), setTokens([""]))}>
            All workflows
          </button>
        )}
      </div>
      {error && <Alert>{error}</Alert>}
      <div class="card table-card">
        <table class="table" data-testid="plans">
          <thead>
            <tr>
              <th>Workflow</th>
              <th>Version</th>
              <th>Tasks</th>
              <th>Stored</th>
              <th>Plan id</th>
            </tr>
          </thead>
          <tbody>
            {plans?.map((p) => (
              <tr key={p.planId} class="clickable" onClick={() => navigate(`/plans/${encodeURIComponent(p.planId)}`)}>
                <td>
                  <button class="link" onClick={(e) => (e.stopPropagation(), setWorkflow(p.workflowName), setTokens([""]))}>
                    {p.workflowName}
                  </button>
                  {p.description && <div class="muted small">{p.description}</div>}
                </td>
                <td>{p.workflowVersion || <span class="muted">–</span>}</td>
                <td>{p.nodeCount}</td>
                <td>{when(p.registeredAt)}</td>
                <td class="mono">
                  <a href={`/plans/${encodeURIComponent(p.planId)}`}>{p.planId.slice(0, 23)}…</a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {plans && plans.length === 0 && <div class="empty">No plans stored yet: start an execution or `execplan register` one.</div>}
      </div>
      <div class="pager">
        <button disabled={tokens.length === 1} onClick={() => setTokens((t) => t.slice(0, -1))}>
          ← Newer
        </button>
        <button disabled={!next} onClick={() => setTokens((t) => [...t, next])}>
          Older →
        </button>
      </div>
    </section>
  );
}

export function PlanPage({ planId }: { planId: string }) {
  const [plan, setPlan] = useState<ExecutionPlan | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<string | null>(null);
  useEffect(() => {
    executor.getPlan({ planId }).then(
      (res) => setPlan(res.plan ?? null),
      (e) => setError(describe(e)),
    );
  }, [planId]);
  if (error) return <Alert>{error}</Alert>;
  if (!plan) return <div class="empty">Loading…</div>;
  const layout = layoutPlan(plan);
  const node = plan.nodes.find((n) => n.taskId === selected);
  return (
    <section class="page">
      <div class="page-head">
        <div>
          <div class="crumbs">
            <a href="/plans">Plans</a> / <span class="mono">{plan.planId.slice(0, 23)}…</span>
          </div>
          <h1>
            {plan.workflowName}
            {plan.workflowVersion && <span class="muted"> v{plan.workflowVersion}</span>}
          </h1>
          <div class="facts">
            <span>{plan.nodes.length} tasks</span>
            <span>{plan.stageCount} stages</span>
            <span>{plan.edges.length} edges</span>
            {plan.maxParallel > 0 && <span>max parallel {plan.maxParallel}</span>}
            <span class="muted">laid out in {Math.round(layout.millis)} ms</span>
          </div>
          {plan.description && <p class="muted">{plan.description}</p>}
        </div>
      </div>
      <div class="split">
        <div class="card graph-card">
          <Graph layout={layout} looks={new Map()} selected={selected} onSelect={setSelected} />
        </div>
        <aside class="card side">
          {node ? (
            <div class="task-panel">
              <div class="panel-head">
                <h3 class="mono">{node.taskId}</h3>
                <button class="link" onClick={() => setSelected(null)}>
                  ✕
                </button>
              </div>
              <p class="muted">{node.type}</p>
              <dl>
                <dt>Stage</dt>
                <dd>{node.stage}</dd>
                <dt>Priority</dt>
                <dd>{node.priority}</dd>
                <dt>Retries</dt>
                <dd>{node.retry?.maxAttempts ?? 1} attempts</dd>
              </dl>
              <h4>Inputs</h4>
              <Json value={Object.fromEntries(node.bindings.map((b) => [b.name, bindingText(b.value)]))} />
            </div>
          ) : (
            <StartForm plan={plan} />
          )}
        </aside>
      </div>
    </section>
  );
}

function initial(input: PlanInput): string {
  const d = valueJson(input.default);
  if (d === undefined || d === null) return "";
  return typeof d === "string" ? d : JSON.stringify(d);
}

function StartForm({ plan }: { plan: ExecutionPlan }) {
  const session = useSession();
  const [values, setValues] = useState<Record<string, string>>(() => Object.fromEntries(plan.inputs.map((i) => [i.name, initial(i)])));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const why = denial(session, "StartExecution");
  const start = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const inputs: JsonObject = {};
      for (const input of plan.inputs) {
        const raw = values[input.name] ?? "";
        if (raw === "") continue; // the plan's default (or a missing-input error) applies
        inputs[input.name] = input.type === InputType.STRING ? raw : JSON.parse(raw);
      }
      const res = await executor.startExecution({ definition: { case: "planId", value: plan.planId }, inputs, requestId: requestId() });
      navigate(`/executions/${res.executionId}`);
    } catch (err) {
      setError(err instanceof SyntaxError ? `an input is not valid JSON: ${err.message}` : describe(err));
      setBusy(false);
    }
  };
  return (
    <form class="start" onSubmit={start} data-testid="start-form">
      <h3>Start an execution</h3>
      {plan.inputs.length === 0 && <p class="muted">This workflow takes no inputs.</p>}
      {plan.inputs.map((input) => (
        <label key={input.name}>
          <span>
            {input.name} <span class="muted small">{(InputType[input.type] ?? "any").toLowerCase()}{input.required ? ", required" : ""}</span>
          </span>
          <input
            name={input.name}
            value={values[input.name]}
            required={input.required && !input.default}
            placeholder={input.type === InputType.STRING ? "text" : "JSON"}
            onInput={(e) => setValues({ ...values, [input.name]: (e.target as HTMLInputElement).value })}
          />
          {input.description && <span class="muted small">{input.description}</span>}
        </label>
      ))}
      {error && <Alert>{error}</Alert>}
      <button class="primary" type="submit" disabled={busy || !!why} title={why ?? ""}>
        Start
      </button>
      {why && <p class="muted small">{why}</p>}
    </form>
  );
}
