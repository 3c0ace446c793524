"""Prometheus metrics of the engine, fed by `EngineObserver` hooks.

    engine.observers.add(MetricsObserver(engine))   # done by ExecutorComponent
    execplan serve --metrics-listen 127.0.0.1:9464  # GET /metrics

Every duration is a histogram in seconds with explicit buckets (1 ms .. 5 min).
Labels stay low-cardinality: workflow, task_type, outcome, state; never ids.

Metrics (labels in brackets):

    execplan_executions_total{workflow,outcome}        started, succeeded, failed,
                                                       cancelled, compensated, ...
    execplan_tasks_total{workflow,task_type,outcome}   created, succeeded, failed,
        attempt_failed, retried, timed_out, skipped, cancelled, requeued
    execplan_task_queue_seconds{workflow,task_type}              queued -> dispatched
    execplan_task_dispatch_to_start_seconds{workflow,task_type}  dispatched -> acked
    execplan_task_duration_seconds{workflow,task_type,outcome}   acked -> result
    execplan_execution_duration_seconds{workflow,outcome}        started -> completed
    execplan_executions_live{state}                              gauge, live executions
    execplan_workers_connected, execplan_worker_slots, execplan_worker_slots_free
    execplan_circuit_breaker_state{task_type}          0 closed, 1 half-open, 2 open
                                                       (type[key] for a keyed breaker)
    execplan_tasks_waiting{reason}                     gauge, queued tasks held back by
        concurrency_limit, rate_limit, resources or unplaceable (docs/flow-control.md)
    execplan_cache_hits_total                          tasks answered from the result cache
    execplan_commit_seconds                            one group commit of the engine
    execplan_usage_total{counter}                      usage reported by tasks (tokens_in,
                                                       tokens_out, cost, ...; docs/usage.md;
                                                       past 100 names: "other")
    execplan_expansions_total{workflow,kind}           what grew at run time: kind
        for_each_item (one per instance), iteration, sub_plan, sub_plan_task, child
        (docs/runtime-plans.md); instances count in execplan_tasks_total under
        their task's type, like any task

The metric objects live in one registry: the process-wide default one unless a
test passes its own. Several engines in one process share the default families.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from execplan.executor.observability.observer import Commit, EngineObserver
from execplan.executor.state import ExecutionState, execution_state_name
from execplan.executor.waiting import KIND_NAMES
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class EngineMetrics:
    """The metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.executions = Counter(
            "execplan_executions", "Executions by outcome", ["workflow", "outcome"], registry=r
        )
        self.tasks = Counter(
            "execplan_tasks",
            "Task lifecycle events by outcome",
            ["workflow", "task_type", "outcome"],
            registry=r,
        )
        self.queue_seconds = Histogram(
            "execplan_task_queue_seconds",
            "Time from queued (ready) to dispatched",
            ["workflow", "task_type"],
            buckets=BUCKETS,
            registry=r,
        )
        self.dispatch_to_start = Histogram(
            "execplan_task_dispatch_to_start_seconds",
            "Time from dispatch to the worker's acknowledgement",
            ["workflow", "task_type"],
            buckets=BUCKETS,
            registry=r,
        )
        self.task_duration = Histogram(
            "execplan_task_duration_seconds",
            "Time an attempt ran on a worker (start to result)",
            ["workflow", "task_type", "outcome"],
            buckets=BUCKETS,
            registry=r,
        )
        self.execution_duration = Histogram(
            "execplan_execution_duration_seconds",
            "End-to-end execution time",
            ["workflow", "outcome"],
            buckets=BUCKETS,
            registry=r,
        )
        self.expansions = Counter(
            "execplan_expansions",
            "What grew at run time, by kind",
            ["workflow", "kind"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "execplan_commit_seconds",
            "One group commit of the engine",
            buckets=BUCKETS,
            registry=r,
        )
        self.usage = Counter(
            "execplan_usage",
            "Usage reported by tasks, by counter (tokens_in, tokens_out, cost, ...)",
            ["counter"],
            registry=r,
        )
        self.live = LiveCollector()
        r.register(self.live)


class LiveCollector(Collector):
    """Read at scrape time: executions by state, workers, slots, breakers, waiting
    tasks (gauges) and cache hits (a counter)."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.by_state: dict[str, int] = {}
        # Set by `set_breaker_state` for breakers the engine does not expose itself.
        self.breakers: dict[str, str] = {}

    def collect(self) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            "execplan_executions_live", "Live executions by state", labels=["state"]
        )
        for name, count in sorted(self.by_state.items()):
            states.add_metric([name], count)
        yield states
        workers = getattr(self.engine, "workers", None)
        conns = list(getattr(workers, "workers", {}).values())
        yield GaugeMetricFamily("execplan_workers_connected", "Connected workers", value=len(conns))
        yield GaugeMetricFamily(
            "execplan_worker_slots", "Slots of connected workers", value=sum(w.slots for w in conns)
        )
        yield GaugeMetricFamily(
            "execplan_worker_slots_free",
            "Free slots of connected workers",
            value=sum(max(0, w.free) for w in conns),
        )
        breakers = GaugeMetricFamily(
            "execplan_circuit_breaker_state",
            "Circuit breaker per task type: 0 closed, 1 half-open, 2 open",
            labels=["task_type"],
        )
        current = dict(self.breakers)
        engine_breakers = getattr(getattr(self.engine, "breakers", None), "breakers", {})
        for task_type, breaker in dict(engine_breakers).items():
            current[task_type] = str(getattr(breaker, "state", "closed"))
        for task_type, state in sorted(current.items()):
            breakers.add_metric([task_type], BREAKER_VALUES.get(state, 0))
        yield breakers
        waiting = GaugeMetricFamily(
            "execplan_tasks_waiting",
            "Queued tasks held back by flow control or resources, by reason",
            labels=["reason"],
        )
        counts = dict.fromkeys(KIND_NAMES.values(), 0)
        waits = getattr(self.engine, "waiting_tasks", None)
        for _, _, wait in waits() if waits is not None else ():
            reason = KIND_NAMES.get(wait.kind)
            if reason is not None:
                counts[reason] += 1
        for reason, count in sorted(counts.items()):
            waiting.add_metric([reason], count)
        yield waiting
        flow = getattr(self.engine, "flow", None)
        yield CounterMetricFamily(  # exposed as execplan_cache_hits_total
            "execplan_cache_hits",
            "Tasks answered from the result cache since the server started",
            value=getattr(flow, "cache_hits", 0),
        )


_DEFAULT: EngineMetrics | None = None


def default_metrics() -> EngineMetrics:
    global _DEFAULT  # noqa: PLW0603  (one set of families per process registry)
    if _DEFAULT is None:
        _DEFAULT = EngineMetrics(REGISTRY)
    return _DEFAULT


def _task_type(state: ExecutionState, task_id: str, phase: int) -> str:
    return state.node(state.task(task_id).index).type_for(phase)


class TypeChildren:
    """The children of one (workflow, task type) that every task updates, resolved
    once: `labels()` costs more than the update itself."""

    __slots__ = ("_ended", "_metrics", "created", "queue", "start", "task_type", "workflow")

    def __init__(self, metrics: EngineMetrics, workflow: str, task_type: str) -> None:
        self._metrics = metrics
        self.workflow = workflow
        self.task_type = task_type
        self.created = metrics.tasks.labels(workflow, task_type, "created")
        self.queue = metrics.queue_seconds.labels(workflow, task_type)
        self.start = metrics.dispatch_to_start.labels(workflow, task_type)
        # outcome -> (its execplan_tasks_total child, its task duration child)
        self._ended: dict[str, tuple[Any, Any]] = {}

    def ended(self, outcome: str) -> tuple[Any, Any]:
        found = self._ended.get(outcome)
        if found is None:
            m, wf, task_type = self._metrics, self.workflow, self.task_type
            found = self._ended[outcome] = (
                m.tasks.labels(wf, task_type, outcome),
                m.task_duration.labels(wf, task_type, outcome),
            )
        return found


# What the observer keeps per task between its events: the kind of the last timing
# mark, its time (ms), the phase it is for and that phase's children.
Mark = tuple[str, int, int, TypeChildren]


class MetricsObserver(EngineObserver):
    def __init__(self, engine: Any = None, metrics: EngineMetrics | None = None) -> None:
        self.metrics = metrics or default_metrics()
        self.metrics.live.engine = engine
        # execution id -> (state name) for the by-state gauge
        self._states: dict[str, str] = {}
        # execution id -> task id -> its Mark
        self._marks: dict[str, dict[str, Mark]] = {}
        # `labels()` costs more than the update itself: children cached by label values.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._types: dict[tuple[str, str], TypeChildren] = {}
        # The counter increments of the round `committed` is looking at, summed per
        # child and added once at its end (`inc(n)`): a round counts the same few
        # children many times (W3: 200 executions' `created` of one task type), and an
        # `inc` costs more than an addition. Whole numbers only, so the sum is exactly
        # what one `inc()` per event would have made (usage amounts are added as
        # they come).
        self.counts: dict[Any, int] = {}
        # Usage counter names seen (MAX_USAGE_COUNTERS).
        self.usage_counters: set[str] = set()

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def of_type(self, workflow: str, task_type: str) -> TypeChildren:
        found = self._types.get((workflow, task_type))
        if found is None:
            found = self._types[workflow, task_type] = TypeChildren(
                self.metrics, workflow, task_type
            )
        return found

    def children(
        self, state: ExecutionState, mark: Mark | None, task_id: str, phase: int
    ) -> TypeChildren:
        """The children of a task's type in `phase`: from its mark when it is of that
        phase, else looked up in the plan."""
        if mark is not None and mark[2] == phase:
            return mark[3]
        return self.of_type(state.plan.workflow_name, _task_type(state, task_id, phase))

    def set_breaker_state(self, task_type: str, state: str) -> None:
        """Hook for breakers: `closed`, `half_open` or `open`."""
        self.metrics.live.breakers[task_type] = state

    # -- hooks ---------------------------------------------------------------------------
    def committed(self, commits: Sequence[Commit]) -> None:
        handlers, all_marks, states = _HANDLERS, self._marks, self._states
        try:
            for state, events, kinds, at in commits:
                if not events:
                    continue
                marks = all_marks.get(state.execution_id)
                if marks is None:
                    marks = all_marks[state.execution_id] = {}
                moved = state.execution_id not in states
                for event, kind in zip(events, kinds, strict=True):
                    handler = handlers.get(kind)
                    if handler is not None:
                        handler(self, state, marks, event, at)
                    if kind in _EXECUTION_KINDS:
                        moved = True
                if moved:
                    self._track_state(state)
        finally:  # what was counted before a failing handler still counts
            counts = self.counts
            for child, amount in counts.items():
                child.inc(amount)
            counts.clear()

    def round_committed(self, executions: int, events: int, seconds: float) -> None:
        self.metrics.commit_seconds.observe(seconds)

    # -- helpers -------------------------------------------------------------------------
    def _track_state(self, state: ExecutionState) -> None:
        by_state = self.metrics.live.by_state
        old = self._states.get(state.execution_id)
        new = None if state.terminal else execution_state_name(state.state)
        if old == new:
            return
        if old is not None:
            by_state[old] = max(0, by_state.get(old, 0) - 1)
        if new is None:
            self._states.pop(state.execution_id, None)
            self._marks.pop(state.execution_id, None)
        else:
            self._states[state.execution_id] = new
            by_state[new] = by_state.get(new, 0) + 1

    def _task(self, workflow: str, task_type: str, outcome: str) -> None:
        _count(self, self.child(self.metrics.tasks, workflow, task_type, outcome))


Handler = Any
Marks = dict[str, Mark]


def _count(o: MetricsObserver, child: Any) -> None:
    """One more of `child` (a counter), added when the round's events are seen."""
    counts = o.counts
    counts[child] = counts.get(child, 0) + 1


def _execution_started(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    _count(o, o.child(o.metrics.executions, s.plan.workflow_name, "started"))


def _execution_completed(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    wf, outcome = s.plan.workflow_name, execution_state_name(e.execution_completed.state).lower()
    _count(o, o.child(o.metrics.executions, wf, outcome))
    if s.created_ms:
        o.child(o.metrics.execution_duration, wf, outcome).observe((at - s.created_ms) / 1000)


def _queued(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    body = e.task_queued
    task_id, phase = body.task_id, body.phase
    children = o.children(s, marks.get(task_id), task_id, phase)
    if body.attempt == 1:
        _count(o, children.created)
    marks[task_id] = ("queued", at, phase, children)


def _requeued(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    body = e.task_requeued
    task_id, phase = body.task_id, body.phase
    children = o.children(s, marks.get(task_id), task_id, phase)
    o._task(children.workflow, children.task_type, "requeued")
    marks[task_id] = ("queued", at, phase, children)


def _dispatched(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    body = e.task_dispatched
    task_id, phase = body.task_id, body.phase
    mark = marks.get(task_id)
    children = o.children(s, mark, task_id, phase)
    if mark is not None and mark[0] == "queued":
        children.queue.observe((at - mark[1]) / 1000)
    marks[task_id] = ("dispatched", at, phase, children)


def _started(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    body = e.task_started
    task_id, phase = body.task_id, body.phase
    mark = marks.get(task_id)
    children = o.children(s, mark, task_id, phase)
    if mark is not None and mark[0] == "dispatched":
        children.start.observe((at - mark[1]) / 1000)
    marks[task_id] = ("started", at, phase, children)


def _ended(  # noqa: PLR0917
    o: MetricsObserver, s: ExecutionState, marks: Marks, task_id: str, phase: int,
    outcome: str, at: int,
) -> None:  # fmt: skip
    mark = marks.pop(task_id, None)
    count, duration = o.children(s, mark, task_id, phase).ended(outcome)
    _count(o, count)
    if mark is not None and mark[0] in ("started", "dispatched"):
        duration.observe((at - mark[1]) / 1000)


def _succeeded(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    body = e.task_succeeded
    _ended(o, s, marks, body.task_id, body.phase, "succeeded", at)


def _failed(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    body = e.task_failed
    outcome = "failed" if body.final else "attempt_failed"
    _ended(o, s, marks, body.task_id, body.phase, outcome, at)


def _timed_out(
    o: MetricsObserver, s: ExecutionState, marks: Marks, e: ev.ExecutionEvent, at: int
) -> None:
    body = e.task_timed_out
    _ended(o, s, marks, body.task_id, body.phase, "timed_out", at)
    if body.final:
        o._task(s.plan.workflow_name, _task_type(s, body.task_id, body.phase), "failed")


MAX_USAGE_COUNTERS = 100  # label values of execplan_usage_total{counter}


def _usage(
    o: MetricsObserver, s: ExecutionState, marks: Any, e: ev.ExecutionEvent, at: int
) -> None:
    # Counter names are checked (execplan.usage): short and few per report, but any
    # number across tasks: past MAX_USAGE_COUNTERS names, one label value holds the rest.
    seen = o.usage_counters
    for name, amount in e.task_usage.usage.counters.items():
        if name not in seen and len(seen) < MAX_USAGE_COUNTERS:
            seen.add(name)
        o.child(o.metrics.usage, name if name in seen else "other").inc(amount)


def _simple(outcome: str, field: str) -> Handler:
    def handle(
        o: MetricsObserver, s: ExecutionState, marks: Any, e: ev.ExecutionEvent, at: int
    ) -> None:
        body = getattr(e, field)
        phase = getattr(body, "phase", ex.TASK_PHASE_MAIN)
        o._task(s.plan.workflow_name, _task_type(s, body.task_id, phase), outcome)
        if outcome in ("skipped", "cancelled"):
            marks.pop(body.task_id, None)

    return handle


# Events that may change an execution's state (for the by-state gauge).
_EXECUTION_KINDS = frozenset(
    {
        "execution_started",
        "execution_paused",
        "execution_resumed",
        "compensation_started",
        "execution_completed",
    }
)


def _expansion(kind: str) -> Handler:
    def handle(
        o: MetricsObserver, s: ExecutionState, marks: Any, e: ev.ExecutionEvent, at: int
    ) -> None:
        wf = s.plan.workflow_name
        if kind == "for_each_item":
            count = e.task_expanded.count
            if count:
                o.child(o.metrics.expansions, wf, kind).inc(count)
            return
        o.child(o.metrics.expansions, wf, kind).inc()
        if kind == "sub_plan":
            tasks = len(e.plan_revised.plan.nodes)
            if tasks:
                o.child(o.metrics.expansions, wf, "sub_plan_task").inc(tasks)

    return handle


_HANDLERS: dict[str, Handler] = {
    "execution_started": _execution_started,
    "execution_completed": _execution_completed,
    "task_queued": _queued,
    "task_requeued": _requeued,
    "task_dispatched": _dispatched,
    "task_started": _started,
    "task_succeeded": _succeeded,
    "task_failed": _failed,
    "task_timed_out": _timed_out,
    "task_retry_scheduled": _simple("retried", "task_retry_scheduled"),
    "task_skipped": _simple("skipped", "task_skipped"),
    "task_cancelled": _simple("cancelled", "task_cancelled"),
    "task_usage": _usage,
    "task_expanded": _expansion("for_each_item"),
    "iteration_completed": _expansion("iteration"),
    "plan_revised": _expansion("sub_plan"),
    "child_execution_started": _expansion("child"),
}
