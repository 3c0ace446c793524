"""Structural checks of an `ExecutionPlan` that a caller sent, before the executor uses it.

Plans the server compiles itself are consistent by construction. A plan in a request
(`StartExecutionRequest.plan`, `RegisterPlanRequest.plan`, `ReplayExecutionRequest.plan`)
may have been written by anyone, and the executor indexes its node lists directly: a
node index out of range crashed the replay check (INTERNAL), and an upstream index
that names no node, or a cycle, started an execution that could never finish. So a
client's plan must be a graph the executor can run:

  - `nodes[i].index == i`; task ids non-empty and unique; task ids and types no
    longer than the planner's names (`planner.limits.MAX_NAME_CHARS`);
  - every `upstream`/`downstream` index names another node, and the two lists agree
    (u is upstream of d exactly when d is downstream of u); no cycle;
  - every edge names two nodes;
  - every expression reads only tasks of the plan (for_each and repeat.until too);
  - budgets and estimates name valid counters with valid amounts (`execplan.usage`);
  - every expression is within the planner's bounds (size, nesting, operator chains,
    comprehensions: `planner.expressions.check_expression_bounds`), because the
    executor hands them to the CEL library, which overflows the native stack
    (SIGSEGV, the whole server) on a long enough chain.

Each problem is a `FieldViolation` naming the path (`plan.nodes[3].upstream[0]`);
at most `_MAX_VIOLATIONS` are reported.

    check_plan(request.plan)        # raises InvalidArgument
"""

from __future__ import annotations

from execplan import usage
from execplan.errors import FailedPrecondition, FieldViolation, InvalidArgument
from execplan.executor.plan_view import RUNNABLE_FORMAT_VERSION
from execplan.planner import limits
from execplan.planner.expressions import check_expression_bounds
from execplan.usage.codec import budget_limits
from execplan.v1 import plan_pb2

_MAX_VIOLATIONS = 20


def check_format(plan: plan_pb2.ExecutionPlan, field: str = "plan") -> None:
    """Raise FailedPrecondition when the executor cannot run this plan's format
    (plan_view.RUNNABLE_FORMAT_VERSION: a newer plan is refused, not run wrong)."""
    if plan.format_version > RUNNABLE_FORMAT_VERSION:
        raise FailedPrecondition(
            f"{field} has format_version {plan.format_version}; this executor runs plans "
            f"up to format {RUNNABLE_FORMAT_VERSION} (runtime plans need format 2, budgets "
            "and estimates 3)"
        )


def check_plan(plan: plan_pb2.ExecutionPlan, field: str = "plan") -> None:
    """Raise InvalidArgument listing what makes `plan` unrunnable."""
    found = (
        _structure(plan, field)
        or _reads(plan, field)
        or _bounds(plan, field)
        or _budgets(plan, field)
    )
    if found:
        raise InvalidArgument(
            f"{field} is not a consistent plan: {found[0].field}: {found[0].description}",
            found[:_MAX_VIOLATIONS],
        )


def _structure(plan: plan_pb2.ExecutionPlan, field: str) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    size = len(plan.nodes)
    if not plan.plan_id or not size:
        return [FieldViolation(f"{field}.plan_id", "a compiled plan has a plan_id and nodes")]
    seen: dict[str, int] = {}
    for i, node in enumerate(plan.nodes):
        path = f"{field}.nodes[{i}]"
        if node.index != i:
            found.append(FieldViolation(f"{path}.index", f"must be {i}, its position"))
        if not node.task_id:
            found.append(FieldViolation(f"{path}.task_id", "required"))
        elif node.task_id in seen:
            found.append(
                FieldViolation(f"{path}.task_id", f"duplicate of nodes[{seen[node.task_id]}]")
            )
        else:
            seen[node.task_id] = i
        for name in ("task_id", "type"):
            if len(getattr(node, name)) > limits.MAX_NAME_CHARS:
                found.append(
                    FieldViolation(f"{path}.{name}", f"at most {limits.MAX_NAME_CHARS} characters")
                )
        for name in ("upstream", "downstream"):
            for k, other in enumerate(getattr(node, name)):
                if other >= size or other == i:
                    found.append(
                        FieldViolation(f"{path}.{name}[{k}]", f"no other node has index {other}")
                    )
    for k, edge in enumerate(plan.edges):
        if edge.source >= size or edge.target >= size:
            found.append(FieldViolation(f"{field}.edges[{k}]", f"a node index is not below {size}"))
    if found:
        return found
    return _links(plan, field) or _cycle(plan, field)


def _links(plan: plan_pb2.ExecutionPlan, field: str) -> list[FieldViolation]:
    up = {(u, i) for i, node in enumerate(plan.nodes) for u in node.upstream}
    down = {(i, d) for i, node in enumerate(plan.nodes) for d in node.downstream}
    found = [
        FieldViolation(f"{field}.nodes[{d}].upstream", f"lists {u}, whose downstream lacks {d}")
        for u, d in sorted(up - down)
    ]
    found += [
        FieldViolation(f"{field}.nodes[{u}].downstream", f"lists {d}, whose upstream lacks {u}")
        for u, d in sorted(down - up)
    ]
    return found


