"""The fold of usage, budgets and runaway caps (docs/usage.md): what `evolve` does to
`ExecutionState.spend` for the events that touch it, after the event's own handler.

    execution_started   the budget in force and the runaway caps
    task_dispatched     a lease: its estimate is reserved (a record per lease exists
                        only once it has an estimate or reported usage); a new
                        attempt counts
    task_usage          usage added to the lease, its task (and the tasks it grew
                        from: an instance's for_each task, a sub-plan task's dynamic
                        task) and the execution; the lease's reservation shrinks by
                        what it reported
    child_execution_ended  what the child used (its children included) added to the
                        builtin.workflow task (and those it grew from) and the
                        execution
    attempt ends        (succeeded, failed, timed out, requeued, cancelled) what the
                        lease still reserved is released
    budget_changed      the budget in force (the execution's, or a task's)
    execution_paused    with `budget_exceeded`: why the budget holds it
    execution_resumed   no longer held

The folds of `execution_started`, `task_dispatched` and `task_succeeded`
(decide/folds.py) do their part here from their values (the first itself, the others
through `leased` and `lease_ended`); the others are read from the event (`FOLDS`).

Reservations are kept per lease and added up per task and per execution as they
change, so a budget check costs the same whatever the execution's size. A for_each
task's usage and reservations are those of all its instances: its `budget` covers
them all (`owners`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from execplan import usage
from execplan.executor.decide import requests
from execplan.executor.state import AttemptSpend, BudgetHold, ExecutionState, LeaseKey, TaskRun
from execplan.usage.codec import decode_budget, decode_change, decode_usage
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex


def _add(into: dict[str, float], amounts: Mapping[str, float], sign: float = 1.0) -> None:
    for name, amount in amounts.items():
        value = into.get(name, 0.0) + sign * amount
        if value > 1e-12 or sign > 0:
            into[name] = value
        else:
            into.pop(name, None)  # released to (about) zero: keep the maps small


def owners(state: ExecutionState, index: int) -> list[int]:
    """Task `index` and the tasks it grew from (an instance's for_each task, a sub-plan
    task's dynamic task, up to a task of the plan): whose usage its usage is too."""
    found = [index]
    grown = state.grown_of(index)
    while grown is not None:
        found.append(grown.parent)
        grown = state.grown_of(grown.parent)
    return found


def _release(state: ExecutionState, key: LeaseKey, amounts: Mapping[str, float]) -> None:
    spend = state.spend
    _add(spend.reserved, amounts, -1.0)
    for index in owners(state, key[0]):
        task = spend.task_reserved.get(index)
        if task is not None:
            _add(task, amounts, -1.0)
            if not task:
                del spend.task_reserved[index]


def leased(
    state: ExecutionState,
    task: TaskRun,
    key: LeaseKey,
    worker_id: str,
    estimate: Mapping[str, float] | None,
) -> None:
    """task_dispatched (folds.dispatched, after the attempt's record was appended).
    `estimate`: the event's, None when it has none (most attempts: no record until
    they report)."""
    spend = state.spend
    if estimate is not None:
        spend.leases[key] = AttemptSpend(worker_id, reserved=dict(estimate))
        _add(spend.reserved, estimate)
        for index in owners(state, task.index):
            _add(spend.task_reserved.setdefault(index, {}), estimate)
    # A re-lease of an attempt is not another attempt (the handler appended this one;
    # each repeat iteration counts its attempts from 1 again).
    *earlier, this = task.attempts
    if key[1] != ex.TASK_PHASE_COMPENSATION and not any(
        r.attempt == this.attempt and r.phase == this.phase and r.iteration == this.iteration
        for r in earlier
    ):
        spend.attempts += 1


def _usage(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    body = event.task_usage
    task = state.task(body.task_id)
    spend = state.spend
    key = (task.index, body.phase, body.token.attempt, body.token.lease_epoch)
    amounts = decode_usage(body.usage)
    lease = spend.leases.get(key)
    if lease is None:
        lease = spend.leases[key] = AttemptSpend(body.worker_id)
    _add(lease.usage, amounts)
    for index in owners(state, task.index):
        _add(spend.tasks.setdefault(index, {}), amounts)
    _add(spend.usage, amounts)
    lease.reports = max(lease.reports, body.report)
    covered = {name: min(held, usage.spent(name, amounts)) for name, held in lease.reserved.items()}
    covered = {name: amount for name, amount in covered.items() if amount > 0}
    if covered:
        _add(lease.reserved, covered, -1.0)
        _release(state, key, covered)


def _token_ended(state: ExecutionState, task_id: str, phase: int, token: ev.AttemptToken) -> None:
    lease_ended(state, (state.task(task_id).index, phase, token.attempt, token.lease_epoch))


def lease_ended(state: ExecutionState, key: LeaseKey) -> None:
    """The attempt `key` names ended: give back what it still held reserved."""
    lease = state.spend.leases.get(key)
    if lease is not None and lease.reserved:
        _release(state, key, lease.reserved)
        lease.reserved = {}


def _failed(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    b = event.task_failed
    _token_ended(state, b.task_id, b.phase, b.token)


def _timed_out(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    b = event.task_timed_out
    _token_ended(state, b.task_id, b.phase, b.token)


def _requeued(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    b = event.task_requeued
    _token_ended(state, b.task_id, b.phase, b.token)


def _cancelled(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    b = event.task_cancelled
    task = state.task(b.task_id)
    # The event names no token: the lease it ended is the task's last one.
    if task.attempts:
        last = task.attempts[-1]
        lease_ended(state, (task.index, last.phase, last.attempt, last.epoch))


def _child_ended(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    body = event.child_execution_ended
    amounts = decode_usage(body.usage)
    if not amounts:
        return
    task = state.task(body.task_id)
    for index in owners(state, task.index):
        _add(state.spend.tasks.setdefault(index, {}), amounts)
    _add(state.spend.usage, amounts)


def _budget_changed(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    body = event.budget_changed
    if body.task_id:
        state.spend.task_budgets[state.task(body.task_id).index] = decode_budget(body.budget)
    else:
        state.spend.budget = decode_budget(body.budget)
    params = change_digest(decode_change(body.requested), body.reason, body.task_id)
    requests.remember(state, body.request_id, "set_budget", params, "")


def change_digest(requested: usage.Budget, reason: str, task_id: str = "") -> str:
    """What makes two SetBudget calls the same (the parameters of a request_id)."""
    limits = [list(pair) for pair in requested.limits]
    if task_id:
        return requests.digest(limits, requested.on_exceeded, reason, task_id)
    return requests.digest(limits, requested.on_exceeded, reason)


def _paused(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    body = event.execution_paused
    if body.HasField("budget_exceeded"):
        state.spend.hold = BudgetHold.from_proto(body.budget_exceeded)


def _resumed(state: ExecutionState, event: ev.ExecutionEvent) -> None:
    state.spend.hold = None


FOLDS: dict[str, Callable[[ExecutionState, ev.ExecutionEvent], None]] = {
    "task_usage": _usage,
    "task_failed": _failed,
    "task_timed_out": _timed_out,
    "task_requeued": _requeued,
    "task_cancelled": _cancelled,
    "child_execution_ended": _child_ended,
    "budget_changed": _budget_changed,
    "execution_paused": _paused,
    "execution_resumed": _resumed,
}
