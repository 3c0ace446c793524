"""Unit tests of the small modules: durations, quantities, expressions, resolution."""

from __future__ import annotations

from typing import Any

import pytest
from execplan.planner import (
    BindingStruct,
    Expression,
    Literal,
    Template,
    compile_document,
)
from execplan.planner.durations import format_duration, parse_duration
from execplan.planner.expressions import (
    ExprPart,
    TemplateError,
    analyze_expression,
    compile_cel,
    split_template,
)
from execplan.planner.quantities import parse_cpu_millis, parse_memory_bytes


@pytest.mark.parametrize(
    ("text", "ms"),
    [("250ms", 250), ("30s", 30_000), ("5m", 300_000), ("24h", 86_400_000), ("1h30m", 5_400_000),
     ("1.500s", 1500), ("0.000250s", 1), ("0s", 0), ("0", 0), ("2d", 172_800_000), ("1.5s", 1500)],
)  # fmt: skip
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "5", "-1s", "1 s", "1x", "s", "1h-5m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(5_400_250) == "1h30m250ms"
    assert format_duration(0) == "0s"


@pytest.mark.parametrize(
    ("text", "millis"), [("500m", 500), ("2", 2000), ("0.5", 500), ("1k", 1_000_000), ("100u", 1)]
)
def test_cpu(text: str, millis: int) -> None:
    assert parse_cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "size"),
    [("256Mi", 256 * 2**20), ("1G", 10**9), ("1e3", 1000), ("1Ki", 1024),
     ("1.5Gi", 3 * 2**29), (512, 512)],
)  # fmt: skip
def test_memory(text: str | int, size: int) -> None:
    assert parse_memory_bytes(text) == size


@pytest.mark.parametrize("text", ["", "lots", "1Qi", "-1", "1e", "Mi"])
def test_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_memory_bytes(text)


def test_split_template() -> None:
    assert split_template("a ${{ x.y }} b") == ("a ", ExprPart("x.y"), " b")
    assert split_template("${{ {'k': {'j': 1}} }}") == (ExprPart("{'k': {'j': 1}}"),)
    assert split_template("${{ 'x}}y' }}!") == (ExprPart("'x}}y'"), "!")
    assert split_template("plain }} text") == ("plain }} text",)
    for bad in ("${{ x", "${{ }}", "a ${{ 'unterminated }}"):
        with pytest.raises(TemplateError):
            split_template(bad)


def test_analyze_expression() -> None:
    a = analyze_expression(
        "tasks.a.output.x + tasks['b'].status + tasks[\"c\"].error "
        "+ workflow.inputs.n + workflow.inputs['m'] + size(execution.id) "
        "+ 'tasks.fake.output' + r'tasks.raw' + '''tasks.triple'''"
    )
    assert a.reads_tasks == ("a", "b", "c")
    assert a.reads_inputs == ("m", "n")
    assert a.reads_execution
    assert a.problems == ()


def codes(src: str) -> list[str]:
    return [c for c, _ in analyze_expression(src).problems]


def test_analyze_expression_problems() -> None:
    assert codes("tasks[execution.key].output") == ["dynamic-reference"]
    assert codes("size(tasks) > 0") == ["dynamic-reference"]
    assert codes("tasks.a.outputs") == ["unknown-reference"]
    assert codes("workflow.name") == ["unknown-reference"]
    assert codes("foo") == ["unknown-reference"]
    assert codes("[1, 2].all(x, x > 0) && [1].map(i, v, v) == [] && int(1) == 1") == []


def test_compile_cel_one_line_message() -> None:
    assert compile_cel("1 + 2") is None
    msg = compile_cel("1 +")
    assert msg is not None and "\n" not in msg and "1:4" in msg


def base(**task: Any) -> dict[str, Any]:
    return {"name": "wf", "tasks": [{"id": "a", "type": "x"}, {"id": "b", "type": "y", **task}]}


def test_binding_kinds_and_edges() -> None:
    doc = base(
        depends_on=["a"],
        inputs={
            "lit": {"k": [1, "two"]},
            "expr": "${{ tasks.a.output }}",
            "tmpl": "id=${{ tasks.a.output.id }}!",
            "mixed": {"x": "${{ workflow.inputs.q }}", "y": 2},
        },
    )
    doc["inputs"] = {"q": {"type": "string"}}
    doc["tasks"].append({"id": "c", "type": "z", "inputs": {"v": "${{ tasks.b.output }}"}})
    plan = compile_document(doc).plan
    assert plan is not None
    b = plan.node("b")
    values = {bd.name: bd.value for bd in b.bindings}
    assert [bd.name for bd in b.bindings] == ["expr", "lit", "mixed", "tmpl"]
    assert values["lit"] == Literal({"k": [1, "two"]})
    assert values["expr"] == Expression("tasks.a.output", ("a",))
    assert isinstance(values["tmpl"], Template)
    assert values["tmpl"].parts[0] == "id=" and values["tmpl"].parts[2] == "!"
    assert isinstance(values["mixed"], BindingStruct)
    assert values["mixed"].fields[1].value == Literal(2)
    kinds = {
        (plan.nodes[e.source].task_id, plan.nodes[e.target].task_id): e.kind for e in plan.edges
    }
    assert kinds == {("a", "b"): "EDGE_KIND_ORDER_AND_DATA", ("b", "c"): "EDGE_KIND_DATA"}


