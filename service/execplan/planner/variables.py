"""Where a task's expressions may read the runtime variables (docs/runtime-plans.md).

    variable            defined on              readable in
    item, index         a task with for_each    inputs, when, fallback and
                                                compensation inputs, repeat.until
    iteration, previous a task with repeat      inputs, fallback and compensation
                                                inputs, repeat.until
    output              a task with repeat      repeat.until only

Nowhere else: `for_each` itself defines `item` (so it cannot read it), `when` of a
repeat task is evaluated once before the first iteration, and workflow outputs are
evaluated when every task is done. `expressions.analyze_expression` reports which
variables an expression reads (`Expression.reads_variables`); this module says,
site by site, whether that is allowed, with a message that says where it would be.

    check(refs, task, "inputs", diags)      # one diagnostic per misplaced variable
"""

from __future__ import annotations

from collections.abc import Iterable

from execplan.planner.diagnostics import Diagnostics
from execplan.planner.model import Task
from execplan.planner.plan import Expression

# Sites: where in a task (or the workflow) an expression was written.
SITES = ("inputs", "when", "fallback", "compensation", "until", "for_each", "outputs")
_FOR_EACH = frozenset({"item", "index"})
_REPEAT = frozenset({"iteration", "previous"})


def allowed(task: Task | None, site: str) -> frozenset[str]:
    """The variables an expression at `site` of `task` may read (None: workflow outputs)."""
    if task is None or site in ("for_each", "outputs"):
        return frozenset()
    names: set[str] = set()
    if task.for_each:
        names |= _FOR_EACH
    if task.repeat is not None and site != "when":
        names |= _REPEAT
        if site == "until":
            names.add("output")
    return frozenset(names)


def _why(name: str, task: Task | None, site: str) -> str:
    if site == "outputs":
        return f"workflow outputs are evaluated at the end: {name} is not defined there"
    if site == "for_each" and name in _FOR_EACH:
        return f"for_each defines {name}: it cannot read it"
    if name == "output":
        return "output is defined only in repeat.until (read a task's as tasks.ID.output)"
    if name in _FOR_EACH:
        return (
            f"{name} is defined only in a task with for_each (its inputs, when, "
            "fallback and compensation inputs, repeat.until)"
        )
    if task is not None and task.repeat is not None and site == "when":
        return (
            f"when is evaluated once, before the first iteration: {name} is readable "
            "in inputs and repeat.until"
        )
    return (
        f"{name} is defined only in a task with repeat (its inputs, fallback and "
        "compensation inputs, repeat.until)"
    )


def check(
    refs: Iterable[tuple[str, Expression]], task: Task | None, site: str, diags: Diagnostics
) -> None:
    """Report each variable read at a site where it is not defined."""
    ok: frozenset[str] | None = None
    for path, expr in refs:
        if not expr.reads_variables:
            continue
        if ok is None:
            ok = allowed(task, site)
        for name in expr.reads_variables:
            if name not in ok:
                diags.error("unknown-reference", path, _why(name, task, site))
