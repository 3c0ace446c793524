"""The planner side of plans that grow at runtime: for_each, repeat, builtin.workflow
and dynamic (docs/runtime-plans.md). Compiled, validated (all errors at once), data
edges from their expressions, runtime variables only where defined, plan_id stable
for plans that use none of it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from execplan.planner import compile_document, compile_source
from execplan.planner.digest import canonical_json
from execplan.planner.plan import FORMAT_VERSION, FORMAT_VERSION_RUNTIME, WorkflowRef
from execplan.v1 import workflow_pb2
from execplan.wire.plan_codec import encode_plan
from google.protobuf import json_format


def _compile(tasks: list[dict[str, Any]], **extra: Any) -> Any:
    return compile_document({"name": "w", "tasks": tasks, **extra})


def _errors(tasks: list[dict[str, Any]], **extra: Any) -> list[tuple[str, str, str]]:
    result = _compile(tasks, **extra)
    return [(d.code, d.path, d.message) for d in result.errors]


def test_for_each_compiles_with_item_index_and_a_data_edge() -> None:
    result = _compile(
        [
            {"id": "plan", "type": "t"},
            {
                "id": "research",
                "type": "t",
                "for_each": "${{ tasks.plan.output.items }}",
                "max_parallel": 3,
                "when": "item != ''",
                "inputs": {"q": "${{ item }}", "i": "${{ index }}"},
                "compensation": {"type": "undo", "inputs": {"q": "${{ item }}"}},
            },
        ]
    )
    assert result.ok, result.diagnostics
    node = result.plan.node("research")
    assert node.for_each.source == "tasks.plan.output.items"
    assert node.for_each.reads_tasks == ("plan",)
    assert node.max_parallel == 3
    assert node.condition.reads_variables == ("item",)
    assert node.upstream == (0,)  # the for_each read is the only edge
    assert result.plan.edges[0].kind == "EDGE_KIND_DATA"
    assert result.plan.format_version == FORMAT_VERSION_RUNTIME


def test_repeat_compiles_until_and_its_reads() -> None:
    result = _compile(
        [
            {"id": "limits", "type": "t"},
            {
                "id": "write",
                "type": "t",
                "inputs": {"draft": "${{ previous }}", "round": "${{ iteration }}"},
                "repeat": {
                    "until": "${{ output.score >= tasks.limits.output.min || iteration > 1 }}",
                    "max_iterations": 4,
                },
            },
        ]
    )
    assert result.ok, result.diagnostics
    node = result.plan.node("write")
    assert node.repeat.max_iterations == 4
    assert node.repeat.until.source == "output.score >= tasks.limits.output.min || iteration > 1"
    assert node.repeat.until.reads_variables == ("iteration", "output")
    assert node.upstream == (0,)  # until reads tasks.limits: a data edge


def test_builtin_workflow_refs() -> None:
    result = _compile(
        [
            {"id": "a", "type": "builtin.workflow", "workflow": "review"},
            {"id": "b", "type": "builtin.workflow", "workflow": "review@1.2.0"},
            {"id": "c", "type": "t", "dynamic": True},
        ]
    )
    assert result.ok, result.diagnostics
    a, b, c = result.plan.nodes
    assert (a.builtin, a.workflow) == ("BUILTIN_KIND_WORKFLOW", WorkflowRef("review", ""))
    assert b.workflow == WorkflowRef("review", "1.2.0")
    assert c.dynamic and c.builtin == "BUILTIN_KIND_NONE"


@pytest.mark.parametrize(
    ("task", "code", "path", "says"),
    [
        ({"inputs": {"x": "${{ item }}"}}, "unknown-reference", "tasks[0].inputs.x", "for_each"),
        ({"when": "index > 0"}, "unknown-reference", "tasks[0].when", "for_each"),
        ({"inputs": {"x": "${{ iteration }}"}}, "unknown-reference", "tasks[0].inputs.x", "repeat"),
        ({"inputs": {"x": "a ${{ previous }}"}},
         "unknown-reference", "tasks[0].inputs.x", "repeat"),
        ({"inputs": {"x": "${{ output }}"}},
         "unknown-reference", "tasks[0].inputs.x", "repeat.until"),
        ({"for_each": "[item]"}, "unknown-reference", "tasks[0].for_each", "defines item"),
        ({"repeat": {"until": "true", "max_iterations": 2}, "when": "iteration == 0"},
         "unknown-reference", "tasks[0].when", "before the first iteration"),
        ({"max_parallel": 2}, "invalid-for-each", "tasks[0].max_parallel", "set for_each"),
        ({"repeat": {"until": "true", "max_iterations": 0}},
         "invalid-repeat", "tasks[0].repeat.max_iterations", "1..10,000"),
        ({"repeat": {"until": "true", "max_iterations": 10_001}},
         "invalid-repeat", "tasks[0].repeat.max_iterations", "1..10,000"),
        ({"repeat": {"max_iterations": 2}},
         "missing-required", "tasks[0].repeat.until", "required"),
        ({"repeat": {"until": "true"}},
         "missing-required", "tasks[0].repeat.max_iterations", "required"),
        ({"repeat": {"until": "output.ok ||", "max_iterations": 2}},
         "invalid-expression", "tasks[0].repeat.until", ""),
        ({"for_each": "tasks.nope.output"}, "unknown-reference", "tasks[0].for_each", "nope"),
        ({"for_each": "tasks.a.output"}, "self-dependency", "tasks[0].for_each", "own result"),
        ({"type": "builtin.workflow"}, "builtin-invalid", "tasks[0].workflow", "NAME@VERSION"),
        ({"type": "builtin.workflow", "workflow": "Upper"},
         "invalid-workflow-ref", "tasks[0].workflow", "must match"),
        ({"type": "builtin.workflow", "workflow": "child@"},
         "invalid-workflow-ref", "tasks[0].workflow", "a version follows @"),
        ({"type": "builtin.workflow", "workflow": "child@a b"},
         "invalid-workflow-ref", "tasks[0].workflow", "without spaces"),
        ({"workflow": "child"}, "invalid-workflow-ref", "tasks[0].workflow", "builtin.workflow"),
        ({"dynamic": True, "for_each": "[1]"},
         "unsupported-combination", "tasks[0].dynamic", "dynamic with for_each"),
        ({"dynamic": True, "repeat": {"until": "true", "max_iterations": 2}},
         "unsupported-combination", "tasks[0].dynamic", "dynamic with repeat"),
        ({"dynamic": True, "type": "builtin.workflow", "workflow": "c"},
         "unsupported-combination", "tasks[0].dynamic", "builtin.workflow"),
        ({"type": "builtin.sleep", "inputs": {"duration": "1s"}, "for_each": "[1]"},
         "unsupported-combination", "tasks[0].for_each", "builtin.sleep"),
        ({"type": "builtin.wait_for_event", "inputs": {"event": "e"},
          "repeat": {"until": "true", "max_iterations": 2}},
         "unsupported-combination", "tasks[0].repeat", "builtin.wait_for_event"),
        ({"for_each": "${{ [1] ${{"}, "invalid-template", "tasks[0].for_each", ""),
        ({"for_each": "x" * 20_000}, "expression-too-large", "tasks[0].for_each", "16384"),
        ({"repeat": {"until": "[" * 40 + "]" * 40, "max_iterations": 2}},
         "expression-too-deep", "tasks[0].repeat.until", ""),
        ({"dynamic": "yes"}, "invalid-type", "tasks[0].dynamic", "boolean"),
    ],
)  # fmt: skip
def test_errors_name_the_field(task: dict[str, Any], code: str, path: str, says: str) -> None:
    found = _errors([{"id": "a", "type": "t", **task}])
    assert any(c == code and p == path and says in m for c, p, m in found), found


def test_outputs_cannot_read_variables() -> None:
    found = _errors([{"id": "a", "type": "t", "for_each": "[1]"}], outputs={"o": "${{ item }}"})
    assert found == [
        (
            "unknown-reference",
            "outputs.o",
            "workflow outputs are evaluated at the end: item is not defined there",
        )
    ]


def test_every_problem_at_once() -> None:
    found = _errors(
        [
            {"id": "a", "type": "t", "max_parallel": 2, "inputs": {"x": "${{ item }}"}},
            {"id": "b", "type": "builtin.workflow", "for_each": "tasks.zz.output"},
            {"id": "c", "type": "t", "repeat": {"until": "output", "max_iterations": 0}},
        ]
    )
    assert {(c, p) for c, p, _ in found} == {
        ("invalid-for-each", "tasks[0].max_parallel"),
        ("unknown-reference", "tasks[0].inputs.x"),
        ("builtin-invalid", "tasks[1].workflow"),
        ("unknown-reference", "tasks[1].for_each"),
        ("invalid-repeat", "tasks[2].repeat.max_iterations"),
    }


def test_comprehension_variables_named_like_runtime_ones_are_fine() -> None:
    result = _compile([{"id": "a", "type": "t", "inputs": {"x": "${{ [1, 2].map(item, item) }}"}}])
    assert result.ok, result.diagnostics


def test_a_for_each_cycle_is_reported() -> None:
    found = _errors(
        [
            {"id": "a", "type": "t", "for_each": "tasks.b.output"},
            {"id": "b", "type": "t", "depends_on": ["a"]},
        ]
    )
    assert [c for c, _, _ in found] == ["cycle"]


def test_plans_without_runtime_fields_keep_format_1_and_their_id() -> None:
    # The canonical JSON leaves unset runtime fields out, so this id is the one the
    # plan had before they existed (tests/planner/golden keeps three such plans).
    plan = _compile([{"id": "a", "type": "t", "inputs": {"x": "${{ 1 + 1 }}"}}]).plan
    assert plan.format_version == FORMAT_VERSION
    node = json.loads(canonical_json(plan))["nodes"][0]
    assert not {"for_each", "max_parallel", "repeat", "workflow", "dynamic"} & node.keys()
    assert "reads_variables" not in node["bindings"][0]["value"]["expression"]


def test_streamed_digest_matches_canonical_json_with_runtime_nodes() -> None:
    source = (Path(__file__).parent / "golden" / "runtime_plans.yaml").read_text()
    plan = compile_source(source).plan
    assert plan is not None
    reference = "sha256:" + hashlib.sha256(canonical_json(plan).encode()).hexdigest()
    assert plan.plan_id == reference
    assert '"for_each"' in canonical_json(plan)


def test_the_proto_json_form_compiles_to_the_same_plan() -> None:
    doc = {
        "name": "w",
        "tasks": [
            {"id": "p", "type": "t"},
            {
                "id": "r",
                "type": "t",
                "for_each": "tasks.p.output",
                "max_parallel": 2,
                "repeat": {"until": "output.ok", "max_iterations": 3},
                "inputs": {"q": "${{ item }}"},
            },
            {"id": "c", "type": "builtin.workflow", "workflow": "child@2"},
            {"id": "d", "type": "t", "dynamic": True},
        ],
    }
    message = json_format.ParseDict(doc, workflow_pb2.Workflow())
    as_proto = json_format.MessageToDict(message, preserving_proto_field_name=True)
    first, second = compile_document(doc), compile_document(as_proto)
    assert first.plan is not None and second.plan is not None, (first, second)
    assert first.plan.plan_id == second.plan.plan_id
    encoded = encode_plan(first.plan)
    assert encoded.nodes[1].for_each.reads_tasks == ["p"]
    assert encoded.nodes[1].repeat.max_iterations == 3
    assert encoded.nodes[1].bindings[0].value.expression.reads_variables == ["item"]
    assert (encoded.nodes[2].workflow.name, encoded.nodes[2].workflow.version) == ("child", "2")
    assert encoded.nodes[3].dynamic
    assert encoded.format_version == FORMAT_VERSION_RUNTIME
