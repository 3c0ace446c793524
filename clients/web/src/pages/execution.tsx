// One execution: the plan's graph coloured by live state, the selected task's
// details, the event timeline and a time-travel slider. The tab costs the server
// one WatchExecution stream (the backlog, then live events, folded here); moving
// the slider asks for the state at that sequence (GetExecution at_sequence).
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { describe, executor, isCanceled } from "../api.js";
import { Alert, Json, ProgressBar, StatePill } from "../components/common.js";
import { Graph, type NodeLook } from "../components/graph.js";
import { Actions } from "../components/actions.js";
import { TaskPanel } from "../components/task-panel.js";
import type { ExecutionEvent } from "../gen/execplan/v1/events_pb.js";
import { type Execution, TaskState } from "../gen/execplan/v1/execution_pb.js";
import type { ExecutionPlan } from "../gen/execplan/v1/plan_pb.js";
import { apply } from "../fold.js";
import { TERMINAL, amount, clock, duration, spentToward, taskStateName, taskTone, usageText, when } from "../format.js";
import { layoutScene } from "../layout.js";
import { buildScene, nodeOf } from "../scene.js";
import { budgetLimits, describeEvent } from "../events.js";
import type { StreamChunk } from "../gen/execplan/v1/executor_service_pb.js";

const STREAM_KEEP = 64 * 1024;
const decoder = new TextDecoder();

/** Adds a chunk to its task's text, keeping the last STREAM_KEEP characters. */
function appendChunk(texts: Map<string, string>, chunk: StreamChunk): void {
  const c = chunk.content;
  const piece = c.case === "text" ? c.value : c.case === "data" ? decoder.decode(c.value) : c.case === "json" ? `${JSON.stringify(c.value)}\n` : "";
  const text = (texts.get(chunk.taskId) ?? "") + piece;
  texts.set(chunk.taskId, text.length > STREAM_KEEP ? text.slice(text.length - STREAM_KEEP) : text);
}

