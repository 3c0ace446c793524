"""Which expressions run inline, and what each one is handed."""

from __future__ import annotations

from typing import Any

import pytest
from execplan.executor.expressions.cost import (
    INLINE_VALUES,
    MAX_INLINE_SOURCE,
    inline,
    measure,
    narrow,
    shape,
)


def context(inputs: dict[str, Any], **outputs: Any) -> dict[str, Any]:
    return {
        "workflow": {"inputs": inputs, "name": "w"},
        "tasks": {
            task: {"output": output, "status": "SUCCEEDED", "error": None, "attempts": 1}
            for task, output in outputs.items()
        },
        "execution": {"id": "e-1", "plan_id": "p" * 64, "fairness_key": ""},
    }


def inline_here(source: str, full: dict[str, Any]) -> bool:
    form = shape(source)
    return inline(form, narrow(form, full))


TYPICAL = context({"order_id": "o-1", "amount": 10}, charge={"receipt_id": "r-1", "ok": True})


@pytest.mark.parametrize(
    "source",
    [
        "tasks.charge.output.receipt_id",
        "tasks.charge.output.ok == true && workflow.inputs.amount > 5",
        "'order ' + workflow.inputs.order_id",
        "size(tasks.charge.output) > 1 ? execution.id : 'none'",
        "tasks.charge.output.receipt_id.matches('^r-[0-9]+$')",
    ],
)
def test_typical_expressions_run_inline(source: str) -> None:
    assert inline_here(source, TYPICAL)


@pytest.mark.parametrize(
    "source",
    [
        "workflow.inputs.xs.all(x, x > 0)",
        "workflow.inputs.xs.exists(x, x > 0)",
        "workflow.inputs.xs.exists_one(x, x > 0)",
        "workflow.inputs.xs.map(x, x * 2)",
        "workflow.inputs.xs.filter(x, x > 0)",
        "[1, 2, 3].map (x, x)",
    ],
)
def test_a_comprehension_never_runs_inline(source: str) -> None:
    assert not shape(source).may_inline
    assert not inline_here(source, context({"xs": [1, 2, 3]}))


def test_the_values_handed_in_decide() -> None:
    assert inline_here("size(workflow.inputs.xs)", context({"xs": list(range(1000))}))
    assert not inline_here("size(workflow.inputs.xs)", context({"xs": list(range(5000))}))
    # Every reference may copy what is handed in into the result.
    many = " + ".join(["workflow.inputs.xs"] * 8)
    assert inline_here(many, context({"xs": list(range(100))}))
    assert not inline_here(many, context({"xs": list(range(400))}))


def test_bytes_operators_may_copy_decide() -> None:
    text = "t" * 100_000
    assert inline_here("workflow.inputs.s + '!'", context({"s": text}))
    chain = "workflow.inputs.s" + " + 'a'" * 300
    assert not inline_here(chain, context({"s": text}))
    # A regex scans pattern and text: quadratic in what it is handed.
    assert not inline_here("workflow.inputs.s.matches('a+b')", context({"s": text}))


def test_long_sources_never_run_inline() -> None:
    long = "1" + " + 1" * (MAX_INLINE_SOURCE // 4)
    assert len(long) > MAX_INLINE_SOURCE
    assert not shape(long).may_inline
    assert not inline_here(long, context({}))


def test_an_expression_is_handed_only_what_it_reads() -> None:
    full = context({"a": 1, "big": list(range(10_000))}, x={"v": 1}, y={"v": 2})
    handed = narrow(shape("workflow.inputs.a + tasks.x.output.v"), full)
    assert handed == {"workflow": {"inputs": {"a": 1}}, "tasks": {"x": full["tasks"]["x"]}}
    assert narrow(shape("execution.id"), full) == {
        "workflow": {"inputs": {}},
        "execution": full["execution"],
    }
    # The unused large input does not make the expression expensive.
    assert inline_here("workflow.inputs.a + tasks.x.output.v", full)


def test_what_the_analysis_cannot_account_for_is_handed_everything() -> None:
    full = context({"a": 1, "map": [1]}, x={"v": 1})
    assert narrow(shape("tasks[workflow.inputs.a].output"), full) == full
    # An input named like a macro: `workflow.inputs.map(...)` may be one.
    handed = narrow(shape("workflow.inputs.map(k, k)"), full)
    assert handed["workflow"]["inputs"] == full["workflow"]["inputs"]


def test_measure_stops_once_past_a_maximum() -> None:
    values, nbytes = measure({"xs": list(range(1_000_000))}, 100, 1 << 30)
    assert 100 < values < 200
    values, nbytes = measure(["x" * 1000] * 1000, 1 << 30, 10_000)
    assert 10_000 < nbytes < 12_000
    # {} 2 + "a" 2 + [] 2 + 1 8 + "bc" 2 + None 8 + True 8 bytes, in 6 values
    assert measure({"a": [1, "bc", None, True]}, INLINE_VALUES, 1 << 20) == (6, 32)


def test_a_source_over_the_planners_bounds_is_refused_not_evaluated() -> None:
    cubed = "xs.all(i, xs.all(j, xs.all(k, i + j + k >= 0)))"
    assert shape(cubed).refused.startswith("expression-too-costly: ")
    huge = "1" + " + 1" * 10_000  # over 16 KiB: refused without being read
    assert shape(huge).refused.startswith("expression-too-large: ")
    assert not shape(huge).may_inline
    assert shape("xs.all(i, xs.all(j, i + j >= 0))").refused == ""
