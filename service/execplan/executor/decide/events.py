"""Typed constructors of every event the machine decides: one function per kind.

    step.emit(events.task_queued("charge", MAIN, attempt=2))

Each returns an `ExecutionEvent` with only its kind's body set; `Step.emit` stamps
the execution id, the next sequence number and the time, folds it into the state and
records it. The body is built exactly as the log has always stored it (message fields
such as `token` present even when zero), so replay compares recorded and re-decided
events byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from execplan.executor.state import Allowance, BudgetHold, Limits
from execplan.executor.task_errors import TaskError
from execplan.executor.values import JsonValue, fill_struct, fill_value
from execplan.search import SearchValue
from execplan.search.codec import encode_value
from execplan.usage import Budget
from execplan.usage.codec import encode_budget, encode_usage
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2 as pb_plan

Event = ev.ExecutionEvent


def _phase(phase: int) -> ex.TaskPhase.ValueType:
    return cast(ex.TaskPhase.ValueType, phase)


def token(attempt: int, epoch: int) -> ev.AttemptToken:
    return ev.AttemptToken(attempt=attempt, lease_epoch=epoch)


_AttemptBody = (
    ev.TaskDispatched
    | ev.TaskStarted
    | ev.TaskRequeued
    | ev.TaskSucceeded
    | ev.TaskFailed
    | ev.TaskUsage
)


def _attempt(body: _AttemptBody, task_id: str, phase: int, attempt: int, epoch: int) -> None:
    """Fills the attempt a per-task body names (task, phase, token), in place."""
    body.task_id = task_id
    body.phase = _phase(phase)
    _token(body.token, attempt, epoch)


def _token(field: ev.AttemptToken, attempt: int, epoch: int) -> None:
    """Fills a body's `token` in place: present even when both are zero, as `token()`
    in a body's constructor makes it. (The hot constructors below build their event
    in place: a body built alone is copied again into the event.)"""
    field.SetInParent()
    field.attempt = attempt
    field.lease_epoch = epoch


# -- the execution -----------------------------------------------------------------


def execution_started(
    *,
    plan_id: str,
    workflow_name: str,
    workflow_version: str,
    inputs: Mapping[str, JsonValue],
    request_id: str,
    fairness_key: str,
    trace_context: Mapping[str, str],
    allowance: Allowance | None = None,
    parent_execution_id: str = "",
    parent_task_id: str = "",
    depth: int = 0,
    limits: Limits | None = None,
    search_attributes: Mapping[str, SearchValue] | None = None,
) -> Event:
    # Built in place: a body built alone would be copied again into the event.
    event = Event()
    body = event.execution_started
    body.plan_id = plan_id
    body.workflow_name = workflow_name
    body.workflow_version = workflow_version
    fill_struct(body.inputs, inputs)
    body.request_id = request_id
    body.fairness_key = fairness_key
    if trace_context:
        body.trace_context.update(trace_context)
    body.parent_execution_id = parent_execution_id
    body.parent_task_id = parent_task_id
    body.depth = depth
    if search_attributes:
        recorded = body.search_attributes
        for name, value in search_attributes.items():
            recorded[name].CopyFrom(encode_value(value))
    if limits is not None:
        body.limits.sub_plan_tasks = limits.sub_plan_tasks
        body.limits.nesting_depth = limits.nesting_depth
        body.limits.execution_tasks = limits.execution_tasks
        body.limits.for_each_bytes = limits.for_each_bytes
    if allowance is not None:
        if allowance.budget is not None:
            encode_budget(allowance.budget, body.budget)
        if allowance.max_for_each_items or allowance.max_attempts:
            body.caps.max_for_each_items = allowance.max_for_each_items
            body.caps.max_attempts = allowance.max_attempts
    return event


def execution_paused(reason: str, request_id: str, hold: BudgetHold | None = None) -> Event:
    body = ev.ExecutionPaused(reason=reason, request_id=request_id)
    if hold is not None:
        body.budget_exceeded.CopyFrom(hold.to_proto())
    return Event(execution_paused=body)


def execution_resumed(request_id: str) -> Event:
    return Event(execution_resumed=ev.ExecutionResumed(request_id=request_id))


def execution_cancel_requested(reason: str, request_id: str, terminate: bool) -> Event:
    body = ev.ExecutionCancelRequested(reason=reason, request_id=request_id, terminate=terminate)
    return Event(execution_cancel_requested=body)


def compensation_started(task_ids: list[str], reason: str) -> Event:
    return Event(compensation_started=ev.CompensationStarted(task_ids=task_ids, reason=reason))


def execution_completed(
    state: int,
    *,
    failed_task_id: str = "",
    outputs: Mapping[str, JsonValue] | None = None,
    error: TaskError | None = None,
    used: Mapping[str, float] | None = None,
) -> Event:
    event = Event()  # built in place: a body built alone is copied again into the event
    body = event.execution_completed
    body.SetInParent()
    body.state = cast(ex.ExecutionState.ValueType, state)
    body.failed_task_id = failed_task_id
    if outputs is not None:
        fill_struct(body.outputs, outputs)
    if error is not None:
        error.fill(body.error)
    if used:
        encode_usage(used, body.usage)
    return event


def external_event_received(name: str, data: JsonValue, request_id: str, task_id: str) -> Event:
    body = ev.ExternalEventReceived(name=name, request_id=request_id, task_id=task_id)
    fill_value(body.data, data)
    return Event(external_event_received=body)


# -- a task ------------------------------------------------------------------------


def task_queued(task_id: str, phase: int, attempt: int, iteration: int = 0) -> Event:
    event = Event()
    body = event.task_queued
    body.task_id = task_id
    body.phase = _phase(phase)
    body.attempt = attempt
    body.iteration = iteration
    return event


def task_skipped(task_id: str, reason: str) -> Event:
    return Event(task_skipped=ev.TaskSkipped(task_id=task_id, reason=reason))


def task_dispatched(
    task_id: str,
    phase: int,
    attempt: int,
    epoch: int,
    *,
    worker_id: str,
    idempotency_key: str,
    principal: str,
    estimate: Mapping[str, float] | None = None,
) -> Event:
    event = Event()
    body = event.task_dispatched
    _attempt(body, task_id, phase, attempt, epoch)
    body.worker_id = worker_id
    body.idempotency_key = idempotency_key
    body.principal = principal
    if estimate:
        encode_usage(estimate, body.estimate)
    return event


def task_started(task_id: str, phase: int, attempt: int, epoch: int, worker_id: str) -> Event:
    event = Event()
    body = event.task_started
    _attempt(body, task_id, phase, attempt, epoch)
    body.worker_id = worker_id
    return event


def task_requeued(task_id: str, phase: int, attempt: int, epoch: int, reason: str) -> Event:
    event = Event()
    body = event.task_requeued
    _attempt(body, task_id, phase, attempt, epoch)
    body.reason = reason
    return event


def task_succeeded(
    task_id: str,
    phase: int,
    attempt: int,
    epoch: int,
    output: JsonValue,
    *,
    with_output: bool = True,
    cache_hit: ev.CacheHit | None = None,
) -> Event:
    """`with_output` False: a for_each task, whose output (the list of its instances'
    outputs, each in its own event) is not written again."""
    event = Event()
    body = event.task_succeeded
    _attempt(body, task_id, phase, attempt, epoch)
    if with_output:
        fill_value(body.output, output)
    if cache_hit is not None:
        body.cache_hit.CopyFrom(cache_hit)
    return event


def task_failed(
    task_id: str, phase: int, attempt: int, epoch: int, error: TaskError, *, final: bool
) -> Event:
    event = Event()
    body = event.task_failed
    _attempt(body, task_id, phase, attempt, epoch)
    body.error.SetInParent()
    error.fill(body.error)
    body.final = final
    return event


def task_timed_out(
    task_id: str, phase: int, attempt: int, epoch: int, kind: int, *, final: bool
) -> Event:
    body = ev.TaskTimedOut(
        task_id=task_id,
        phase=_phase(phase),
        token=token(attempt, epoch),
        timeout=cast(ev.TimeoutKind.ValueType, kind),
        final=final,
    )
    return Event(task_timed_out=body)


def task_retry_scheduled(
    task_id: str, phase: int, next_attempt: int, fire_at_ms: int, reason: str
) -> Event:
    body = ev.TaskRetryScheduled(
        task_id=task_id, phase=_phase(phase), next_attempt=next_attempt, reason=reason
    )
    body.fire_at.FromMilliseconds(fire_at_ms)
    return Event(task_retry_scheduled=body)


def task_parked(task_id: str, phase: int, breaker_type: str, parked: bool) -> Event:
    body = ev.TaskParked(
        task_id=task_id, phase=_phase(phase), breaker_type=breaker_type, parked=parked
    )
    return Event(task_parked=body)


def task_cancelled(task_id: str, phase: int, reason: str) -> Event:
    body = ev.TaskCancelled(task_id=task_id, phase=_phase(phase), reason=reason)
    return Event(task_cancelled=body)


# -- plans that grow at runtime (docs/runtime-plans.md) ----------------------------


def task_expanded(task_id: str, items: list[JsonValue]) -> Event:
    body = ev.TaskExpanded(task_id=task_id, count=len(items))
    body.items.SetInParent()  # present even when empty: the list was evaluated
    for item in items:
        fill_value(body.items.values.add(), item)
    return Event(task_expanded=body)


def iteration_completed(
    task_id: str, iteration: int, attempt: int, epoch: int, output: JsonValue, *, done: bool
) -> Event:
    body = ev.IterationCompleted(
        task_id=task_id, iteration=iteration, token=token(attempt, epoch), done=done
    )
    fill_value(body.output, output)
    return Event(iteration_completed=body)


def plan_revised(
    task_id: str,
    revision: int,
    plan: pb_plan.ExecutionPlan,
    inputs: Mapping[str, JsonValue],
    *,
    attempt: int,
    epoch: int,
) -> Event:
    body = ev.PlanRevised(task_id=task_id, revision=revision, token=token(attempt, epoch))
    body.plan.CopyFrom(plan)
    fill_struct(body.inputs, inputs)
    return Event(plan_revised=body)


def child_execution_started(
    task_id: str,
    child_execution_id: str,
    *,
    plan_id: str,
    workflow_name: str,
    workflow_version: str,
    request_id: str,
    attempt: int,
    epoch: int,
) -> Event:
    body = ev.ChildExecutionStarted(
        task_id=task_id,
        child_execution_id=child_execution_id,
        plan_id=plan_id,
        workflow_name=workflow_name,
        workflow_version=workflow_version,
        request_id=request_id,
        token=token(attempt, epoch),
    )
    return Event(child_execution_started=body)


def child_execution_ended(
    task_id: str,
    child_execution_id: str,
    state: int,
    outputs: Mapping[str, JsonValue] | None,
    error: TaskError | None,
    *,
    used: Mapping[str, float] | None = None,
) -> Event:
    body = ev.ChildExecutionEnded(
        task_id=task_id,
        child_execution_id=child_execution_id,
        state=cast(ex.ExecutionState.ValueType, state),
    )
    if outputs is not None:
        fill_struct(body.outputs, outputs)
    if error is not None:
        error.fill(body.error)
    if used:
        encode_usage(used, body.usage)
    return Event(child_execution_ended=body)


# -- timers ------------------------------------------------------------------------


def timer_scheduled(timer_id: str, task_id: str, purpose: int, fire_at_ms: int | None) -> Event:
    """`fire_at_ms` None: a wait without a timeout (no timer will fire)."""
    body = ev.TimerScheduled(
        timer_id=timer_id, task_id=task_id, purpose=cast(ev.TimerPurpose.ValueType, purpose)
    )
    if fire_at_ms is not None:
        body.fire_at.FromMilliseconds(fire_at_ms)
    return Event(timer_scheduled=body)


def timer_fired(timer_id: str, task_id: str, purpose: int) -> Event:
    body = ev.TimerFired(
        timer_id=timer_id, task_id=task_id, purpose=cast(ev.TimerPurpose.ValueType, purpose)
    )
    return Event(timer_fired=body)


# -- usage and budgets (docs/usage.md) ---------------------------------------------


def task_usage(
    task_id: str,
    phase: int,
    attempt: int,
    epoch: int,
    usage: Mapping[str, float],
    *,
    report: int,
    worker_id: str,
) -> Event:
    event = Event()
    body = event.task_usage
    _attempt(body, task_id, phase, attempt, epoch)
    body.report = report
    body.worker_id = worker_id
    encode_usage(usage, body.usage)
    return event


def budget_changed(
    budget: Budget, requested: Budget, request_id: str, reason: str, task_id: str = ""
) -> Event:
    body = ev.BudgetChanged(request_id=request_id, reason=reason, task_id=task_id)
    encode_budget(budget, body.budget)
    encode_budget(requested, body.requested)
    return Event(budget_changed=body)


# -- what a running task reports --------------------------------------------------


def task_progress(task_id: str, attempt: int, epoch: int, progress: JsonValue) -> Event:
    body = ev.TaskProgress(task_id=task_id, token=token(attempt, epoch))
    fill_value(body.progress, progress)
    return Event(task_progress=body)


def search_attributes_updated(task_id: str, updates: Mapping[str, SearchValue | None]) -> Event:
    """`updates`: None removes a key (an empty SearchAttributeValue on the wire)."""
    body = ev.SearchAttributesUpdated(task_id=task_id)
    for name, value in updates.items():
        if value is None:
            body.attributes[name].SetInParent()
        else:
            body.attributes[name].CopyFrom(encode_value(value))
    return Event(search_attributes_updated=body)
