"""Tasks the parser's fast path makes (`PlainTask`: only id, type, depends_on and
inputs) are skipped by the phases that check other fields. These tests hold that
the skip changes nothing: such a task compiles to the node, plan_id and diagnostics
it would get the generic way, and the checks that apply to it (its type) still run."""

from __future__ import annotations

import copy
import hashlib
import pickle
from dataclasses import asdict
from typing import Any

from execplan.planner import compile_document
from execplan.planner.diagnostics import Diagnostics
from execplan.planner.digest import canonical_json
from execplan.planner.model import PlainTask
from execplan.planner.parse import build_workflow
from execplan.planner.plan import PlanNodes, plain_slices
from execplan.wire.plan_codec import encode_plan


def _tasks(n: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for i in range(n):
        task: dict[str, Any] = {"id": f"t{i}", "type": f"work.step{i % 3}"}
        if i:
            task["depends_on"] = [f"t{i - 1}", f"t{i // 2}"]
        if i % 2:
            task["inputs"] = {"n": i, "size": "${{ workflow.inputs.size }}"}
        if i % 5 == 4:
            task["inputs"] = {"x": f"${{{{ tasks.t{i - 1}.output.v }}}}"}
        tasks.append(task)
    return tasks


def _doc(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "w",
        "inputs": {"size": {"type": "integer", "default": 3}},
        "defaults": {"retry": {"max_attempts": 2}, "priority": 4},
        "tasks": tasks,
    }


def test_only_the_fast_path_makes_plain_tasks() -> None:
    tasks = [*_tasks(3), {"id": "r", "type": "t", "retry": {"max_attempts": 5}}]
    wf = build_workflow(_doc(tasks), Diagnostics())
    assert [type(t) is PlainTask for t in wf.tasks] == [True, True, True, False]
    assert [t.id for t in wf.beyond_plain()] == ["r"]
    assert wf.task_types() == {"work.step0", "work.step1", "work.step2", "t"}


def test_plain_tasks_compile_as_the_generic_way_does() -> None:
    tasks = _tasks(40)
    # A field at its default sends a task the generic way without changing it.
    generic = [{**t, "description": ""} for t in tasks]
    mixed = [{**t, "description": ""} if i % 3 else t for i, t in enumerate(tasks)]
    plans = [compile_document(_doc(ts)) for ts in (tasks, generic, mixed)]
    assert all(r.ok for r in plans), [r.diagnostics for r in plans]
    fast, slow, both = (r.plan for r in plans)
    assert fast is not None and slow is not None and both is not None
    assert fast.plan_id == slow.plan_id == both.plan_id
    assert fast.nodes == slow.nodes == both.nodes
    assert encode_plan(fast) == encode_plan(slow)
    assert all(n.priority == 4 and n.retry.max_attempts == 2 for n in fast.nodes)


def test_a_plain_task_of_a_builtin_type_is_still_checked() -> None:
    result = compile_document(
        _doc(
            [
                {"id": "a", "type": "builtin.sleep"},
                {"id": "b", "type": "builtin.workflow"},
                {"id": "c", "type": "builtin.nope"},
            ]
        )
    )
    found = {(d.code, d.path) for d in result.errors}
    assert ("builtin-invalid", "tasks[0].inputs") in found
    assert ("builtin-invalid", "tasks[2].type") in found
    assert any(path.startswith("tasks[1]") for _, path in found), found


def test_names_too_long_are_found_on_plain_and_other_tasks() -> None:
    long = "x" * 300
    tasks: list[dict[str, Any]] = [
        {"id": long, "type": "t"},
        {"id": "b", "type": long},
        {"id": "c", "type": "t", "secrets": [long]},
    ]
    result = compile_document(_doc(tasks))
    paths = [d.path for d in result.errors if d.code == "name-too-long"]
    assert paths == ["tasks[0].id", "tasks[1].type", "tasks[2].secrets[0]"]


def test_plan_id_of_plain_nodes_found_by_type_is_the_canonical_one() -> None:
    # plan_id finds a plain node's template by its type, a slice of 2,048 nodes at a
    # time when the slice holds plain nodes only: here slices of plain nodes only,
    # one with a task of its own retry, priority and trigger, and nodes out of order.
    tasks = _tasks(5000)
    tasks[2500] = {**tasks[2500], "retry": {"max_attempts": 9}, "priority": 1}
    tasks[4999] = {**tasks[4999], "trigger": "TRIGGER_RULE_ALL_DONE"}
    tasks.insert(10, {"id": "late", "type": "work.late", "depends_on": ["t4000"]})
    result = compile_document(_doc(tasks))
    assert result.ok, result.diagnostics
    plan = result.plan
    assert plan is not None
    assert [n.task_id for n in plan.nodes].index("late") > 4000
    canonical = canonical_json(plan).encode("ascii")
    assert plan.plan_id == "sha256:" + hashlib.sha256(canonical).hexdigest()
    assert plan.node("t2500").retry.max_attempts == 9


def test_plan_nodes_say_nothing_once_copied_into_something_else() -> None:
    result = compile_document(_doc(_tasks(30)))
    assert result.plan is not None
    nodes = result.plan.nodes
    assert isinstance(nodes, PlanNodes) and nodes.plain_except == ()
    assert plain_slices(nodes, 8) == [True] * 4
    assert plain_slices(tuple(nodes), 8) == [False] * 4
    kept = pickle.loads(pickle.dumps(nodes))
    assert kept == nodes and kept.plain_except == () and copy.copy(nodes).plain_except == ()
    # dataclasses.asdict rebuilds each sequence from one iterable: it knows nothing.
    as_dict = asdict(result.plan)["nodes"]
    assert as_dict[0]["task_id"] == "t0" and as_dict.plain_except is None
    assert plain_slices(PlanNodes(nodes), 8) == [False] * 4
