"""How an execution moves through its graph: readiness, task outcomes, completion.

    start -> consider(root tasks) -> queue | skip
    a task ends (succeed / fail_final / skip) -> after_terminal:
        fail fast, compensate, auto-pause, or consider its downstream tasks
        -> maybe_finish -> finish (execution_completed)
    compensation (Saga): completed tasks' compensations, in reverse completion order

This is the one recursive part of the core: a task's end considers the tasks after
it, whose queueing may end them at once (a skip, a builtin that needs no waiting,
a condition that cannot be evaluated). Everything else (`attempts`, `control`,
`builtins`) calls into it and never the other way round. Events are decided depth
first, in plan order, exactly as they always were: recorded histories replay.

What grows at run time (docs/runtime-plans.md) hooks in here: queueing a for_each
task expands it (`expand`), an instance's end goes to its for_each task rather than
downstream, and a sub-plan task's end stays inside its sub-plan (`subplans`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from execplan.executor.decide import builtins, children, events, expand, folds, subplans
from execplan.executor.decide import effects as fx
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError, reads_of
from execplan.executor.expressions.evaluation import ExpressionBudgetExceeded, failure
from execplan.executor.plan_view import NodeView
from execplan.executor.state import ACTIVE_TASK_STATES, LEASED_TASK_STATES, Allowance, TaskRun
from execplan.executor.task_errors import (
    CANCELLED,
    CONDITION_ERROR,
    OUTPUT_ERROR,
    TASK_FAILED,
    TaskError,
)
from execplan.executor.values import JsonValue, from_struct
from execplan.search import SearchValue
from execplan.usage import Budget
from execplan.usage.codec import decode_budget
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import workflow_pb2 as wf

MAIN = ex.TASK_PHASE_MAIN
FALLBACK = ex.TASK_PHASE_FALLBACK
COMPENSATION = ex.TASK_PHASE_COMPENSATION


@dataclass(frozen=True, slots=True)
class Parent:
    """Who started a child execution (a builtin.workflow task) and how deep it nests."""

    execution_id: str
    task_id: str
    depth: int
    # What is left of the parent's budget when the child starts: the child's budget is
    # no larger, limit by limit (docs/usage.md).
    budget: Budget | None = None


def start(  # noqa: PLR0917 (the fields of execution_started)
    step: Step,
    inputs: Mapping[str, JsonValue],
    request_id: str,
    fairness_key: str,
    trace_context: Mapping[str, str],
    allowance: Allowance | None = None,
    *,
    parent: Parent | None = None,
    search_attributes: Mapping[str, SearchValue] | None = None,
) -> None:
    plan = step.state.plan
    limits = allowance.limits if allowance is not None else None
    event = events.execution_started(
        plan_id=plan.plan_id,
        workflow_name=plan.workflow_name,
        workflow_version=plan.workflow_version,
        inputs=inputs,
        request_id=request_id,
        fairness_key=fairness_key,
        trace_context=trace_context,
        allowance=allowance,
        parent_execution_id=parent.execution_id if parent else "",
        parent_task_id=parent.task_id if parent else "",
        depth=parent.depth if parent else 0,
        limits=limits,
        search_attributes=search_attributes,
    )
    # What the log normalizes is taken as the event holds it (none of it, mostly).
    body = event.execution_started
    budget = None
    if allowance is not None and allowance.budget is not None and body.HasField("budget"):
        budget = decode_budget(body.budget)
    step.emit_folded(
        event,
        "execution_started",
        folds.execution_started,
        inputs=from_struct(body.inputs) if inputs else {},
        request_id=request_id,
        fairness_key=fairness_key,
        trace_context=dict(trace_context),
        parent_execution_id=parent.execution_id if parent else "",
        parent_task_id=parent.task_id if parent else "",
        depth=parent.depth if parent else 0,
        limits=limits,
        search_attributes=(
            folds.recorded_attributes(body.search_attributes) if search_attributes else {}
        ),
        budget=budget,
        max_for_each_items=allowance.max_for_each_items if allowance is not None else 0,
        max_attempts=allowance.max_attempts if allowance is not None else 0,
    )
    for node in plan.nodes:
        if not node.upstream:
            consider(step, step.state.tasks[node.index])
    maybe_finish(step)


# -- readiness ---------------------------------------------------------------------


def trigger_verdict(task: TaskRun, node: NodeView) -> bool | None:
    """True = ready, False = skip, None = not yet decidable."""
    done = task.upstream_pending == 0
    rule = node.trigger
    if rule == wf.TRIGGER_RULE_ALL_DONE:
        return True if done else None
    if rule == wf.TRIGGER_RULE_ONE_SUCCESS:
        if task.upstream_succeeded:
            return True
        return False if done else None
    if rule == wf.TRIGGER_RULE_ALL_FAILED:
        if task.upstream_succeeded or task.upstream_other:
            return False
        return True if done else None
    if task.upstream_failed or task.upstream_other:
        return False
    return True if done else None


def consider(step: Step, task: TaskRun) -> None:
    """A PENDING task whose upstream changed: queue it, skip it, or wait."""
    state = step.state
    if task.state != ex.TASK_STATE_PENDING or state.terminal or state.cancel_requested:
        return
    node = state.node(task.index)
    verdict = trigger_verdict(task, node)
    if verdict is None:
        return
    if not verdict:
        skip(step, task, "trigger rule not satisfied")
        return
    # A for_each task's `when` that reads `item` or `index` is decided per instance.
    per_instance = node.for_each is not None and node.reads_variable("item", "index")
    if node.condition is not None and not per_instance and not condition_holds(step, task, node):
        return
    queue(step, task, node, MAIN, 1)


def condition_holds(step: Step, task: TaskRun, node: NodeView) -> bool:
    """Evaluates `when`; False after skipping (or failing) the task."""
    assert node.condition is not None
    try:
        allowed = step.evaluate(step.field(task, ".when"), node.condition, node.reads, task)
    except EvaluationError as error:
        fail_final(step, task, MAIN, failure(CONDITION_ERROR, error))
        return False
    if allowed is not True:
        skip(step, task, f"condition is {str(allowed).lower()}: {node.condition.source}")
        return False
    return True


def skip(step: Step, task: TaskRun, reason: str) -> None:
    step.emit(events.task_skipped(step.task_id(task), reason))
    after_terminal(step, task)


def queue(
    step: Step, task: TaskRun, node: NodeView, phase: int, attempt: int, *, iteration: int = -1
) -> None:
    """An attempt is ready: a worker task waits for a slot, a builtin starts now, a
    for_each task expands. `iteration`: a repeat task's next one (-1: the current)."""
    if iteration < 0:
        extra = step.state.extras.get(task.index)
        iteration = extra.iteration if extra is not None and phase == MAIN else 0
    step.emit_folded(
        events.task_queued(step.task_id(task), phase, attempt, iteration),
        "task_queued",
        folds.queued,
        task,
        phase,
        attempt,
        iteration,
    )
    if phase == MAIN and node.for_each is not None and not expand.is_instance(step, task):
        expand.start(step, task, node)
    elif phase == MAIN and node.workflow is not None:
        error = children.start(step, task, node)
        if error is not None:
            fail_final(step, task, MAIN, error)
    elif phase == MAIN and builtins.is_builtin(node):
        outcome = builtins.start(step, task, node)
        if outcome is not None:
            settle(step, task, outcome)
    else:
        step.effect(fx.TaskReady(task.index))


