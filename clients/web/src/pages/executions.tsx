// Executions, newest first: server-side pages of 50 (a list of 10,000 stays as
// fast as one of 50), filters by state, workflow and a filter expression (search
// attributes, times: docs/operations.md), live through one WatchExecutions stream
// for the filters shown.
import { useEffect, useRef, useState } from "preact/hooks";
import { describe, executor, isCanceled } from "../api.js";
import { Alert, ProgressBar, StatePill } from "../components/common.js";
import { type Execution, ExecutionState } from "../gen/execplan/v1/execution_pb.js";
import { TERMINAL, ago, duration, when } from "../format.js";
import { navigate } from "../router.js";

const PAGE = 50;
const STATES = [
  ExecutionState.RUNNING,
  ExecutionState.PAUSED,
  ExecutionState.COMPENSATING,
  ExecutionState.SUCCEEDED,
  ExecutionState.FAILED,
  ExecutionState.COMPENSATED,
  ExecutionState.COMPENSATION_FAILED,
  ExecutionState.CANCELLED,
  ExecutionState.TERMINATED,
];

/** What the list is filtered by, kept in the URL (?state=RUNNING&workflow=w&q=...). */
interface Filter {
  states: ExecutionState[];
  workflow: string;
  /** The filter language of ListExecutions: `customer = "acme" AND priority > 3`. */
  query: string;
}

function readFilter(): Filter {
  const q = new URLSearchParams(location.search);
  const states = q
    .getAll("state")
    .map((s) => ExecutionState[s as keyof typeof ExecutionState])
    .filter((s): s is ExecutionState => typeof s === "number");
  return { states, workflow: q.get("workflow") ?? "", query: q.get("q") ?? "" };
}

function writeFilter(f: Filter): void {
  const q = new URLSearchParams();
  f.states.forEach((s) => q.append("state", ExecutionState[s]));
  if (f.workflow) q.set("workflow", f.workflow);
  if (f.query) q.set("q", f.query);
  const search = q.toString();
  navigate(search ? `/?${search}` : "/", true);
}

/** Whether a new execution belongs on the page; a filter expression is the server's
 * to evaluate, so with one the "new executions" banner stays quiet. */
function matches(e: Execution, f: Filter): boolean {
  return !f.query && (f.states.length === 0 || f.states.includes(e.state)) && (!f.workflow || e.workflowName === f.workflow);
}

/** Search attributes as `k=v` words. */
function attributesText(e: Execution): string {
  return Object.entries(e.searchAttributes)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, { value }]) => {
      const v = value.case === "timeValue" ? new Date(Number(value.value.seconds) * 1000).toISOString() : value.case === undefined ? "" : String(value.value);
      return `${k}=${v}`;
    })
    .join(" ");
}

