"""The flow-control facts of a queued attempt, from its resolved inputs: the key of
its concurrency limit, what it takes from which token buckets, its cache key and its
breaker's key (docs/flow-control.md, "Keys").

    facts = task_facts(step, index)     # EvaluationError / EvaluationPending as inputs do
    facts.limit       # ("llm.chat", "gpt-4o", 4) or None
    facts.uses        # (("openai-rpm", "gpt-4o", 1), ...)
    facts.cache_key   # "" when the task is not cached
    facts.breaker_key # "" for a breaker per task type

Keys read `inputs` (the task's resolved inputs), `workflow.inputs`, `execution` and
an instance's `item` and `index`; their values become text through
`execplan.flow.keys.key_text`, the one rule every layer uses (the store, `execplan
limits`, `execplan cache purge --key`).
"""

from __future__ import annotations

from dataclasses import dataclass

from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError, Expr
from execplan.executor.expressions.evaluation import Where, evaluate_binding
from execplan.executor.values import JsonValue
from execplan.flow.keys import default_cache_key, key_text
from execplan.flow.rates import MAX_UNITS


@dataclass(frozen=True, slots=True)
class Facts:
    limit: tuple[str, str, int] | None  # (name, key, max)
    uses: tuple[tuple[str, str, int], ...]  # (bucket, key, units)
    cache_key: str
    breaker_key: str


NO_FACTS = Facts(None, (), "", "")


def task_facts(step: Step, index: int) -> Facts:
    """The facts of task `index`'s main attempt (its node has flow control or a keyed
    breaker); raises EvaluationError for a key or units that do not evaluate."""
    state = step.state
    task = state.tasks[index]
    node = state.node(index)
    # As the dispatch resolves them: an instance's `item` and `index`, a sub-plan
    # task's own `workflow` (step.py).
    inputs = step.evaluate(step.field(task, ".inputs"), node.inputs, node.reads, task)
    context = step.context(frozenset(), task)
    context["inputs"] = inputs

    def value(expr: Expr, field: str) -> JsonValue:
        where = Where(state.execution_id, step.field(task, f".{field}"))
        try:
            return evaluate_binding(expr, context, step.evaluator, where)
        except EvaluationError as error:  # the task's error names the field
            raise type(error)(f"{field}: {error}") from error

    def key(expr: Expr | None, field: str) -> str:
        return "" if expr is None else key_text(value(expr, field))

    flow = node.flow
    limit = None
    uses: list[tuple[str, str, int]] = []
    cache_key = ""
    if flow is not None:
        if flow.limit is not None:
            limit = (flow.limit.name, key(flow.limit.key, "limit.key"), flow.limit.max)
        for i, use in enumerate(flow.rate_limits):
            units = use.units
            if use.units_expr is not None:
                units = _units(value(use.units_expr, f"rate_limits[{i}].units"), i)
            uses.append((use.name, key(use.key, f"rate_limits[{i}].key"), units))
        if flow.cache is not None:
            cache_key = (
                key(flow.cache.key, "cache.key")
                if flow.cache.key is not None
                else default_cache_key(node.type, inputs)
            )
    breaker = node.breaker
    breaker_key = key(breaker.key, "circuit_breaker.key") if breaker is not None else ""
    return Facts(limit, tuple(uses), cache_key, breaker_key)


def _units(value: JsonValue, i: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_UNITS:
        raise EvaluationError(
            f"rate_limits[{i}].units: {value!r} is not a whole number of units "
            f"within 1..{MAX_UNITS:,}"
        )
    return value
