"""Child workflows: a `builtin.workflow` task runs a registered workflow as an
execution of its own (docs/runtime-plans.md).

    queued -> start: the inputs evaluated, the StartChild effect (the runtime
        resolves NAME[@VERSION], starts the child idempotently, answers):
            started      -> child_execution_started; the task RUNNING
            start failed -> the attempt fails (WorkflowNotFound, LimitExceeded, bad
                            inputs: not retried; anything else: the retry policy)
    the child ends -> ended: child_execution_ended, then the task succeeds with the
        child's outputs (a repeat goes round again), or its attempt fails with
        ChildFailed (retries start a new child)
    the task is cancelled -> flow.stop_task stops the child (StopChild)

A child start is a lease of sorts: its token is (attempt, epoch + 1), recorded in
child_execution_started and named again by the child's end, so a late answer of an
earlier attempt's child changes nothing. Its request_id, derived from (execution,
task id, iteration, attempt), makes starting it again after a crash find the same
child.
"""

from __future__ import annotations

from collections.abc import Mapping

from execplan.executor.decide import budgets, events, flow, loops
from execplan.executor.decide import effects as fx
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError
from execplan.executor.expressions.evaluation import failure
from execplan.executor.plan_view import NodeView
from execplan.executor.state import TaskRun
from execplan.executor.task_errors import BINDING_ERROR, CHILD_FAILED, LIMIT_EXCEEDED, TaskError
from execplan.executor.values import JsonValue
from execplan.v1 import execution_pb2 as ex

MAIN = ex.TASK_PHASE_MAIN


def request_id(step: Step, task: TaskRun) -> str:
    """The child's StartExecution request_id: the same for the same attempt."""
    extra = step.state.extras.get(task.index)
    iteration = extra.iteration if extra is not None else 0
    return f"child:{step.state.execution_id}/{step.task_id(task)}/{iteration}.{task.attempt}"


def start(step: Step, task: TaskRun, node: NodeView) -> TaskError | None:
    """A builtin.workflow task was queued: ask the runtime to start its child. An
    error (the task then fails at once) when its inputs or the nesting forbid it."""
    assert node.workflow is not None
    try:
        inputs = step.evaluate(step.field(task, ".inputs"), node.inputs, node.reads, task)
    except EvaluationError as error:
        return failure(BINDING_ERROR, error)
    depth = step.state.depth + 1
    if depth > step.limits.nesting_depth:
        return TaskError(
            LIMIT_EXCEEDED,
            f"a child execution {depth} deep (children of children); at most "
            f"{step.limits.nesting_depth} are allowed",
        )
    if step.state.paused:
        return None  # started by `restart` when the execution resumes
    name, version = node.workflow
    step.effect(
        fx.StartChild(
            index=task.index,
            task_id=step.task_id(task),
            attempt=task.attempt,
            epoch=task.epoch + 1,
            workflow=name,
            version=version,
            inputs=inputs if isinstance(inputs, dict) else {},
            request_id=request_id(step, task),
            depth=depth,
            budget=budgets.left(step.state),
        )
    )
    return None


def restart(step: Step) -> list[fx.StartChild]:
    """StartChild again for every task still waiting for its child (after a restart,
    an adoption, a resume): the same request_id finds a child already started."""
    state = step.state
    found: list[fx.StartChild] = []
    for task in state.tasks:
        node = state.node(task.index)
        if (
            task.state == ex.TASK_STATE_QUEUED
            and task.phase == MAIN
            and node.workflow is not None
            and start(step, task, node) is None
        ):
            effect = step.effects[-1] if step.effects else None
            if isinstance(effect, fx.StartChild) and effect.index == task.index:
                found.append(effect)
    return found


def waits_for_child(step: Step, task: TaskRun) -> bool:
    """A queued task that waits for its child to start, not for a worker."""
    return task.phase == MAIN and step.state.node(task.index).workflow is not None


def _current(step: Step, task_id: str, attempt: int, epoch: int, state: int) -> TaskRun | None:
    """The task if it is still at that attempt and epoch in `state` (else stale)."""
    index = step.state.index_of(task_id)
    if index is None or step.state.terminal:
        return None
    task = step.state.tasks[index]
    if task.state != state or task.phase != MAIN or task.attempt != attempt:
        return None
    expected = task.epoch + 1 if state == ex.TASK_STATE_QUEUED else task.epoch
    return task if epoch == expected else None


def started(
    step: Step,
    task_id: str,
    attempt: int,
    epoch: int,
    *,
    child_execution_id: str,
    plan_id: str,
    workflow_name: str,
    workflow_version: str,
) -> bool:
    """The runtime started (or found) the child; False if the task moved on."""
    task = _current(step, task_id, attempt, epoch, ex.TASK_STATE_QUEUED)
    if task is None:
        return False
    step.emit(
        events.child_execution_started(
            task_id,
            child_execution_id,
            plan_id=plan_id,
            workflow_name=workflow_name,
            workflow_version=workflow_version,
            request_id=request_id(step, task),
            attempt=attempt,
            epoch=epoch,
        )
    )
    return True


def start_failed(step: Step, task_id: str, attempt: int, epoch: int, error: TaskError) -> None:
    """The child could not be started: the attempt fails (retry policy, fallback)."""
    from execplan.executor.decide import attempts  # noqa: PLC0415  (attempts imports flow)

    task = _current(step, task_id, attempt, epoch, ex.TASK_STATE_QUEUED)
    if task is not None:
        attempts.failed(step, task, error)


def ended(
    step: Step,
    task_id: str,
    child_execution_id: str,
    *,
    outcome: int,
    outputs: Mapping[str, JsonValue] | None,
    error: TaskError | None,
    used: Mapping[str, float] | None = None,
) -> None:
    """The child ended: the task's attempt succeeds with its outputs or fails. `used`:
    what the child used in all (recorded with the end: the parent's usage includes
    it, whether the child succeeded or not)."""
    from execplan.executor.decide import attempts  # noqa: PLC0415  (attempts imports flow)

    index = step.state.index_of(task_id)
    if index is None or step.state.terminal:
        return
    task = step.state.tasks[index]
    extra = step.state.extras.get(index)
    if (
        task.state != ex.TASK_STATE_RUNNING
        or extra is None
        or extra.child_execution_id != child_execution_id
    ):
        # An earlier attempt's child, or the task was stopped: it decides nothing, but
        # what it spent is the parent's too (recorded once: a child is watched once).
        if used:
            step.emit(
                events.child_execution_ended(
                    task_id, child_execution_id, outcome, None, error, used=used
                )
            )
        return
    step.emit(
        events.child_execution_ended(
            task_id, child_execution_id, outcome, outputs, error, used=used
        )
    )
    if outcome == ex.EXECUTION_STATE_SUCCEEDED:
        output: JsonValue = dict(outputs or {})
        if step.node(task).repeat is not None:
            loops.iteration_done(step, task, output)
        else:
            flow.succeed(step, task, MAIN, output)
        return
    name = ex.ExecutionState.Name(outcome).removeprefix("EXECUTION_STATE_")  # type: ignore[arg-type]
    cause = f": {error.type}: {error.message}" if error is not None else ""
    details: dict[str, JsonValue] = {"child_execution_id": child_execution_id, "state": name}
    message = f"child execution {child_execution_id} ended {name}{cause}"
    attempts.failed(step, task, TaskError(CHILD_FAILED, message, True, details))
