/**
 * Continue the executor's trace in the worker: when @opentelemetry/api is installed
 * (optional peer dependency) and a tracer provider is registered, each attempt runs
 * in a child span of the dispatch's `traceparent`. Without it, ctx.traceContext is
 * still there for any other tracer.
 */
import { createRequire } from "node:module";
import type { TaskContext } from "./context.js";

export interface AttemptSpan {
  end(): void;
  fail(err: unknown): void;
}

type OtelApi = {
  trace: { getTracer(name: string): { startSpan(name: string, options: object, ctx: unknown): OtelSpan } };
  propagation: { extract(ctx: unknown, carrier: Record<string, string>): unknown };
  context: { active(): unknown };
  SpanStatusCode: { ERROR: number };
  SpanKind: { CONSUMER: number };
};
type OtelSpan = {
  end(): void;
  recordException(err: unknown): void;
  setStatus(status: { code: number; message?: string }): void;
};

let api: OtelApi | null | undefined;

function otel(): OtelApi | null {
  if (api === undefined) {
    try {
      api = createRequire(import.meta.url)("@opentelemetry/api") as OtelApi;
    } catch {
      api = null;
    }
  }
  return api;
}

export function startSpan(taskType: string, ctx: TaskContext): AttemptSpan | undefined {
  const o = otel();
  if (!o || !ctx.traceContext["traceparent"]) return undefined;
  const parent = o.propagation.extract(o.context.active(), { ...ctx.traceContext });
  const span = o.trace.getTracer("execplan.worker").startSpan(
    `execplan.task ${taskType}`,
    {
      kind: o.SpanKind.CONSUMER,
      attributes: {
        "execplan.execution_id": ctx.executionId,
        "execplan.task_id": ctx.taskId,
        "execplan.attempt": ctx.attempt,
      },
    },
    parent,
  );
  return {
    end: () => span.end(),
    fail: (err) => {
      span.recordException(err);
      span.setStatus({ code: o.SpanStatusCode.ERROR, message: String(err) });
      span.end();
    },
  };
}
