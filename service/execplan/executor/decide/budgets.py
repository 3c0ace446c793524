"""Budgets and runaway caps at dispatch; usage reports; budget changes (docs/usage.md).

    verdict = admit(step, task, node, inputs)    # the estimate, or a Refusal
    reason = report(step, task_id, phase, attempt, epoch, worker_id, amounts, number)
    budget = change(step, limits, action, request_id, reason)

`admit` runs right before an attempt is leased (attempts.dispatch, after its inputs
are resolved, so an estimate can read them). In this order:

1. a compensation always goes (it undoes work already paid for);
2. a new attempt past the execution's cap of attempts fails its task with
   `TooManyAttempts` (a re-lease of the same attempt is not a new one);
3. the estimate is evaluated (an amount, or CEL over `inputs`, `workflow.inputs`,
   `execution`); one that does not evaluate to a number >= 0 fails the task with
   `EstimateError`, like an input that does not evaluate;
4. the task's own budget, then the execution's, against what was spent, what running
   attempts reserve and this estimate (`execplan.usage.gate`). Over one: with
   `on_exceeded: pause` the execution pauses (the task stays queued, dispatched once
   a person raises the budget and resumes), with `fail` the task fails with
   `BudgetExceeded` (not retryable).

A refusal is decided here and carried out by `attempts.dispatch`, which owns what
follows a task's failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from execplan import usage
from execplan.errors import FailedPrecondition, NotFound
from execplan.executor.decide import events, requests
from execplan.executor.decide import usage as spend_fold
from execplan.executor.decide.evolve_grown import iteration_of
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError, Expr
from execplan.executor.expressions.evaluation import Where, evaluate_binding, failure
from execplan.executor.plan_view import NodeView
from execplan.executor.state import BudgetHold, ExecutionState, TaskRun
from execplan.executor.task_errors import TaskError
from execplan.executor.values import JsonValue
from execplan.usage.gate import Exceeded, exceeded, fan_out_exceeded
from execplan.v1 import execution_pb2 as ex

BUDGET_EXCEEDED = "BudgetExceeded"
TOO_MANY_ATTEMPTS = "TooManyAttempts"
ESTIMATE_ERROR = "EstimateError"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The attempt does not go: its task fails with `error`, or (`hold`) the execution
    pauses with the task still queued."""

    error: TaskError | None = None
    hold: BudgetHold | None = None


def admit(
    step: Step, task: TaskRun, node: NodeView, inputs: JsonValue
) -> dict[str, float] | Refusal:
    """The estimate of the attempt about to be leased, or why it must not go."""
    if task.phase == ex.TASK_PHASE_COMPENSATION:
        return {}
    spend = step.state.spend
    if spend.max_attempts and spend.attempts >= spend.max_attempts and _new_attempt(step, task):
        nodes = len(step.state.plan.nodes)
        return Refusal(
            TaskError(
                TOO_MANY_ATTEMPTS,
                f"the execution has dispatched {spend.attempts:,} attempts, the most this "
                f"server allows it: one per task of its plan ({nodes:,}) and "
                f"{spend.max_attempts - nodes:,} more "
                "(execplan serve --max-attempts-per-execution)",
            )
        )
    try:
        estimate = _estimate(step, task, node, inputs)
    except EvaluationError as error:
        return Refusal(failure(ESTIMATE_ERROR, error))
    if node.budget is not None:
        # An instance runs its for_each task's node: that task's budget covers them all.
        owner = _budget_owner(step.state, task.index)
        budget = task_budget(step.state, owner) or node.budget
        over = exceeded(
            budget,
            spend.tasks.get(owner, {}),
            spend.task_reserved.get(owner, {}),
            estimate,
        )
        if over is not None:
            return _refusal(over, budget, step.task_id(task), step.state.task_id(owner))
    if spend.budget is not None:
        over = exceeded(spend.budget, spend.usage, spend.reserved, estimate)
        if over is not None:
            return _refusal(over, spend.budget, step.task_id(task), "")
    return estimate


