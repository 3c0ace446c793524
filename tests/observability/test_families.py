"""The engine's counter and histogram families expose what prometheus_client's
Counter and Histogram expose for the same updates: byte for byte in both exposition
formats, `_created` values aside (times of creation)."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator

import pytest
from execplan.executor.observability.families import Tallies, Timings
from execplan.executor.observability.metrics import BUCKETS
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

_CREATED = re.compile(r"^(\S*_created(?:\{[^}]*\})?) \S+$", re.MULTILINE)


def _exposed(registry: CollectorRegistry) -> tuple[str, str]:
    """Both exposition formats, with each `_created` value replaced by `T`."""
    text = generate_latest(registry).decode()
    open_text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    return _CREATED.sub(r"\1 T", text), _CREATED.sub(r"\1 T", open_text)


def _values() -> Iterator[float]:
    """Timings as the engine makes them (whole ms), every bound exactly, below the
    first, past the last, and a few that are not whole ms."""
    rng = random.Random(17)
    yield from BUCKETS
    yield from (0.0, 0.0005, 400.0, 1e9, 0.0011, 2.4999)
    for _ in range(300):
        yield rng.randrange(0, 400_000) / 1000


def _pair() -> tuple[CollectorRegistry, CollectorRegistry, Callable[[str], None]]:
    """Two registries, the library's families in one and ours in the other, and a
    function that applies the same updates to both."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    h_ours = Timings("t_seconds", "Times", ["workflow", "outcome"], BUCKETS, ours)
    h_theirs = Histogram(
        "t_seconds", "Times", ["workflow", "outcome"], buckets=BUCKETS, registry=theirs
    )
    bare_ours = Timings("c_seconds", "Commits", (), BUCKETS, ours)
    bare_theirs = Histogram("c_seconds", "Commits", buckets=BUCKETS, registry=theirs)
    c_ours = Tallies("n", "Counts", ["workflow", "outcome"], ours)
    c_theirs = Counter("n", "Counts", ["workflow", "outcome"], registry=theirs)

    def update(workflow: str) -> None:
        for i, value in enumerate(_values()):
            outcome = ("succeeded", "failed", "timed_out")[i % 3]
            h_ours.labels(workflow, outcome).observe(value)
            h_theirs.labels(workflow, outcome).observe(value)
            bare_ours.observe(value / 7)
            bare_theirs.observe(value / 7)
            c_ours.labels(workflow, outcome).inc()
            c_theirs.labels(workflow, outcome).inc()
            c_ours.labels(workflow, "cost").inc(value / 3)
            c_theirs.labels(workflow, "cost").inc(value / 3)

    return ours, theirs, update


def test_the_same_exposition_as_the_library() -> None:
    ours, theirs, update = _pair()
    assert _exposed(ours) == _exposed(theirs)  # nothing observed yet
    update("w1")
    update("wf two")
    exposed = _exposed(ours)
    assert exposed == _exposed(theirs)
    assert 't_seconds_bucket{le="0.001",outcome="failed",workflow="w1"}' in exposed[1]
    for name in ("t_seconds_count", "t_seconds_sum", "n_total"):
        for workflow in ("w1", "wf two"):
            labels = {"workflow": workflow, "outcome": "failed"}
            assert ours.get_sample_value(name, labels) == theirs.get_sample_value(name, labels)
    assert ours.get_sample_value("c_seconds_count") == theirs.get_sample_value("c_seconds_count")


def test_a_nan_counts_in_the_sum_only_as_in_the_library() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    Timings("t", "T", (), BUCKETS, ours).observe(math.nan)
    Histogram("t", "T", buckets=BUCKETS, registry=theirs).observe(math.nan)
    assert _exposed(ours) == _exposed(theirs)


def test_created_series_follow_the_library_switch() -> None:
    ours, theirs, update = _pair()
    update("w")
    prometheus_metrics.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        exposed = _exposed(ours)
        assert exposed == _exposed(theirs)
        assert "_created" not in exposed[0]
    finally:
        prometheus_metrics.enable_created_metrics()  # type: ignore[no-untyped-call]
    assert "t_seconds_created" in _exposed(ours)[0]


def test_created_is_when_the_label_set_was_first_used() -> None:
    registry = CollectorRegistry()
    family = Timings("t", "T", ["a"], BUCKETS, registry)
    child = family.labels("x")
    assert family.labels("x") is child
    assert registry.get_sample_value("t_created", {"a": "x"}) == child.created


def test_misuse_is_refused_as_by_the_library() -> None:
    registry = CollectorRegistry()
    timings = Timings("t", "T", ["a"], BUCKETS, registry)
    tallies = Tallies("n", "N", ["a"], registry)
    with pytest.raises(ValueError, match="label count"):
        timings.labels("x", "y")
    with pytest.raises(ValueError, match="label count"):
        tallies.labels()
    with pytest.raises(ValueError, match="missing label values"):
        timings.observe(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        tallies.labels("x").inc(-1)
    with pytest.raises(ValueError, match="sorted"):
        Timings("u", "U", (), (2.0, 1.0), None)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Timings("t", "T", (), BUCKETS, registry)
