"""Which expressions are cheap enough to evaluate inline, and what each is handed.

Evaluating inline (on the event loop, ~10 us) is safe only when the work is bounded
by something small. The CEL library converts every value it is handed into its own
form and every value it returns back (~1 us per value), and an operator copies or
scans its operands. So, with L the source length, R the references to `workflow`,
`tasks` or `execution` in it, and V values / B bytes handed in:

- no comprehension (`all`, `exists`, `exists_one`, `map`, `filter`, ...): those
  multiply work by the size of a list, and nest;
- values converted, in and out: `(R + 1) * V + L <= INLINE_VALUES` (without a
  comprehension a result holds at most R copies of what was handed in, plus literals);
- bytes operators may touch: `L * (L + R * B) <= INLINE_BYTES` (at most L operators,
  each over at most everything built so far), plus `(L + B)^2` with a regex
  (`matches`: pattern and text each at most L + B);
- `L <= MAX_INLINE_SOURCE`, which also keeps nesting, and so the library's recursion,
  far from the native stack's end.

Everything else goes to the sandbox (executor/expressions/sandbox.py). The typical expression
(`tasks.charge.output.receipt_id`, a few hundred bytes handed in) passes with three
orders of magnitude to spare.

What an expression is handed is narrowed to what it reads (the planner's analysis:
`tasks.ID`, `workflow.inputs.NAME`, `execution`, runtime variables such as `item`),
so a large input that one task uses does not make every other expression expensive.
An expression the analysis cannot account for (a plan that did not come from this
planner) is handed everything.

A source over the planner's static bounds (size, nesting, depth, nested
comprehensions: planner/expressions.py `check_expression_bounds`) is never evaluated
at all; only a plan registered without this planner can carry one (`Shape.refused`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from execplan.planner.cache import small_key_cache
from execplan.planner.expressions import (
    MAX_EXPRESSION_BYTES,
    analyze_expression,
    check_expression_bounds,
)

MAX_INLINE_SOURCE = 4096
INLINE_VALUES = 2048
INLINE_BYTES = 16 * 1024 * 1024

# Conservative on purpose: a match inside a string literal only sends the expression
# to the sandbox, which gives the same answer.
_MACRO_NAMES = (
    "all|exists|exists_one|map|filter|transformList|transformMap|transformMapEntry|sort|sortBy"
)
_COMPREHENSION = re.compile(rf"\b({_MACRO_NAMES})\s*\(")
_REGEX = re.compile(r"\bmatches\s*\(")
# `output` also counts inside `tasks.x.output`: an overestimate only sends an
# expression to the sandbox sooner.
_ROOTS = re.compile(r"\b(workflow|tasks|execution|item|index|iteration|previous|output)\b")
_MACRO_SET = frozenset(_MACRO_NAMES.split("|"))


@dataclass(frozen=True, slots=True)
class Narrowing:
    """The part of the context an expression reads (None in a Shape: all of it)."""

    tasks: tuple[str, ...]
    inputs: tuple[str, ...] | None  # None: every workflow input
    execution: bool
    # Runtime variables read (item, index, iteration, previous, output).
    variables: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Shape:
    """What the source alone says about an expression's cost (computed once)."""

    length: int
    refs: int
    comprehension: bool
    regex: bool
    narrowing: Narrowing | None
    refused: str = ""  # "code: message" of a static bound it is over

    @property
    def may_inline(self) -> bool:
        return not self.comprehension and self.length <= MAX_INLINE_SOURCE


def shape(source: str) -> Shape:
    """Cached by source, but never keeping a long one alive: over the size bound the
    answer takes no reading (refused), up to 1 KiB the cache is large, up to the
    bound (16 KiB) small."""
    if len(source) > MAX_EXPRESSION_BYTES:
        return _measure_source(source)
    return _shape(source) if len(source) <= 1024 else _long_shape(source)


@small_key_cache(maxsize=32768)
def _shape(source: str) -> Shape:
    return _measure_source(source)


@lru_cache(maxsize=256)  # up to 16 KiB each: a few MiB at most
def _long_shape(source: str) -> Shape:
    return _measure_source(source)


def _measure_source(source: str) -> Shape:
    length = len(source)
    refused = check_expression_bounds(source)
    if refused is not None:
        return Shape(length, 0, True, True, None, f"{refused[0]}: {refused[1]}")
    if length > MAX_INLINE_SOURCE:  # never inline; not worth analysing on the loop
        return Shape(length, length, True, True, None)
    return Shape(
        length=length,
        refs=len(_ROOTS.findall(source)),
        comprehension=_COMPREHENSION.search(source) is not None,
        regex=_REGEX.search(source) is not None,
        narrowing=_narrowing(source),
    )


def _narrowing(source: str) -> Narrowing | None:
    analysis = analyze_expression(source)
    if analysis.problems:
        return None
    # `workflow.inputs.map(...)` reads as an input named "map" to the analysis.
    inputs = None if _MACRO_SET & set(analysis.reads_inputs) else analysis.reads_inputs
    return Narrowing(
        analysis.reads_tasks, inputs, analysis.reads_execution, analysis.reads_variables
    )


def narrow(expression: Shape, context: Mapping[str, Any]) -> dict[str, Any]:
    """The context handed to the expression: only what it reads."""
    reads = expression.narrowing
    if reads is None:
        return dict(context)
    workflow = context.get("workflow") or {}
    inputs = workflow.get("inputs") or {}
    if reads.inputs is not None:
        inputs = {name: inputs[name] for name in reads.inputs if name in inputs}
    handed: dict[str, Any] = {"workflow": {"inputs": inputs}}
    if reads.tasks:
        tasks = context.get("tasks") or {}
        handed["tasks"] = {task: tasks[task] for task in reads.tasks if task in tasks}
    if reads.execution and "execution" in context:
        handed["execution"] = context["execution"]
    for name in reads.variables:
        if name in context:
            handed[name] = context[name]
    return handed


def inline(expression: Shape, handed: Mapping[str, Any]) -> bool:
    """May this expression, handed `handed`, be evaluated on the event loop?"""
    if not expression.may_inline:
        return False
    length, refs = expression.length, expression.refs
    max_values = (INLINE_VALUES - length) // (refs + 1)
    max_bytes = INLINE_BYTES // max(length, 1)
    values, nbytes = measure(handed, max_values, max_bytes)
    if values > max_values:
        return False
    work = length * (length + refs * nbytes)
    if expression.regex:
        work += (length + nbytes) ** 2
    return work <= INLINE_BYTES


def measure(value: Any, max_values: int, max_bytes: int) -> tuple[int, int]:
    """(values, bytes) in a JSON-like value, counted until either passes its maximum."""
    counts = [0, 0]
    _walk(value, counts, max_values, max_bytes)
    return counts[0], counts[1]


def _walk(value: Any, counts: list[int], max_values: int, max_bytes: int) -> bool:
    """Adds `value` to counts; False once a maximum is passed (the walk stops)."""
    counts[0] += 1
    kind = type(value)
    if kind is str or kind is bytes:
        counts[1] += len(value)
    elif kind is dict:
        counts[1] += 2
        for key, item in value.items():
            counts[1] += len(key) + 1
            if not _walk(item, counts, max_values, max_bytes):
                return False
    elif kind is list or kind is tuple:
        counts[1] += 2
        for item in value:
            if not _walk(item, counts, max_values, max_bytes):
                return False
    else:
        counts[1] += 8
    return counts[0] <= max_values and counts[1] <= max_bytes
