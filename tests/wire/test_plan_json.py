"""write_plan_json writes exactly what MessageToJson(encode_plan(plan)) would, maps in key order."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from execplan.planner import Plan, compile_document, compile_source
from execplan.v1 import plan_pb2
from execplan.wire.json_order import ordered
from execplan.wire.plan_codec import encode_plan
from execplan.wire.plan_json import write_plan_json
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "tests" / "planner" / "golden").glob("*.yaml")) + sorted(
    (ROOT / "examples").glob("*.yaml")
)


def expected(plan: Plan) -> str:
    """MessageToJson's text with the maps in key order (test_json_order.py)."""
    text = json_format.MessageToJson(encode_plan(plan), preserving_proto_field_name=True)
    data = ordered(json.loads(text), plan_pb2.ExecutionPlan.DESCRIPTOR)
    return json.dumps(data, indent=2) + "\n"


def written(plan: Plan) -> tuple[str, list[str]]:
    chunks: list[str] = []
    write_plan_json(plan, chunks.append)
    return "".join(chunks), chunks


def compiled(doc: object) -> Plan:
    result = compile_document(doc)
    assert result.plan is not None, result.diagnostics
    return result.plan


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_same_text_as_message_to_json(path: Path) -> None:
    plan = compile_source(path.read_text()).plan
    assert plan is not None
    assert written(plan)[0] == expected(plan)


def test_a_big_plan_is_written_in_many_pieces_and_reads_back() -> None:
    tasks: list[dict[str, Any]] = [{"id": "root", "type": "t.root"}]
    tasks += [
        {"id": f"m{i}", "type": "t.mid", "depends_on": ["root"], "inputs": {"i": i}}
        for i in range(5000)
    ]
    tasks.append({"id": "sink", "type": "t.sink", "depends_on": [f"m{i}" for i in range(5000)]})
    plan = compiled({"name": "wide", "tasks": tasks})
    text, chunks = written(plan)
    assert text == expected(plan)
    assert len(chunks) > 10 and max(map(len, chunks)) < len(text) / 4
    assert len(json.loads(text)["edges"]) == 10_000


def test_chunks_of_plain_nodes_and_chunks_with_others() -> None:
    # Chunks of 1,024 nodes that are all plain (PlanNodes) find their shared fields
    # by type; a chunk holding another node goes node by node, as does a plan whose
    # nodes are a plain tuple (made from the compiled ones, which drops what they say).
    tasks: list[dict[str, Any]] = [
        {"id": f"t{i}", "type": f"t.k{i % 3}", "depends_on": [f"t{i // 2}"] if i else []}
        for i in range(3000)
    ]
    tasks[1500] = {**tasks[1500], "retry": {"max_attempts": 7}, "description": "own"}
    tasks[2999] = {**tasks[2999], "priority": 2}
    plan = compiled({"name": "mixed", "defaults": {"priority": 5}, "tasks": tasks})
    assert plan.nodes.plain_except == (1500, 2999)  # type: ignore[attr-defined]
    assert written(plan)[0] == expected(plan)
    untold = replace(plan, nodes=tuple(plan.nodes))
    assert written(untold)[0] == expected(plan)


