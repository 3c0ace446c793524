"""The executor's in-memory view of an ExecutionPlan.

Walking protobuf fields from Python costs several times a parse (docs/benchmarks.md,
"Costs the design rests on"), so a plan is decoded once into plain objects, shared
by every execution pinned to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from execplan.executor.expressions.bindings import (
    BindingNode,
    Expr,
    StructBinding,
    decode_binding_value,
    decode_expression,
    reads_of,
)
from execplan.executor.values import JsonValue, from_value
from execplan.flow.capacity import Request
from execplan.flow.rates import BucketSettings
from execplan.usage import Budget
from execplan.usage.codec import decode_budget
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2, workflow_pb2

BUILTIN_SLEEP = plan_pb2.BUILTIN_KIND_SLEEP
BUILTIN_WAIT = plan_pb2.BUILTIN_KIND_WAIT_FOR_EVENT
BUILTIN_WORKFLOW = plan_pb2.BUILTIN_KIND_WORKFLOW
# The newest plan format this executor runs: 2 adds for_each, repeat, child workflows
# and dynamic sub-plans (docs/runtime-plans.md), 3 budgets and estimates (docs/usage.md).
# A newer plan is refused, not run wrong.
RUNNABLE_FORMAT_VERSION = 3
BUILTIN_HTTP = plan_pb2.BUILTIN_KIND_HTTP
NO_REQUEST = Request()


@dataclass(frozen=True, slots=True)
class RetryView:
    max_attempts: int
    initial_interval_ms: int
    backoff_coefficient: float
    max_interval_ms: int
    jitter: float
    non_retryable: frozenset[str]


@dataclass(frozen=True, slots=True)
class TimeoutsView:
    schedule_to_start_ms: int
    start_to_close_ms: int
    heartbeat_ms: int
    schedule_to_close_ms: int


@dataclass(frozen=True, slots=True)
class BreakerView:
    """A node's circuit breaker policy (the breaker itself: decide/breaker.py)."""

    failure_threshold: int
    open_for_ms: int
    half_open_max_calls: int
    failure_rate_threshold: float
    window_ms: int
    fail_fast: bool
    # One breaker per task type and key value (`circuit_breaker.key`); None: per type.
    key: Expr | None = None


@dataclass(frozen=True, slots=True)
class LimitView:
    """A concurrency limit across executions (`Task.limit`)."""

    name: str
    key: Expr | None
    max: int


@dataclass(frozen=True, slots=True)
class RateUseView:
    """Units an attempt takes from a token bucket (`Task.rate_limits`)."""

    name: str
    key: Expr | None
    units: int
    units_expr: Expr | None


@dataclass(frozen=True, slots=True)
class CacheView:
    key: Expr | None  # None: a digest of the task type and its resolved inputs
    ttl_ms: int  # 0: until purged


@dataclass(frozen=True, slots=True)
class FlowView:
    """A node's flow control (docs/flow-control.md); None on nodes without any."""

    limit: LimitView | None
    rate_limits: tuple[RateUseView, ...]
    cache: CacheView | None


@dataclass(frozen=True, slots=True)
class SideTaskView:
    type: str
    inputs: StructBinding
    retry: RetryView
    timeouts: TimeoutsView
    inherits_inputs: bool


@dataclass(frozen=True, slots=True)
class RepeatView:
    until: Expr
    max_iterations: int


@dataclass(frozen=True, slots=True)
class NodeView:
    index: int
    task_id: str
    type: str
    builtin: int
    upstream: tuple[int, ...]
    downstream: tuple[int, ...]
    priority: int
    rank: int
    trigger: int
    condition: Expr | None
    inputs: StructBinding
    reads: frozenset[str]
    retry: RetryView
    timeouts: TimeoutsView
    fallback: SideTaskView | None
    compensation: SideTaskView | None
    require_labels: tuple[tuple[str, str], ...]
    prefer_labels: tuple[tuple[str, str], ...]
    environment: str
    secrets: tuple[str, ...]

    def side(self, phase: int) -> SideTaskView | None:
        """The fallback or compensation that a phase runs; None for the main phase."""
        if phase == ex.TASK_PHASE_FALLBACK:
            return self.fallback
        if phase == ex.TASK_PHASE_COMPENSATION:
            return self.compensation
        return None

    def type_for(self, phase: int) -> str:
        """The task type an attempt of this phase runs (a worker must have registered it)."""
        side = self.side(phase)
        return side.type if side is not None else self.type

    def retry_for(self, phase: int) -> RetryView:
        """Fallbacks and compensations retry under their own policies."""
        side = self.side(phase)
        return side.retry if side is not None else self.retry

    def timeouts_for(self, phase: int) -> TimeoutsView:
        """Fallbacks and compensations run under their own resolved timeouts."""
        side = self.side(phase)
        return side.timeouts if side is not None else self.timeouts

    breaker: BreakerView | None = None
    # Usage (docs/usage.md): the task's own budget, and its estimate per counter (an
    # amount, or an expression evaluated at dispatch).
    budget: Budget | None = None
    estimate: tuple[tuple[str, float, Expr | None], ...] = ()
    # Plans that grow at runtime (docs/runtime-plans.md): None/0/"" when unused.
    for_each: Expr | None = None
    max_parallel: int = 0
    repeat: RepeatView | None = None
    # builtin.workflow: the registered workflow (name, version "" = the latest).
    workflow: tuple[str, str] | None = None
    dynamic: bool = False

    def reads_variable(self, *names: str) -> bool:
        """Does the condition read one of these runtime variables (`item`...)?"""
        return self.condition is not None and any(
            name in self.condition.reads_variables for name in names
        )

    flow: FlowView | None = None
    # What an attempt takes of a worker's capacity (`resources`); empty: nothing.
    request: Request = NO_REQUEST
    isolate: bool = False


