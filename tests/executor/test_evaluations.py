"""The engine's side of sandboxed evaluation: memo, holding inputs, releasing them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
from collections.abc import AsyncIterator

import pytest
from execplan.executor.expressions.bindings import EvaluationError, Expr
from execplan.executor.expressions.evaluation import (
    EvaluationPending,
    ExpressionBudgetExceeded,
    Request,
    Where,
    evaluate_binding,
)
from execplan.executor.expressions.sandbox import ExpressionBudget, Outcome
from execplan.executor.runtime.evaluations import Evaluations, Memo, same

DOUBLE = Expr("workflow.inputs.xs.map(x, x * 2)", ())
WHERE = Where("e-1", "tasks[0].inputs.v")


@pytest.fixture
async def evaluations() -> AsyncIterator[Evaluations[str]]:
    made: Evaluations[str] = Evaluations(ExpressionBudget(timeout_ms=500, processes=1))
    yield made
    made.close()


def context(xs: list[object]) -> dict[str, object]:
    return {"workflow": {"inputs": {"xs": xs}}}


async def test_a_miss_is_pending_then_a_hit_once_evaluated(evaluations: Evaluations[str]) -> None:
    live = evaluations.evaluator
    with pytest.raises(EvaluationPending) as pending:
        evaluate_binding(DOUBLE, context([1, 2]), live, WHERE)
    request = pending.value.request
    assert request.field == "tasks[0].inputs.v"
    await evaluations.run(request)
    assert evaluate_binding(DOUBLE, context([1, 2]), live, WHERE) == [2, 4]
    # Other values handed in: not the same evaluation.
    with pytest.raises(EvaluationPending):
        evaluate_binding(DOUBLE, context([1, 3]), live, WHERE)


async def test_outcomes_come_back_as_the_errors_they_were(evaluations: Evaluations[str]) -> None:
    live = evaluations.evaluator
    bad = Expr("workflow.inputs.xs.map(x, x.nope)", ())
    poison = Expr("workflow.inputs.xs.all(i, workflow.inputs.xs.all(j, i + j >= 0))", ())
    for expr, handed in ((bad, context([1])), (poison, context(list(range(3000))))):
        with pytest.raises(EvaluationPending) as pending:
            evaluate_binding(expr, handed, live, WHERE)
        await evaluations.run(pending.value.request)
    with pytest.raises(EvaluationError) as error:
        evaluate_binding(bad, context([1]), live, WHERE)
    assert not isinstance(error.value, ExpressionBudgetExceeded)
    assert str(error.value).startswith("workflow.inputs.xs.map(x, x.nope): ")
    with pytest.raises(ExpressionBudgetExceeded) as exceeded:
        evaluate_binding(poison, context(list(range(3000))), live, WHERE)
    assert str(exceeded.value) == (
        "tasks[0].inputs.v: evaluation took longer than its budget of 500 ms "
        "(workflow.inputs.xs.all(i, workflow.inputs.xs.all(j, i + j >= 0)))"
    )


async def test_held_inputs_are_released_in_order_after_evaluation_and_reload(
    evaluations: Evaluations[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    released: list[list[str]] = []
    first = Request("e-1", "tasks[1].when", "workflow.inputs.xs.exists(x, x == 1)", context([1]))
    second = Request("e-1", "outputs.y", "workflow.inputs.xs.map(x, x)", context([2]))
    # The second evaluation ends only when the test says so: otherwise it may finish
    # before the first one's answer is seen, and the order under test never happens.
    second_done: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
    submit = evaluations.sandbox.submit
    monkeypatch.setattr(
        evaluations.sandbox,
        "submit",
        lambda source, handed: second_done if source == second.source else submit(source, handed),
    )
    evaluations.suspend("e-1", ["i1", "i2"], first, released.append)
    assert evaluations.holds("e-1")
    evaluations.hold("e-1", "i3")
    evaluations.reloaded("e-1")
    # A dispatch round decides for it meanwhile and needs another evaluation.
    evaluations.suspend("e-1", [], second, released.append)
    await evaluations.run(first)
    evaluations.reloaded("e-1")
    assert released == []  # the second evaluation is still running
    waiting = asyncio.ensure_future(evaluations.run(second))
    second_done.set_result(Outcome(value=[2]))
    await waiting
    assert released == [["i1", "i2", "i3"]]
    assert not evaluations.holds("e-1")


async def test_many_ask_for_one_evaluation_it_runs_once(evaluations: Evaluations[str]) -> None:
    request = Request("e-1", "tasks[0].inputs.v", DOUBLE.source, context([5]))
    told: list[int] = []
    for n in range(5):
        evaluations.start(request, functools.partial(told.append, n))
    await evaluations.run(request)
    await asyncio.sleep(0)
    assert sorted(told) == [0, 1, 2, 3, 4]
    assert evaluations.sandbox.started == 1
    assert len(evaluations.memo) == 1


def test_same_values_are_equal_even_with_nan() -> None:
    assert same({"a": [1, "x", None]}, {"a": [1, "x", None]})
    assert same({"a": [math.nan]}, {"a": [float("nan")]})
    assert not same({"a": [1]}, {"a": [2]})
    assert not same({"a": [math.nan]}, {"a": [1.0]})
    assert not same({"a": 1}, {"b": 1})


def test_the_memo_is_bounded_by_entries_and_bytes() -> None:
    memo = Memo(entries=3, max_bytes=1_000)
    for n in range(5):
        memo.put(Request("e", f"f{n}", "s", {}), Outcome(value=n, size=10))
    assert len(memo) == 3
    assert memo.get(Request("e", "f0", "s", {})) is None
    assert memo.get(Request("e", "f4", "s", {})) == Outcome(value=4, size=10)
    memo.put(Request("e", "big", "s", {}), Outcome(value="x", size=995))
    assert len(memo) == 1
