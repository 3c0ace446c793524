"""Property tests on random DAGs: topological order, cycles found, determinism."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from typing import Any

from execplan.planner import Plan, compile_document
from execplan.planner.digest import canonical_json
from execplan.wire.plan_codec import serialize_plan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 30) -> dict[str, Any]:
    """A workflow whose hidden topological order differs from declaration order."""
    n = draw(st.integers(1, max_nodes))
    hidden = draw(st.permutations(range(n)))  # hidden[k] = declaration slot of k-th node
    tasks: list[dict[str, Any]] = [{} for _ in range(n)]
    for k in range(n):
        tid = f"t{hidden[k]}"
        earlier = [f"t{hidden[j]}" for j in range(k)]
        deps: list[str] = []
        if earlier:
            deps = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True))
        task: dict[str, Any] = {"id": tid, "type": "work.do", "depends_on": deps}
        if draw(st.booleans()) and earlier:
            src = draw(st.sampled_from(earlier))
            task["inputs"] = {"v": f"${{{{ tasks.{src}.output }}}}"}
        if draw(st.booleans()):
            task["estimated_duration"] = f"{draw(st.integers(1, 5000))}ms"
        tasks[hidden[k]] = task
    return {"name": "random", "tasks": tasks}


def edges_by_id(doc: dict[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for t in doc["tasks"]:
        for d in t.get("depends_on", []):
            out.add((d, t["id"]))
        for v in t.get("inputs", {}).values():
            out.add((v.split(".")[1], t["id"]))
    return out


def check_plan(doc: dict[str, Any], plan: Plan) -> None:
    ids = [n.task_id for n in plan.nodes]
    assert sorted(ids) == sorted(t["id"] for t in doc["tasks"])
    pos = {tid: i for i, tid in enumerate(ids)}
    edges = edges_by_id(doc)
    assert {
        (plan.nodes[e.source].task_id, plan.nodes[e.target].task_id) for e in plan.edges
    } == edges
    for src, dst in edges:
        assert pos[src] < pos[dst]
    for n in plan.nodes:
        assert list(n.upstream) == sorted(n.upstream)
        assert n.stage == (max((plan.nodes[u].stage for u in n.upstream), default=-1) + 1)
        own = max(n.estimated_duration_ms, 1)
        assert n.critical_path_rank == own + max(
            (plan.nodes[d].critical_path_rank for d in n.downstream), default=0
        )
    # Kahn with ties broken by declaration index: re-simulate and compare.
    decl = {t["id"]: i for i, t in enumerate(doc["tasks"])}
    indeg = {tid: 0 for tid in decl}
    for _, dst in edges:
        indeg[dst] += 1
    order = []
    ready = sorted((decl[t], t) for t, d in indeg.items() if d == 0)
    while ready:
        _, u = ready.pop(0)
        order.append(u)
        for src, dst in sorted(edges):
            if src == u:
                indeg[dst] -= 1
                if indeg[dst] == 0:
                    ready.append((decl[dst], dst))
                    ready.sort()
    assert order == ids


@SETTINGS
@given(dags())
def test_order_is_topological_and_deterministic(doc: dict[str, Any]) -> None:
    before = json.dumps(doc, sort_keys=True)
    first = compile_document(doc)
    assert first.plan is not None, first.diagnostics
    check_plan(doc, first.plan)
    second = compile_document(doc)
    assert second.plan == first.plan
    assert second.plan is not None
    assert serialize_plan(first.plan) == serialize_plan(second.plan)
    assert json.dumps(doc, sort_keys=True) == before  # input never mutated
    reference = "sha256:" + hashlib.sha256(canonical_json(first.plan).encode()).hexdigest()
    assert first.plan.plan_id == reference


@st.composite
def dags_with_cycles(draw: st.DrawFn) -> tuple[dict[str, Any], list[set[str]]]:
    doc = draw(dags(max_nodes=15))
    acyclic = [t["id"] for t in doc["tasks"]]  # extra deps only from here: no shortcuts
    groups: list[set[str]] = []
    for g in range(draw(st.integers(1, 4))):
        size = draw(st.integers(2, 5))
        names = [f"c{g}_{i}" for i in range(size)]
        for i, name in enumerate(names):
            prev = names[i - 1]  # names[-1] for i == 0 closes the ring
            task: dict[str, Any] = {"id": name, "type": "work.do", "depends_on": [prev]}
            if draw(st.booleans()):
                task["depends_on"].append(draw(st.sampled_from(acyclic)))
            at = draw(st.integers(0, len(doc["tasks"])))
            doc["tasks"].insert(at, task)
        groups.append(set(names))
    return doc, groups


@SETTINGS
@given(dags_with_cycles())
def test_every_injected_cycle_is_found(case: tuple[dict[str, Any], list[set[str]]]) -> None:
    doc, groups = case
    result = compile_document(doc)
    assert result.plan is None
    cycles = [d for d in result.diagnostics if d.code == "cycle"]
    found = []
    for d in cycles:
        names = d.message.removeprefix("dependency cycle: ").split(" > ")
        assert names[0] == names[-1]
        found.append(set(names))
        # The path points at the depends_on entry that closes the cycle.
        closer = names[-1]
        index = next(i for i, t in enumerate(doc["tasks"]) if t["id"] == closer)
        assert d.path.startswith(f"tasks[{index}].depends_on[")
    assert sorted(map(sorted, found)) == sorted(map(sorted, groups))


def test_same_plan_in_a_fresh_process() -> None:
    """Byte-identical across processes (different PYTHONHASHSEED, fresh caches)."""
    doc = {
        "name": "cross-process",
        "inputs": {"a": {"type": "number", "default": 1.5}, "b": {"type": "string"}},
        "labels": {"z": "1", "a": "2"},
        "tasks": [
            {"id": f"t{i}", "type": "x", "depends_on": [f"t{j}" for j in range(max(0, i - 3), i)],
             "inputs": {"k": {"b": "${{ workflow.inputs.b }}",
                              "a": [1, "x ${{ workflow.inputs.a }}"]}},
             "secrets": ["s2", "s1"], "placement": {"require": {"b": "1", "a": "2"}}}
            for i in range(40)
        ],
    }  # fmt: skip
    script = (
        "import json,sys\n"
        "from execplan.planner import compile_document\n"
        "from execplan.wire.plan_codec import serialize_plan\n"
        "r = compile_document(json.loads(sys.stdin.read()))\n"
        "print(r.plan.plan_id, serialize_plan(r.plan).hex())\n"
    )
    local = compile_document(doc)
    assert local.plan is not None
    expected = f"{local.plan.plan_id} {serialize_plan(local.plan).hex()}"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(doc),
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()
        assert out == expected


FIELDS = ["name", "tasks", "inputs", "defaults", "outputs", "on_failure", "id", "type",
          "depends_on", "when", "trigger", "retry", "timeouts", "fallback", "compensation",
          "max_attempts", "initial_interval", "resources", "cpu", "memory", "secrets",
          "priority", "labels", "default", "required", "circuit_breaker", "open_for"]  # fmt: skip
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "a", "1s", "500m", "all_done", "${{ tasks.a.output }}", "${{", "x-y"]),
    st.text(max_size=8),
)
json_docs = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELDS), st.text(max_size=5)), children, max_size=5
        ),
    ),
    max_leaves=30,
)


@SETTINGS
@given(json_docs)
def test_garbage_never_raises(doc: object) -> None:
    """Any JSON-like input gives diagnostics or a plan, never an exception."""
    result = compile_document(doc)
    assert (result.plan is None) == any(d.severity == "error" for d in result.diagnostics)
    for d in result.diagnostics:
        assert d.code and "\n" not in d.message


near_valid_task = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", "d"]), "type": st.just("x")},
    optional={
        "depends_on": st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=3),
        "trigger": st.sampled_from(["all_done", "all_failed", "one_success", "bogus"]),
        "when": st.sampled_from(["true", "tasks.a.status == 'x'", "1 +", "tasks[x]"]),
    },
)


@SETTINGS
@given(
    st.lists(near_valid_task, max_size=6),
    st.sampled_from(["fail_fast", "continue", "compensate"]),
)
def test_near_valid_workflows_never_raise(tasks: list[dict[str, Any]], on_failure: str) -> None:
    result = compile_document({"name": "wf", "tasks": tasks, "on_failure": on_failure})
    assert (result.plan is None) == any(d.severity == "error" for d in result.diagnostics)
