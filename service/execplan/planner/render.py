"""Human views of a plan: plain text, Graphviz DOT and Mermaid.

All three list nodes in plan order and edges in plan order, so the output is as
deterministic as the plan. `text_lines` / `dot_lines` / `mermaid_lines` yield the
views a line at a time (so a 100,000-task plan is written without holding its
picture whole); `render_*` join them. Edge styles: ORDER solid, DATA dashed,
ORDER_AND_DATA bold.
Runtime-plan nodes say what they become when they run (`runtime_label`): a for_each
node is drawn as a stack (`for each …`), a repeat node with its loop (`repeat until … (max N)`),
a child workflow as a component (`workflow NAME`) and a dynamic task dashed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from execplan.planner.durations import format_duration
from execplan.planner.plan import Plan, PlanNode

_DOT_STYLE = {
    "EDGE_KIND_ORDER": "solid",
    "EDGE_KIND_DATA": "dashed",
    "EDGE_KIND_ORDER_AND_DATA": "bold",
}
_MERMAID_ARROW = {
    "EDGE_KIND_ORDER": "-->",
    "EDGE_KIND_DATA": "-.->",
    "EDGE_KIND_ORDER_AND_DATA": "==>",
}


def _short(enum_value: str, prefix: str) -> str:
    return enum_value.removeprefix(prefix).lower()


def runtime_label(n: PlanNode) -> list[str]:
    """Short notes for a node's runtime-plan fields (empty for a plain node)."""
    notes = []
    if n.for_each is not None:
        bound = f" ({n.max_parallel} at once)" if n.max_parallel else ""
        notes.append(f"for each {n.for_each.source}{bound}")
    if n.repeat is not None:
        notes.append(f"repeat until {n.repeat.until.source} (max {n.repeat.max_iterations})")
    if n.workflow is not None:
        notes.append(f"workflow {n.workflow}")
    if n.dynamic:
        notes.append("dynamic")
    return notes


def _dot_shape(n: PlanNode) -> str:
    if n.workflow is not None:
        return ", shape=component"
    if n.for_each is not None:
        return ", shape=box3d"
    if n.dynamic:
        return ", style=dashed"
    return ""


def text_lines(plan: Plan) -> Iterator[str]:
    """The text view, one line (ending in a newline) at a time."""
    yield f"plan {plan.plan_id}\n"
    yield (
        f"workflow {plan.workflow_name} version {plan.workflow_version or '-'}"
        f"  on_failure={_short(plan.on_failure, 'ON_FAILURE_')}"
        f"  max_parallel={plan.max_parallel or 'unbounded'}\n"
    )
    yield (
        f"{len(plan.nodes)} nodes, {len(plan.edges)} edges, {plan.stage_count} stages, "
        f"critical path {format_duration(plan.critical_path_ms)}\n"
    )
    nodes = plan.nodes
    for n in nodes:
        ups = ",".join([nodes[u].task_id for u in n.upstream]) or "-"
        extras = []
        if n.trigger != "TRIGGER_RULE_ALL_SUCCESS":
            extras.append(f"trigger={_short(n.trigger, 'TRIGGER_RULE_')}")
        if n.condition is not None:
            extras.append(f"when={n.condition.source!r}")
        if n.priority:
            extras.append(f"priority={n.priority}")
        if n.fallback is not None:
            extras.append(f"fallback={n.fallback.type}")
        if n.compensation is not None:
            extras.append(f"compensation={n.compensation.type}")
        extras.extend(f"[{note}]" for note in runtime_label(n))
        yield (
            f"  [{n.index}] stage {n.stage} {n.task_id} ({n.type}) <- {ups}"
            f"  rank={format_duration(n.critical_path_rank)}"
            + (f"  {' '.join(extras)}" if extras else "")
            + "\n"
        )
    for o in plan.outputs:
        yield f"  output {o.name}\n"


def dot_lines(plan: Plan) -> Iterator[str]:
    """The Graphviz DOT view, one line (ending in a newline) at a time."""
    yield f"digraph {json.dumps(plan.workflow_name)} {{\n  rankdir=LR;\n  node [shape=box];\n"
    for n in plan.nodes:
        label = "\\n".join([f"{n.task_id}", n.type, *runtime_label(n)])
        label = json.dumps(label).replace(chr(92) * 2, chr(92))
        yield f"  n{n.index} [label={label}{_dot_shape(n)}];\n"
        if n.repeat is not None:
            yield f'  n{n.index} -> n{n.index} [style=dotted, label="repeat"];\n'
    for e in plan.edges:
        yield f"  n{e.source} -> n{e.target} [style={_DOT_STYLE.get(e.kind, 'solid')}];\n"
    yield "}\n"


def mermaid_lines(plan: Plan) -> Iterator[str]:
    """The Mermaid view, one line (ending in a newline) at a time."""
    yield "flowchart LR\n"
    for n in plan.nodes:
        label = "<br/>".join([n.task_id, n.type, *runtime_label(n)]).replace('"', "#quot;")
        yield f'  n{n.index}["{label}"]\n'
        if n.repeat is not None:
            yield f"  n{n.index} -.->|repeat| n{n.index}\n"
    for e in plan.edges:
        yield f"  n{e.source} {_MERMAID_ARROW.get(e.kind, '-->')} n{e.target}\n"


def render_text(plan: Plan) -> str:
    return "".join(text_lines(plan))


def render_dot(plan: Plan) -> str:
    return "".join(dot_lines(plan))


def render_mermaid(plan: Plan) -> str:
    return "".join(mermaid_lines(plan))
