"""Encodes an ExecutionState as the `execplan.v1.Execution` message clients read."""

from __future__ import annotations

from collections.abc import Callable

from execplan.executor.state import (
    ExecutionState,
    Grown,
    TaskRun,
    execution_state_name,
    task_state_name,
)
from execplan.executor.values import fill_struct, fill_value
from execplan.executor.waiting import Wait
from execplan.search.codec import encode_value
from execplan.store.port import ExecutionRecord
from execplan.usage.codec import encode_budget, encode_usage
from execplan.v1 import execution_pb2 as ex

# Why a queued task waits, when the runtime knows (shown as its status_message).
Hint = Callable[[ExecutionState, int], str]
# What a queued task waits for, when it is flow control or resources (TaskRun.waiting).
Waiting = Callable[[ExecutionState, int], Wait | None]


def _task(
    state: ExecutionState,
    task: TaskRun,
    target: ex.TaskRun,
    hint: Hint | None,
    waiting: Waiting | None,
) -> None:
    node = state.node(task.index)
    target.task_id = state.task_id(task.index)
    target.type = node.type
    grown = state.grown_of(task.index)
    _grown(state, task, grown, target)
    target.state = task.state  # type: ignore[assignment]
    target.phase = task.phase  # type: ignore[assignment]
    target.attempt = task.attempt
    target.worker_id = task.worker_id
    target.status_message = (hint(state, task.index) if hint else "") or task.status_message
    wait = waiting(state, task.index) if waiting is not None else None
    if wait is not None:
        wait.fill(target.waiting)
        target.status_message = wait.message
    if task.output is not None:
        fill_value(target.output, task.output)
    if task.error is not None:
        task.error.fill(target.error)
    if task.queued_ms:
        target.queued_at.FromMilliseconds(task.queued_ms)
    if task.started_ms:
        target.started_at.FromMilliseconds(task.started_ms)
    if task.finished_ms:
        target.finished_at.FromMilliseconds(task.finished_ms)
    spend = state.spend
    used = spend.tasks.get(task.index)
    if used:
        encode_usage(used, target.usage)
    if task.progress_ms:
        fill_value(target.progress, task.progress)
        target.progress_at.FromMilliseconds(task.progress_ms)
    if grown is None or grown.item_index < 0:  # an instance's is its for_each task's
        own = spend.task_budgets.get(task.index) or node.budget
        if own is not None:
            encode_budget(own, target.budget)
    for record in task.attempts:
        item = target.attempts.add(
            attempt=record.attempt,
            phase=record.phase,
            worker_id=record.worker_id,
            lease_epoch=record.epoch,
            iteration=record.iteration,
        )
        lease = spend.leases.get((task.index, record.phase, record.attempt, record.epoch))
        if lease is not None and lease.usage:
            encode_usage(lease.usage, item.usage)
        item.dispatched_at.FromMilliseconds(record.dispatched_ms)
        if record.finished_ms:
            item.finished_at.FromMilliseconds(record.finished_ms)
        if record.error is not None:
            record.error.fill(item.error)


def _grown(state: ExecutionState, task: TaskRun, grown: Grown | None, target: ex.TaskRun) -> None:
    """Where a task came from (`grown`: its record, None for a plan node's task) and
    what grew from it (docs/runtime-plans.md)."""
    if grown is not None:
        target.parent_task_id = state.task_id(grown.parent)
        if grown.item_index >= 0:
            target.item_index = grown.item_index
    extra = state.extras.get(task.index)
    if extra is None:
        return
    if extra.count >= 0:
        target.instance_count = extra.count
    target.iteration = extra.iteration
    target.child_execution_id = extra.child_execution_id
    if extra.revision:
        target.sub_plan_id = state.scopes[extra.revision - 1].plan.plan_id


def without_payloads(execution: ex.Execution) -> ex.Execution:
    """A copy of `execution` without its inputs and outputs: what is sent of one too
    large for a message by itself (its history has them, event by event)."""
    light = ex.Execution()
    light.CopyFrom(execution)
    light.ClearField("inputs")
    light.ClearField("outputs")
    return light


def encode_execution(
    state: ExecutionState,
    *,
    with_tasks: bool = True,
    hint: Hint | None = None,
    waiting: Waiting | None = None,
) -> ex.Execution:
    plan = state.plan
    message = ex.Execution(
        execution_id=state.execution_id,
        plan_id=plan.plan_id,
        workflow_name=plan.workflow_name,
        workflow_version=plan.workflow_version,
        state=state.state,  # type: ignore[arg-type]
        last_sequence=state.last_sequence,
        fairness_key=state.fairness_key,
        parent_execution_id=state.parent_execution_id,
        parent_task_id=state.parent_task_id,
    )
    for scope in state.scopes:
        message.plan_revisions.add(
            revision=scope.revision,
            task_id=state.task_id(scope.task),
            plan_id=scope.plan.plan_id,
            node_count=len(scope.plan.nodes),
        )
    fill_struct(message.inputs, state.inputs)
    if state.outputs:
        fill_struct(message.outputs, state.outputs)
    if state.error is not None:
        state.error.fill(message.error)
    message.created_at.FromMilliseconds(state.created_ms)
    message.updated_at.FromMilliseconds(state.updated_ms)
    if state.finished_ms:
        message.finished_at.FromMilliseconds(state.finished_ms)
    _spend(state, message)
    for name, value in state.search_attributes.items():
        message.search_attributes[name].CopyFrom(encode_value(value))
    # Counted by state number, named once per state (a summary is encoded for every
    # start and end an execution watcher sees).
    counts: dict[int, int] = {}
    for task in state.tasks:
        counts[task.state] = counts.get(task.state, 0) + 1
    for task_state, count in counts.items():
        message.task_counts[task_state_name(task_state)] = count
    if with_tasks:
        for task in state.tasks:
            _task(state, task, message.tasks.add(), hint, waiting)
    return message


def _spend(state: ExecutionState, message: ex.Execution) -> None:
    """Usage, the budget in force, what running attempts reserve, why a budget holds it."""
    spend = state.spend
    if spend.usage:
        encode_usage(spend.usage, message.usage)
    if spend.budget is not None:
        encode_budget(spend.budget, message.budget)
    if spend.reserved:
        encode_usage(spend.reserved, message.reserved)
    if spend.hold is not None:
        message.budget_exceeded.CopyFrom(spend.hold.to_proto())


def encode_record(record: ExecutionRecord) -> ex.Execution:
    """A summary from the index row alone (ListExecutions of finished executions)."""
    message = ex.Execution(
        execution_id=record.execution_id,
        plan_id=record.plan_id,
        workflow_name=record.workflow_name,
        state=ex.ExecutionState.Value("EXECUTION_STATE_" + record.state),
        last_sequence=record.last_sequence,
        fairness_key=record.fairness_key,
        parent_execution_id=record.parent_execution_id,
        parent_task_id=record.parent_task_id,
    )
    message.created_at.FromMilliseconds(record.created_at_ms)
    message.updated_at.FromMilliseconds(record.updated_at_ms)
    for name, value in record.search_attributes.items():
        message.search_attributes[name].CopyFrom(encode_value(value))
    return message


def state_name(state: ExecutionState) -> str:
    return execution_state_name(state.state)
