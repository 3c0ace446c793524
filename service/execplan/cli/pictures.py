"""Pictures of a running (or finished) execution: the plan's graph, nodes coloured
by task state. Graphviz DOT and Mermaid, from the wire messages a client has
(`ExecutionPlan` + `Execution`), so `execplan get ID --format dot|mermaid` needs
nothing but the two RPCs. Same layout rules as the planner's renderers
(planner/render.py): nodes and edges in plan order; edge style by kind."""

from __future__ import annotations

import json

from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2

# state -> (fill colour, border colour)
COLOURS: dict[str, tuple[str, str]] = {
    "PENDING": ("#f1f3f5", "#adb5bd"),
    "QUEUED": ("#fff3bf", "#f08c00"),
    "DISPATCHED": ("#d0ebff", "#1c7ed6"),
    "RUNNING": ("#a5d8ff", "#1971c2"),
    "BACKING_OFF": ("#ffe8cc", "#e8590c"),
    "PARKED": ("#e5dbff", "#7048e8"),
    "WAITING": ("#c5f6fa", "#0c8599"),
    "SUCCEEDED": ("#b2f2bb", "#2f9e44"),
    "FAILED": ("#ffc9c9", "#e03131"),
    "SKIPPED": ("#f8f9fa", "#868e96"),
    "CANCELLED": ("#dee2e6", "#495057"),
    "COMPENSATED": ("#fff9db", "#f59f00"),
    "COMPENSATION_FAILED": ("#ff8787", "#c92a2a"),
}
_DOT_STYLE = {
    plan_pb2.EDGE_KIND_ORDER: "solid",
    plan_pb2.EDGE_KIND_DATA: "dashed",
    plan_pb2.EDGE_KIND_ORDER_AND_DATA: "bold",
}
_MERMAID_ARROW = {
    plan_pb2.EDGE_KIND_ORDER: "-->",
    plan_pb2.EDGE_KIND_DATA: "-.->",
    plan_pb2.EDGE_KIND_ORDER_AND_DATA: "==>",
}


def _states(execution: ex.Execution) -> dict[str, tuple[str, int]]:
    return {
        t.task_id: (ex.TaskState.Name(t.state).removeprefix("TASK_STATE_"), t.attempt)
        for t in execution.tasks
    }


def _caption(state: str, attempt: int) -> str:
    return f"{state} (attempt {attempt})" if attempt > 1 else state


def render_execution_dot(plan: plan_pb2.ExecutionPlan, execution: ex.Execution) -> str:
    states = _states(execution)
    title = f"{plan.workflow_name} {execution.execution_id}"
    lines = [
        f"digraph {json.dumps(title)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for n in plan.nodes:
        state, attempt = states.get(n.task_id, ("PENDING", 0))
        fill, border = COLOURS.get(state, COLOURS["PENDING"])
        label = json.dumps(f"{n.task_id}\n{n.type}\n{_caption(state, attempt)}")
        lines.append(f'  n{n.index} [label={label}, fillcolor="{fill}", color="{border}"];')
    for e in plan.edges:
        lines.append(f"  n{e.source} -> n{e.target} [style={_DOT_STYLE.get(e.kind, 'solid')}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_execution_mermaid(plan: plan_pb2.ExecutionPlan, execution: ex.Execution) -> str:
    states = _states(execution)
    lines = ["flowchart LR"]
    used: dict[str, list[str]] = {}
    for n in plan.nodes:
        state, attempt = states.get(n.task_id, ("PENDING", 0))
        label = f"{n.task_id}<br/>{n.type}<br/><b>{_caption(state, attempt)}</b>"
        lines.append(f'  n{n.index}["{label.replace(chr(34), "#quot;")}"]')
        used.setdefault(state, []).append(f"n{n.index}")
    for e in plan.edges:
        lines.append(f"  n{e.source} {_MERMAID_ARROW.get(e.kind, '-->')} n{e.target}")
    for state, nodes in used.items():
        fill, border = COLOURS.get(state, COLOURS["PENDING"])
        name = state.lower()
        lines.append(f"  classDef {name} fill:{fill},stroke:{border},color:#212529")
        lines.append(f"  class {','.join(nodes)} {name}")
    return "\n".join(lines) + "\n"