def test_default_policies() -> None:
    plan = compile_document(base()).plan
    assert plan is not None
    n = plan.node("b")
    assert (n.retry.max_attempts, n.retry.initial_interval, n.retry.backoff_coefficient) == (
        3,
        1000,
        2.0,
    )
    assert (n.retry.max_interval, n.retry.jitter) == (100_000, 0.2)
    assert n.timeouts.start_to_close == 0 and n.circuit_breaker is None
    assert n.priority == 0 and n.trigger == "TRIGGER_RULE_ALL_SUCCESS"
    assert plan.on_failure == "ON_FAILURE_FAIL_FAST" and plan.format_version == 1


def test_resolution_task_over_defaults_field_by_field() -> None:
    doc = base(
        retry={"max_attempts": 7},
        timeouts={"heartbeat": "5s"},
        circuit_breaker={"open_for": "1m"},
        placement={"require": {"zone": "b"}, "environment": "py"},
        resources={"memory": "1Gi"},
        secrets=["z", "a", "z"],
        priority=9,
        fallback={"type": "fb", "retry": {"max_attempts": 1}},
        compensation={"type": "undo", "inputs": {"x": 1}},
    )
    doc["defaults"] = {
        "retry": {"initial_interval": "2s", "max_interval": "1m"},
        "timeouts": {"start_to_close": "10s"},
        "circuit_breaker": {"failure_threshold": 2},
        "placement": {"require": {"zone": "a", "region": "eu"}},
        "resources": {"cpu": "250m"},
        "priority": 1,
    }
    plan = compile_document(doc).plan
    assert plan is not None
    a, b = plan.node("a"), plan.node("b")
    assert a.priority == 1 and a.retry.initial_interval == 2000 and a.retry.max_attempts == 3
    assert (b.retry.max_attempts, b.retry.initial_interval, b.retry.max_interval) == (
        7,
        2000,
        60_000,
    )
    assert (b.timeouts.start_to_close, b.timeouts.heartbeat) == (10_000, 5000)
    assert b.circuit_breaker is not None
    assert (b.circuit_breaker.failure_threshold, b.circuit_breaker.open_for) == (2, 60_000)
    assert b.circuit_breaker.on_open == "BREAKER_OPEN_ACTION_PARK"
    assert b.resources.require_labels == {"region": "eu", "zone": "b"}
    assert (b.resources.cpu_millis, b.resources.memory_bytes) == (250, 2**30)
    assert b.resources.secrets == ("a", "z") and b.resources.environment == "py"
    assert b.priority == 9
    assert b.fallback is not None and b.fallback.inherits_inputs
    assert b.fallback.retry.max_attempts == 1 and b.fallback.retry.initial_interval == 2000
    assert b.compensation is not None and not b.compensation.inherits_inputs


def test_stage_and_critical_path() -> None:
    doc = {
        "name": "wf",
        "tasks": [
            {"id": "a", "type": "x", "estimated_duration": "1s"},
            {"id": "b", "type": "x", "depends_on": ["a"], "estimated_duration": "10s"},
            {"id": "c", "type": "x", "depends_on": ["a"]},
            {"id": "d", "type": "x", "depends_on": ["b", "c"]},
        ],
    }
    plan = compile_document(doc).plan
    assert plan is not None
    assert [n.stage for n in plan.nodes] == [0, 1, 1, 2]
    assert [n.critical_path_rank for n in plan.nodes] == [11_001, 10_001, 2, 1]
    assert plan.critical_path_ms == 11_001 and plan.stage_count == 3
    assert plan.nodes[3].upstream == (1, 2) and plan.nodes[0].downstream == (1, 2)


def test_declaration_order_breaks_ties() -> None:
    doc = {"name": "wf", "tasks": [
        {"id": "late", "type": "x", "depends_on": ["root"]},
        {"id": "root", "type": "x"},
        {"id": "other", "type": "x"},
    ]}  # fmt: skip
    plan = compile_document(doc).plan
    assert plan is not None
    assert [n.task_id for n in plan.nodes] == ["root", "late", "other"]


def test_an_edge_going_back_reorders_whatever_made_it() -> None:
    # The declaration order is the topological order only when every edge goes to a
    # later task: a depends_on entry, or a read of a later task's output, going back
    # (in a big list, past 16 entries, too) puts the tasks in dependency order.
    later = {"id": "later", "type": "x"}
    for first in (
        {"id": "first", "type": "x", "depends_on": ["later"]},
        {"id": "first", "type": "x", "inputs": {"v": "${{ tasks.later.output.v }}"}},
        {"id": "first", "type": "x", "depends_on": [f"p{i}" for i in range(20)] + ["later"]},
    ):
        pads = [{"id": f"p{i}", "type": "x"} for i in range(20)]
        doc = {"name": "wf", "tasks": [*pads, first, later]}
        plan = compile_document(doc).plan
        assert plan is not None
        ids = [n.task_id for n in plan.nodes]
        assert ids.index("later") < ids.index("first"), first
        assert [n.index for n in plan.nodes] == list(range(22))


def test_when_accepts_wrapped_expression() -> None:
    plan = compile_document(base(depends_on=["a"], when="${{ tasks.a.status == 'ok' }}")).plan
    assert plan is not None
    assert plan.node("b").condition == Expression("tasks.a.status == 'ok'", ("a",))


def test_null_fields_are_absent() -> None:
    result = compile_document(
        {"name": "wf", "defaults": None, "tasks": [{"id": "a", "type": "x", "retry": None}]}
    )
    assert result.ok


def test_empty_workflow_compiles() -> None:
    plan = compile_document({"name": "empty"}).plan
    assert plan is not None and plan.nodes == () and plan.stage_count == 0
