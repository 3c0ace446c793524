"""The lean parts of the plan model read like the tuples they replace, and the
streamed plan_id stays the digest of canonical_json on every kind of node."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from execplan.planner import Binding, Expression, Literal, PlanEdge, compile_document
from execplan.planner.digest import canonical_json
from execplan.planner.plan import Bindings, PlanEdges, binding_value, items

DOC: dict[str, Any] = {
    "name": "model",
    "labels": {"b": "2", "a": "1"},
    "inputs": {"n": {"type": "integer", "default": 3}, "s": {"type": "string", "default": "x"}},
    "defaults": {"retry": {"max_attempts": 2}, "placement": {"require": {"zone": "a"}}},
    "tasks": [
        {"id": "a", "type": "t.a", "inputs": {"n": "${{ workflow.inputs.n }}", "f": 1.5}},
        {"id": "b", "type": "t.b", "depends_on": ["a"], "inputs": {"x": "${{ tasks.a.output }}"}},
        {"id": "c", "type": "t.c", "inputs": {"y": "${{ tasks.a.output.y }}", "z": [1, {"k": 2}]}},
        {
            "id": "d",
            "type": "t.d",
            "depends_on": ["b", "c"],
            "when": "tasks.b.output.ok",
            "priority": 3,
            "description": '100% "odd" text %s',
            "fallback": {"type": "t.fb", "inputs": {"why": "${{ tasks.d.error }}"}},
            "compensation": {"type": "t.undo"},
            "retry": {"max_attempts": 5, "non_retryable_errors": ["E"]},
            "placement": {"require": {"gpu": "yes"}},
            "secrets": ["k"],
            "estimated_duration": "3s",
        },
        {
            "id": "e",
            "type": "t.e",
            "depends_on": ["d"],
            "for_each": "tasks.d.output.items",
            "description": "a generic node: 50% %(x)s",
        },
        {"id": "f", "type": "t.f", "depends_on": ["a"], "trigger": "all_done"},
        {"id": "g", "type": "builtin.sleep", "inputs": {"duration": "1s"}},
    ],
    "outputs": {"o": "${{ tasks.e.output }}", "t": "id ${{ execution.id }}"},
}


def _plan() -> Any:
    result = compile_document(DOC)
    assert result.plan is not None, result.diagnostics
    return result.plan


def test_streamed_plan_id_is_the_digest_of_canonical_json() -> None:
    plan = _plan()
    text = canonical_json(plan)
    assert plan.plan_id == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert "%%" not in text and "100% " in text  # the template's escapes undone


def test_plan_edges_read_as_a_tuple_of_plan_edges() -> None:
    plan = _plan()
    edges = plan.edges
    assert isinstance(edges, PlanEdges)
    listed = tuple(edges)
    assert all(type(e) is PlanEdge for e in listed)
    assert len(edges) == len(listed) == sum(len(n.downstream) for n in plan.nodes)
    assert [(e.source, e.target) for e in listed] == sorted((e.source, e.target) for e in listed)
    assert [edges[i] for i in range(len(edges))] == list(listed)
    assert edges[-1] == listed[-1] and edges[1:3] == listed[1:3]
    with pytest.raises(IndexError):
        edges[len(edges)]
    assert edges == listed and listed == tuple(edges) and hash(edges) == hash(listed)
    kinds = {e.kind for e in listed}
    assert kinds == {"EDGE_KIND_ORDER", "EDGE_KIND_DATA", "EDGE_KIND_ORDER_AND_DATA"}
    for source, targets, kinds_of in edges.by_source():
        assert targets == plan.nodes[source].downstream
        assert kinds_of is None or len(kinds_of) == len(targets)
    assert compile_document(DOC).plan == plan  # dataclass equality still holds


def test_bindings_read_as_a_tuple_of_bindings() -> None:
    plan = _plan()
    a = plan.node("a")
    bs = a.bindings
    assert isinstance(bs, Bindings)
    listed = tuple(bs)
    assert [b.name for b in listed] == ["f", "n"]  # sorted by name
    assert listed[0] == Binding("f", Literal(1.5))  # a plain literal reads as a Literal
    assert isinstance(listed[1].value, Expression)
    assert bs.values[0] == 1.5  # ... and is kept as its JSON value
    assert bs[0] == listed[0] and bs[-1] == listed[-1] and bs[:1] == listed[:1]
    assert bs == listed and hash(bs) == hash(listed) and len(bs) == 2
    assert list(items(bs)) == [("f", 1.5), ("n", listed[1].value)]
    assert list(items(listed)) == [("f", Literal(1.5)), ("n", listed[1].value)]
    c = plan.node("c")
    z = dict(items(c.bindings))["z"]
    assert z == [1, {"k": 2}]  # a JSON list without expressions is one plain literal
    d = plan.node("d")
    assert d.fallback is not None and isinstance(d.fallback.bindings, Bindings)
    assert [b.name for b in d.fallback.bindings] == ["why"]
    assert binding_value(3) == Literal(3) and binding_value(listed[1].value) is listed[1].value


def test_streamed_plan_id_with_literals_of_every_kind() -> None:
    """The streamed plan_id of bindings holding every type of plain literal,
    expressions, odd names (%, quotes, non-ASCII) and values written the generic
    way (a float, a struct) is the digest of canonical_json."""
    plain = {
        "i": 7,
        "big": 2**53 - 1,
        "neg": -3,
        "s": 'say "hi" 100% %s \u00e9',
        "t": True,
        "f": False,
        "z": None,
        "e": "${{ workflow.inputs.n }}",
        '100% %(x)s \u00e9 "q"': 1,
    }
    tasks = [
        {"id": "a", "type": "t", "inputs": plain},
        {"id": "b", "type": "t", "inputs": {**plain, "t": False, "f": True, "i": 8}},
        {"id": "c", "type": "t", "inputs": {"e": "${{ tasks.a.output }}", "i": 1}},
        {"id": "d", "type": "t", "inputs": {"e": "${{ tasks.b.output }}", "i": 2}},
        {"id": "e", "type": "t", "inputs": {"e": 3, "i": "${{ workflow.inputs.n }}"}},
        {"id": "f", "type": "t", "inputs": {**plain, "fl": 2.5, "st": {"k": [1, "%d"]}}},
    ]
    doc = {"name": "lits", "inputs": {"n": {"type": "integer", "default": 1}}, "tasks": tasks}
    result = compile_document(doc)
    assert result.plan is not None, result.diagnostics
    text = canonical_json(result.plan)
    assert result.plan.plan_id == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert '"literal":true' in text and '"literal":null' in text


def test_inputs_only_tasks_compile_the_same_by_the_quick_way() -> None:
    """Tasks whose only expressions are in `inputs` skip the per-site checks when
    every expression there reads only declared workflow inputs: the plan and the
    diagnostics are what the general way gives, for quiet and not-quiet ones."""
    from execplan.planner.bindings import compile_bindings, quiet_bindings  # noqa: PLC0415
    from execplan.planner.diagnostics import Diagnostics  # noqa: PLC0415

    quiet: list[dict[str, object]] = [
        {"n": 1, "s": "${{ workflow.inputs.n }}", "t": "x ${{ workflow.inputs.n + 1 }} y"},
        {"b": True, "z": None, "f": 2.5, "plain": "no expression"},
    ]
    for values in quiet:
        refs: list[Any] = []
        diags = Diagnostics()
        general = compile_bindings(values, "p", diags, refs)
        assert quiet_bindings(values, lambda e: True) == general and not diags.report()
        known: dict[str, object] = {}  # the verdicts kept from task to task
        assert quiet_bindings(values, lambda e: True, known) == general
        assert quiet_bindings(values, lambda e: True, known) == general
    # Refused by the quick way: the general way decides (and reports) instead.
    loud: list[dict[str, object]] = [
        {"a": "${{ tasks.a.output }}"},
        {"a": "${{ workflow.inputs.nope }}"},
        {"a": "${{ item }}"},
        {"a": "${{ 1 + }}"},
        {"a": {"k": "${{ workflow.inputs.n }}"}},
        {"a": ["${{ workflow.inputs.n }}"]},
    ]
    shared: dict[str, object] = {}
    for values in loud[3:]:
        assert quiet_bindings(values, lambda e: True) is None
        assert quiet_bindings(values, lambda e: True, shared) is None
        assert quiet_bindings(values, lambda e: True, shared) is None
    # An expression `quiet` refuses is remembered as refused.
    refusing: dict[str, object] = {}
    assert quiet_bindings(quiet[0], lambda e: False, refusing) is None
    assert quiet_bindings(quiet[0], lambda e: True, refusing) is None
    tasks: list[dict[str, object]] = [{"type": "t", "inputs": v} for v in [*quiet, *loud]]
    for i, t in enumerate(tasks):
        t["id"] = f"t{i}"
    doc = {"name": "q", "inputs": {"n": {"type": "integer", "default": 1}}, "tasks": tasks}
    codes = sorted((d.path, d.code) for d in compile_document(doc).diagnostics)
    assert codes == [
        ("tasks[2].inputs.a", "unknown-reference"),  # no task has id a
        ("tasks[3].inputs.a", "unknown-reference"),  # inputs.nope not declared
        ("tasks[4].inputs.a", "unknown-reference"),  # item outside for_each
        ("tasks[5].inputs.a", "invalid-expression"),
    ]
    ok = compile_document({**doc, "tasks": [*tasks[:2], tasks[6], tasks[7]]}).plan
    assert ok is not None
    assert [type(b.value).__name__ for b in ok.nodes[2].bindings] == ["BindingStruct"]
