"""Diagnostics never grow with the input: echoed values are cut, long cycles are
summarised, at most MAX_REPORTED diagnostics come back (errors first) and a compile
keeps at most MAX_COLLECTED while it runs."""

from __future__ import annotations

from typing import Any

import pytest
from execplan.planner import compile_document, diagnostics, limits
from execplan.planner.diagnostics import MAX_REPORTED, Diagnostics, child, clip, echo


def wf(*tasks: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "w", "tasks": list(tasks), **top}


def test_echo_and_clip_cut_long_values() -> None:
    assert echo("short") == "'short'"
    assert echo("x" * 100_000) == repr("x" * 80) + "…(100,000 chars)"
    assert clip("y" * 81) == "y" * 80 + "…(81 chars)"
    assert echo(10**5000) == "an integer of about 5,000 digits"  # repr() would raise
    assert len(echo([list(range(1000))] * 1000)) < 200
    assert child("inputs", "k" * 1000) == 'inputs["' + "k" * 80 + '…(1,000 chars)"]'


@pytest.mark.parametrize(
    "doc",
    [
        wf({"id": "a", "type": "t", "depends_on": ["b" * 100_000]}),  # unknown dependency
        wf({"id": "a-" * 50_000, "type": "t"}),  # invalid id
        wf({"id": "a", "type": "t", "trigger": "x" * 100_000}),  # unknown enum value
        wf({"id": "a", "type": "t", "x" * 100_000: 1}),  # unknown field
        wf({"id": "a", "type": "builtin." + "x" * 100_000}),
        wf({"id": "a", "type": "t", "timeouts": {"heartbeat": "1s" * 100_000}}),
        wf({"id": "a", "type": "t", "resources": {"cpu": "9" * 100_000}}),
        wf({"id": "a", "type": "t", "inputs": {"v": "${{ tasks." + "z" * 10_000 + ".output }}"}}),
        wf({"id": "a", "type": "t", "when": "tasks.a." + "q" * 10_000}),
        wf({"id": "a", "type": "t", "when": "workflow.inputs." + "q" * 10_000}),
        wf({"id": "a", "type": "t", "when": "x" * 10_000 + " +"}),  # CEL's own parse error
        wf({"id": "a", "type": "t"}, inputs={"i": {"type": "integer", "default": "d" * 100_000}}),
        wf({"id": "a", "type": "t", "priority": 10**5000}),
    ],
    ids=lambda d: next(k for k in d["tasks"][0] if k not in ("id",)) if d["tasks"] else "?",
)
def test_no_diagnostic_echoes_unbounded_input(doc: dict[str, Any]) -> None:
    result = compile_document(doc)
    assert result.errors
    for d in result.diagnostics:
        assert len(d.message) < 400 and len(d.path) < 200, d


def test_a_long_cycle_names_its_ends_only() -> None:
    n = 5_000
    tasks = [{"id": f"t{i}", "type": "x", "depends_on": [f"t{(i + 1) % n}"]} for i in range(n)]
    (cycle,) = compile_document(wf(*tasks)).errors
    assert cycle.code == "cycle"
    assert "…(4,990 more)" in cycle.message and len(cycle.message) < 200


def test_at_most_max_reported_errors_first() -> None:
    warned = {"inputs": {"i": {"type": "string", "required": True, "default": "x"}}}
    tasks = [{"id": f"t{i}", "type": "x", "depends_on": [f"missing{i}"]} for i in range(5_000)]
    result = compile_document(wf(*tasks, **warned))
    *shown, last = result.diagnostics
    assert len(shown) == MAX_REPORTED
    assert all(d.severity == "error" for d in shown)  # the warning is what got dropped
    assert (last.code, last.severity) == ("diagnostics-truncated", "error")
    assert last.message.startswith("4,901 more problems not shown")


def test_warnings_alone_truncate_as_a_warning() -> None:
    inputs = {f"i{k}": {"type": "string", "required": True, "default": "x"} for k in range(150)}
    result = compile_document(wf({"id": "a", "type": "t"}, inputs=inputs))
    assert result.ok  # only warnings: still a plan
    assert (result.diagnostics[-1].code, result.diagnostics[-1].severity) == (
        "diagnostics-truncated",
        "warning",
    )


def test_collection_stops_at_max_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnostics, "MAX_COLLECTED", 50)
    diags = Diagnostics()
    for i in range(80):
        diags.error("x", f"p{i}", "m")
    assert len(diags.items) == 50 and diags.full and diags.has_errors
    report = diags.report()
    assert len(report) == 51 and report[-1].message.startswith("30 more problems")


def test_every_name_is_bounded() -> None:
    """A name travels in every event and dispatch of what it names: a 100,000-character
    task id or type used to compile (and a 30 MB one ran, at ~1 GB of server memory)."""
    most = limits.MAX_NAME_CHARS
    ok, long = "n" * most, "n" * (most + 1)

    def doc(name: str) -> dict[str, Any]:
        return wf(
            {
                "id": name,
                "type": name,
                "secrets": [name.upper()],
                "fallback": {"type": name},
                "compensation": {"type": name},
            },
            name=name,
            version=name,
            inputs={name: {"type": "string", "default": "x"}},
            outputs={name: "${{ 1 }}"},
            on_failure="compensate",
        )

    assert [d for d in compile_document(doc(ok)).errors if d.code == "name-too-long"] == []
    errors = compile_document(doc(long)).errors
    assert sorted(d.path for d in errors if d.code == "name-too-long") == sorted(
        [
            "name",
            "version",
            child("inputs", long),
            child("outputs", long),
            "tasks[0].id",
            "tasks[0].type",
            "tasks[0].fallback.type",
            "tasks[0].compensation.type",
            "tasks[0].secrets[0]",
        ]
    )
    assert all(len(d.message) < 200 for d in errors)
