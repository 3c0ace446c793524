"""Human views of a plan: plain text, Graphviz DOT and Mermaid.

All three list nodes in plan order and edges in plan order, so the output is as
deterministic as the plan. Edge styles: ORDER solid, DATA dashed, ORDER_AND_DATA bold.
"""

from __future__ import annotations

import json

from execplan.planner.durations import format_duration
from execplan.planner.plan import Plan

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


def render_text(plan: Plan) -> str:
    lines = [
        f"plan {plan.plan_id}",
        f"workflow {plan.workflow_name} version {plan.workflow_version or '-'}"
        f"  on_failure={_short(plan.on_failure, 'ON_FAILURE_')}"
        f"  max_parallel={plan.max_parallel or 'unbounded'}",
        f"{len(plan.nodes)} nodes, {len(plan.edges)} edges, {plan.stage_count} stages, "
        f"critical path {format_duration(plan.critical_path_ms)}",
    ]
    for n in plan.nodes:
        ups = ",".join(plan.nodes[u].task_id for u in n.upstream) or "-"
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
        lines.append(
            f"  [{n.index}] stage {n.stage} {n.task_id} ({n.type}) <- {ups}"
            f"  rank={format_duration(n.critical_path_rank)}"
            + (f"  {' '.join(extras)}" if extras else "")
        )
    for o in plan.outputs:
        lines.append(f"  output {o.name}")
    return "\n".join(lines) + "\n"


def render_dot(plan: Plan) -> str:
    lines = [f"digraph {json.dumps(plan.workflow_name)} {{", "  rankdir=LR;", "  node [shape=box];"]
    for n in plan.nodes:
        label = f"{n.task_id}\\n{n.type}"
        lines.append(f"  n{n.index} [label={json.dumps(label).replace(chr(92) * 2, chr(92))}];")
    for e in plan.edges:
        lines.append(f"  n{e.source} -> n{e.target} [style={_DOT_STYLE.get(e.kind, 'solid')}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(plan: Plan) -> str:
    lines = ["flowchart LR"]
    for n in plan.nodes:
        label = f"{n.task_id}<br/>{n.type}".replace('"', "#quot;")
        lines.append(f'  n{n.index}["{label}"]')
    for e in plan.edges:
        lines.append(f"  n{e.source} {_MERMAID_ARROW.get(e.kind, '-->')} n{e.target}")
    return "\n".join(lines) + "\n"
