"""OpenTelemetry spans of executions and task attempts, from committed events.

    engine.observers.add(TracingObserver())   # done by ExecutorComponent

One span per execution (`execution_started` -> `execution_completed`), a child of
the trace context the client sent with StartExecution (`traceparent` metadata,
stored in `ExecutionStarted.trace_context`). One span per task attempt, from its
dispatch to its result (or re-queue, timeout, cancellation), a child of the
execution span. The attempt span's W3C context is put into `Dispatch.trace_context`
so the worker continues the trace: its span is a child of the attempt span.

Uses only the OpenTelemetry API: without a configured tracer provider every span is
a no-op, and the client's context passes through to workers unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from execplan.executor.observability.observer import Commit, EngineObserver
from execplan.executor.state import ExecutionState, execution_state_name
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_ENDS_ATTEMPT = {
    "task_succeeded": "succeeded",
    "task_failed": "failed",
    "task_timed_out": "timed_out",
    "task_requeued": "requeued",
    "task_cancelled": "cancelled",
}


def _ns(event: ev.ExecutionEvent) -> int:
    return event.recorded_at.ToNanoseconds()


class TracingObserver(EngineObserver):
    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer = trace.get_tracer("execplan.executor", tracer_provider=tracer_provider)
        self._explicit = tracer_provider is not None
        # Whether an SDK provider is set: once it is, for good (the global provider is
        # set once). While it is not, the answer is kept until the next round or
        # execution start (`_recheck`): asking costs ~2 us (the API looks a variable up
        # in os.environ, a KeyError each time), several times per task.
        self._on = self._explicit
        self._known = self._explicit
        self._executions: dict[str, Span] = {}
        # execution id -> task id -> (lease epoch, attempt span)
        self._attempts: dict[str, dict[str, tuple[int, Span]]] = {}

    # -- spans -----------------------------------------------------------------------
    def _execution(self, state: ExecutionState, start_ns: int | None = None) -> Span:
        span = self._executions.get(state.execution_id)
        if span is None:
            parent = propagate.extract(dict(state.trace_context))
            span = self._tracer.start_span(
                f"execution {state.plan.workflow_name}",
                context=parent,
                kind=SpanKind.INTERNAL,
                start_time=start_ns or state.created_ms * 1_000_000 or None,
                attributes={
                    "execplan.execution_id": state.execution_id,
                    "execplan.workflow": state.plan.workflow_name,
                    "execplan.plan_id": state.plan.plan_id,
                },
            )
            self._executions[state.execution_id] = span
        return span

    def _attempt(
        self,
        state: ExecutionState,
        task_id: str,
        *,
        phase: int,
        attempt: int,
        epoch: int,
        task_type: str,
        worker_id: str,
    ) -> Span:
        attempts = self._attempts.setdefault(state.execution_id, {})
        current = attempts.get(task_id)
        if current is not None:
            if current[0] == epoch:
                return current[1]
            current[1].end()  # an older lease whose end we did not see
        parent = trace.set_span_in_context(self._execution(state))
        phase_name = ex.TaskPhase.Name(phase).removeprefix("TASK_PHASE_").lower()  # type: ignore[arg-type]
        span = self._tracer.start_span(
            f"task {task_id}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "execplan.execution_id": state.execution_id,
                "execplan.task_id": task_id,
                "execplan.task_type": task_type,
                "execplan.attempt": attempt,
                "execplan.lease_epoch": epoch,
                "execplan.phase": phase_name,
                "execplan.worker_id": worker_id,
                **_grown_attributes(state, task_id),
            },
        )
        attempts[task_id] = (epoch, span)
        return span

    def _enabled(self) -> bool:
        """False while no SDK tracer provider is set (the API's default proxy): then
        every span would be a no-op, so skip the bookkeeping; the engine has already
        put the client's context into each dispatch."""
        if not self._known:
            self._on = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
            self._known = True
        return self._on

    def _recheck(self) -> None:
        if not self._on:
            self._known = False

    # -- hooks -----------------------------------------------------------------------
    def round_committed(self, executions: int, events: int, seconds: float) -> None:
        self._recheck()

    def dispatching(self, state: ExecutionState, dispatch: ws.Dispatch) -> None:
        if not self._enabled():
            return
        ref = dispatch.attempt
        task = state.task(ref.task_id)
        span = self._attempt(
            state,
            ref.task_id,
            phase=ref.phase,
            attempt=ref.token.attempt,
            epoch=ref.token.lease_epoch,
            task_type=dispatch.task_type,
            worker_id=task.worker_id,
        )
        if not span.get_span_context().is_valid:
            return  # tracing off: the client's context (already set) passes through
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        dispatch.trace_context.clear()
        dispatch.trace_context.update(carrier)

    def committed(self, commits: Sequence[Commit]) -> None:
        for state, events, _, _ in commits:
            if state.last_sequence == len(events):  # its first events: it just started
                self._recheck()
                break
        if not self._enabled() and not self._executions:
            return
        for state, events, kinds, _ in commits:
            for event, kind in zip(events, kinds, strict=True):
                if kind == "execution_started":
                    self._execution(state, _ns(event))
                elif kind == "task_started":
                    attempts = self._attempts.get(state.execution_id, {})
                    current = attempts.get(event.task_started.task_id)
                    if current is not None:
                        current[1].add_event("started", timestamp=_ns(event))
                elif kind in _ENDS_ATTEMPT:
                    self._end_attempt(state, event, kind)
                elif kind == "execution_completed":
                    self._end_execution(state, event)

    def _end_attempt(self, state: ExecutionState, event: ev.ExecutionEvent, kind: str) -> None:
        body = getattr(event, kind)
        attempts = self._attempts.get(state.execution_id)
        current = attempts.pop(body.task_id, None) if attempts else None
        if current is None:
            return
        span = current[1]
        outcome = _ENDS_ATTEMPT[kind]
        span.set_attribute("execplan.outcome", outcome)
        if kind == "task_failed":
            span.set_status(Status(StatusCode.ERROR, f"{body.error.type}: {body.error.message}"))
        elif kind == "task_timed_out":
            span.set_status(Status(StatusCode.ERROR, "timed out"))
        span.end(end_time=_ns(event))

    def _end_execution(self, state: ExecutionState, event: ev.ExecutionEvent) -> None:
        for _, span in self._attempts.pop(state.execution_id, {}).values():
            span.end(end_time=_ns(event))
        if state.execution_id not in self._executions:
            return
        span = self._executions.pop(state.execution_id)
        done = event.execution_completed
        outcome = execution_state_name(done.state).lower()
        span.set_attribute("execplan.outcome", outcome)
        if done.state != ex.EXECUTION_STATE_SUCCEEDED:
            message = f"{done.error.type}: {done.error.message}" if done.error.type else outcome
            span.set_status(Status(StatusCode.ERROR, message))
        span.end(end_time=_ns(event))


def configure_otlp_from_env() -> bool:
    """At `execplan serve` start: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces
    variant) is set and an OTLP exporter package is installed, install an SDK tracer
    provider that exports through it (`OTEL_SERVICE_NAME`, default `execplan`; the
    exporter reads the other standard `OTEL_EXPORTER_OTLP_*` variables itself).
    The exporter is optional: `pip install opentelemetry-exporter-otlp-proto-grpc`
    (or `-proto-http`). Returns True when export was configured."""
    import atexit  # noqa: PLC0415
    import importlib  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import os  # noqa: PLC0415

    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    log = logging.getLogger("execplan.tracing")
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    modules = ["grpc", "http"] if protocol == "grpc" else ["http", "grpc"]
    exporter_class: Any = None
    for kind in modules:
        try:
            module = importlib.import_module(
                f"opentelemetry.exporter.otlp.proto.{kind}.trace_exporter"
            )
        except ImportError:
            continue
        exporter_class = module.OTLPSpanExporter
        break
    if exporter_class is None:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but no OTLP exporter is installed "
            "(pip install opentelemetry-exporter-otlp-proto-grpc); traces are not exported"
        )
        return False
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    service = os.environ.get("OTEL_SERVICE_NAME", "execplan")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter_class()))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    log.info("exporting traces over OTLP (%s)", protocol)
    return True


def _grown_attributes(state: ExecutionState, task_id: str) -> dict[str, str | int]:
    """Where an attempt's task came from (docs/runtime-plans.md): an instance's for_each
    task and item, a sub-plan task's dynamic task, a repeat's iteration."""
    index = state.index_of(task_id)
    if index is None:
        return {}
    found: dict[str, str | int] = {}
    grown = state.grown_of(index)
    if grown is not None:
        found["execplan.parent_task_id"] = state.task_id(grown.parent)
        if grown.item_index >= 0:
            found["execplan.item_index"] = grown.item_index
    if state.node(index).repeat is not None:
        extra = state.extras.get(index)
        found["execplan.iteration"] = extra.iteration if extra is not None else 0
    return found