export function ExecutionsPage() {
  const [filter, setFilter] = useState<Filter>(readFilter);
  const [workflowText, setWorkflowText] = useState(filter.workflow);
  const [queryText, setQueryText] = useState(filter.query);
  const [tokens, setTokens] = useState<string[]>([""]); // page tokens: [first, second, ...]
  const [rows, setRows] = useState<Execution[] | null>(null);
  const [next, setNext] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [fresh, setFresh] = useState(0); // executions started since the first page was read
  const [reload, setReload] = useState(0);
  const [now, setNow] = useState(Date.now());
  const pending = useRef(new Map<string, Execution>());
  const pageToken = tokens[tokens.length - 1];

  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 5000); // relative times only, no RPC
    return () => clearInterval(t);
  }, []);

  useEffect(() => {
    let live = true;
    setError(null);
    executor
      .listExecutions({ states: filter.states, workflowName: filter.workflow, pageSize: PAGE, pageToken, filter: filter.query })
      .then(
        (res) => {
          if (!live) return;
          setRows(res.executions);
          setNext(res.nextPageToken);
          setFresh(0);
        },
        (e) => live && setError(describe(e)),
      );
    return () => void (live = false);
  }, [filter, pageToken, reload]);

  // One stream for the whole page: state changes of every execution the filter
  // matches, applied to the rows shown (coalesced per animation frame).
  useEffect(() => {
    const abort = new AbortController();
    let frame = 0;
    const flush = () => {
      frame = 0;
      const updates = pending.current;
      pending.current = new Map();
      setRows((current) => {
        if (!current) return current;
        let added = 0;
        const byId = new Map(current.map((e) => [e.executionId, e]));
        for (const [id, e] of updates) {
          if (byId.has(id)) byId.set(id, e);
          else if (matches(e, filter) && e.state === ExecutionState.RUNNING) added++;
        }
        if (added) setFresh((n) => n + added);
        return current.map((e) => byId.get(e.executionId) ?? e);
      });
    };
    (async () => {
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        try {
          // Every state, not the filter's: a row shown must also learn that it
          // left the filter (a RUNNING one that SUCCEEDED).
          // batched: what a round commits comes in one message (`executions`); a
          // server older than the field sends one a message, in `execution`.
          const request = { workflowName: filter.workflow, batched: true };
          for await (const res of executor.watchExecutions(request, { signal: abort.signal })) {
            attempt = 0;
            const changes = res.executions.length > 0 ? res.executions : res.execution ? [res.execution] : [];
            if (changes.length === 0) continue;
            for (const execution of changes) pending.current.set(execution.executionId, execution);
            if (!frame) frame = requestAnimationFrame(flush);
          }
        } catch (e) {
          if (abort.signal.aborted || isCanceled(e)) return;
        }
        await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** attempt)));
      }
    })();
    return () => {
      abort.abort();
      cancelAnimationFrame(frame);
    };
  }, [filter]);

  const update = (f: Filter) => {
    setFilter(f);
    setTokens([""]);
    writeFilter(f);
  };
  const toggle = (s: ExecutionState) =>
    update({ ...filter, states: filter.states.includes(s) ? filter.states.filter((x) => x !== s) : [...filter.states, s] });

  const withAttributes = rows?.some((e) => Object.keys(e.searchAttributes).length > 0) ?? false;

  return (
    <section class="page">
      <div class="page-head">
        <h1>Executions</h1>
        <div class="spacer" />
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            update({ ...filter, workflow: workflowText.trim(), query: queryText.trim() });
          }}
        >
          <input
            name="workflow"
            placeholder="Workflow name"
            value={workflowText}
            onInput={(e) => setWorkflowText((e.target as HTMLInputElement).value)}
          />
          <input
            name="filter"
            class="filter"
            placeholder='Filter: customer = "acme" AND priority > 3'
            title="The filter language: field op value clauses joined by AND (docs/operations.md)"
            value={queryText}
            onInput={(e) => setQueryText((e.target as HTMLInputElement).value)}
          />
          <button type="submit">Filter</button>
        </form>
      </div>
      <div class="chips" role="group" aria-label="State filter">
        {STATES.map((s) => (
          <button
            key={s}
            class={`chip${filter.states.includes(s) ? " on" : ""}`}
            data-state={ExecutionState[s]}
            onClick={() => toggle(s)}
          >
            {ExecutionState[s].replace(/_/g, " ").toLowerCase()}
          </button>
        ))}
        {(filter.states.length > 0 || filter.workflow || filter.query) && (
          <button
            class="link"
            onClick={() => {
              setWorkflowText("");
              setQueryText("");
              update({ states: [], workflow: "", query: "" });
            }}
          >
            Clear filters
          </button>
        )}
      </div>
      {error && <Alert>{error}</Alert>}
      {fresh > 0 && tokens.length === 1 && (
        <button class="banner" onClick={() => setReload((n) => n + 1)} data-testid="fresh">
          {fresh} new execution{fresh > 1 ? "s" : ""} started · show
        </button>
      )}
      <div class="card table-card">
        <table class="table" data-testid="executions">
          <thead>
            <tr>
              <th>State</th>
              <th>Execution</th>
              <th>Workflow</th>
              <th>Tasks</th>
              <th>Started</th>
              <th>Duration</th>
              <th>Updated</th>
              {withAttributes && <th>Attributes</th>}
            </tr>
          </thead>
          <tbody>
            {rows?.map((e) => (
              <tr key={e.executionId} class="clickable" data-id={e.executionId} onClick={() => navigate(`/executions/${e.executionId}`)}>
                <td>
                  <StatePill state={e.state} />
                </td>
                <td class="mono">
                  <a href={`/executions/${e.executionId}`}>{e.executionId}</a>
                </td>
                <td>
                  {e.workflowName}
                  {e.workflowVersion && <span class="muted"> v{e.workflowVersion}</span>}
                  {e.parentExecutionId && (
                    <div class="muted small" data-testid="parent">
                      child of{" "}
                      <a class="mono" href={`/executions/${e.parentExecutionId}`} onClick={(ev) => ev.stopPropagation()}>
                        {e.parentExecutionId}
                      </a>{" "}
                      · {e.parentTaskId}
                    </div>
                  )}
                </td>
                <td>
                  <ProgressBar counts={e.taskCounts} />
                </td>
                <td title={when(e.createdAt)}>{ago(e.createdAt, now)}</td>
                <td>{TERMINAL.has(e.state) ? duration(e.createdAt, e.finishedAt ?? e.updatedAt) : <span class="muted">running</span>}</td>
                <td>{ago(e.updatedAt, now)}</td>
                {withAttributes && <td class="attrs">{attributesText(e)}</td>}
              </tr>
            ))}
          </tbody>
        </table>
        {rows && rows.length === 0 && (
          <div class="empty">No executions{filter.states.length || filter.workflow || filter.query ? " match these filters" : " yet"}.</div>
        )}
        {!rows && !error && <div class="empty">Loading…</div>}
      </div>
      <div class="pager">
        <span class="muted">Page {tokens.length}</span>
        <button disabled={tokens.length === 1} onClick={() => setTokens((t) => t.slice(0, -1))}>
          ← Newer
        </button>
        <button disabled={!next} onClick={() => setTokens((t) => [...t, next])} data-testid="older">
          Older →
        </button>
      </div>
    </section>
  );
}
