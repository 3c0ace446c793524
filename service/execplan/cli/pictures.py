"""Pictures of a running (or finished) execution: the plan's graph, nodes coloured
by task state. Graphviz DOT and Mermaid, from the wire messages a client has
(`ExecutionPlan` + `Execution`, plus the sub-plans of `Execution.plan_revisions`),
so `execplan get ID --format dot|mermaid` needs nothing but those RPCs. Same layout
rules as the planner's renderers (planner/render.py): nodes and edges in plan order;
edge style by kind.

What grew at run time is drawn as a group (a DOT cluster, a Mermaid subgraph) around
the task it came from (docs/runtime-plans.md):

- a for_each task: its instances `research[0]`, `research[1]`... in item order, at
  most MAX_INSTANCES of them, then one box counting the rest by state;
- a dynamic task: its sub-plan's tasks (`agent/a`...) with their own edges, drawn
  the same way (a sub-plan may hold for_each tasks and sub-plans of its own);
- a repeat task says its iteration, a child-workflow task its child execution.

Both formats draw one `Scene` (`scene()`), so they always show the same things.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

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
_DOT_STYLE: dict[int, str] = {
    plan_pb2.EDGE_KIND_ORDER: "solid",
    plan_pb2.EDGE_KIND_DATA: "dashed",
    plan_pb2.EDGE_KIND_ORDER_AND_DATA: "bold",
}
_MERMAID_ARROW: dict[int, str] = {
    plan_pb2.EDGE_KIND_ORDER: "-->",
    plan_pb2.EDGE_KIND_DATA: "-.->",
    plan_pb2.EDGE_KIND_ORDER_AND_DATA: "==>",
}
# Instances drawn per for_each task; the rest are one box counting them by state.
MAX_INSTANCES = 12
# A sub-plan's edges from its dynamic task to its roots.
_INTO_GROUP = -1


@dataclass
class Box:
    key: str
    lines: list[str]
    state: str
    # Which line says the state (Mermaid writes it in bold).
    state_line: int = 2


@dataclass
class Group:
    key: str
    label: str
    boxes: list[Box] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    edges: list[tuple[str, str, int]] = field(default_factory=list)


def _state(run: ex.TaskRun | None) -> str:
    if run is None:
        return "PENDING"
    return ex.TaskState.Name(run.state).removeprefix("TASK_STATE_")


def _caption(state: str, run: ex.TaskRun | None) -> str:
    if run is not None and run.attempt > 1:
        return f"{state} (attempt {run.attempt})"
    return state


def _counts(runs: list[ex.TaskRun]) -> str:
    found: dict[str, int] = {}
    for run in runs:
        found[_state(run)] = found.get(_state(run), 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(found.items()))


class _Builder:
    def __init__(self, execution: ex.Execution, sub_plans: Mapping[str, plan_pb2.ExecutionPlan]):
        self.runs = {t.task_id: t for t in execution.tasks}
        self.instances: dict[str, list[ex.TaskRun]] = {}
        for t in execution.tasks:
            if t.HasField("item_index"):
                self.instances.setdefault(t.parent_task_id, []).append(t)
        for runs in self.instances.values():
            runs.sort(key=lambda r: r.item_index)
        self.revisions = {r.task_id: r.plan_id for r in execution.plan_revisions}
        self.sub_plans = sub_plans

    def scope(self, plan: plan_pb2.ExecutionPlan, prefix: str, key: str, into: Group) -> None:
        """Draw `plan`'s nodes (task ids `prefix + id`) into `into`."""
        heads: list[str] = []
        for n in plan.nodes:
            heads.append(self.node(n, prefix, f"{key}n{n.index}", into))
        for e in plan.edges:
            into.edges.append((heads[e.source], heads[e.target], e.kind))

    def node(self, n: plan_pb2.PlanNode, prefix: str, key: str, into: Group) -> str:
        task_id = prefix + n.task_id
        run = self.runs.get(task_id)
        state = _state(run)
        lines = [task_id, n.type, _caption(state, run)]
        if run is not None and n.HasField("repeat") and run.state != ex.TASK_STATE_PENDING:
            lines.append(f"iteration {run.iteration} (max {n.repeat.max_iterations})")
        if run is not None and run.child_execution_id:
            lines.append(f"child {run.child_execution_id}")
        head = Box(key, lines, state)
        instances = self.instances.get(task_id, [])
        sub_plan = self.sub_plans.get(self.revisions.get(task_id, ""))
        if not instances and sub_plan is None and not n.HasField("for_each"):
            into.boxes.append(head)
            return key
        if sub_plan is not None:
            group = Group(f"g{key}", f"{task_id}: sub-plan {sub_plan.plan_id[:19]}")
            group.boxes.append(head)
            self.scope(sub_plan, f"{task_id}/", f"{key}s", group)
            for sub in sub_plan.nodes:
                if not sub.upstream:
                    group.edges.append((key, f"{key}sn{sub.index}", _INTO_GROUP))
        else:
            count = run.instance_count if run is not None else 0
            label = f"{task_id}: for each {n.for_each.source}"
            if count or instances:
                label += f" ({count} items: {_counts(instances)})" if instances else f" ({count})"
            group = Group(f"g{key}", label)
            group.boxes.append(head)
            for inst in instances[:MAX_INSTANCES]:
                inst_state = _state(inst)
                lines = [inst.task_id, _caption(inst_state, inst)]
                group.boxes.append(Box(f"{key}i{inst.item_index}", lines, inst_state, 1))
            rest = instances[MAX_INSTANCES:]
            if rest:
                more = [f"... {len(rest)} more", _counts(rest)]
                group.boxes.append(Box(f"{key}more", more, "PENDING", 1))
        into.groups.append(group)
        return key


