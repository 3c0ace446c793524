"""Optional OpenTelemetry: each handler call runs in a span continuing the executor's
trace (`Dispatch.trace_context`, W3C). Without the `opentelemetry-api` package, or
without a configured tracer provider, this records nothing; without either a
provider or a trace context to continue it also costs nothing (no span at all)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from execplan.v1 import worker_service_pb2

try:
    from opentelemetry import propagate, trace
except ImportError:  # optional dependency
    _OTEL = False
else:
    _OTEL = True


def handler_span(dispatch: worker_service_pb2.Dispatch) -> AbstractContextManager[Any]:
    if not _OTEL or (not dispatch.trace_context and not _provider_set()):
        # No trace to continue and none to record: a span would be a no-op (~15 us,
        # on the path of every attempt).
        return nullcontext()
    ref = dispatch.attempt
    return trace.get_tracer("execplan.worker").start_as_current_span(
        f"execplan.worker {dispatch.task_type}",
        context=propagate.extract(dict(dispatch.trace_context)),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "execplan.execution_id": ref.execution_id,
            "execplan.task_id": ref.task_id,
            "execplan.task_type": dispatch.task_type,
            "execplan.attempt": ref.token.attempt,
            "execplan.idempotency_key": dispatch.idempotency_key,
        },
    )


def _provider_set() -> bool:
    """A tracer provider other than the API's placeholders is installed."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
