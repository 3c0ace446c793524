/**
 * Continue the executor's trace in the worker: when @opentelemetry/api is installed
 * (optional peer dependency) and a tracer provider is registered, each attempt runs
 * in a child span of the dispatch's `traceparent`. Without it, ctx.traceContext is
 * still there for any other tracer.
 */
import { createRequire } from "node:module";
import type { TaskContext } from "./context.js";

export interface AttemptSpan {
  /** Run fn with the span active, so spans the handler starts are its children. */
  run<T>(fn: () => T): T;
  end(): void;
  fail(err: unknown): void;
}

type OtelApi = {
  trace: {
    getTracer(name: string): { startSpan(name: string, options: object, ctx: unknown): OtelSpan };
    setSpanContext(ctx: unknown, spanContext: object): unknown;
    setSpan(ctx: unknown, span: OtelSpan): unknown;
  };
  context: { active(): unknown; with<T>(ctx: unknown, fn: () => T): T };
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
  // traceparent = version-traceid-parentid-flags. Parsed here rather than through
  // the global propagator, which is a no-op unless the application registered one.
  const m = /^[\da-f]{2}-([\da-f]{32})-([\da-f]{16})-([\da-f]{2})$/.exec(ctx.traceContext["traceparent"] ?? "");
  if (!o || !m) return undefined;
  const parent = o.trace.setSpanContext(o.context.active(), {
    traceId: m[1],
    spanId: m[2],
    traceFlags: parseInt(m[3]!, 16),
    isRemote: true,
  });
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
  const active = o.trace.setSpan(parent, span);
  return {
    run: (fn) => o.context.with(active, fn),
    end: () => span.end(),
    fail: (err) => {
      let message = "(a thrown value that cannot be read)";
      try {
        message = String(err); // throws for Object.create(null): that must not escape
        span.recordException(err);
      } catch {
        // recorded as far as it could be
      }
      span.setStatus({ code: o.SpanStatusCode.ERROR, message });
      span.end();
    },
  };
}