def _cycle(plan: plan_pb2.ExecutionPlan, field: str) -> list[FieldViolation]:
    waiting = [len(set(node.upstream)) for node in plan.nodes]
    ready = [i for i, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for d in set(plan.nodes[i].downstream):
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    if done == len(plan.nodes):
        return []
    stuck = next(i for i, count in enumerate(waiting) if count > 0)
    return [FieldViolation(f"{field}.nodes[{stuck}].upstream", "the graph has a cycle")]


def _reads(plan: plan_pb2.ExecutionPlan, field: str) -> list[FieldViolation]:
    known = {node.task_id for node in plan.nodes}
    found: list[FieldViolation] = []
    for i, node in enumerate(plan.nodes):
        path = f"{field}.nodes[{i}]"
        reads = set(node.condition.reads_tasks)
        reads |= set(node.for_each.reads_tasks) | set(node.repeat.until.reads_tasks)
        for binding in node.bindings:
            reads |= _expression_reads(binding.value)
        for side in ("fallback", "compensation"):
            for binding in getattr(node, side).bindings:
                reads |= _expression_reads(binding.value)
        found += [
            FieldViolation(path, f"an expression reads unknown task {task!r}")
            for task in sorted(reads - known)
        ]
    for k, output in enumerate(plan.outputs):
        found += [
            FieldViolation(f"{field}.outputs[{k}]", f"reads unknown task {task!r}")
            for task in sorted(_expression_reads(output.value) - known)
        ]
    return found


def _expression_reads(value: plan_pb2.BindingValue) -> set[str]:
    """Task ids read by the expressions of a binding tree (iterative: no recursion
    limit for a deep tree that the message parser accepted)."""
    reads: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        kind = item.WhichOneof("kind")
        if kind == "expression":
            reads.update(item.expression.reads_tasks)
        elif kind == "template":
            for part in item.template.parts:
                reads.update(part.expression.reads_tasks)
        elif kind == "struct":
            stack.extend(f.value for f in item.struct.fields)
        elif kind == "list":
            stack.extend(item.list.items)
    return reads


def _bounds(plan: plan_pb2.ExecutionPlan, field: str) -> list[FieldViolation]:
    found: list[FieldViolation] = []

    def check(path: str, sources: list[str]) -> None:
        for source in sources:
            problem = check_expression_bounds(source)
            if problem is not None:
                found.append(FieldViolation(path, problem[1], problem[0]))

    for i, node in enumerate(plan.nodes):
        path = f"{field}.nodes[{i}]"
        if node.HasField("condition"):
            check(f"{path}.condition", [node.condition.source])
        if node.HasField("for_each"):
            check(f"{path}.for_each", [node.for_each.source])
        if node.HasField("repeat"):
            check(f"{path}.repeat.until", [node.repeat.until.source])
        for k, binding in enumerate(node.bindings):
            check(f"{path}.bindings[{k}]", _sources(binding.value))
        for side in ("fallback", "compensation"):
            for k, binding in enumerate(getattr(node, side).bindings):
                check(f"{path}.{side}.bindings[{k}]", _sources(binding.value))
        for k, amount in enumerate(node.estimate.amounts):
            if amount.HasField("expression"):
                check(f"{path}.estimate.amounts[{k}]", [amount.expression.source])
    for k, output in enumerate(plan.outputs):
        check(f"{field}.outputs[{k}]", _sources(output.value))
    return found


def _budgets(plan: plan_pb2.ExecutionPlan, field: str) -> list[FieldViolation]:
    """Budgets and estimates hold valid counter names and amounts."""
    found: list[FieldViolation] = []
    if plan.HasField("budget"):
        problem = usage.check_counters(budget_limits(plan.budget))
        if problem:
            found.append(FieldViolation(f"{field}.budget", problem))
    for i, node in enumerate(plan.nodes):
        path = f"{field}.nodes[{i}]"
        if node.HasField("budget"):
            problem = usage.check_counters(budget_limits(node.budget))
            if problem:
                found.append(FieldViolation(f"{path}.budget", problem))
        if node.HasField("estimate"):
            amounts = {a.counter: a.amount for a in node.estimate.amounts}
            problem = usage.check_counters(amounts)
            if problem or len(amounts) != len(node.estimate.amounts):
                found.append(
                    FieldViolation(f"{path}.estimate", problem or "a counter is listed twice")
                )
    return found


def _sources(value: plan_pb2.BindingValue) -> list[str]:
    """The CEL sources in a binding tree (iterative, like _expression_reads)."""
    sources: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        kind = item.WhichOneof("kind")
        if kind == "expression":
            sources.append(item.expression.source)
        elif kind == "template":
            sources += [
                p.expression.source for p in item.template.parts if p.HasField("expression")
            ]
        elif kind == "struct":
            stack.extend(f.value for f in item.struct.fields)
        elif kind == "list":
            stack.extend(item.list.items)
    return sources
