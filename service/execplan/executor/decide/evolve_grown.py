"""The fold of what grows at run time (docs/runtime-plans.md): part of `evolve`.

    task_expanded            a for_each task's instances: one TaskRun + Grown each
    iteration_completed      a repeat's iteration ended: its output becomes `previous`
    plan_revised             a dynamic task's sub-plan: a Scope and its tasks
    child_execution_started  a builtin.workflow task's child
    child_execution_ended    (informs; the task's own outcome follows)

plus the hooks `evolve` calls for every task: `leaving_pending`, `settled`,
`iteration`, `iteration_of`, `gathered_output` (each a no-op for a plain task).
Pure, like the rest of the fold: a sub-plan is decoded from the event itself.
"""

from __future__ import annotations

from collections.abc import Callable

from execplan.executor.plan_view import decode_plan
from execplan.executor.state import AttemptRecord, ExecutionState, Extra, Grown, Scope, TaskRun
from execplan.executor.values import JsonValue, from_struct, from_value
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex


def extra(state: ExecutionState, index: int) -> Extra:
    """The task's bookkeeping, created on first use (only the fold writes state)."""
    found = state.extras.get(index)
    if found is None:
        found = state.extras[index] = Extra()
    return found


# -- hooks for every task ----------------------------------------------------------


def leaving_pending(state: ExecutionState, task: TaskRun) -> None:
    """An instance leaves PENDING: its for_each task has started one more."""
    if task.state != ex.TASK_STATE_PENDING:
        return
    grown = state.grown_of(task.index)
    if grown is not None and grown.item_index >= 0:
        state.extras[grown.parent].started += 1


def settled(state: ExecutionState, task: TaskRun, outcome: int) -> None:
    """A task reached a terminal state: count it for its for_each task or sub-plan."""
    mine = state.extras.get(task.index)
    if mine is not None and mine.revision and task.status_message.startswith("running"):
        task.status_message = task.status_message.replace("running", "ran", 1)
    grown = state.grown_of(task.index)
    if grown is None:
        return
    if grown.item_index >= 0:
        parent = state.extras[grown.parent]
        parent.finished += 1
        if outcome == ex.TASK_STATE_FAILED:
            parent.failed += 1
    elif grown.scope:
        state.scopes[grown.scope - 1].finished += 1


def iteration(state: ExecutionState, task: TaskRun, number: int, phase: int, at: int) -> None:
    """task_queued of a repeat task: a new iteration restarts its attempt series, and
    its schedule_to_close counts from here."""
    if phase != ex.TASK_PHASE_MAIN or state.node(task.index).repeat is None:
        return
    mine = extra(state, task.index)
    if number != mine.iteration:
        mine.iteration = number
        task.first_queued_ms = at


def iteration_of(state: ExecutionState, task: TaskRun, phase: int) -> int:
    found = state.extras.get(task.index)
    return found.iteration if found is not None and phase == ex.TASK_PHASE_MAIN else 0


def gathered_output(state: ExecutionState, task: TaskRun) -> JsonValue:
    """A for_each task's output: its instances' outputs in item order (None: not one)."""
    found = state.extras.get(task.index)
    if found is None or found.count < 0:
        return None
    tasks = state.tasks
    return [tasks[i].output for i in range(found.first, found.first + found.count)]


# -- the events --------------------------------------------------------------------


def _expanded(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.task_expanded
    parent = state.task(body.task_id)
    index = parent.index
    node = state.node(index)
    scope = state.grown_of(index)
    scope_number = scope.scope if scope is not None else 0
    mine = extra(state, index)
    mine.first = len(state.tasks)
    mine.count = len(body.items.values)
    offset = len(state.plan.nodes)
    for i, item in enumerate(body.items.values):
        task_id = f"{body.task_id}[{i}]"
        at_index = len(state.tasks)
        state.tasks.append(TaskRun(index=at_index))
        state.grown.append(Grown(task_id, node, index, i, from_value(item), scope_number))
        state.grown_index[task_id] = at_index
    assert len(state.tasks) == offset + len(state.grown)
    parent.state = ex.TASK_STATE_RUNNING
    parent.started_ms = parent.started_ms or at


def _iteration_completed(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.iteration_completed
    task = state.task(body.task_id)
    output = from_value(body.output)
    if task.attempts:
        task.attempts[-1].finished_ms = at
    task.output = output
    extra(state, task.index).previous = output


def _plan_revised(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.plan_revised
    task = state.task(body.task_id)
    plan = decode_plan(body.plan)
    base = len(state.tasks)
    prefix = f"{body.task_id}/"
    number = body.revision
    inputs = from_struct(body.inputs)
    payload = body.plan.SerializeToString(deterministic=True)
    state.scopes.append(Scope(number, task.index, plan, base, prefix, inputs, 0, payload))
    for node in plan.nodes:
        task_id = prefix + node.task_id
        at_index = len(state.tasks)
        state.tasks.append(TaskRun(index=at_index, upstream_pending=len(node.upstream)))
        state.grown.append(Grown(task_id, node, task.index, -1, None, number))
        state.grown_index[task_id] = at_index
    extra(state, task.index).revision = number
    if task.attempts:
        task.attempts[-1].finished_ms = at
    task.state = ex.TASK_STATE_RUNNING
    task.worker_id = ""
    task.principal = ""
    task.status_message = f"running its sub-plan ({len(plan.nodes)} tasks)"


def _child_started(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.child_execution_started
    task = state.task(body.task_id)
    mine = extra(state, task.index)
    mine.child_execution_id = body.child_execution_id
    task.state = ex.TASK_STATE_RUNNING
    task.attempt = body.token.attempt
    task.epoch = body.token.lease_epoch
    task.started_ms = at
    task.status_message = f"child execution {body.child_execution_id}"
    task.attempts.append(
        AttemptRecord(
            attempt=body.token.attempt,
            phase=ex.TASK_PHASE_MAIN,
            worker_id="",
            epoch=body.token.lease_epoch,
            dispatched_ms=at,
            iteration=mine.iteration,
        )
    )


def _child_ended(state: ExecutionState, event: ev.ExecutionEvent, at: int) -> None:
    body = event.child_execution_ended
    task = state.task(body.task_id)
    extra = state.extras.get(task.index)
    if extra is None or extra.child_execution_id != body.child_execution_id:
        return  # an earlier child (its usage is folded in decide/usage.py)
    name = ex.ExecutionState.Name(body.state).removeprefix("EXECUTION_STATE_")
    task.status_message = f"child execution {body.child_execution_id} ended {name}"


HANDLERS: dict[str, Callable[[ExecutionState, ev.ExecutionEvent, int], None]] = {
    "task_expanded": _expanded,
    "iteration_completed": _iteration_completed,
    "plan_revised": _plan_revised,
    "child_execution_started": _child_started,
    "child_execution_ended": _child_ended,
}