export function ExecutionPage({ executionId }: { executionId: string }) {
  const live = useRef<Execution | null>(null);
  const events = useRef<ExecutionEvent[]>([]);
  const progress = useRef(new Map<string, ExecutionEvent>());
  // Partial output of each task (ctx.stream), live only: the last 64 KiB per task.
  const streamed = useRef(new Map<string, string>());
  const [version, setVersion] = useState(0); // bumped when live or events change
  const [plan, setPlan] = useState<ExecutionPlan | null>(null);
  // Sub-plans of dynamic tasks (Execution.plan_revisions), by plan id.
  const [subPlans, setSubPlans] = useState<Map<string, ExecutionPlan>>(new Map());
  const [error, setError] = useState<string | null>(null);
  const [streaming, setStreaming] = useState(false);
  const [selected, setSelected] = useState<string | null>(null);
  const [at, setAt] = useState<number | null>(null); // time travel: null = live
  const [past, setPast] = useState<Execution | null>(null);
  const [reloads, setReloads] = useState(0);

  // Load, then follow: GetExecution + GetPlan, then one WatchExecution from 0 (the
  // history first, then live), folded into the view.
  useEffect(() => {
    const abort = new AbortController();
    let frame = 0;
    const bump = () => {
      if (!frame) frame = requestAnimationFrame(() => ((frame = 0), setVersion((v) => v + 1)));
    };
    const plans = new Map<string, ExecutionPlan>();
    const fetchSubPlans = async () => {
      let added = false;
      for (const r of live.current?.planRevisions ?? []) {
        if (plans.has(r.planId)) continue;
        plans.set(r.planId, (await executor.getPlan({ planId: r.planId }, { signal: abort.signal })).plan!);
        added = true;
      }
      if (added) setSubPlans(new Map(plans));
    };
    // The plan grew (instances, a sub-plan, a child): the authoritative view has the
    // new tasks; the events folded meanwhile are applied again on top of it.
    const refresh = async () => {
      const got = (await executor.getExecution({ executionId }, { signal: abort.signal })).execution;
      if (!got) return;
      for (const e of events.current) if (e.sequence > got.lastSequence) apply(got, e, progress.current);
      live.current = got;
      await fetchSubPlans();
      bump();
    };
    (async () => {
      try {
        const got = await executor.getExecution({ executionId }, { signal: abort.signal });
        live.current = got.execution ?? null;
        const p = (await executor.getPlan({ planId: live.current!.planId }, { signal: abort.signal })).plan!;
        await fetchSubPlans();
        setPlan(p);
        bump();
      } catch (e) {
        if (!abort.signal.aborted) setError(describe(e));
        return;
      }
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        const after = events.current.length ? events.current[events.current.length - 1].sequence : 0n;
        try {
          setStreaming(true);
          for await (const res of executor.watchExecution({ executionId, afterSequence: after, stream: true }, { signal: abort.signal })) {
            if (res.chunk) {
              appendChunk(streamed.current, res.chunk);
              bump();
              continue;
            }
            const event = res.event!;
            attempt = 0;
            events.current.push(event);
            if (live.current) apply(live.current, event, progress.current);
            bump();
            if (GROWS.has(event.kind.case ?? "")) void refresh().catch(() => undefined);
            if (event.kind.case === "executionCompleted") {
              // The authoritative final view (outputs, every task's last word).
              const done = await executor.getExecution({ executionId }, { signal: abort.signal });
              live.current = done.execution ?? live.current;
              bump();
            }
          }
          setStreaming(false);
          return; // the stream ends after the terminal event
        } catch (e) {
          setStreaming(false);
          if (abort.signal.aborted || isCanceled(e)) return;
          setError(`Live updates interrupted (${describe(e)}); reconnecting…`);
        }
        await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** attempt)));
        setError(null);
      }
    })();
    return () => {
      abort.abort();
      cancelAnimationFrame(frame);
    };
  }, [executionId, reloads]);

  // Time travel: the server folds the history up to `at` (debounced while dragging).
  useEffect(() => {
    if (at === null) {
      setPast(null);
      return;
    }
    const abort = new AbortController();
    const timer = setTimeout(() => {
      executor.getExecution({ executionId, atSequence: BigInt(at) }, { signal: abort.signal }).then(
        (res) => setPast(res.execution ?? null),
        (e) => !abort.signal.aborted && setError(describe(e)),
      );
    }, 120);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
  }, [at, executionId]);

  const current = live.current;
  const shown = at !== null && past ? past : current;
  const scene = useMemo(() => (plan ? buildScene(plan, shown ?? null, subPlans) : null), [plan, shown, subPlans, version, past]);
  const layout = useMemo(() => (plan && scene ? layoutScene(plan.planId, scene) : null), [plan, scene?.key]);
  const looks = useMemo(() => {
    const map = new Map<string, NodeLook>();
    for (const t of shown?.tasks ?? []) {
      map.set(t.taskId, { tone: taskTone(t.state), state: taskStateName(t.state).toLowerCase(), attempt: t.attempt });
    }
    return map;
  }, [shown, version, past]);
  const counts = useMemo(() => {
    const c: { [s: string]: number } = {};
    for (const t of shown?.tasks ?? []) c[TaskState[t.state]] = (c[TaskState[t.state]] ?? 0) + 1;
    return c;
  }, [shown, version, past]);

  if (error && !current) return <Alert>{error}</Alert>;
  if (!current || !plan || !layout) return <div class="empty">Loading…</div>;
  const last = events.current.length ? Number(events.current[events.current.length - 1].sequence) : Number(current.lastSequence);
  const task = selected ? shown?.tasks.find((t) => t.taskId === selected) ?? null : null;
  const node = selected && scene ? nodeOf(scene, selected) ?? null : null;
  const terminal = TERMINAL.has(current.state);

  return (
    <section class="page execution">
      <div class="page-head">
        <div>
          <div class="crumbs">
            <a href="/">Executions</a> / <span class="mono">{executionId}</span>
          </div>
          <h1>
            {current.workflowName}
            {current.workflowVersion && <span class="muted"> v{current.workflowVersion}</span>}{" "}
            <StatePill state={shown!.state} />
            {streaming && !terminal && (
              <span class="live-dot" title="Live: following WatchExecution">
                live
              </span>
            )}
          </h1>
          <div class="facts">
            <span>started {when(current.createdAt)}</span>
            <span>{terminal ? `took ${duration(current.createdAt, current.finishedAt)}` : `running ${duration(current.createdAt, current.updatedAt)}`}</span>
            <span>
              plan <a href={`/plans/${encodeURIComponent(current.planId)}`} class="mono">{current.planId.slice(0, 19)}…</a>
            </span>
            <ProgressBar counts={counts} />
          </div>
        </div>
        <div class="spacer" />
        <Actions execution={current} onChanged={() => undefined} onReplayed={() => undefined} />
      </div>
      {error && <Alert>{error}</Alert>}
      <div class="split">
        <div class="card graph-card">
          <Graph layout={layout} looks={looks} selected={selected} onSelect={setSelected} />
          <Legend />
        </div>
        <aside class="card side">
          {task && node ? (
            <TaskPanel
              task={task}
              version={version}
              node={node}
              progress={progress.current.get(task.taskId)}
              output={streamed.current.get(task.taskId)}
              onClose={() => setSelected(null)}
            />
          ) : (
            <ExecutionSummary execution={shown!} />
          )}
        </aside>
      </div>
      <Timeline events={events.current} last={last} at={at} setAt={setAt} version={version} onPick={(taskId) => taskId && setSelected(taskId)} />
      {!streaming && !terminal && !error && (
        <button class="link" onClick={() => setReloads((n) => n + 1)}>
          Reconnect
        </button>
      )}
    </section>
  );
}

// Events after which the execution has tasks it did not have before.
const GROWS = new Set(["taskExpanded", "planRevised", "childExecutionStarted"]);

function Legend() {
  const tones = ["pending", "queued", "running", "waiting", "backoff", "succeeded", "failed", "compensated", "cancelled", "skipped"];
  return (
    <div class="legend">
      {tones.map((t) => (
        <span key={t}>
          <i class={`swatch t-${t}`} /> {t === "backoff" ? "backing off / parked" : t}
        </span>
      ))}
    </div>
  );
}

