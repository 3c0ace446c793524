"""evolve(state, event): the fold. Applies one committed-or-about-to-commit event.

Pure with respect to the outside world: no clock (timestamps come from the event),
no I/O, no randomness. Replaying an execution's log through it rebuilds the state
exactly; that is how recovery and time travel work. The events of plans that grow
at runtime are folded in `evolve_grown.py`. The events emitted most (a task's
queued, dispatched, started, succeeded; execution_started and _completed) are
folded by `folds.py` from their values: here they are read from the message and
passed to it; the Machine passes the values it built them from (`Step.emit_folded`).
"""

from __future__ import annotations

from collections.abc import Callable

from execplan.executor.decide import evolve_grown, folds, requests, usage
from execplan.executor.state import (
    ExecutionState,
    Limits,
    Timer,
)
from execplan.executor.task_errors import TaskError, timeout_error
from execplan.executor.values import from_struct, from_value
from execplan.search.codec import decode_map
from execplan.usage.codec import decode_budget, decode_usage
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex


def decode_limits(recorded: ev.GrowthLimits) -> Limits:
    return Limits(
        for_each_bytes=recorded.for_each_bytes,
        sub_plan_tasks=recorded.sub_plan_tasks,
        nesting_depth=recorded.nesting_depth,
        execution_tasks=recorded.execution_tasks,
    )


