"""Evaluating a plan's bindings at run time: inline when cheap, in the sandbox otherwise.

    Machine.evaluate(field, binding, reads)
      -> evaluate_binding: walks literals, templates, structs and lists
        -> Evaluator.expression, once per CEL expression:
             cheap (executor/expressions/cost.py): executed right here, on the caller's
             thread; otherwise `heavy()`, which each evaluator does its own way:
               BlockingEvaluator  waits for the sandbox (replay, tests, tools)
               LiveEvaluator      the engine's (executor/runtime/evaluations.py): finished
                                  evaluations are memoized; a miss raises
                                  EvaluationPending and the engine retries the input
                                  once the sandbox has answered

Errors (a Machine turns them into the task's or the execution's failure):

    EvaluationError                a CEL error: no such key, no such overload...
     └── ExpressionBudgetExceeded  ran out of time, memory, result or context size;
                                   `str()` starts with the field, "tasks[2].when: ..."
    EvaluationPending              not an error: no outcome yet (engine only)

Fields name the expression as the workflow does: `tasks[2].when`,
`tasks[2].inputs.x`, `tasks[2].fallback.inputs.items[0]`, `outputs.receipt`.
"""

from __future__ import annotations

import atexit
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from execplan.executor.expressions.bindings import (
    BindingNode,
    EvaluationError,
    Expr,
    Literal,
    StructBinding,
    Template,
    interpolate,
)
from execplan.executor.expressions.cel_runtime import CelFailure, execute
from execplan.executor.expressions.cost import inline, narrow, shape
from execplan.executor.expressions.sandbox import Outcome, Sandbox
from execplan.executor.task_errors import EXPRESSION_BUDGET_EXCEEDED, TaskError
from execplan.executor.values import JsonValue, non_finite

# The error type of a task (or execution) whose expression ran out of budget.
BUDGET_EXCEEDED = EXPRESSION_BUDGET_EXCEEDED
_EXCERPT = 80
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExpressionBudgetExceeded(EvaluationError):
    """Evaluation ran out of its budget; never retried (it would again)."""


def failure(kind: str, error: EvaluationError) -> TaskError:
    """How an expression's error fails its task or execution: `kind` for what the
    expression did wrong (BindingError, ConditionError, OutputError), or
    ExpressionBudgetExceeded when it ran out of its budget. Neither is retryable:
    the same expression would fail the same way."""
    if isinstance(error, ExpressionBudgetExceeded):
        kind = BUDGET_EXCEEDED
    return TaskError(kind, str(error))


@dataclass(frozen=True, slots=True)
class Request:
    """An evaluation for the sandbox: one expression over what it is handed."""

    execution_id: str
    field: str
    source: str
    handed: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.execution_id, self.field, self.source)


class EvaluationPending(Exception):
    """The engine's evaluator has no outcome for `request` yet."""

    def __init__(self, request: Request) -> None:
        super().__init__(f"{request.field}: waiting for the expression sandbox")
        self.request = request


@dataclass(frozen=True, slots=True)
class Where:
    """The binding being evaluated: its execution and field (`tasks[2].inputs`)."""

    execution_id: str
    field: str


# A path below a binding's field, built only when needed: (parent, ".name" | "[0]").
Path = tuple[Any, str] | None


def field_of(where: Where, path: Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, part = path
        parts.append(part)
    return where.field + "".join(reversed(parts))


def _member(name: str) -> str:
    return f".{name}" if _IDENTIFIER.fullmatch(name) else f"[{name!r}]"


class Evaluator(Protocol):
    def expression(
        self, expr: Expr, context: Mapping[str, JsonValue], where: Where, path: Path
    ) -> JsonValue: ...


def evaluate_binding(
    node: BindingNode,
    context: Mapping[str, JsonValue],
    evaluator: Evaluator,
    where: Where,
    path: Path = None,
) -> JsonValue:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Expr):
        return evaluator.expression(node, context, where, path)
    if isinstance(node, Template):
        return "".join(
            part
            if isinstance(part, str)
            else interpolate(evaluator.expression(part, context, where, path))
            for part in node.parts
        )
    if isinstance(node, StructBinding):
        return {
            name: evaluate_binding(child, context, evaluator, where, (path, _member(name)))
            for name, child in node.fields
        }
    return [
        evaluate_binding(child, context, evaluator, where, (path, f"[{i}]"))
        for i, child in enumerate(node.items)
    ]


class InlineFirst:
    """Cheap expressions run inline; subclasses say how the rest is evaluated."""

    def expression(
        self, expr: Expr, context: Mapping[str, JsonValue], where: Where, path: Path
    ) -> JsonValue:
        form = shape(expr.source)
        if form.refused:  # a plan that did not come from this planner
            field = field_of(where, path)
            raise ExpressionBudgetExceeded(f"{field}: {form.refused}")
        handed = narrow(form, context)
        if inline(form, handed):
            try:
                value = execute(expr.source, handed)
            except CelFailure as error:
                raise EvaluationError(f"{expr.source}: {error}") from error
            return finite(value, expr.source)
        return self.heavy(Request(where.execution_id, field_of(where, path), expr.source, handed))

    def heavy(self, request: Request) -> JsonValue:
        raise NotImplementedError


def settle(outcome: Outcome, request: Request) -> JsonValue:
    """The value of a finished evaluation, or its error (see the module docstring)."""
    if outcome.exceeded:
        raise ExpressionBudgetExceeded(budget_message(request.field, outcome.exceeded, request))
    if outcome.error:
        raise EvaluationError(f"{request.source}: {outcome.error}")
    return finite(outcome.value, request.source)


def finite(value: JsonValue, source: str) -> JsonValue:
    """`value`, unless it holds NaN or an infinity (`1.0 / 0.0`): no JSON value, so
    no worker could read it as an input and no client could show it as an output."""
    where = non_finite(value)
    if where is not None:
        raise EvaluationError(f"{source}: the value{where} is not a JSON number (NaN or infinite)")
    return value


def budget_message(field: str, how: str, request: Request) -> str:
    source = " ".join(request.source.split())
    if len(source) > _EXCERPT:
        source = source[: _EXCERPT - 3] + "..."
    return f"{field}: {how} ({source})"


class BlockingEvaluator(InlineFirst):
    """Waits for the sandbox: for code that is not on the event loop (replay, tests).

    `recorded(field)`: during a replay, the message of the budget failure the history
    recorded for this field at this point, if any. Running out of time or memory
    depends on the machine and its load, so a replay takes the recorded outcome
    rather than running the evaluation again (and maybe finishing it this time).
    """

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        recorded: Callable[[str], str | None] | None = None,
        timeout_ms: int | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._recorded = recorded
        self._timeout_ms = timeout_ms

    def heavy(self, request: Request) -> JsonValue:
        if self._recorded is not None:
            message = self._recorded(request.field)
            if message is not None:
                raise ExpressionBudgetExceeded(message)
        sandbox = self._sandbox or shared_sandbox()
        return settle(sandbox.evaluate(request.source, request.handed, self._timeout_ms), request)


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def shared_sandbox() -> Sandbox:
    """A process-wide sandbox for code without its own (closed at exit)."""
    global _shared  # noqa: PLW0603 - one lazily started pool per process
    with _shared_lock:
        if _shared is None:
            _shared = Sandbox()
            atexit.register(_shared.close)
        return _shared


DEFAULT_EVALUATOR = BlockingEvaluator()
