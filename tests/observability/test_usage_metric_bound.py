"""execplan_usage_total{counter} has a bounded number of label values."""

from __future__ import annotations

from execplan.executor.decide import events
from execplan.executor.observability import metrics
from prometheus_client import CollectorRegistry


def test_counter_names_past_the_cap_share_the_label_other() -> None:
    registry = CollectorRegistry()
    observer = metrics.MetricsObserver(metrics=metrics.EngineMetrics(registry))
    cap = metrics.MAX_USAGE_COUNTERS
    for n in range(cap + 50):
        event = events.task_usage("t", 1, 1, 1, {f"c{n}": 1.0}, report=n + 1, worker_id="w")
        metrics._usage(observer, None, None, event, 0)  # type: ignore[arg-type]
    names = {
        sample.labels["counter"]: sample.value
        for family in registry.collect()
        if family.name == "execplan_usage"
        for sample in family.samples
        if sample.name == "execplan_usage_total"
    }
    assert len(names) == cap + 1
    assert names["other"] == 50.0
    assert names["c0"] == 1.0 and f"c{cap}" not in names
