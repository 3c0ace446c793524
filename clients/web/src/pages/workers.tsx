// Workers connected to this server: capabilities, labels, slots in use, last seen.
// Refreshed every 5 s while the page is open (a cheap in-memory read).
import { useEffect, useState } from "preact/hooks";
import { describe, executor } from "../api.js";
import { Alert } from "../components/common.js";
import type { WorkerInfo } from "../gen/execplan/v1/executor_service_pb.js";
import { ago, when } from "../format.js";

export function useRefreshing<T>(load: () => Promise<T>, every = 5000): [T | null, string | null] {
  const [value, setValue] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    const tick = () =>
      load().then(
        (v) => live && (setValue(v), setError(null)),
        (e) => live && setError(describe(e)),
      );
    tick();
    const timer = setInterval(() => document.visibilityState === "visible" && tick(), every);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, []);
  return [value, error];
}

export function WorkersPage() {
  const [workers, error] = useRefreshing(async () => (await executor.listWorkers({})).workers);
  const slots = (workers ?? []).reduce((a, w) => a + w.slots, 0);
  const used = (workers ?? []).reduce((a, w) => a + w.slotsInUse, 0);
  return (
    <section class="page">
      <div class="page-head">
        <h1>Workers</h1>
        <div class="spacer" />
        {workers && (
          <span class="muted">
            {workers.length} connected · {used}/{slots} slots in use
          </span>
        )}
      </div>
      {error && <Alert>{error}</Alert>}
      <div class="card table-card">
        <table class="table" data-testid="workers">
          <thead>
            <tr>
              <th>Worker</th>
              <th>Slots</th>
              <th>Task types</th>
              <th>Labels</th>
              <th>Connected</th>
              <th>Last seen</th>
            </tr>
          </thead>
          <tbody>
            {workers?.map((w: WorkerInfo) => (
              <tr key={w.workerId}>
                <td>
                  <span class="mono">{w.workerId}</span>
                  {w.draining && <span class="pill s-paused"> draining</span>}
                  {w.sdk && <div class="muted small">{w.sdk}{w.environment ? ` · ${w.environment}` : ""}</div>}
                </td>
                <td>
                  <span class="slots">
                    <span class="bar">
                      <span class="seg c-running" style={{ width: `${(100 * w.slotsInUse) / Math.max(1, w.slots)}%` }} />
                    </span>
                    {w.slotsInUse}/{w.slots}
                  </span>
                </td>
                <td>
                  {w.taskTypes.map((t) => (
                    <span key={t} class="tag">
                      {t}
                    </span>
                  ))}
                </td>
                <td>
                  {Object.entries(w.labels).map(([k, v]) => (
                    <span key={k} class="tag label">
                      {k}={v}
                    </span>
                  ))}
                </td>
                <td title={when(w.connectedAt)}>{ago(w.connectedAt)}</td>
                <td>{ago(w.lastSeenAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {workers && workers.length === 0 && <div class="empty">No worker is connected to this server.</div>}
      </div>
      <p class="muted small">On PostgreSQL replicas every worker holds one stream per replica; this is the replica serving this console.</p>
    </section>
  );
}