@dataclass(frozen=True, slots=True)
class InputView:
    name: str
    type: int
    required: bool
    default: JsonValue
    has_default: bool


@dataclass(slots=True)
class PlanView:
    plan_id: str
    workflow_name: str
    workflow_version: str
    on_failure: int
    max_parallel: int
    pause_after_failures: int
    inputs: tuple[InputView, ...]
    nodes: tuple[NodeView, ...]
    outputs: tuple[tuple[str, BindingNode], ...]
    index_of: dict[str, int] = field(default_factory=dict)
    # Does any node have a circuit breaker? (Most plans have none: their committed
    # events need not be shown to the breakers at all.)
    has_breakers: bool = False
    # The workflow's budget (the server's default applies where it sets no limit).
    budget: Budget | None = None
    format_version: int = 1

    def unrunnable(self) -> str:
        """Why this executor cannot run the plan ("" when it can)."""
        if self.format_version > RUNNABLE_FORMAT_VERSION:
            return (
                f"plan {self.plan_id} has format_version {self.format_version}; this "
                f"executor runs plans up to format {RUNNABLE_FORMAT_VERSION}"
            )
        return ""

    # Token buckets the workflow declares: (name, settings).
    rate_limits: tuple[tuple[str, BucketSettings], ...] = ()
    # Does any node have flow control (limit, rate_limits, cache)?
    has_flow: bool = False

    @property
    def fail_fast(self) -> bool:
        return self.on_failure in (
            workflow_pb2.ON_FAILURE_FAIL_FAST,
            workflow_pb2.ON_FAILURE_UNSPECIFIED,
        )


def _retry(policy: plan_pb2.ResolvedRetryPolicy) -> RetryView:
    return RetryView(
        max_attempts=max(1, policy.max_attempts),
        initial_interval_ms=policy.initial_interval.ToMilliseconds(),
        backoff_coefficient=policy.backoff_coefficient or 1.0,
        max_interval_ms=policy.max_interval.ToMilliseconds(),
        jitter=policy.jitter,
        non_retryable=frozenset(policy.non_retryable_errors),
    )


def _timeouts(timeouts: plan_pb2.ResolvedTimeouts) -> TimeoutsView:
    return TimeoutsView(
        schedule_to_start_ms=timeouts.schedule_to_start.ToMilliseconds(),
        start_to_close_ms=timeouts.start_to_close.ToMilliseconds(),
        heartbeat_ms=timeouts.heartbeat.ToMilliseconds(),
        schedule_to_close_ms=timeouts.schedule_to_close.ToMilliseconds(),
    )


def _breaker(node: plan_pb2.PlanNode) -> BreakerView | None:
    if not node.HasField("circuit_breaker"):
        return None
    b = node.circuit_breaker
    return BreakerView(
        failure_threshold=b.failure_threshold,
        open_for_ms=b.open_for.ToMilliseconds(),
        half_open_max_calls=max(1, b.half_open_max_calls),
        failure_rate_threshold=b.failure_rate_threshold,
        window_ms=b.window.ToMilliseconds(),
        fail_fast=b.on_open == workflow_pb2.BREAKER_OPEN_ACTION_FAIL_FAST,
        key=_optional(b, "key"),
    )


def _optional(message: object, name: str) -> Expr | None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    return decode_expression(getattr(message, name))


def _flow(node: plan_pb2.PlanNode) -> FlowView | None:
    has_limit, has_cache = node.HasField("limit"), node.HasField("cache")
    if not has_limit and not has_cache and not node.rate_limits:
        return None
    limit = None
    if has_limit:
        limit = LimitView(
            node.limit.name or node.type, _optional(node.limit, "key"), node.limit.max
        )
    cache = None
    if has_cache:
        cache = CacheView(_optional(node.cache, "key"), node.cache.ttl.ToMilliseconds())
    uses = tuple(
        RateUseView(u.name, _optional(u, "key"), u.units or 1, _optional(u, "units_expression"))
        for u in node.rate_limits
    )
    return FlowView(limit, uses, cache)


def _request(res: plan_pb2.ResourceBinding) -> Request:
    if not (res.cpu_millis or res.memory_bytes or res.gpu or res.custom):
        return NO_REQUEST
    return Request(res.cpu_millis, res.memory_bytes, res.gpu, dict(res.custom))


