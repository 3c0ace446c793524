"""Budgets and estimates (docs/usage.md): checked, then compiled into the plan.

    budget:   {cost: 10.0, tokens: 2000000, counters: {searches: 50}, on_exceeded: pause}
    estimate: {cost: 0.05, tokens: "size(inputs.prompt) / 4"}

`check(wf, diags)` reports every problem and returns a `Budgets` with what compiled;
`Budgets.apply(plan)` puts it into a built plan (the compiler calls it only when the
workflow has a budget or an estimate, so plans without one never pay for it).

Rules (codes):

    invalid-budget     a limit < 0, non-finite or above usage.MAX_AMOUNT; a counter
                       name that is not [a-z][a-z0-9_]*; `cost` or `tokens` under
                       `counters` (they have their own fields); more than
                       usage.MAX_COUNTERS limits
    invalid-estimate   the same for an estimate's amounts and names; an expression
                       that does not parse, is over the expression bounds, or reads
                       anything but `inputs`, `workflow.inputs`, `execution` and, in
                       a for_each task, `item` and `index` (`iteration` in a repeat)

An estimate's expression reads the task's *resolved* inputs (`inputs.prompt`), so it
needs no data edge of its own: whatever it reads from upstream tasks comes through the
inputs, which already have their edges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from execplan import usage
from execplan.planner import expressions as ex
from execplan.planner.diagnostics import Diagnostics, child, echo
from execplan.planner.model import BudgetSpec, EstimateSpec, Task, Workflow
from execplan.planner.plan import (
    FORMAT_VERSION_BUDGETS,
    EstimateAmount,
    Expression,
    Plan,
    PlanEstimate,
)

# A number as an estimate may write it ("0.05", "4000", "1e3"); anything else is CEL.
_NUMBER = re.compile(r"\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*")
_ALWAYS = frozenset({"inputs", "workflow", "execution"})


@dataclass(slots=True)
class Budgets:
    """What `check` compiled: the workflow's budget, and per task (by task id) its
    budget and estimate."""

    workflow: usage.Budget | None = None
    tasks: dict[str, tuple[usage.Budget | None, PlanEstimate | None]] | None = None

    def __bool__(self) -> bool:
        return self.workflow is not None or bool(self.tasks)

    def apply(self, plan: Plan) -> Plan:
        """`plan` with the budgets and estimates in place (plan_id not recomputed)."""
        nodes = plan.nodes
        if self.tasks:
            nodes = tuple(
                replace(n, budget=found[0], estimate=found[1])
                if (found := self.tasks.get(n.task_id)) is not None
                else n
                for n in plan.nodes
            )
        return replace(
            plan,
            nodes=nodes,
            budget=self.workflow,
            format_version=max(plan.format_version, FORMAT_VERSION_BUDGETS),
        )


def check(wf: Workflow, diags: Diagnostics) -> Budgets:
    out = Budgets(workflow=compile_budget(wf.budget, "budget", diags))
    for t in wf.beyond_plain():
        if t.budget is None and t.estimate is None:
            continue
        budget = compile_budget(t.budget, f"{t.path}.budget", diags)
        estimate = _estimate(t, wf, diags)
        if budget is not None or estimate is not None:
            if out.tasks is None:
                out.tasks = {}
            out.tasks[t.id] = (budget, estimate)
    return out


def compile_budget(spec: BudgetSpec | None, path: str, diags: Diagnostics) -> usage.Budget | None:
    """The budget of `spec` (None when absent); problems reported at `path`."""
    if spec is None:
        return None
    limits: dict[str, float] = {}
    for name, value in ((usage.COST, spec.cost), (usage.TOKENS, spec.tokens)):
        if value is not None and _amount_ok(value, f"{path}.{name}", "invalid-budget", diags):
            limits[name] = value
    for name, value in spec.counters.items():
        where = child(f"{path}.counters", name)
        if _name_ok(name, where, "invalid-budget", diags, under_counters=True) and _amount_ok(
            value, where, "invalid-budget", diags
        ):
            limits[name] = value
    if len(limits) > usage.MAX_COUNTERS:
        diags.error(
            "invalid-budget",
            path,
            f"{len(limits)} limits; at most {usage.MAX_COUNTERS} per budget",
        )
    return usage.Budget.of(limits, spec.on_exceeded or usage.PAUSE)


def _estimate(t: Task, wf: Workflow, diags: Diagnostics) -> PlanEstimate | None:
    spec: EstimateSpec | None = t.estimate
    if spec is None:
        return None
    path = f"{t.path}.estimate"
    written = [
        (usage.COST, spec.cost, f"{path}.cost", False),
        (usage.TOKENS, spec.tokens, f"{path}.tokens", False),
    ]
    written += [(n, v, child(f"{path}.counters", n), True) for n, v in spec.counters.items()]
    allowed = _ALWAYS | _variables(t)
    amounts: list[EstimateAmount] = []
    for name, text, where, under in written:
        if not text or not _name_ok(name, where, "invalid-estimate", diags, under_counters=under):
            continue
        amount = _one_amount(name, text, where, allowed, wf=wf, diags=diags)
        if amount is not None:
            amounts.append(amount)
    if len(amounts) > usage.MAX_COUNTERS:
        diags.error(
            "invalid-estimate", path, f"{len(amounts)} amounts; at most {usage.MAX_COUNTERS}"
        )
    if not amounts:
        return None
    return PlanEstimate(tuple(sorted(amounts, key=_by_counter)))


def _by_counter(a: EstimateAmount) -> str:
    return a.counter


def _variables(t: Task) -> frozenset[str]:
    names: set[str] = set()
    if t.for_each:
        names |= {"item", "index"}
    if t.repeat is not None:
        names.add("iteration")
    return frozenset(names)


def _one_amount(
    name: str, text: str, where: str, allowed: frozenset[str], *, wf: Workflow, diags: Diagnostics
) -> EstimateAmount | None:
    if _NUMBER.fullmatch(text):
        value = float(text)
        if not _amount_ok(value, where, "invalid-estimate", diags):
            return None
        return EstimateAmount(name, value)
    source = text.strip()
    if source.startswith(ex.OPEN) and source.endswith(ex.CLOSE):
        source = source[len(ex.OPEN) : -len(ex.CLOSE)].strip()  # `${{ }}` tolerated
    problem = ex.check_expression_bounds(source) or _parse_problem(source)
    if problem is not None:
        diags.error(problem[0], where, problem[1])
        return None
    unknown = [v for v in ex.free_variables(source) if v not in allowed]
    if unknown:
        diags.error(
            "invalid-estimate",
            where,
            f"an estimate reads inputs, workflow.inputs, execution"
            f"{' and ' + ', '.join(sorted(allowed - _ALWAYS)) if allowed - _ALWAYS else ''}"
            f", not {echo(unknown[0])} (pass what it needs through the task's inputs)",
        )
        return None
    analysis = ex.analyze_expression(source)
    for declared in analysis.reads_inputs:
        if declared not in wf.inputs:
            diags.error(
                "unknown-reference", where, f"workflow.inputs.{declared} is not a declared input"
            )
            return None
    variables = tuple(v for v in ex.free_variables(source) if v in ex.VARIABLES)
    expr = Expression(source, (), analysis.reads_inputs, analysis.reads_execution, variables)
    return EstimateAmount(name, 0.0, expr)


def _parse_problem(source: str) -> tuple[str, str] | None:
    if not source:
        return ("invalid-estimate", "an empty expression")
    error = ex.compile_cel(source)
    return None if error is None else ("invalid-expression", error)


def _name_ok(
    name: str, where: str, code: str, diags: Diagnostics, *, under_counters: bool = False
) -> bool:
    if under_counters and name in (usage.COST, usage.TOKENS):
        diags.error(code, where, f"write {name} as its own field, not under counters")
        return False
    if not usage.valid_counter(name):
        diags.error(code, where, f"counter name {echo(name)} is not {usage.COUNTER_PATTERN}")
        return False
    return True


def _amount_ok(value: float, where: str, code: str, diags: Diagnostics) -> bool:
    problem = usage.check_amount(value)
    if problem is not None:
        diags.error(code, where, problem)
        return False
    return True
