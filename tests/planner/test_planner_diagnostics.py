"""One case per diagnostic code: the code AND the exact path it points at."""

from __future__ import annotations

from typing import Any

import pytest
from execplan.planner import Diagnostic, compile_document, compile_source, limits, validate_source
from execplan.planner.diagnostics import sorted_diagnostics


def doc(*tasks: dict[str, Any], **top: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "wf", "tasks": list(tasks)}
    d.update(top)
    return d


def t(tid: str, **kw: Any) -> dict[str, Any]:
    return {"id": tid, "type": "work.do", **kw}


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("duplicate-id", doc(t("a"), t("b"), t("a")), "duplicate-id", "tasks[2].id"),
    ("bad task id", doc(t("a-b")), "invalid-id", "tasks[0].id"),
    ("bad workflow name", {"name": "Bad Name", "tasks": [t("a")]}, "invalid-id", "name"),
    ("bad secret", doc(t("a", secrets=["ok", "no-dash"])), "invalid-id", "tasks[0].secrets[1]"),
    (
        "bad input name",
        doc(t("a"), inputs={"x-y": {"type": "string"}}),
        "invalid-id",
        'inputs["x-y"]',
    ),
    (
        "unknown dep",
        doc(t("a"), t("b", depends_on=["a", "zz"])),
        "unknown-dependency",
        "tasks[1].depends_on[1]",
    ),
    ("self dep", doc(t("a", depends_on=["a"])), "self-dependency", "tasks[0].depends_on[0]"),
    (
        "self read",
        doc(t("a", inputs={"x": "${{ tasks.a.output }}"})),
        "self-dependency",
        "tasks[0].inputs.x",
    ),
    (
        "cycle",
        doc(t("a", depends_on=["c"]), t("b", depends_on=["a"]), t("c", depends_on=["b"])),
        "cycle",
        "tasks[0].depends_on[0]",
    ),
    ("unknown field", doc(t("a", depnds_on=["b"])), "unknown-field", "tasks[0].depnds_on"),
    ("unknown top field", {"name": "wf", "taks": []}, "unknown-field", "taks"),
    (
        "unknown nested field",
        doc(t("a", retry={"max_attempt": 2})),
        "unknown-field",
        "tasks[0].retry.max_attempt",
    ),
    ("invalid type", doc(t("a", depends_on="b")), "invalid-type", "tasks[0].depends_on"),
    (
        "invalid type item",
        doc(t("a"), t("b", depends_on=["a", 3])),
        "invalid-type",
        "tasks[1].depends_on[1]",
    ),
    ("invalid type priority", doc(t("a", priority="high")), "invalid-type", "tasks[0].priority"),
    ("invalid expression", doc(t("a", when="1 +")), "invalid-expression", "tasks[0].when"),
    (
        "invalid expression in input",
        doc(t("a", inputs={"x": {"y": ["${{ ) }}"]}})),
        "invalid-expression",
        "tasks[0].inputs.x.y[0]",
    ),
    (
        "unknown task ref",
        doc(t("a", when="tasks.nope.status == 'ok'")),
        "unknown-reference",
        "tasks[0].when",
    ),
    (
        "unknown input ref",
        doc(t("a", inputs={"x": "${{ workflow.inputs.zz }}"})),
        "unknown-reference",
        "tasks[0].inputs.x",
    ),
    (
        "unknown task field",
        doc(t("a"), t("b", inputs={"x": "${{ tasks.a.outputs }}"})),
        "unknown-reference",
        "tasks[1].inputs.x",
    ),
    ("unknown variable", doc(t("a", when="foo > 1")), "unknown-reference", "tasks[0].when"),
    (
        "output ref",
        doc(t("a"), outputs={"r": "${{ tasks.b.output }}"}),
        "unknown-reference",
        "outputs.r",
    ),
    (
        "dynamic ref",
        doc(t("a"), t("b", when="tasks[string(1)].status == 'x'")),
        "dynamic-reference",
        "tasks[1].when",
    ),
    (
        "invalid template",
        doc(t("a", inputs={"x": "hello ${{ workflow"})),
        "invalid-template",
        "tasks[0].inputs.x",
    ),
    (
        "invalid duration",
        doc(t("a", timeouts={"heartbeat": "5 minutes"})),
        "invalid-duration",
        "tasks[0].timeouts.heartbeat",
    ),
    (
        "invalid quantity",
        doc(t("a", resources={"cpu": "lots"})),
        "invalid-quantity",
        "tasks[0].resources.cpu",
    ),
    (
        "invalid memory",
        doc(t("a", resources={"memory": "1Qi"})),
        "invalid-quantity",
        "tasks[0].resources.memory",
    ),
    (
        "retry attempts",
        doc(t("a", retry={"max_attempts": 0})),
        "invalid-retry",
        "tasks[0].retry.max_attempts",
    ),
    (
        "retry coefficient",
        doc(t("a", retry={"backoff_coefficient": 0.5})),
        "invalid-retry",
        "tasks[0].retry.backoff_coefficient",
    ),
    ("retry jitter", doc(t("a", retry={"jitter": 1.5})), "invalid-retry", "tasks[0].retry.jitter"),
    (
        "retry intervals",
        doc(t("a", retry={"initial_interval": "10s", "max_interval": "1s"})),
        "invalid-retry",
        "tasks[0].retry.max_interval",
    ),
    (
        "defaults retry",
        doc(t("a"), defaults={"retry": {"max_attempts": -1}}),
        "invalid-retry",
        "defaults.retry.max_attempts",
    ),
    (
        "breaker",
        doc(t("a", circuit_breaker={"failure_threshold": 0})),
        "invalid-circuit-breaker",
        "tasks[0].circuit_breaker.failure_threshold",
    ),
    (
        "unknown trigger",
        doc(t("a"), t("b", depends_on=["a"], trigger="sometimes")),
        "unknown-trigger",
        "tasks[1].trigger",
    ),
    ("unknown enum", doc(t("a"), on_failure="explode"), "unknown-enum", "on_failure"),
    (
        "input type enum",
        doc(t("a"), inputs={"x": {"type": "str"}}),
        "unknown-enum",
        "inputs.x.type",
    ),
    ("missing id", doc({"type": "x"}), "missing-required", "tasks[0].id"),
    ("missing type", doc({"id": "a"}), "missing-required", "tasks[0].type"),
    ("missing name", {"tasks": [t("a")]}, "missing-required", "name"),
    (
        "fallback type",
        doc(t("a", fallback={"inputs": {}})),
        "missing-required",
        "tasks[0].fallback.type",
    ),
    (
        "compensation type",
        doc(t("a", compensation={}), on_failure="compensate"),
        "missing-required",
        "tasks[0].compensation.type",
    ),
    (
        "input default",
        doc(t("a"), inputs={"n": {"type": "integer", "default": "ten"}}),
        "invalid-input-default",
        "inputs.n.default",
    ),
    (
        "required input without type",
        doc(t("a"), inputs={"n": {"required": True}}),
        "required-input-undeclared",
        "inputs.n.type",
    ),
    (
        "all_failed under fail_fast",
        doc(t("a"), t("cleanup", depends_on=["a"], trigger="all_failed")),
        "unreachable",
        "tasks[1].trigger",
    ),
    ("one_success root", doc(t("a", trigger="one_success")), "unreachable", "tasks[0].trigger"),
    (
        "downstream of unreachable",
        doc(t("a"), t("b", depends_on=["a"], trigger="all_failed"), t("c", depends_on=["b"])),
        "unreachable",
        "tasks[2]",
    ),
    (
        "sleep without duration",
        doc({"id": "s", "type": "builtin.sleep"}),
        "builtin-invalid",
        "tasks[0].inputs",
    ),
    (
        "wait without event",
        doc({"id": "w", "type": "builtin.wait_for_event", "inputs": {"timeout": "1h"}}),
        "builtin-invalid",
        "tasks[0].inputs",
    ),
    (
        "unknown builtin",
        doc({"id": "w", "type": "builtin.teleport"}),
        "builtin-invalid",
        "tasks[0].type",
    ),
    (
        "sleep bad duration",
        doc({"id": "s", "type": "builtin.sleep", "inputs": {"duration": "forever"}}),
        "invalid-duration",
        "tasks[0].inputs.duration",
    ),
]


