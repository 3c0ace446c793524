"""Pictures of executions whose plans grew: for_each instances, a sub-plan and a
repeat/child caption are drawn as groups around their task (cli/pictures.py).

The Execution here is written by hand, the way GetExecution reports one (task ids
`research[2]`, `improvise/a`; TaskRun.parent_task_id, item_index, instance_count,
iteration, child_execution_id; Execution.plan_revisions), so the pictures are
checked apart from the executor; tests/integration runs them end to end."""

from __future__ import annotations

import re
from pathlib import Path

from execplan.cli.pictures import (
    MAX_INSTANCES,
    render_execution_dot,
    render_execution_mermaid,
    scene,
)
from execplan.planner import compile_source
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2
from execplan.wire.plan_codec import encode_plan

GOLDEN = Path(__file__).parents[1] / "planner" / "golden" / "runtime_plans.yaml"
SUB = """
name: sub
tasks:
  - {id: a, type: t.a}
  - {id: b, type: t.b, depends_on: [a]}
  - {id: c, type: t.c, for_each: "[1, 2]", inputs: {x: "${{ item }}"}}
"""


def _plan(source: str) -> plan_pb2.ExecutionPlan:
    result = compile_source(source)
    assert result.plan is not None, result.diagnostics
    return encode_plan(result.plan)


def _execution(sub: plan_pb2.ExecutionPlan, instances: int) -> ex.Execution:
    e = ex.Execution(execution_id="e-1")
    S = ex  # noqa: N806 - short alias for the states
    e.tasks.add(task_id="plan", state=S.TASK_STATE_SUCCEEDED)
    e.tasks.add(task_id="research", state=S.TASK_STATE_RUNNING, instance_count=instances)
    for i in range(instances):
        state = S.TASK_STATE_SUCCEEDED if i % 3 else S.TASK_STATE_RUNNING
        e.tasks.add(task_id=f"research[{i}]", state=state, parent_task_id="research", item_index=i)
    e.tasks.add(task_id="write", state=S.TASK_STATE_RUNNING, iteration=2, attempt=1)
    e.tasks.add(task_id="review", state=S.TASK_STATE_PENDING)
    e.tasks.add(task_id="improvise", state=S.TASK_STATE_RUNNING, sub_plan_id=sub.plan_id)
    e.tasks.add(task_id="improvise/a", state=S.TASK_STATE_SUCCEEDED, parent_task_id="improvise")
    e.tasks.add(task_id="improvise/b", state=S.TASK_STATE_FAILED, parent_task_id="improvise")
    e.tasks.add(task_id="improvise/c", state=S.TASK_STATE_SUCCEEDED, instance_count=2)
    for i in range(2):
        e.tasks.add(
            task_id=f"improvise/c[{i}]",
            state=S.TASK_STATE_SUCCEEDED,
            parent_task_id="improvise/c",
            item_index=i,
        )
    e.plan_revisions.add(revision=1, task_id="improvise", plan_id=sub.plan_id, node_count=3)
    return e


def test_instances_sub_plans_and_loops_are_drawn_as_groups() -> None:
    plan, sub = _plan(GOLDEN.read_text()), _plan(SUB)
    execution = _execution(sub, instances=MAX_INSTANCES + 8)
    top = scene(plan, execution, {sub.plan_id: sub})
    groups = {g.key: g for g in top.groups}
    research = groups["gn1"]
    assert research.label.startswith("research: for each tasks.plan.output.questions (20 items: ")
    keys = [b.key for b in research.boxes]
    assert keys[0] == "n1" and keys[1:4] == ["n1i0", "n1i1", "n1i2"]
    assert len(keys) == 1 + MAX_INSTANCES + 1 and keys[-1] == "n1more"
    assert research.boxes[-1].lines == ["... 8 more", "3 RUNNING, 5 SUCCEEDED"]
    improvise = groups["gn4"]
    sub_keys = [b.key for b in improvise.boxes]
    assert sub_keys == ["n4", "n4sn0", "n4sn1"]  # c is a group of its own, inside
    assert [g.key for g in improvise.groups] == ["gn4sn2"]
    assert ("n4sn0", "n4sn1", plan_pb2.EDGE_KIND_ORDER) in improvise.edges
    boxes = {b.key: b for b in top.boxes}
    assert boxes["n2"].lines[-1] == "iteration 2 (max 3)"

    dot = render_execution_dot(plan, execution, {sub.plan_id: sub})
    assert dot.count("subgraph cluster_") == 4  # research, review (for_each), improvise, c
    assert re.search(r'n1i0 \[label="research\[0\]\\nRUNNING"', dot)
    assert 'n4sn1 [label="improvise/b\\nt.b\\nFAILED"' in dot
    assert dot.count("{") == dot.count("}")
    mermaid = render_execution_mermaid(plan, execution, {sub.plan_id: sub})
    assert mermaid.count("subgraph ") == mermaid.count("\n  end") + mermaid.count("\n    end")
    assert 'n4sn0["improvise/a<br/>t.a<br/><b>SUCCEEDED</b>"]' in mermaid
    assert "n4 -.- n4sn0" in mermaid  # the dynamic task leads into its sub-plan
    assert "class n1i0," in mermaid or ",n1i0," in mermaid or ",n1i0\n" in mermaid


def test_a_child_execution_is_named_on_its_task() -> None:
    plan = _plan("name: p\ntasks:\n  - {id: c, type: builtin.workflow, workflow: child@1}\n")
    e = ex.Execution(execution_id="e-2")
    e.tasks.add(task_id="c", state=ex.TASK_STATE_RUNNING, child_execution_id="e-child")
    dot = render_execution_dot(plan, e)
    assert '"c\\nbuiltin.workflow\\nRUNNING\\nchild e-child"' in dot