def _budget_owner(state: ExecutionState, index: int) -> int:
    grown = state.grown_of(index)
    return grown.parent if grown is not None and grown.item_index >= 0 else index


def _new_attempt(step: Step, task: TaskRun) -> bool:
    iteration = iteration_of(step.state, task, task.phase)
    return not any(
        r.attempt == task.attempt and r.phase == task.phase and r.iteration == iteration
        for r in task.attempts
    )


def _refusal(over: Exceeded, budget: usage.Budget, task_id: str, whose: str) -> Refusal:
    message = over.message(task_id, whose)
    if budget.on_exceeded == usage.FAIL:
        return Refusal(TaskError(BUDGET_EXCEEDED, message))
    hold = BudgetHold(
        over.counter, over.limit, over.spent, over.reserved, over.estimate, task_id, whose, message
    )
    return Refusal(hold=hold)


def pause(step: Step, hold: BudgetHold) -> None:
    """The execution pauses at its budget; the task stays QUEUED (resume queues it)."""
    step.emit(events.execution_paused(f"{BUDGET_EXCEEDED}: {hold.message}", "", hold))


def _estimate(step: Step, task: TaskRun, node: NodeView, inputs: JsonValue) -> dict[str, float]:
    out: dict[str, float] = {}
    for counter, amount, expr in node.estimate:
        if expr is None:
            out[counter] = amount
            continue
        # `item`/`index` of an instance, `iteration` of a repeat: the task's variables.
        context = {**step.context(frozenset(), task), "inputs": inputs}
        out[counter] = _amount(step, step.field(task, f".estimate.{counter}"), expr, context)
    return out


