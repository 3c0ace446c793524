"""The metrics observer over whole rounds: counters summed per round are what one
increment per event makes, and a failing handler loses nothing counted before it."""

from __future__ import annotations

import pytest
from execplan.executor.observability.metrics import EngineMetrics, MetricsObserver
from execplan.executor.observability.observer import Commit
from execplan.v1 import events_pb2 as ev
from prometheus_client import CollectorRegistry

from .machinekit import Sim

FLOW = """
name: rounds
version: "1"
tasks:
  - id: a
    type: t.a
  - id: b
    type: t.b
    depends_on: [a]
"""


def _commit(sim: Sim, mark: int) -> Commit:
    events = sim.events[mark:]
    return (sim.state, events, [e.WhichOneof("kind") or "" for e in events], sim.now)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_round_of_many_executions_counts_each_event() -> None:
    registry = CollectorRegistry()
    observer = MetricsObserver(None, EngineMetrics(registry))
    sims = [Sim(FLOW) for _ in range(5)]
    observer.committed([_commit(sim, 0) for sim in sims])  # the starts, one round
    assert _value(registry, "execplan_executions_total", workflow="rounds", outcome="started") == 5
    created = {"workflow": "rounds", "task_type": "t.a", "outcome": "created"}
    assert _value(registry, "execplan_tasks_total", **created) == 5
    marks = [len(sim.events) for sim in sims]
    for sim in sims:
        sim.now += 7
        sim.run("a", {})
    observer.committed([_commit(sim, mark) for sim, mark in zip(sims, marks, strict=True)])
    succeeded = {"workflow": "rounds", "task_type": "t.a", "outcome": "succeeded"}
    assert _value(registry, "execplan_tasks_total", **succeeded) == 5
    assert _value(registry, "execplan_tasks_total", **{**created, "task_type": "t.b"}) == 5
    durations = {"workflow": "rounds", "task_type": "t.a", "outcome": "succeeded"}
    assert _value(registry, "execplan_task_duration_seconds_count", **durations) == 5


def test_what_was_counted_before_a_failing_handler_is_kept() -> None:
    registry = CollectorRegistry()
    observer = MetricsObserver(None, EngineMetrics(registry))
    good, bad = Sim(FLOW), Sim(FLOW)
    broken = ev.ExecutionEvent()  # says it is task_queued, is not: its task is unknown
    broken.task_queued.task_id = "missing"
    commits = [_commit(good, 0), (bad.state, [broken], ["task_queued"], bad.now)]
    with pytest.raises(KeyError):
        observer.committed(commits)
    assert _value(registry, "execplan_executions_total", workflow="rounds", outcome="started") == 1
    created = {"workflow": "rounds", "task_type": "t.a", "outcome": "created"}
    assert _value(registry, "execplan_tasks_total", **created) == 1
    assert observer.counts == {}  # nothing left over for the next round
