"""Run-time CEL with a budget, off the event loop (a real server in process, SDK workers).

The report's expressions, three nested `.all()` over 1,000 elements in a `when` and
an input building 100^4 values, are refused when the workflow compiles (more than two
nested comprehensions), and at run time too when a plan carries them without this
planner (a plan stored before client plans were checked). Two nested ones pass the
planner yet are just as bad over a longer list: two `.all()` over 10,000 elements are
10^8 steps, two `.map()` build 10^8 values. Those run in the sandbox process; the
server keeps answering meanwhile, and one over its budget fails its task (or, for an
output, the execution) with ExpressionBudgetExceeded naming the field.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import InvalidArgumentError
from execplan.client.values import from_value
from execplan.executor.expressions.sandbox import ExpressionBudget
from execplan.planner import compile_source
from execplan.v1 import execution_pb2 as ex
from execplan.wire.plan_codec import encode_plan

from .conftest import FAST, Env

if TYPE_CHECKING:
    from tests.support.server import environment
else:
    from support.server import environment

BUDGET_MS = 1_000
CONFIG = dataclasses.replace(FAST, expressions=ExpressionBudget(timeout_ms=BUDGET_MS))
XS_1000 = list(range(1000))
XS_10000 = list(range(10_000))

# As reported: refused by the planner (more than two nested comprehensions).
ALL_CUBED = (
    "workflow.inputs.xs.all(i, workflow.inputs.xs.all(j, "
    "workflow.inputs.xs.all(k, i + j + k >= 0)))"
)
MAP_4 = (
    "workflow.inputs.xs.map(i, workflow.inputs.xs.map(j, "
    "workflow.inputs.xs.map(k, workflow.inputs.xs.map(l, i))))"
)
# Within the planner's bounds, as expensive over 10,000 elements.
ALL_SQUARED = "workflow.inputs.xs.all(i, workflow.inputs.xs.all(j, i + j >= 0))"
MAP_2 = "workflow.inputs.xs.map(i, workflow.inputs.xs.map(j, i))"


def when_flow(when: str) -> str:
    return f"""
name: poison-when
inputs: {{xs: {{type: array, required: true}}}}
tasks:
  - {{id: a, type: t.echo}}
  - id: b
    type: t.echo
    depends_on: [a]
    when: "{when}"
"""


def input_flow(expression: str) -> str:
    return f"""
name: poison-input
inputs: {{xs: {{type: array, required: true}}}}
tasks:
  - id: a
    type: t.echo
    inputs: {{big: "${{{{ {expression} }}}}"}}
"""


POISON_WHEN = when_flow(ALL_SQUARED)
POISON_INPUT = input_flow(MAP_2)
HEALTHY = """
name: healthy
inputs: {n: {type: integer, required: true}}
tasks:
  - {id: a, type: t.echo, inputs: {n: "${{ workflow.inputs.n }}"}}
  - {id: b, type: t.echo, depends_on: [a], inputs: {n: "${{ tasks.a.output.n + 1 }}"}}