def _amount(step: Step, field: str, expr: Expr, context: dict[str, JsonValue]) -> float:
    where = Where(step.state.execution_id, field)
    value = step.evaluator.expression(expr, context, where, None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvaluationError(f"{where.field}: expected a number, got {value!r:.80}")
    if not math.isfinite(value) or value < 0 or value > usage.MAX_AMOUNT:
        raise EvaluationError(f"{where.field}: {value!r} is not a number in 0..1e15")
    return float(value)


def left(state: ExecutionState) -> usage.Budget | None:
    """What is left of the execution's budget, limit by limit (spent and reserved
    taken off; never below 0): the budget a child execution starts under, at most."""
    budget = state.spend.budget
    if budget is None:
        return None
    spend = state.spend
    remaining = {
        name: max(0.0, limit - usage.spent(name, spend.usage) - usage.spent(name, spend.reserved))
        for name, limit in budget.limits
    }
    return usage.Budget.of(remaining, budget.on_exceeded)


# -- the for_each pre-check --------------------------------------------------------


def fan_out(step: Step, task: TaskRun, node: NodeView, items: list[JsonValue]) -> TaskError | None:
    """Before a for_each starts any instance: would its items' estimates, added up, go
    over what is left of its own budget or the execution's? `BudgetExceeded` (the
    task fails, whatever `on_exceeded` says: no instance was started to pause at),
    or `EstimateError` for an estimate that does not evaluate for some item; None
    when it may start. An item's estimate reads `item`, `index` and its `inputs` as
    its instance will (resolved here only when an estimate reads them)."""
    spend = step.state.spend
    if not node.estimate or not items or (node.budget is None and spend.budget is None):
        return None
    try:
        total = _items_estimate(step, task, node, items)
    except EvaluationError as error:
        return failure(ESTIMATE_ERROR, error)
    task_id = step.task_id(task)
    own = task_budget(step.state, task.index) if node.budget is not None else None
    checks = [
        (own, spend.tasks.get(task.index, {}), spend.task_reserved.get(task.index, {}), task_id),
        (spend.budget, spend.usage, spend.reserved, ""),
    ]
    for budget, used, reserved, whose in checks:
        over = fan_out_exceeded(budget, used, reserved, total, len(items))
        if over is not None:
            details: dict[str, JsonValue] = {
                "task_id": task_id,
                "items": len(items),
                "counter": over.counter,
                "estimate": over.estimate,
                "limit": over.limit,
                "spent": over.spent,
                "reserved": over.reserved,
            }
            return TaskError(BUDGET_EXCEEDED, over.message(task_id, whose), False, details)
    return None


def _items_estimate(
    step: Step, task: TaskRun, node: NodeView, items: list[JsonValue]
) -> dict[str, float]:
    fixed = {counter: amount for counter, amount, expr in node.estimate if expr is None}
    total = {counter: amount * len(items) for counter, amount in fixed.items()}
    computed = [(counter, expr) for counter, _, expr in node.estimate if expr is not None]
    if not computed:
        return total
    base = step.context(node.reads, task)
    for position, item in enumerate(items):
        context = {**base, "item": item, "index": position}
        inputs = evaluate_binding(
            node.inputs,
            context,
            step.evaluator,
            Where(step.state.execution_id, step.field(task, ".inputs")),
        )
        context = {**context, "inputs": inputs}
        for counter, expr in computed:
            field = step.field(task, f".estimate.{counter}")
            total[counter] = total.get(counter, 0.0) + _amount(step, field, expr, context)
    return total


# -- usage reports -----------------------------------------------------------------


def report(
    step: Step,
    task_id: str,
    lease: tuple[int, int, int],
    worker_id: str,
    amounts: Mapping[str, float],
    *,
    number: int,
) -> str:
    """Records usage a worker reported for one of its attempts (`lease`: phase, attempt,
    epoch; also one that ended); "" when recorded (or recorded before: a repeat of
    report `number`), else why not. `number` 0: usage that came with the result."""
    phase, attempt, epoch = lease
    state = step.state
    index = state.index_of(task_id)
    if index is None:
        return f"unknown task {task_id[:200]!r}"
    leased = any(
        r.phase == phase and r.attempt == attempt and r.epoch == epoch and r.worker_id == worker_id
        for r in state.tasks[index].attempts
    )
    if not leased:
        return "not an attempt leased to this worker"
    spent = state.spend.leases.get((index, phase, attempt, epoch))
    if number and spent is not None and number <= spent.reports:
        return ""  # recorded before: a report sent again after a reconnect
    problem = usage.check_counters(amounts)
    if problem is not None:
        return f"malformed usage: {problem}"
    if not amounts:
        return ""
    step.emit(
        events.task_usage(
            task_id, phase, attempt, epoch, amounts, report=number, worker_id=worker_id
        )
    )
    return ""


# -- budget changes ----------------------------------------------------------------


def change(
    step: Step, requested: usage.Budget, request_id: str, reason: str, task_id: str = ""
) -> usage.Budget:
    """Sets the limits `requested` names (the others stay) and its action unless ""; the
    budget in force. With `task_id`, of that task's own budget (FailedPrecondition
    when it has none: the plan gives a task its budget). Idempotent on `request_id`
    (requests.py)."""
    state = step.state
    index = _budgeted_task(state, task_id) if task_id else -1
    params = spend_fold.change_digest(requested, reason, task_id)
    if requests.repeated(state, request_id, "set_budget", params) is None:
        current = (task_budget(state, index) if task_id else state.spend.budget) or usage.Budget()
        budget = current.changed(dict(requested.limits), requested.on_exceeded)
        if budget != current:
            step.emit(events.budget_changed(budget, requested, request_id, reason, task_id))
    found = task_budget(state, index) if task_id else state.spend.budget
    return found or usage.Budget()


def task_budget(state: ExecutionState, index: int) -> usage.Budget | None:
    """The budget in force of task `index` (raised, or its plan's), None without one."""
    return state.spend.task_budgets.get(index) or state.node(index).budget


def _budgeted_task(state: ExecutionState, task_id: str) -> int:
    index = state.index_of(task_id)
    if index is None:
        raise NotFound(f"execution {state.execution_id} has no task {task_id[:200]!r}")
    if state.node(index).budget is None or _budget_owner(state, index) != index:
        raise FailedPrecondition(
            f"task {task_id[:200]} has no budget of its own (the plan gives a task its "
            "budget; an instance's is its for_each task's)"
        )
    return index