def scene(
    plan: plan_pb2.ExecutionPlan,
    execution: ex.Execution,
    sub_plans: Mapping[str, plan_pb2.ExecutionPlan] | None = None,
) -> Group:
    """Everything a picture shows, as nested groups of boxes and edges."""
    top = Group("", f"{plan.workflow_name} {execution.execution_id}")
    _Builder(execution, sub_plans or {}).scope(plan, "", "", top)
    return top


def _walk_boxes(group: Group) -> list[Box]:
    boxes = list(group.boxes)
    for g in group.groups:
        boxes.extend(_walk_boxes(g))
    return boxes


def render_execution_dot(
    plan: plan_pb2.ExecutionPlan,
    execution: ex.Execution,
    sub_plans: Mapping[str, plan_pb2.ExecutionPlan] | None = None,
) -> str:
    top = scene(plan, execution, sub_plans)
    lines = [
        f"digraph {json.dumps(top.label)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    _dot_group(top, lines, "  ")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_group(group: Group, lines: list[str], indent: str) -> None:
    for box in group.boxes:
        fill, border = COLOURS.get(box.state, COLOURS["PENDING"])
        label = json.dumps("\n".join(box.lines))
        lines.append(f'{indent}{box.key} [label={label}, fillcolor="{fill}", color="{border}"];')
    for g in group.groups:
        lines.append(f"{indent}subgraph cluster_{g.key} {{")
        lines.append(f'{indent}  label={json.dumps(g.label)}; style="rounded,dashed";')
        _dot_group(g, lines, indent + "  ")
        lines.append(f"{indent}}}")
    for source, target, kind in group.edges:
        style = "dotted" if kind == _INTO_GROUP else _DOT_STYLE.get(kind, "solid")
        lines.append(f"{indent}{source} -> {target} [style={style}];")


def render_execution_mermaid(
    plan: plan_pb2.ExecutionPlan,
    execution: ex.Execution,
    sub_plans: Mapping[str, plan_pb2.ExecutionPlan] | None = None,
) -> str:
    top = scene(plan, execution, sub_plans)
    lines = ["flowchart LR"]
    _mermaid_group(top, lines, "  ")
    used: dict[str, list[str]] = {}
    for box in _walk_boxes(top):
        used.setdefault(box.state, []).append(box.key)
    for state, keys in used.items():
        fill, border = COLOURS.get(state, COLOURS["PENDING"])
        name = state.lower()
        lines.append(f"  classDef {name} fill:{fill},stroke:{border},color:#212529")
        lines.append(f"  class {','.join(keys)} {name}")
    return "\n".join(lines) + "\n"


def _mermaid_group(group: Group, lines: list[str], indent: str) -> None:
    for box in group.boxes:
        shown = [f"<b>{x}</b>" if i == box.state_line else x for i, x in enumerate(box.lines)]
        text = "<br/>".join(shown)
        lines.append(f'{indent}{box.key}["{text.replace(chr(34), "#quot;")}"]')
    for g in group.groups:
        lines.append(f'{indent}subgraph {g.key} ["{g.label.replace(chr(34), "#quot;")}"]')
        _mermaid_group(g, lines, indent + "  ")
        lines.append(f"{indent}end")
    for source, target, kind in group.edges:
        arrow = "-.-" if kind == _INTO_GROUP else _MERMAID_ARROW.get(kind, "-->")
        lines.append(f"{indent}{source} {arrow} {target}")