outputs: {n: "${{ tasks.b.output.n }}"}
"""

calls: list[dict[str, Any]] = []


async def echo(inputs: dict[str, Any]) -> dict[str, Any]:
    calls.append(inputs)
    return dict(inputs)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    calls.clear()
    async with environment(Env, tmp_path, CONFIG) as environment_:
        environment_.worker({"t.echo": echo})
        yield environment_


async def probe_while(env: Env, execution_id: str) -> float:
    """Calls other RPCs until the execution ends; returns the slowest answer (s)."""
    slowest = 0.0
    healthy = 0
    async with asyncio.timeout(30):
        while True:
            began = time.monotonic()
            state = (await env.client.get(execution_id)).state
            assert [e async for e in env.client.list(page_size=5)]
            if healthy < 3:  # other executions keep running meanwhile
                done = await env.finish(await env.start(HEALTHY, {"n": healthy}), within=10)
                assert done.state == ex.EXECUTION_STATE_SUCCEEDED
                healthy += 1
            slowest = max(slowest, time.monotonic() - began)
            if state != ex.EXECUTION_STATE_RUNNING:
                return slowest
            await asyncio.sleep(0.02)


def task(execution: ex.Execution, task_id: str) -> ex.TaskRun:
    return next(t for t in execution.tasks if t.task_id == task_id)


async def test_the_reported_expressions_are_refused_when_the_workflow_compiles(
    env: Env,
) -> None:
    for source, field in (
        (when_flow(ALL_CUBED), "tasks[1].when"),
        (input_flow(MAP_4), "tasks[0].inputs.big"),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            await env.start(source, {"xs": XS_1000})
        assert f"{field}: expression-too-costly: " in str(refused.value)


async def test_a_stored_plan_over_the_bounds_never_runs_them_either(env: Env) -> None:
    compiled = compile_source(when_flow("size(workflow.inputs.xs) > 0"))
    assert compiled.plan is not None
    plan = encode_plan(compiled.plan)
    plan.nodes[1].condition.source = ALL_CUBED
    plan.plan_id = "made-by-hand-1"
    # A client's plan is refused when it arrives (wire/plan_check.py) ...
    with pytest.raises(InvalidArgumentError, match="expression-too-costly"):
        await env.client.register_plan(plan)
    # ... but one stored before that check existed still reaches the executor: its
    # expression is refused there too, never compiled, and the task fails at once.
    await env.executor.engine.register_plan(plan)
    began = time.monotonic()
    started = await env.client.start(plan_id=plan.plan_id, inputs={"xs": XS_1000})
    done = await env.finish(started.execution_id)
    b = task(done, "b")
    assert b.error.type == "ExpressionBudgetExceeded"
    assert b.error.message.startswith("tasks[1].when: expression-too-costly: ")
    assert time.monotonic() - began < BUDGET_MS / 1000  # refused, not run
    assert env.executor.engine.evaluations.sandbox.started == 0


async def test_a_when_over_its_budget_fails_its_task_and_the_server_keeps_answering(
    env: Env,
) -> None:
    execution_id = await env.start(POISON_WHEN, {"xs": XS_10000})
    slowest = await probe_while(env, execution_id)
    assert slowest < 1.0, f"an RPC took {slowest:.2f} s while the expression ran"

    done = await env.client.get(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    b = task(done, "b")
    assert b.state == ex.TASK_STATE_FAILED
    assert b.error.type == "ExpressionBudgetExceeded"
    assert b.error.message.startswith(
        f"tasks[1].when: evaluation took longer than its budget of {BUDGET_MS:,} ms ("
    )
    assert not b.error.retryable
    assert done.error.type == "ExpressionBudgetExceeded"
    kinds = [e.WhichOneof("kind") for e in await env.history(execution_id)]
    assert kinds.count("task_failed") == 1  # decided once, not once per try

    began = time.monotonic()
    replayed = await env.client.replay(execution_id)
    assert replayed.deterministic, replayed.divergence
    assert time.monotonic() - began < BUDGET_MS / 1000  # taken from the log, not re-run


async def test_an_input_building_10_to_the_8th_values_fails_its_task(env: Env) -> None:
    execution_id = await env.start(POISON_INPUT, {"xs": XS_10000})
    slowest = await probe_while(env, execution_id)
    assert slowest < 1.0

    done = await env.client.get(execution_id)
    a = task(done, "a")
    assert a.state == ex.TASK_STATE_FAILED
    assert a.error.type == "ExpressionBudgetExceeded"
    assert a.error.message.startswith("tasks[0].inputs.big: evaluation ")
    assert not [c for c in calls if "big" in c]  # never dispatched
    kinds = [e.WhichOneof("kind") for e in await env.history(execution_id)]
    assert "task_dispatched" not in kinds
    assert (await env.client.replay(execution_id)).deterministic


async def test_an_output_over_budget_fails_the_execution_naming_the_output(env: Env) -> None:
    source = f"""
name: poison-output
inputs: {{xs: {{type: array, required: true}}}}
tasks:
  - {{id: a, type: t.echo}}
outputs:
  fine: "${{{{ size(workflow.inputs.xs) }}}}"
  y: "${{{{ {ALL_SQUARED} }}}}"