function ExecutionSummary({ execution }: { execution: Execution }) {
  return (
    <div class="summary" data-testid="summary">
      <h3>Execution</h3>
      <dl>
        <dt>Id</dt>
        <dd class="mono">{execution.executionId}</dd>
        <dt>State</dt>
        <dd>
          <StatePill state={execution.state} />
        </dd>
        <dt>Sequence</dt>
        <dd>#{String(execution.lastSequence)}</dd>
        {execution.fairnessKey && (
          <>
            <dt>Fairness key</dt>
            <dd>{execution.fairnessKey}</dd>
          </>
        )}
        <dt>Updated</dt>
        <dd>{clock(execution.updatedAt)}</dd>
        {usageText(execution.usage?.counters) && (
          <>
            <dt>Usage</dt>
            <dd data-testid="execution-usage">{usageText(execution.usage?.counters)}</dd>
          </>
        )}
      </dl>
      <BudgetBlock execution={execution} />
      {execution.error && (
        <div class="alert error">
          <b>{execution.error.type}</b>: {execution.error.message}
        </div>
      )}
      <h4>Inputs</h4>
      <Json value={execution.inputs} />
      <h4>Outputs</h4>
      <Json value={execution.outputs} />
      <p class="muted small">Select a task in the graph for its attempts, output and errors.</p>
    </div>
  );
}

/** The budget in force: per limit what was spent, what running attempts hold, the limit. */
function BudgetBlock({ execution }: { execution: Execution }) {
  const limits = budgetLimits(execution.budget);
  if (!limits.length && !execution.budgetExceeded) return null;
  const used = execution.usage?.counters;
  const reserved = execution.reserved?.counters;
  return (
    <div data-testid="budget">
      <h4>Budget</h4>
      <table class="table compact">
        <tbody>
          {limits.map(([name, limit]) => {
            const spent = spentToward(name, used);
            const held = spentToward(name, reserved);
            const share = limit > 0 ? Math.min(100, ((spent + held) / limit) * 100) : 100;
            return (
              <tr key={name} data-limit={name}>
                <td class="mono">{name}</td>
                <td>
                  {amount(spent)}
                  {held ? <span class="muted"> +{amount(held)} reserved</span> : null} <span class="muted">of {amount(limit)}</span>
                </td>
                <td class="budget-bar">
                  <span class={share >= 100 ? "over" : ""} style={{ width: `${share}%` }} />
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {execution.budgetExceeded && (
        <div class="alert warn" data-testid="budget-exceeded">
          <b>BudgetExceeded</b>: {execution.budgetExceeded.message}
        </div>
      )}
    </div>
  );
}

function Timeline({
  events,
  last,
  at,
  setAt,
  version,
  onPick,
}: {
  events: ExecutionEvent[];
  last: number;
  at: number | null;
  setAt: (n: number | null) => void;
  version: number;
  onPick: (taskId: string) => void;
}) {
  const list = useRef<HTMLOListElement>(null);
  const position = at ?? last;
  const lines = useMemo(() => events.map(describeEvent), [events.length, version]);
  useEffect(() => {
    // Follow the newest event while live; keep the picked one in view while travelling.
    // (Only the list scrolls: scrollIntoView would scroll the page too.)
    const box = list.current;
    const el = box?.querySelector<HTMLElement>(`[data-seq="${position}"]`);
    if (box && el) {
      const top = el.offsetTop;
      if (top < box.scrollTop || top + el.offsetHeight > box.scrollTop + box.clientHeight) {
        box.scrollTop = top - box.clientHeight / 2;
      }
    }
  }, [position, events.length]);
  const stamp = events[position - 1]?.recordedAt;
  return (
    <div class="card timeline">
      <div class="timeline-head">
        <h3>History</h3>
        <input
          type="range"
          min={1}
          max={Math.max(1, last)}
          value={position}
          aria-label="Time travel: state as of event"
          data-testid="slider"
          onInput={(e) => {
            const n = Number((e.target as HTMLInputElement).value);
            setAt(n >= last ? null : n);
          }}
        />
        <span class="slider-label" data-testid="slider-label">
          {at === null ? (
            <b class="live-text">live · #{last}</b>
          ) : (
            <>
              as of <b>#{at}</b> of {last} · {clock(stamp)}{" "}
              <button class="link" onClick={() => setAt(null)}>
                back to live
              </button>
            </>
          )}
        </span>
      </div>
      <ol class="events" ref={list} data-testid="events">
        {lines.map((l, i) => {
          const seq = i + 1;
          return (
            <li
              key={seq}
              data-seq={seq}
              class={`${seq > position ? "future" : ""}${seq === position ? " current" : ""}`}
              onClick={() => {
                setAt(seq >= last ? null : seq);
                onPick(l.task);
              }}
            >
              <span class="seq">#{seq}</span>
              <span class="time">{clock(events[i].recordedAt)}</span>
              <span class={`kind k-${l.tone}`}>{l.kind}</span>
              <span class="task mono">{l.task}</span>
              <span class="text">{l.text}</span>
            </li>
          );
        })}
      </ol>
    </div>
  );
}