def test_every_kind_of_field() -> None:
    doc = {
        "name": "everything",
        "version": "7",
        "description": 'ünïcode "quoted" \n newline',
        "labels": {"b": "2", "a": "1", "é": "3"},
        "inputs": {
            "n": {"type": "integer", "default": 3},
            "items": {"type": "array", "default": [1, "two", None, {"x": 1.5}]},
            "s": {"type": "string", "required": True, "description": "a string"},
        },
        "defaults": {
            "retry": {"max_attempts": 4, "initial_interval": "250ms", "jitter": 0.25},
            "timeouts": {"start_to_close": "30s", "heartbeat": "5s"},
            "circuit_breaker": {"failure_threshold": 3, "open_for": "1m"},
            "placement": {"require": {"zone": "b", "region": "eu"}, "prefer": {"gpu": "a100"}},
            "resources": {"cpu": "250m", "memory": "1Gi", "gpu": 1},
            "priority": 5,
        },
        "on_failure": "compensate",
        "max_parallel": 9,
        "pause_after_failures": 2,
        "tasks": [
            {
                "id": "a",
                "type": "t.a",
                "inputs": {
                    "z": {"k2": [1, 2.5, -3, True, None], "k1": "${{ workflow.inputs.n }}"},
                    "t": "pre ${{ workflow.inputs.s }} post \u2603",
                    "f": 1e16,
                    "neg": -0.5,
                    "b": False,
                    "nul": None,
                    "e": "",
                    "bye": "${{ execution.id }}",
                },
                "compensation": {"type": "t.undo", "inputs": {"what": "${{ tasks.a.output }}"}},
                "estimated_duration": "2s",
                "description": "the first",
                "secrets": ["k1", "k0"],
            },
            {
                "id": "b",
                "type": "t.b",
                "depends_on": ["a"],
                "when": "tasks.a.output.ok == true",
                "trigger": "all_done",
                "priority": -4,
                "retry": {"max_attempts": 1, "non_retryable_errors": ["Bad", "Worse"]},
                "fallback": {"type": "t.fb"},
                "placement": {"require": {"os": "linux"}, "environment": "prod"},
                "resources": {"cpu": "2", "memory": "512Mi"},
            },
            {
                "id": "c",
                "type": "t.c",
                "depends_on": ["a"],
                "for_each": "tasks.a.output.items",
                "max_parallel": 3,
                "inputs": {"item": "${{ item }}", "i": "${{ index }}"},
            },
            {
                "id": "d",
                "type": "t.d",
                "repeat": {"until": "output.done", "max_iterations": 4},
                "inputs": {"prev": "${{ previous }}", "x": "${{ tasks.b.output }}"},
            },
            {"id": "e", "type": "builtin.sleep", "inputs": {"duration": "1s"}},
        ],
        "outputs": {
            "both": {"a": "${{ tasks.a.output }}", "list": ["${{ tasks.b.output }}", 1]},
            "plain": 3,
        },
    }
    plan = compiled(doc)
    assert plan.labels and any(n.for_each is not None for n in plan.nodes)
    assert written(plan)[0] == expected(plan)


def test_a_node_with_a_field_this_writer_does_not_know_goes_the_generic_way() -> None:
    """The fast path covers a fixed set of fields; any other field set on a node (a
    runtime-plan field here) makes that node go through its own message."""
    plan = compiled(
        {
            "name": "dyn",
            "tasks": [
                {"id": "a", "type": "t.a", "dynamic": True},
                {"id": "w", "type": "builtin.workflow", "workflow": "child@2", "depends_on": ["a"]},
            ],
        }
    )
    assert written(plan)[0] == expected(plan)


def test_flow_control_fields() -> None:
    base = {"type": "llm.chat", "inputs": {"model": "${{ workflow.inputs.model }}"}}
    plan = compiled(
        {
            "name": "flow",
            "inputs": {"model": {"type": "string", "default": "gpt-4o"}},
            "rate_limits": [{"name": "openai-rpm", "rate": "60/m", "burst": 10}],
            "tasks": [
                {
                    "id": "ask",
                    **base,
                    "limit": {"key": "inputs.model", "max": 4},
                    "rate_limits": [
                        {"name": "openai-rpm", "key": "inputs.model", "units": 1},
                        {"name": "tpm", "units": "size(inputs.model) / 4 + 1"},
                    ],
                    "cache": {"ttl": "1h"},
                },
                {
                    "id": "plain",
                    **base,
                    "circuit_breaker": {"key": "inputs.model", "failure_threshold": 3},
                    "resources": {"custom": {"model-slots": 2}, "isolate": True},
                },
            ],
        }
    )
    assert plan.rate_limits and plan.nodes[0].limit is not None
    assert written(plan)[0] == expected(plan)


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 12))
    tasks: list[dict[str, Any]] = []
    for i in range(n):
        task: dict[str, Any] = {"id": f"t{i}", "type": draw(st.sampled_from(["x.a", "x.b"]))}
        if i:
            task["depends_on"] = draw(
                st.lists(st.sampled_from([f"t{j}" for j in range(i)]), max_size=3, unique=True)
            )
        inputs = draw(st.dictionaries(st.sampled_from(["a", "b", "c", "ü"]), _json, max_size=3))
        if i and draw(st.booleans()):
            inputs["ref"] = f"${{{{ tasks.t{draw(st.integers(0, i - 1))}.output }}}}"
        if inputs:
            task["inputs"] = inputs
        if draw(st.booleans()):
            task["priority"] = draw(st.integers(-5, 5))
        if draw(st.booleans()):
            task["description"] = draw(_text)
        if draw(st.booleans()):
            task["fallback"] = {"type": "x.fb", "inputs": draw(st.dictionaries(_text, _json))}
        tasks.append(task)
    return {"name": "gen", "tasks": tasks, "labels": draw(st.dictionaries(_text, _text))}


@given(workflows())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_workflows(doc: dict[str, Any]) -> None:
    plan = compiled(doc)
    text = written(plan)[0]
    want = expected(plan)
    # Map entries (labels, struct keys) come in protobuf's own order, which the
    # writer takes from the same messages; compare the text, and the values too.
    assert json.loads(text) == json.loads(want)
    assert text == want