"""
    execution_id = await env.start(source, {"xs": XS_10000})
    done = await env.finish(execution_id, within=20)
    assert done.state == ex.EXECUTION_STATE_FAILED
    assert done.error.type == "ExpressionBudgetExceeded"
    assert done.error.message.startswith("outputs.y: evaluation took longer")
    assert task(done, "a").state == ex.TASK_STATE_SUCCEEDED
    assert (await env.client.replay(execution_id)).deterministic


async def test_a_result_over_the_size_limit_fails_its_task(env: Env) -> None:
    # Four references to a 600 kB string: 2.4 MB, over the 2 MiB result limit.
    four = ", ".join(["workflow.inputs.s"] * 4)
    source = f"""
name: too-large
inputs: {{s: {{type: string, required: true}}}}
tasks:
  - {{id: a, type: t.echo, inputs: {{four: "${{{{ [{four}] }}}}"}}}}
"""
    execution_id = await env.start(source, {"s": "x" * 600_000})
    done = await env.finish(execution_id)
    a = task(done, "a")
    assert a.error.type == "ExpressionBudgetExceeded"
    assert a.error.message.startswith("tasks[0].inputs.four: its result is 2,400,")
    assert "the limit is 2,097,152" in a.error.message


async def test_expensive_but_bounded_expressions_give_their_values_on_every_path(
    env: Env,
) -> None:
    # Comprehensions always go to the sandbox: a first task's `when` (decided while
    # StartExecution runs), inputs (at dispatch), a `when` after a result (the input
    # waits) and outputs (at the end) all get their values, in the usual order.
    source = """
name: bounded
inputs: {xs: {type: array, required: true}}
tasks:
  - id: a
    type: t.echo
    when: "workflow.inputs.xs.all(x, x >= 0)"
    inputs: {doubled: "${{ workflow.inputs.xs.map(x, x * 2) }}"}
  - id: b
    type: t.echo
    depends_on: [a]
    when: "tasks.a.output.doubled.exists(v, v == 4)"
    inputs: {count: "${{ size(tasks.a.output.doubled.filter(v, v > 2)) }}"}
  - id: skipped
    type: t.echo
    depends_on: [a]
    when: "tasks.a.output.doubled.exists(v, v == 5)"
outputs:
  big: "${{ tasks.a.output.doubled.filter(v, v >= 6) }}"
  count: "${{ tasks.b.output.count }}"
"""
    execution_id = await env.start(source, {"xs": [0, 1, 2, 3, 4]})
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    assert calls == [{"doubled": [0, 2, 4, 6, 8]}, {"count": 3}]
    assert task(done, "skipped").state == ex.TASK_STATE_SKIPPED
    assert {k: from_value(v) for k, v in done.outputs.fields.items()} == {
        "big": [6, 8],
        "count": 3,
    }
    kinds = [e.WhichOneof("kind") for e in await env.history(execution_id)]
    assert kinds.count("task_dispatched") == 2
    assert (await env.client.replay(execution_id)).deterministic


async def test_a_cel_error_in_the_sandbox_is_the_usual_binding_error(env: Env) -> None:
    source = """
name: sandbox-error
inputs: {xs: {type: array, required: true}}
tasks:
  - {id: a, type: t.echo, inputs: {v: "${{ workflow.inputs.xs.map(x, x.nope) }}"}}
"""
    done = await env.finish(await env.start(source, {"xs": [1]}))
    a = task(done, "a")
    assert a.error.type == "BindingError"
    assert a.error.message.startswith("workflow.inputs.xs.map(x, x.nope): ")
    assert not a.error.retryable


async def test_many_tasks_waiting_for_the_sandbox_at_once_all_get_their_inputs(env: Env) -> None:
    width = 24
    lines = [
        "name: fan-out",
        "inputs: {xs: {type: array, required: true}}",
        "tasks:",
    ]
    for i in range(width):
        lines.append(
            f'  - {{id: t{i}, type: t.echo, inputs: {{v: "${{{{ '
            f'workflow.inputs.xs.map(x, x + {i}) }}}}"}}}}'
        )
    executions = [await env.start("\n".join(lines) + "\n", {"xs": [n, n + 1]}) for n in range(3)]
    for execution_id in executions:
        done = await env.finish(execution_id, within=30)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert sorted(tuple(c["v"]) for c in calls) == sorted(
        (n + i, n + 1 + i) for n in range(3) for i in range(width)
    )