# -- outcomes of a task ------------------------------------------------------------


def settle(step: Step, task: TaskRun, outcome: builtins.Outcome) -> None:
    """A builtin's immediate outcome (its main phase)."""
    if isinstance(outcome, builtins.Succeed):
        succeed(step, task, MAIN, outcome.output)
    else:
        fail_final(step, task, MAIN, outcome.error)


def succeed(
    step: Step,
    task: TaskRun,
    phase: int,
    output: JsonValue,
    cache_hit: ev.CacheHit | None = None,
) -> None:
    event = events.task_succeeded(
        step.task_id(task), phase, task.attempt, task.epoch, output, cache_hit=cache_hit
    )
    body = event.task_succeeded
    hit = cache_hit is not None and body.HasField("cache_hit")
    attempt, epoch = task.attempt, task.epoch
    step.emit_folded(
        event, "task_succeeded", folds.succeeded, task, phase, attempt, epoch, body.output, hit
    )
    if phase == COMPENSATION:
        next_compensation(step)
    else:
        after_terminal(step, task)


def fail_final(step: Step, task: TaskRun, phase: int, error: TaskError) -> None:
    """The task fails for good without a retry (errors the executor decides)."""
    step.emit(
        events.task_failed(step.task_id(task), phase, task.attempt, task.epoch, error, final=True)
    )
    after_final_failure(step, task)