def _started(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.execution_started
    caps = body.caps
    folds.execution_started(
        state,
        at,
        inputs=from_struct(body.inputs),
        request_id=body.request_id,
        fairness_key=body.fairness_key,
        trace_context=dict(body.trace_context),
        parent_execution_id=body.parent_execution_id,
        parent_task_id=body.parent_task_id,
        depth=body.depth,
        limits=decode_limits(body.limits) if body.HasField("limits") else None,
        search_attributes=folds.recorded_attributes(body.search_attributes),
        budget=decode_budget(body.budget) if body.HasField("budget") else None,
        max_for_each_items=caps.max_for_each_items,
        max_attempts=caps.max_attempts,
    )


def _queued(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_queued
    task = state.task(body.task_id)
    folds.queued(state, at, task, body.phase, body.attempt, body.iteration)


def _dispatched(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_dispatched
    token = body.token
    estimate = decode_usage(body.estimate) if body.HasField("estimate") else None
    folds.dispatched(
        state,
        at,
        state.task(body.task_id),
        body.phase,
        token.attempt,
        token.lease_epoch,
        body.worker_id,
        body.principal,
        estimate,
    )


def _task_started(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    folds.started(state, at, state.task(event.task_started.task_id))


def _succeeded(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_succeeded
    token = body.token
    folds.succeeded(
        state,
        at,
        state.task(body.task_id),
        body.phase,
        token.attempt,
        token.lease_epoch,
        body.output,
        body.HasField("cache_hit"),
    )


def _failure(
    state: ExecutionState, task_id: str, phase: int, error: TaskError, *, final: bool, at: int
) -> None:
    task = state.task(task_id)
    folds.finish_attempt(task, at, error)
    task.error = error
    if not final:
        return
    if phase == ex.TASK_PHASE_COMPENSATION:
        task.state = ex.TASK_STATE_COMPENSATION_FAILED
        task.finished_ms = at
        return
    state.consecutive_failures += 1
    state.any_failed = True
    folds.settle(state, task, ex.TASK_STATE_FAILED, at)


def _failed(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_failed
    error = TaskError.from_proto(body.error)
    _failure(state, body.task_id, body.phase, error, final=body.final, at=at)


def _timed_out(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_timed_out
    error = timeout_error(body.timeout)
    _failure(state, body.task_id, body.phase, error, final=body.final, at=at)


def _retry_scheduled(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_retry_scheduled
    task = state.task(body.task_id)
    task.state = ex.TASK_STATE_BACKING_OFF
    task.status_message = body.reason


def _requeued(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_requeued
    task = state.task(body.task_id)
    task.state = ex.TASK_STATE_QUEUED
    task.worker_id = ""
    task.principal = ""
    task.queued_ms = at
    task.status_message = body.reason
    if task.attempts:
        task.attempts[-1].finished_ms = at


def _skipped(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    task = state.task(event.task_skipped.task_id)
    task.status_message = event.task_skipped.reason
    folds.settle(state, task, ex.TASK_STATE_SKIPPED, at)


def _parked(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_parked
    task = state.task(body.task_id)
    task.state = ex.TASK_STATE_PARKED if body.parked else ex.TASK_STATE_QUEUED
    task.status_message = f"circuit breaker {body.breaker_type} open" if body.parked else ""
    if not body.parked:
        task.queued_ms = at  # schedule_to_start counts from here, not while parked


def _cancelled(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_cancelled
    task = state.task(body.task_id)
    task.status_message = body.reason
    if task.attempts and not task.attempts[-1].finished_ms:
        task.attempts[-1].finished_ms = at
    folds.settle(state, task, ex.TASK_STATE_CANCELLED, at)


def _timer_scheduled(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.timer_scheduled
    task = state.task(body.task_id)
    fire_at = body.fire_at.ToMilliseconds()
    state.timers[body.timer_id] = Timer(body.timer_id, task.index, body.purpose, fire_at)
    if body.purpose in (ev.TIMER_PURPOSE_SLEEP, ev.TIMER_PURPOSE_EVENT_TIMEOUT):
        task.state = ex.TASK_STATE_WAITING
        if not task.started_ms:
            task.started_ms = at


def _timer_fired(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    state.timers.pop(event.timer_fired.timer_id, None)


def _external_event(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    # An event is a latch: once received, every wait on its name sees the latest data.
    body = event.external_event_received
    data = from_value(body.data)
    state.mailbox[body.name] = [data]
    params = requests.digest(body.name, data)
    requests.remember(state, body.request_id, "send_event", params, body.task_id)


def _paused(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    state.paused = True
    state.state = ex.EXECUTION_STATE_PAUSED
    body = event.execution_paused
    requests.remember(state, body.request_id, "pause", requests.digest(body.reason), "")


def _resumed(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    state.paused = False
    state.state = ex.EXECUTION_STATE_RUNNING
    body = event.execution_resumed
    requests.remember(state, body.request_id, "resume", requests.digest(), "")


def _cancel_requested(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    state.cancel_requested = True
    body = event.execution_cancel_requested
    kind = "terminate" if body.terminate else "cancel"
    requests.remember(state, body.request_id, kind, requests.digest(body.reason), "")


def _compensation_started(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    state.state = ex.EXECUTION_STATE_COMPENSATING
    state.compensation_queue = [
        _index(state, task_id) for task_id in event.compensation_started.task_ids
    ]


def _index(state: ExecutionState, task_id: str) -> int:
    index = state.index_of(task_id)
    if index is None:
        raise KeyError(task_id)
    return index


def _completed(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.execution_completed
    error = TaskError.from_proto(body.error) if body.HasField("error") else None
    folds.execution_completed(state, at, body.state, body.outputs, error, body.failed_task_id)


def _ignore(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    """Events folded elsewhere (usage: decide/usage.py)."""


def _progress(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_progress
    task = state.task(body.task_id)
    task.progress = from_value(body.progress)
    task.progress_ms = at


def _attributes_updated(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    for name, value in decode_map(event.search_attributes_updated.attributes).items():
        if value is None:
            state.search_attributes.pop(name, None)
        else:
            state.search_attributes[name] = value


# Each handler gets the event's time (`recorded_at`) in milliseconds as `at`.
_HANDLERS: dict[str, Callable[[ExecutionState, ev.ExecutionEvent, int], None]] = {
    "execution_started": _started,
    "task_queued": _queued,
    "task_dispatched": _dispatched,
    "task_started": _task_started,
    "task_succeeded": _succeeded,
    "task_failed": _failed,
    "task_timed_out": _timed_out,
    "task_retry_scheduled": _retry_scheduled,
    "task_requeued": _requeued,
    "task_skipped": _skipped,
    "task_parked": _parked,
    "task_cancelled": _cancelled,
    "timer_scheduled": _timer_scheduled,
    "timer_fired": _timer_fired,
    "external_event_received": _external_event,
    "execution_paused": _paused,
    "execution_resumed": _resumed,
    "execution_cancel_requested": _cancel_requested,
    "compensation_started": _compensation_started,
    "execution_completed": _completed,
    # Usage and budgets: all of it is in `spend`, folded by decide/usage.py.
    "task_usage": _ignore,
    "budget_changed": _ignore,
    **evolve_grown.HANDLERS,
    "task_progress": _progress,
    "search_attributes_updated": _attributes_updated,
}


def evolve(state: ExecutionState, event: ev.ExecutionEvent, at: int | None = None) -> str:
    """Folds `event` into `state`; its kind (the step that emitted it keeps it). `at`:
    the event's `recorded_at` in milliseconds when the caller has it (the step that
    stamped it), else read from the event."""
    kind = event.WhichOneof("kind")
    if kind is None:
        raise ValueError(f"event {event.sequence} of {event.execution_id} has no kind")
    if at is None:
        at = event.recorded_at.ToMilliseconds()
    _HANDLERS[kind](state, event, at)
    spend = usage.FOLDS.get(kind)
    if spend is not None:
        spend(state, event)
    state.last_sequence = event.sequence
    state.updated_ms = at
    return kind
