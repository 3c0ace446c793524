"""for_each: a task that runs once per item of a list (docs/runtime-plans.md).

    queue(research) -> start: evaluate for_each, check the cap of items and the
        budgets (budgets.fan_out), record task_expanded (the items),
        then start_next: queue instances research[0], research[1]... in item order,
        at most `max_parallel` running at once
    an instance ends -> instance_done -> start_next (the next instance), then
        finish: all ended -> the task succeeds with the list of their outputs;
        one failed for good -> the others are cancelled and the task fails

An extension of `flow` (it queues, settles and ends tasks through it, and flow calls
back here), kept apart because it is one rule. Instances are light: a `TaskRun`
plus a `Grown` pointing at the for_each task's one `NodeView` (state.py); the
items come from the recorded event, never from evaluating `for_each` again.

An instance ending at once (a `when` false, a builtin) must not start the next one
from inside `start_next`, or 10,000 skipped instances would recurse 10,000 deep:
`Step.expanding` marks the for_each tasks whose loop is running.
"""

from __future__ import annotations

import json

from execplan.executor.decide import budgets, events, flow
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError
from execplan.executor.expressions.evaluation import failure
from execplan.executor.plan_view import NodeView
from execplan.executor.state import ExecutionState, Grown, TaskRun
from execplan.executor.task_errors import (
    FOR_EACH_ERROR,
    LIMIT_EXCEEDED,
    TOO_MANY_ITEMS,
    TaskError,
)
from execplan.executor.values import JsonValue
from execplan.v1 import execution_pb2 as ex

MAIN = ex.TASK_PHASE_MAIN


def is_instance(step: Step, task: TaskRun) -> bool:
    grown = step.state.grown_of(task.index)
    return grown is not None and grown.item_index >= 0


def is_expanded(state: ExecutionState, task: TaskRun) -> bool:
    """A for_each task whose list was recorded (its instances carry its work)."""
    extra = state.extras.get(task.index)
    return extra is not None and extra.count >= 0


def start(step: Step, task: TaskRun, node: NodeView) -> None:
    """A for_each task was queued: evaluate its list, record it, start instances."""
    assert node.for_each is not None
    try:
        items = step.evaluate(step.field(task, ".for_each"), node.for_each, node.reads, task)
    except EvaluationError as error:
        flow.fail_final(step, task, MAIN, failure(FOR_EACH_ERROR, error))
        return
    problem = _refused(step, step.task_id(task), items)
    if problem is not None:
        flow.fail_final(step, task, MAIN, problem)
        return
    assert isinstance(items, list)
    # What the items are estimated to cost, against what is left of the budgets.
    problem = budgets.fan_out(step, task, node, items)
    if problem is not None:
        flow.fail_final(step, task, MAIN, problem)
        return
    step.emit(events.task_expanded(step.task_id(task), items))
    if not items:
        flow.succeed(step, task, MAIN, [])
        return
    start_next(step, task.index)


def _refused(step: Step, task_id: str, items: JsonValue) -> TaskError | None:
    if not isinstance(items, list):
        kind = "an object" if isinstance(items, dict) else type(items).__name__
        return TaskError(FOR_EACH_ERROR, f"for_each gave {kind}, not a list")
    limits = step.limits
    # The runaway cap recorded when the execution started (docs/usage.md): a restart
    # with another setting changes nothing for it, and replay decides the same.
    cap = step.state.spend.max_for_each_items
    if cap and len(items) > cap:
        return TaskError(
            TOO_MANY_ITEMS,
            f"for_each {task_id} gave {len(items):,} items; this server allows at most "
            f"{cap:,} per task (execplan serve --max-for-each-items)",
            False,
            {"task_id": task_id, "items": len(items), "max_for_each_items": cap},
        )
    total = len(step.state.tasks) + len(items)
    if total > limits.execution_tasks:
        return TaskError(
            LIMIT_EXCEEDED,
            f"{len(items):,} instances would make {total:,} tasks in this execution; at "
            f"most {limits.execution_tasks:,} are allowed (--max-execution-tasks)",
        )
    size = len(json.dumps(items, separators=(",", ":")))
    if size > limits.for_each_bytes:
        return TaskError(
            LIMIT_EXCEEDED,
            f"for_each gave {size:,} bytes of items; at most {limits.for_each_bytes:,} "
            "are recorded per task: pass references (ids, keys) instead of the data",
        )
    return None


def start_next(step: Step, index: int) -> None:
    """Starts instances of for_each task `index` in item order while its max_parallel
    allows, then ends the task if every instance has ended."""
    if index in step.expanding:
        return  # an instance ended inside the loop below: the loop goes on
    state = step.state
    node = state.node(index)
    extra = state.extras[index]
    step.expanding.add(index)
    try:
        while (
            extra.started < extra.count
            and extra.failed == 0
            and not state.terminal
            and not state.cancel_requested
            and state.tasks[index].state == ex.TASK_STATE_RUNNING
            and (not node.max_parallel or extra.started - extra.finished < node.max_parallel)
        ):
            _start_instance(step, state.tasks[extra.first + extra.started], node)
    finally:
        step.expanding.discard(index)
    _finish(step, index)


def _start_instance(step: Step, instance: TaskRun, node: NodeView) -> None:
    """Queues one instance (its own `when` first, when that reads `item`/`index`)."""
    if (
        node.condition is not None
        and node.reads_variable("item", "index")
        and not flow.condition_holds(step, instance, node)
    ):
        return
    flow.queue(step, instance, node, MAIN, 1)


def instance_done(step: Step, grown: Grown) -> None:
    """An instance ended (the fold counted it): start the next, or end the task."""
    start_next(step, grown.parent)


def _finish(step: Step, index: int) -> None:
    state = step.state
    task = state.tasks[index]
    extra = state.extras[index]
    if task.state != ex.TASK_STATE_RUNNING or state.terminal:
        return
    instances = range(extra.first, extra.first + extra.count)
    if extra.failed:
        failed = next(
            state.tasks[i] for i in instances if state.tasks[i].state == ex.TASK_STATE_FAILED
        )
        failed_id = step.task_id(failed)
        flow.cancel_active(step, f"instance {failed_id} failed", pending_too=True, within=instances)
        cause = failed.error or TaskError("TaskFailed", "failed")
        error = TaskError(cause.type, f"{failed_id}: {cause.message}", False, cause.details)
        flow.fail_final(step, task, MAIN, error)
    elif extra.finished == extra.count:
        # The output (the instances' outputs in item order) is the fold's to gather:
        # each is in its own event already (decide/evolve_grown.py).
        step.emit(
            events.task_succeeded(
                step.task_id(task), MAIN, task.attempt, task.epoch, None, with_output=False
            )
        )
        flow.after_terminal(step, task)
