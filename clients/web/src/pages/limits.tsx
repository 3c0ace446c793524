// Flow control: concurrency limits and token buckets with their levels per key
// (shared by every replica) and the tasks waiting for them or for resources (on the
// replica answering). Shown under the breakers; refreshed every 5 s.
import { Alert } from "../components/common.js";
import { executor } from "../api.js";
import { RateLimitSource } from "../gen/execplan/v1/executor_service_pb.js";
import type { RateLimitStatus } from "../gen/execplan/v1/executor_service_pb.js";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { waitKindName, when } from "../format.js";
import { useRefreshing } from "./workers.js";

const UNITS: [number, string][] = [
  [86_400_000, "d"],
  [3_600_000, "h"],
  [60_000, "m"],
  [1000, "s"],
];

/** "60/m", "5/30s": the way `execplan limits set --rate` reads it. */
export function rateText(r: RateLimitStatus): string {
  if (!r.defined || !r.period) return "undefined";
  const period = durationMs(r.period);
  for (const [ms, unit] of UNITS) if (period === ms) return `${r.units}/${unit}`;
  for (const [ms, unit] of UNITS) if (period % ms === 0) return `${r.units}/${period / ms}${unit}`;
  return `${r.units}/${period}ms`;
}

const SOURCE: Record<number, string> = {
  [RateLimitSource.SERVER]: "server",
  [RateLimitSource.WORKFLOW]: "workflow",
};

export function LimitsSection() {
  const [limits, error] = useRefreshing(() => executor.listLimits({}));
  const empty = limits && !limits.concurrencyLimits.length && !limits.rateLimits.length && !limits.waiting.length;
  return (
    <section data-testid="limits">
      <div class="page-head">
        <h1>Limits</h1>
      </div>
      {error && <Alert>{error}</Alert>}
      {empty && <div class="card empty">No concurrency limit is held, no rate limit is defined and no task waits.</div>}
      {limits && limits.concurrencyLimits.length > 0 && (
        <div class="card table-card">
          <table class="table" data-testid="concurrency-limits">
            <thead>
              <tr>
                <th>Concurrency limit</th>
                <th>Key</th>
                <th>In use</th>
                <th>Max</th>
                <th>Waiting</th>
              </tr>
            </thead>
            <tbody>
              {limits.concurrencyLimits.map((c) => (
                <tr key={`${c.name}\u001f${c.key}`}>
                  <td class="mono">{c.name}</td>
                  <td class="mono">{c.key || <span class="muted">–</span>}</td>
                  <td>{c.inUse}</td>
                  <td>{c.max || <span class="muted">–</span>}</td>
                  <td>{c.waiting}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {limits && limits.rateLimits.length > 0 && (
        <div class="card table-card">
          <table class="table" data-testid="rate-limits">
            <thead>
              <tr>
                <th>Rate limit</th>
                <th>Rate</th>
                <th>Burst</th>
                <th>Source</th>
                <th>Key</th>
                <th>Tokens</th>
                <th>Paused until</th>
                <th>Waiting</th>
              </tr>
            </thead>
            <tbody>
              {limits.rateLimits.flatMap((r) =>
                (r.keys.length ? r.keys : [undefined]).map((k) => (
                  <tr key={`${r.name}\u001f${k?.key ?? ""}`}>
                    <td class="mono">{r.name}</td>
                    <td class={r.defined ? "" : "error-text"}>{rateText(r)}</td>
                    <td>{r.defined ? String(r.burst) : "–"}</td>
                    <td>{SOURCE[r.source] ?? "–"}</td>
                    <td class="mono">{k?.key || <span class="muted">–</span>}</td>
                    <td>{k ? k.tokens.toFixed(1) : "–"}</td>
                    <td>{k?.pausedUntil ? when(k.pausedUntil) : <span class="muted">–</span>}</td>
                    <td>{k?.waiting ?? 0}</td>
                  </tr>
                )),
              )}
            </tbody>
          </table>
        </div>
      )}
      {limits && limits.waiting.length > 0 && (
        <div class="card table-card">
          <table class="table" data-testid="waiting-tasks">
            <thead>
              <tr>
                <th>Execution</th>
                <th>Task</th>
                <th>Waiting for</th>
                <th>Since</th>
                <th>Why</th>
              </tr>
            </thead>
            <tbody>
              {limits.waiting.map((w) => (
                <tr key={`${w.executionId}/${w.taskId}`}>
                  <td class="mono">
                    <a href={`/executions/${encodeURIComponent(w.executionId)}`}>{w.executionId}</a>
                  </td>
                  <td class="mono">{w.taskId}</td>
                  <td>{w.waiting ? waitKindName(w.waiting.kind) : "–"}</td>
                  <td>{when(w.waiting?.since)}</td>
                  <td>{w.waiting?.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