def fail_task(step: Step, task: TaskRun, error: TaskError) -> None:
    """The task (its main phase) fails as a whole, never retried: a loop that ran out,
    a sub-plan that failed. Its fallback, if any, runs, as after a last attempt."""
    node = step.node(task)
    fallback = node.fallback is not None
    step.emit(
        events.task_failed(
            step.task_id(task), MAIN, task.attempt, task.epoch, error, final=not fallback
        )
    )
    if fallback:
        queue(step, task, node, FALLBACK, 1)
    else:
        after_final_failure(step, task)


def after_final_failure(step: Step, task: TaskRun) -> None:
    if task.phase == COMPENSATION:
        finish(step, ex.EXECUTION_STATE_COMPENSATION_FAILED, task)
    else:
        after_terminal(step, task)


def after_terminal(step: Step, task: TaskRun) -> None:
    """What a task's end means for the execution (an instance's: for its for_each
    task; a sub-plan task's: for its sub-plan)."""
    state = step.state
    if state.terminal:
        return
    grown = state.grown_of(task.index)
    if grown is not None:
        if grown.item_index >= 0:
            expand.instance_done(step, grown)
            handled = True
        else:
            handled = subplans.task_done(step, task, grown)
        if handled:
            # Its owner may have ended before it (a timeout): then this was the last
            # thing the execution waited for.
            maybe_finish(step)
            return
    if task.state == ex.TASK_STATE_FAILED:
        if state.plan.on_failure == wf.ON_FAILURE_COMPENSATE:
            cancel_active(step, "another task failed")
            start_compensation(step, f"task {step.task_id(task)} failed")
            return
        if state.plan.fail_fast:
            finish(step, ex.EXECUTION_STATE_FAILED, task)
            return
        limit = state.plan.pause_after_failures
        if limit and state.consecutive_failures >= limit and not state.paused:
            step.emit(events.execution_paused(f"{limit} consecutive task failures", ""))
    for child in state.downstream(task.index):
        consider(step, state.tasks[child])
    maybe_finish(step)


# -- completion and the Saga -------------------------------------------------------


def maybe_finish(step: Step) -> None:
    state = step.state
    if state.terminal or state.state == ex.EXECUTION_STATE_COMPENSATING:
        return
    if state.completions < len(state.tasks):
        return
    if state.any_failed:
        failed = next(t for t in state.tasks if t.state == ex.TASK_STATE_FAILED)
        finish(step, ex.EXECUTION_STATE_FAILED, failed)
    else:
        finish(step, ex.EXECUTION_STATE_SUCCEEDED, None)


def start_compensation(step: Step, reason: str) -> None:
    state = step.state
    # A for_each task is compensated through its instances, one by one.
    done = sorted(
        (
            t
            for t in state.tasks
            if t.state == ex.TASK_STATE_SUCCEEDED
            and state.node(t.index).compensation is not None
            and not expand.is_expanded(state, t)
        ),
        key=lambda t: -t.completed_order,
    )
    step.emit(events.compensation_started([step.task_id(t) for t in done], reason))
    next_compensation(step)


def next_compensation(step: Step) -> None:
    state = step.state
    if state.compensation_queue:
        task = state.tasks[state.compensation_queue[0]]
        queue(step, task, state.node(task.index), COMPENSATION, 1)
        return
    if state.cancel_requested:
        finish(step, ex.EXECUTION_STATE_CANCELLED, None, TaskError(CANCELLED, "cancelled"))
    else:
        failed = next((t for t in state.tasks if t.state == ex.TASK_STATE_FAILED), None)
        finish(step, ex.EXECUTION_STATE_COMPENSATED, failed)


