"""The trace chain: client span -> execution span -> task attempt span -> worker span."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import Env

EXPORTER = InMemorySpanExporter()


def _provider() -> TracerProvider:
    """The global SDK provider (set once per process), exporting to EXPORTER."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
        current = trace.get_tracer_provider()
    assert isinstance(current, TracerProvider)
    if not getattr(current, "_execplan_test_exporter", False):
        current.add_span_processor(SimpleSpanProcessor(EXPORTER))
        current._execplan_test_exporter = True  # type: ignore[attr-defined]
    return current


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_client_execution_task_worker_chain(env: Env) -> None:
    provider = _provider()
    EXPORTER.clear()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("client request") as client_span:
        execution_id = await env.start("hello.yaml", {"name": "Ada"})
    await env.finish(execution_id)
    spans = [
        s for s in EXPORTER.get_finished_spans()
        if s.context is not None and s.context.trace_id == client_span.get_span_context().trace_id
    ]  # fmt: skip
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (execution,) = by_name["execution hello"]
    assert _parent(execution) == client_span.get_span_context().span_id
    assert execution.attributes is not None
    assert execution.attributes["execplan.execution_id"] == execution_id
    tasks = [s for s in spans if s.name.startswith("task ")]
    assert {s.name for s in tasks} == {
        "task greet", "task shout", "task mirror", "task echo", "task combine", "task summary"
    }  # fmt: skip
    assert execution.context is not None
    assert all(_parent(t) == execution.context.span_id for t in tasks)
    workers = [s for s in spans if s.name.startswith("execplan.worker ")]
    assert len(workers) == len(tasks)
    task_ids = {t.context.span_id: t for t in tasks if t.context is not None}
    for span in workers:
        parent = task_ids[_parent(span) or 0]
        assert parent.attributes is not None and span.attributes is not None
        assert span.attributes["execplan.task_id"] == parent.attributes["execplan.task_id"]
        assert span.start_time is not None and parent.start_time is not None
        assert span.start_time >= parent.start_time