@pytest.mark.parametrize(
    ("document", "code", "path"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_code_and_path(document: dict[str, Any], code: str, path: str) -> None:
    result = compile_document(document)
    assert result.plan is None
    found = [(d.code, d.path) for d in result.diagnostics]
    assert (code, path) in found, found


def test_every_error_code_is_covered() -> None:
    codes = {c[2] for c in CASES}
    assert {
        "duplicate-id", "invalid-id", "unknown-dependency", "self-dependency", "cycle",
        "unknown-field", "invalid-type", "invalid-expression", "unknown-reference",
        "dynamic-reference", "invalid-template", "invalid-duration", "invalid-quantity",
        "invalid-retry", "unknown-trigger", "unknown-enum", "missing-required",
        "invalid-input-default", "required-input-undeclared", "unreachable", "builtin-invalid",
    } <= codes  # fmt: skip


def test_unknown_field_hint() -> None:
    (d,) = compile_document(doc(t("a", depnds_on=["b"]))).diagnostics
    assert d.message == "unknown field 'depnds_on'; did you mean depends_on?"


def test_cycle_message_is_the_path_one_per_cycle() -> None:
    result = compile_document(
        doc(
            t("a", depends_on=["c"]),
            t("b", depends_on=["a"]),
            t("c", depends_on=["b"]),
            t("x", depends_on=["y"]),
            t("y", inputs={"v": "${{ tasks.x.output }}"}),
        )
    )
    cycles = [d for d in result.diagnostics if d.code == "cycle"]
    assert [(d.path, d.message) for d in cycles] == [
        ("tasks[0].depends_on[0]", "dependency cycle: a > b > c > a"),
        ("tasks[3].depends_on[0]", "dependency cycle: x > y > x"),
    ]


def test_all_problems_reported_at_once_and_sorted() -> None:
    tasks = [t(f"t{i}", depends_on=[f"missing{i}"]) for i in range(12)]
    result = compile_document(doc(*tasks))
    paths = [d.path for d in result.diagnostics]
    assert len(paths) == 12
    assert paths[1] == "tasks[1].depends_on[0]" and paths[2] == "tasks[2].depends_on[0]"
    assert paths[-1] == "tasks[11].depends_on[0]"
    assert result.diagnostics == sorted_diagnostics(result.diagnostics)


def test_natural_order() -> None:
    ds = [Diagnostic("x", "tasks[10].id", "m"), Diagnostic("x", "tasks[2].id", "m")]
    assert [d.path for d in sorted_diagnostics(ds)] == ["tasks[2].id", "tasks[10].id"]


def test_limit_tasks() -> None:
    result = compile_document({"name": "big", "tasks": [{}] * 100_001})
    assert result.limit_exceeded and not result.ok
    assert [(d.code, d.path) for d in result.diagnostics] == [("limit-tasks", "tasks")]


def test_limit_document_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_DOCUMENT_BYTES", 100)
    result = compile_source("name: x\n" + "# padding\n" * 20)
    assert result.limit_exceeded
    assert result.diagnostics[0].code == "limit-document-size"


def test_syntax_errors() -> None:
    assert compile_source("{not json").diagnostics[0].code == "invalid-syntax"
    assert compile_source("a: [1,").diagnostics[0].code == "invalid-syntax"
    assert compile_source("- 1\n- 2").diagnostics[0].code == "invalid-type"


def test_compensation_may_read_later_task_without_cycle() -> None:
    result = compile_document(
        doc(
            t(
                "reserve",
                compensation={"type": "release", "inputs": {"c": "${{ tasks.charge.output }}"}},
            ),
            t("charge", depends_on=["reserve"]),
            on_failure="compensate",
        )
    )
    assert result.ok, result.diagnostics


def test_fallback_may_read_own_error() -> None:
    result = compile_document(
        doc(t("a", fallback={"type": "b", "inputs": {"e": "${{ tasks.a.error }}"}}))
    )
    assert result.ok, result.diagnostics


def test_all_failed_is_fine_under_continue() -> None:
    result = compile_document(
        doc(t("a"), t("cleanup", depends_on=["a"], trigger="all_failed"), on_failure="continue")
    )
    assert result.ok, result.diagnostics


def test_comprehension_variables_are_allowed() -> None:
    result = compile_document(
        doc(t("a"), t("b", depends_on=["a"], when="tasks.a.output.items.exists(i, i > 2)"))
    )
    assert result.ok, result.diagnostics


def test_validate_source_reports_without_plan() -> None:
    ds = validate_source("name: wf\ntasks:\n  - {id: a, type: x, depends_on: [b]}\n")
    assert [(d.code, d.path) for d in ds] == [("unknown-dependency", "tasks[0].depends_on[0]")]


def test_warning_does_not_block() -> None:
    result = compile_document(
        doc(t("a"), inputs={"n": {"type": "integer", "required": True, "default": 3}})
    )
    assert result.ok
    assert [d.severity for d in result.diagnostics] == ["warning"]