def cancel_active(
    step: Step,
    reason: str,
    *,
    pending_too: bool = False,
    terminate: bool = False,
    within: range | None = None,
) -> None:
    """Cancels every task still in flight (telling workers to stop leased attempts,
    and running child executions to stop: terminate with `terminate`). `within`: only
    the tasks of these indexes (a for_each task's instances, a sub-plan's tasks)."""
    tasks = step.state.tasks
    for task in tasks if within is None else (tasks[i] for i in within):
        if pending_too and task.state == ex.TASK_STATE_PENDING:
            step.emit(
                events.task_cancelled(
                    step.task_id(task), task.phase, "execution ended before the task could run"
                )
            )
        elif task.state in ACTIVE_TASK_STATES:
            stop_task(step, task, reason, terminate=terminate)
            step.emit(events.task_cancelled(step.task_id(task), task.phase, reason))


def stop_grown(step: Step, task: TaskRun, reason: str) -> None:
    """A task that ran what grew from it ended early (a timeout): its instances, or
    its sub-plan's tasks, still active are cancelled."""
    extra = step.state.extras.get(task.index)
    if extra is None or step.state.terminal:
        return
    if extra.count > 0:
        instances = range(extra.first, extra.first + extra.count)
        cancel_active(step, reason, pending_too=True, within=instances)
    if extra.revision:
        scope = step.state.scopes[extra.revision - 1]
        tasks = range(scope.base, scope.base + len(scope.plan.nodes))
        cancel_active(step, reason, pending_too=True, within=tasks)
    maybe_finish(step)


def stop_task(step: Step, task: TaskRun, reason: str, *, terminate: bool = False) -> None:
    """The effects that stop whatever an active task has running: its worker's lease
    (a worker task), its child execution (builtin.workflow)."""
    if task.state in LEASED_TASK_STATES and task.worker_id:
        step.effect(
            fx.CancelLease(task.index, task.worker_id, task.attempt, task.epoch, task.phase, reason)
        )
        step.effect(fx.ReleaseLease(task.index, task.worker_id))
    extra = step.state.extras.get(task.index)
    if task.state == ex.TASK_STATE_RUNNING and extra is not None and extra.child_execution_id:
        step.effect(fx.StopChild(extra.child_execution_id, reason, terminate))


def finish(
    step: Step, outcome: int, failed: TaskRun | None, error: TaskError | None = None
) -> None:
    """The execution ends: whatever still runs is cancelled, outputs are evaluated."""
    terminated = outcome == ex.EXECUTION_STATE_TERMINATED
    cancel_active(step, "execution finished", pending_too=True, terminate=terminated)
    failed_task_id = ""
    if failed is not None:
        failed_task_id = step.task_id(failed)
        cause = error or failed.error or TaskError(TASK_FAILED, "task failed")
        error = TaskError(cause.type, f"task {failed_task_id}: {cause.message}", cause.retryable)
    outputs: dict[str, JsonValue] | None = None
    if outcome == ex.EXECUTION_STATE_SUCCEEDED:
        try:
            outputs = _outputs(step)
        except EvaluationError as exc:
            outcome = ex.EXECUTION_STATE_FAILED
            error = failure(OUTPUT_ERROR, exc)
    event = events.execution_completed(
        outcome,
        failed_task_id=failed_task_id,
        outputs=outputs,
        error=error,
        used=step.state.spend.usage,
    )
    body = event.execution_completed
    # The outputs and the error as the event holds them (what replay reads back).
    held = TaskError.from_proto(body.error) if error is not None else None
    step.emit_folded(
        event,
        "execution_completed",
        folds.execution_completed,
        outcome,
        body.outputs,
        held,
        failed_task_id,
    )


def _outputs(step: Step) -> dict[str, JsonValue]:
    """The workflow's outputs. An output that cannot be evaluated because a task it
    reads was SKIPPED is null: a skipped task's `output` is null, so
    `tasks.register.output.version` has nothing to read, and a `when` that skips a
    task is a normal way to succeed. Any other failure, an expression over its budget
    included, raises EvaluationError (the execution fails with OutputError);
    EvaluationPending (the sandbox is still at it) passes through."""
    outputs: dict[str, JsonValue] = {}
    for name, node in step.state.plan.outputs:
        try:
            outputs[name] = step.evaluate(f"outputs.{name}", node, reads_of(node))
        except ExpressionBudgetExceeded:
            raise  # over its budget: never quietly null
        except EvaluationError:
            skipped = any(
                step.state.task(task_id).state == ex.TASK_STATE_SKIPPED
                for task_id in reads_of(node)
            )
            if not skipped:
                raise
            outputs[name] = None
    return outputs
