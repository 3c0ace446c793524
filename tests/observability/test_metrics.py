"""/metrics after a run: executions, tasks, histograms in seconds, gauges."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from execplan.client import ExecutorClient
from execplan.config import ServerConfig
from execplan.executor.observability.metrics import BUCKETS
from execplan.server import ExecplanServer, ExecutorComponent, MetricsComponent, PlannerComponent
from execplan.v1 import execution_pb2
from execplan.worker import Worker
from prometheus_client.parser import text_string_to_metric_families

from .conftest import EXAMPLES, FAST, sample_workers


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ExecplanServer, MetricsComponent]]:
    config = ServerConfig(
        listen="127.0.0.1:0", db_path=str(tmp_path / "execplan.db"), grace_seconds=1
    )
    metrics = MetricsComponent("127.0.0.1:0")
    executor = ExecutorComponent(config.db_path, config=FAST)
    async with ExecplanServer(config, [metrics, executor, PlannerComponent(config)]) as server:
        yield server, metrics


def _scrape(metrics: MetricsComponent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = metrics._httpd.server_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_after_runs(served: tuple[ExecplanServer, MetricsComponent]) -> None:
    server, metrics = served
    before = await asyncio.to_thread(_scrape, metrics)
    sample = sample_workers().worker
    worker = Worker(server.address, slots=4, labels=sample.labels)
    worker.capacity = sample.capacity
    worker._handlers.update(sample._handlers)
    task = asyncio.create_task(worker.serve())
    source = (EXAMPLES / "order_saga.yaml").read_text(encoding="utf-8")
    async with ExecutorClient(server.address) as client:
        ids = [
            (await client.start(source=source, inputs=inputs)).execution_id
            for inputs in ({"order_id": "m-1"}, {"order_id": "m-2", "card": "declined"})
        ]
        for execution_id in ids:
            async with asyncio.timeout(15):
                async for event in client.watch(execution_id):
                    if event.HasField("execution_completed"):
                        assert event.execution_completed.state == (
                            execution_pb2.EXECUTION_STATE_SUCCEEDED
                        )
        after = await asyncio.to_thread(_scrape, metrics)
    await worker.stop()
    task.cancel()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    wf = "order-saga"
    assert delta("execplan_executions_total", workflow=wf, outcome="started") == 2
    assert delta("execplan_executions_total", workflow=wf, outcome="succeeded") == 2
    ops = {"workflow": wf, "task_type": "payments.charge"}
    assert delta("execplan_tasks_total", **ops, outcome="created") == 2
    assert delta("execplan_tasks_total", **ops, outcome="succeeded") == 1
    # CardDeclined is not final: the fallback gateway takes over.
    assert delta("execplan_tasks_total", **ops, outcome="attempt_failed") == 1
    assert delta("execplan_tasks_total", **ops, outcome="failed") == 0
    backup = {"workflow": wf, "task_type": "payments.charge_backup"}
    assert delta("execplan_tasks_total", **backup, outcome="succeeded") == 1
    assert delta("execplan_task_queue_seconds_count", **ops) == 2
    assert delta("execplan_task_dispatch_to_start_seconds_count", **ops) == 2
    assert delta("execplan_task_duration_seconds_count", **ops, outcome="succeeded") == 1
    assert delta("execplan_execution_duration_seconds_count", workflow=wf, outcome="succeeded") == 2
    # Seconds, explicit buckets: 1 ms .. 300 s.
    assert (
        "execplan_task_duration_seconds_bucket",
        tuple(sorted({**ops, "outcome": "succeeded", "le": "0.001"}.items())),
    ) in after
    assert BUCKETS[0] == 0.001 and BUCKETS[-1] == 300.0
    assert _value(after, "execplan_workers_connected") >= 1
    assert _value(after, "execplan_worker_slots") >= 4
    assert ("execplan_worker_slots_free", ()) in after
    # Both finished: no live execution of ours is left in any state.
    live = {k: v for k, v in after.items() if k[0] == "execplan_executions_live"}
    assert live and all(v >= 0 for v in live.values()), live
    # Breakers: order_saga's charge has one; its gauge is there (closed = 0).
    assert ("execplan_circuit_breaker_state", (("task_type", "payments.charge"),)) in after
    # No ids in labels.
    for name, labels in after:
        assert not any(k.endswith("_id") for k, _ in labels), (name, labels)


async def test_usage_metric_counts_every_report(
    served: tuple[ExecplanServer, MetricsComponent],
) -> None:
    """execplan_usage_total{counter} grows by what tasks report, failed attempts too."""
    from execplan.worker import TaskContext  # noqa: PLC0415

    server, metrics = served
    before = await asyncio.to_thread(_scrape, metrics)

    async def spend(inputs: dict[str, object], ctx: TaskContext) -> dict[str, object]:
        ctx.usage(tokens_in=1000, tokens_out=250, cost=0.125)
        if ctx.attempt == 1:
            raise RuntimeError("retried")
        return {}

    worker = Worker(server.address, worker_id="usage-metrics")
    worker.task("m.spend")(spend)
    task = asyncio.create_task(worker.serve())
    source = (
        "name: usage-metrics\ntasks:\n  - {id: a, type: m.spend, retry: {initial_interval: 10ms}}\n"
    )
    async with ExecutorClient(server.address) as client:
        execution_id = (await client.start(source=source)).execution_id
        async with asyncio.timeout(15):
            async for event in client.watch(execution_id):
                if event.HasField("execution_completed"):
                    break
        after = await asyncio.to_thread(_scrape, metrics)
    await worker.stop()
    task.cancel()
    for counter, amount in (("tokens_in", 2000), ("tokens_out", 500), ("cost", 0.25)):
        grew = _value(after, "execplan_usage_total", counter=counter) - _value(
            before, "execplan_usage_total", counter=counter
        )
        assert grew == amount, counter
