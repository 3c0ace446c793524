// Circuit breakers per task type (and key), shared by every execution, and below
// them the limits (refreshed every 5 s).
import { Alert } from "../components/common.js";
import { executor } from "../api.js";
import { BreakerState } from "../gen/execplan/v1/executor_service_pb.js";
import { when } from "../format.js";
import { LimitsSection } from "./limits.js";
import { useRefreshing } from "./workers.js";

const TONE: Record<number, string> = {
  [BreakerState.CLOSED]: "succeeded",
  [BreakerState.OPEN]: "failed",
  [BreakerState.HALF_OPEN]: "paused",
};

export function BreakersPage() {
  const [breakers, error] = useRefreshing(async () => (await executor.listCircuitBreakers({})).breakers);
  return (
    <section class="page">
      <div class="page-head">
        <h1>Circuit breakers</h1>
      </div>
      {error && <Alert>{error}</Alert>}
      <div class="card table-card">
        <table class="table" data-testid="breakers">
          <thead>
            <tr>
              <th>Task type</th>
              <th>State</th>
              <th>Consecutive failures</th>
              <th>Window (failed/calls)</th>
              <th>Opened</th>
              <th>Half-open at</th>
              <th>Parked tasks</th>
              <th>Last error</th>
            </tr>
          </thead>
          <tbody>
            {breakers?.map((b) => (
              <tr key={b.taskType}>
                <td class="mono">{b.taskType}</td>
                <td>
                  <span class={`pill s-${TONE[b.state] ?? "pending"}`}>{(BreakerState[b.state] ?? "").replace("_", " ").toLowerCase()}</span>
                </td>
                <td>{b.consecutiveFailures}</td>
                <td>
                  {b.windowFailures}/{b.windowCalls}
                </td>
                <td>{when(b.openedAt)}</td>
                <td>{when(b.halfOpenAt)}</td>
                <td>{b.parkedTasks}</td>
                <td class="error-text">{b.lastError || <span class="muted">–</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {breakers && breakers.length === 0 && <div class="empty">No breaker has tripped or counted yet: task types with a circuit_breaker appear after their first result.</div>}
      </div>
      <LimitsSection />
    </section>
  );
}