def _bindings(bindings: object) -> StructBinding:
    return StructBinding(
        tuple((b.name, decode_binding_value(b.value)) for b in bindings)  # type: ignore[attr-defined]
    )


def _side_task(node: plan_pb2.PlanNode, name: str) -> SideTaskView | None:
    if not node.HasField(name):  # type: ignore[arg-type]
        return None
    side: plan_pb2.PlanSideTask = getattr(node, name)
    return SideTaskView(
        type=side.type,
        inputs=_bindings(side.bindings),
        retry=_retry(side.retry),
        timeouts=_timeouts(side.timeouts),
        inherits_inputs=side.inherits_inputs,
    )


class _Shared:
    """The retry policies and timeouts of one plan's nodes, decoded once each: a
    compiled plan's nodes mostly hold the same ones (resolved from `defaults`), and
    the views are immutable, so nodes share them: a 1,000-node plan decodes in ~13 ms
    instead of ~21 and holds two views instead of 2,000. Keyed by the message's
    bytes, which cost a tenth of decoding it."""

    def __init__(self) -> None:
        self.retries: dict[bytes, RetryView] = {}
        self.timeouts: dict[bytes, TimeoutsView] = {}

    def retry(self, policy: plan_pb2.ResolvedRetryPolicy) -> RetryView:
        key = policy.SerializeToString()
        view = self.retries.get(key)
        if view is None:
            view = self.retries[key] = _retry(policy)
        return view

    def timeouts_of(self, timeouts: plan_pb2.ResolvedTimeouts) -> TimeoutsView:
        key = timeouts.SerializeToString()
        view = self.timeouts.get(key)
        if view is None:
            view = self.timeouts[key] = _timeouts(timeouts)
        return view


def _labels(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items())) if labels else ()


def _node(node: plan_pb2.PlanNode, shared: _Shared) -> NodeView:
    inputs = _bindings(node.bindings)
    condition = decode_expression(node.condition) if node.HasField("condition") else None
    for_each = decode_expression(node.for_each) if node.HasField("for_each") else None
    repeat = None
    if node.HasField("repeat"):
        repeat = RepeatView(decode_expression(node.repeat.until), node.repeat.max_iterations)
    reads = reads_of(inputs) | (set(condition.reads_tasks) if condition else set())
    for expr in (for_each, repeat.until if repeat else None):
        if expr is not None:
            reads |= set(expr.reads_tasks)
    res = node.resources
    return NodeView(
        index=node.index,
        task_id=node.task_id,
        type=node.type,
        builtin=node.builtin,
        upstream=tuple(node.upstream),
        downstream=tuple(node.downstream),
        priority=node.priority,
        rank=node.critical_path_rank,
        trigger=node.trigger,
        condition=condition,
        inputs=inputs,
        reads=frozenset(reads),
        retry=shared.retry(node.retry),
        timeouts=shared.timeouts_of(node.timeouts),
        fallback=_side_task(node, "fallback"),
        compensation=_side_task(node, "compensation"),
        require_labels=_labels(res.require_labels),
        prefer_labels=_labels(res.prefer_labels),
        environment=res.environment,
        secrets=tuple(res.secrets),
        breaker=_breaker(node),
        budget=decode_budget(node.budget) if node.HasField("budget") else None,
        estimate=tuple(
            (
                a.counter,
                a.amount,
                decode_expression(a.expression) if a.HasField("expression") else None,
            )
            for a in node.estimate.amounts
        )
        if node.HasField("estimate")
        else (),
        for_each=for_each,
        max_parallel=node.max_parallel,
        repeat=repeat,
        workflow=(node.workflow.name, node.workflow.version) if node.HasField("workflow") else None,
        dynamic=node.dynamic,
        flow=_flow(node),
        request=_request(res),
        isolate=res.isolate,
    )


def decode_plan(plan: plan_pb2.ExecutionPlan) -> PlanView:
    shared = _Shared()
    nodes = tuple(_node(node, shared) for node in plan.nodes)
    view = PlanView(
        plan_id=plan.plan_id,
        workflow_name=plan.workflow_name,
        workflow_version=plan.workflow_version,
        on_failure=plan.on_failure,
        max_parallel=plan.max_parallel,
        pause_after_failures=plan.pause_after_failures,
        inputs=tuple(
            InputView(
                name=i.name,
                type=i.type,
                required=i.required,
                default=from_value(i.default) if i.HasField("default") else None,
                has_default=i.HasField("default"),
            )
            for i in plan.inputs
        ),
        nodes=nodes,
        outputs=tuple((o.name, decode_binding_value(o.value)) for o in plan.outputs),
    )
    view.index_of = {node.task_id: node.index for node in nodes}
    view.has_breakers = any(node.breaker is not None for node in nodes)
    view.budget = decode_budget(plan.budget) if plan.HasField("budget") else None
    view.format_version = plan.format_version
    view.has_flow = any(node.flow is not None for node in nodes)
    view.rate_limits = tuple(
        (r.name, BucketSettings(r.units, r.period.ToMilliseconds(), r.burst or r.units))
        for r in plan.rate_limits
    )
    return view
