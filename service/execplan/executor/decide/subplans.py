"""Agent-written sub-plans: a dynamic task answers with a workflow (docs/runtime-plans.md).

    a worker answers a dynamic task with a sub-workflow -> the runtime compiles it
        (the planner, every problem at once) -> `accept`:
            not compiled / over a limit / inputs that do not fit -> the attempt fails
                with PlanInvalid (retryable: the next attempt sees why)
            otherwise -> plan_revised (the compiled plan, its inputs), then its root
                tasks are considered: `agent/a`, `agent/b`...
    a sub-plan task ends -> `task_done`: its downstream inside the sub-plan, or the
        sub-plan fails (fail fast) or finishes -> the dynamic task succeeds with the
        sub-workflow's outputs, or fails with SubPlanFailed

An extension of `flow`, like `expand`. A sub-plan's tasks read each other by their
own ids (`tasks.a`) and its `workflow.inputs` are the inputs the worker gave
(Step.context); they are tasks of this execution for everything else (dispatch,
retries, cancel, the Saga).
"""

from __future__ import annotations

from collections.abc import Mapping

from execplan.errors import ExecplanError
from execplan.executor.decide import effects as fx
from execplan.executor.decide import events, flow
from execplan.executor.decide.inputs import resolve_inputs
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError, reads_of
from execplan.executor.expressions.evaluation import failure
from execplan.executor.plan_view import decode_plan
from execplan.executor.state import Grown, Scope, TaskRun
from execplan.executor.task_errors import (
    OUTPUT_ERROR,
    PLAN_INVALID,
    SUB_PLAN_FAILED,
    TaskError,
)
from execplan.executor.values import JsonValue
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2
from execplan.v1 import workflow_pb2 as wf

MAIN = ex.TASK_PHASE_MAIN


def nesting(task_id: str) -> int:
    """How many sub-plans a task is inside (`agent/a/x`: 2)."""
    return task_id.count("/")


def refused(step: Step, task: TaskRun, plan: plan_pb2.ExecutionPlan) -> str:
    """Why a compiled sub-plan cannot run here ("" if it can): the limits."""
    limits = step.limits
    if len(plan.nodes) > limits.sub_plan_tasks:
        return (
            f"the sub-plan has {len(plan.nodes):,} tasks; at most {limits.sub_plan_tasks:,} "
            "are allowed per sub-plan"
        )
    depth = nesting(step.task_id(task)) + 1
    if depth > limits.nesting_depth:
        return (
            f"a sub-plan {depth} deep (sub-plans within sub-plans); at most "
            f"{limits.nesting_depth} are allowed"
        )
    total = len(step.state.tasks) + len(plan.nodes)
    if total > limits.execution_tasks:
        return (
            f"the sub-plan would make {total:,} tasks in this execution; at most "
            f"{limits.execution_tasks:,} are allowed"
        )
    return ""


def accept(
    step: Step, task: TaskRun, plan: plan_pb2.ExecutionPlan, inputs: Mapping[str, JsonValue]
) -> None:
    """A compiled sub-plan for dynamic `task` (its lease still held): record it and
    start it, or fail the attempt with PlanInvalid."""
    from execplan.executor.decide import attempts  # noqa: PLC0415  (attempts imports flow)

    problem = refused(step, task, plan)
    resolved: dict[str, JsonValue] = {}
    diagnostics: list[JsonValue] = []
    if not problem:
        try:
            resolved = resolve_inputs(decode_plan(plan), dict(inputs))
        except ExecplanError as error:
            found = getattr(error, "violations", ())
            diagnostics = [
                {"code": v.code or "invalid-input", "path": v.field, "message": v.description}
                for v in found
            ]
            lines = "; ".join(f"{v.field}: {v.description}" for v in found) or str(error)
            problem = f"the sub-plan's inputs do not fit its declaration: {lines}"
    if problem:
        details = {"diagnostics": diagnostics} if diagnostics else None
        attempts.failed(step, task, TaskError(PLAN_INVALID, problem, True, details))
        return
    step.effect(fx.ReleaseLease(task.index, task.worker_id))
    revision = len(step.state.scopes) + 1
    step.emit(
        events.plan_revised(
            step.task_id(task), revision, plan, resolved, attempt=task.attempt, epoch=task.epoch
        )
    )
    scope = step.state.scopes[-1]
    for node in scope.plan.nodes:
        if not node.upstream:
            flow.consider(step, step.state.tasks[scope.base + node.index])
    _maybe_done(step, scope)


def task_done(step: Step, task: TaskRun, grown: Grown) -> bool:
    """A task of a sub-plan ended; True when handled (False: not a sub-plan task)."""
    if not grown.scope:
        return False
    state = step.state
    scope = state.scopes[grown.scope - 1]
    owner = state.tasks[scope.task]
    if owner.state != ex.TASK_STATE_RUNNING or state.terminal:
        return True
    if task.state == ex.TASK_STATE_FAILED and scope.plan.on_failure != wf.ON_FAILURE_CONTINUE:
        _fail(step, scope, task)
        return True
    for child in state.downstream(task.index):
        flow.consider(step, state.tasks[child])
    _maybe_done(step, scope)
    return True


def _tasks(scope: Scope) -> range:
    return range(scope.base, scope.base + len(scope.plan.nodes))


def _maybe_done(step: Step, scope: Scope) -> None:
    state = step.state
    owner = state.tasks[scope.task]
    if owner.state != ex.TASK_STATE_RUNNING or scope.finished < len(scope.plan.nodes):
        return
    failed = next(
        (state.tasks[i] for i in _tasks(scope) if state.tasks[i].state == ex.TASK_STATE_FAILED),
        None,
    )
    if failed is not None:
        _fail(step, scope, failed)
        return
    try:
        outputs = _outputs(step, scope)
    except EvaluationError as error:
        flow.fail_final(step, owner, MAIN, failure(OUTPUT_ERROR, error))
        return
    flow.succeed(step, owner, MAIN, outputs)


def _outputs(step: Step, scope: Scope) -> dict[str, JsonValue]:
    """The sub-workflow's outputs, evaluated over its own tasks and inputs."""
    outputs: dict[str, JsonValue] = {}
    for name, node in scope.plan.outputs:
        field = f"{scope.prefix}outputs.{name}"
        outputs[name] = step.evaluate(field, node, reads_of(node), scope=scope)
    return outputs


def _fail(step: Step, scope: Scope, failed: TaskRun) -> None:
    """A task of the sub-plan failed for good: the rest stop, the dynamic task fails."""
    state = step.state
    owner = state.tasks[scope.task]
    failed_id = step.task_id(failed)
    flow.cancel_active(step, f"{failed_id} failed", pending_too=True, within=_tasks(scope))
    cause = failed.error or TaskError("TaskFailed", "failed")
    error = TaskError(SUB_PLAN_FAILED, f"{failed_id}: {cause.type}: {cause.message}", False)
    flow.fail_task(step, owner, error)
