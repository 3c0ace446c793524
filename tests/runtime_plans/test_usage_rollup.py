"""Usage and budgets over plans that grow at runtime, through the Python SDK against a
real server (docs/usage.md): a for_each task's usage is all its instances' (failed
attempts included) and its budget covers them all; the for_each pre-check refuses a
fan-out before any instance starts; repeat iterations add up and count toward the
attempt cap; a parent's usage includes every child's, failed ones too, and GetUsage
agrees without counting a child twice; a dynamic task's usage includes its
sub-plan's."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import FailedPreconditionError
from execplan.v1 import execution_pb2 as ex
from execplan.worker import SubPlan, TaskContext

if TYPE_CHECKING:
    from tests.support.server import FAST, Env, environment
else:
    from support.server import FAST, Env, environment


def _counters(message: Any) -> dict[str, float]:
    return {name: round(amount, 9) for name, amount in message.counters.items()}


FAN = """
name: fan-usage
inputs: {n: {type: integer, default: 5}}
budget: {cost: 100}
tasks:
  - id: plan
    type: ru.plan
    inputs: {n: "${{ workflow.inputs.n }}"}
  - id: research
    type: ru.research
    for_each: "${{ tasks.plan.output.items }}"
    max_parallel: 2
    retry: {max_attempts: 2, initial_interval: 10ms, jitter: 0}
    inputs: {i: "${{ index }}"}
"""


async def _plan(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    ctx.usage(cost=0.5)
    return {"items": list(range(int(inputs["n"])))}


async def test_a_for_each_task_adds_up_its_instances_failed_attempts_included(
    tmp_path: Path,
) -> None:
    async def research(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        i = int(inputs["i"])
        ctx.usage(cost=0.1 * (i + 1), tokens_in=100)
        if i == 3 and ctx.attempt == 1:
            raise RuntimeError("429 (the spend above still counts)")
        return {"i": i}

    async with environment(Env, tmp_path) as env:
        env.worker({"ru.plan": _plan, "ru.research": research})
        done = await env.finish(await env.start(FAN))
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        runs = {t.task_id: t for t in done.tasks}
        # Instances 0..4 cost 0.1..0.5; instance 3 ran twice (0.4 each time).
        for i in range(5):
            expected = 0.1 * (i + 1) * (2 if i == 3 else 1)
            assert _counters(runs[f"research[{i}]"].usage)["cost"] == pytest.approx(expected)
        research_cost = 0.1 + 0.2 + 0.3 + 0.8 + 0.5
        assert _counters(runs["research"].usage) == {
            "cost": pytest.approx(research_cost),
            "tokens_in": 600.0,
        }
        assert _counters(done.usage)["cost"] == pytest.approx(0.5 + research_cost)
        first, second = runs["research[3]"].attempts
        assert first.error.type == "RuntimeError"
        assert _counters(first.usage)["cost"] == pytest.approx(0.4)
        assert _counters(second.usage)["cost"] == pytest.approx(0.4)
        total = await env.client.usage(execution_id=done.execution_id)
        assert _counters(total.usage)["cost"] == pytest.approx(0.5 + research_cost)
        # By task: the instances are filed under their for_each task.
        by_task = await env.client.usage(execution_id=done.execution_id, group_by="task")
        groups = {g.key: _counters(g.usage)["cost"] for g in by_task.groups}
        assert groups == {"plan": 0.5, "research": pytest.approx(research_cost)}
        replay = await env.client.replay(done.execution_id)
        assert replay.deterministic, replay.divergence


TASK_BUDGET = """
name: fan-task-budget
inputs: {n: {type: integer, default: 5}}
tasks:
  - id: plan
    type: ru.plan
    inputs: {n: "${{ workflow.inputs.n }}"}
  - id: research
    type: ru.research
    for_each: "${{ tasks.plan.output.items }}"
    max_parallel: 1
    budget: {cost: 0.25}
    inputs: {i: "${{ index }}"}
"""


async def test_a_for_each_budget_covers_all_instances_and_pauses_mid_fan_out(
    tmp_path: Path,
) -> None:
    dispatched: list[int] = []

    async def research(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        dispatched.append(int(inputs["i"]))
        ctx.usage(cost=0.1)
        return {}

    async with environment(Env, tmp_path) as env:
        env.worker({"ru.plan": _plan, "ru.research": research})
        execution_id = await env.start(TASK_BUDGET)

        async def paused() -> bool:
            found = await env.client.get(execution_id)
            return found.state == ex.EXECUTION_STATE_PAUSED

        await env.until(paused)
        held = await env.client.get(execution_id)
        # No estimate: instances go while the task's spend (all instances) is below
        # 0.25: after 0.1, 0.2 a third goes, after 0.3 none.
        assert dispatched == [0, 1, 2]
        assert held.budget_exceeded.task_id == "research[3]"
        assert held.budget_exceeded.budget_task_id == "research"
        assert held.budget_exceeded.spent == pytest.approx(0.3)
        assert held.budget_exceeded.message == (
            "cost 0.3 spent has reached the budget of research of 0.25; research[3] is "
            "not dispatched"
        )
        await asyncio.sleep(0.2)
        assert dispatched == [0, 1, 2]  # nothing dispatched past it while paused
        # A resume without a raise pauses again; raising the execution's budget does
        # not raise a task's.
        await env.client.resume(execution_id)
        await env.until(paused)
        await env.client.set_budget(execution_id, cost=100, resume=True)
        await env.until(paused)
        assert dispatched == [0, 1, 2]
        # Raising the task's own budget (SetBudget with task_id) lets the rest go.
        raised = await env.client.set_budget(
            execution_id, task_id="research", cost=0.6, resume=True, reason="worth it"
        )
        assert raised.budget.cost == pytest.approx(0.6)
        done = await env.finish(execution_id)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        assert dispatched == [0, 1, 2, 3, 4]
        runs = {t.task_id: t for t in done.tasks}
        assert runs["research"].budget.cost == pytest.approx(0.6)
        assert not runs["research[0]"].HasField("budget")
        changed = [
            e.budget_changed
            for e in await env.history(execution_id)
            if e.HasField("budget_changed")
        ]
        assert [c.task_id for c in changed] == ["", "research"]
        other = await env.start(TASK_BUDGET.replace("    budget: {cost: 0.25}\n", ""))
        with pytest.raises(FailedPreconditionError, match="has no budget of its own"):
            await env.client.set_budget(other, task_id="research", cost=1)
        replay = await env.client.replay(execution_id)
        assert replay.deterministic, replay.divergence


PRECHECK = """
name: fan-precheck
inputs: {n: {type: integer, default: 5}}
budget: {cost: 1.0}
tasks:
  - id: plan
    type: ru.plan
    inputs: {n: "${{ workflow.inputs.n }}"}
  - id: research
    type: ru.research
    for_each: "${{ tasks.plan.output.items }}"
    inputs: {i: "${{ index }}", words: "${{ 1000 * (index + 1) }}"}
    estimate:
      cost: 0.1
      tokens: "double(inputs.words) / 4.0 + double(item)"
"""


async def test_the_for_each_pre_check_refuses_before_any_instance_starts(
    tmp_path: Path,
) -> None:
    async def research(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        raise AssertionError("no instance may be dispatched")

    async with environment(Env, tmp_path) as env:
        env.worker({"ru.plan": _plan, "ru.research": research})
        # 0.5 spent by plan; 9 items x 0.1 = 0.9 > what is left (0.5).
        done = await env.finish(await env.start(PRECHECK, {"n": 9}))
        assert done.state == ex.EXECUTION_STATE_FAILED
        runs = {t.task_id: t for t in done.tasks}
        fan = runs["research"]
        assert fan.error.type == "BudgetExceeded"
        assert fan.error.message == (
            "for_each research: 9 items x cost 0.1 = 0.9 exceeds what is left of the "
            "budget: 0.5 of cost 1 (0.5 spent, 0 reserved)"
        )
        assert not fan.attempts and fan.instance_count == 0
        assert not [t for t in done.tasks if t.task_id.startswith("research[")]
        kinds = {e.WhichOneof("kind") for e in await env.history(done.execution_id)}
        assert "task_expanded" not in kinds
        # 4 items fit (0.4 <= 0.5) and run.
        ran = await env.finish(await env.start(PRECHECK, {"n": 4}))
        assert ran.state == ex.EXECUTION_STATE_FAILED  # this handler fails every instance
        started = [t for t in ran.tasks if t.task_id.startswith("research[")]
        assert len(started) == 4 and any(t.attempts for t in started)


PRECHECK_TOKENS = """
name: fan-precheck-tokens
budget: {tokens: 1000}
tasks:
  - id: research
    type: ru.research
    for_each: "[10, 20, 30]"
    inputs: {words: "${{ 1000 * (index + 1) }}"}
    estimate: {tokens: "double(inputs.words) / 10.0 + double(item)"}
"""


async def test_the_pre_check_reads_each_items_inputs_and_item(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        env.worker({"ru.research": lambda inputs: {}})
        done = await env.finish(await env.start(PRECHECK_TOKENS))
        # (100 + 10) + (200 + 20) + (300 + 30) = 660 <= 1000: it runs.
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        tighter = PRECHECK_TOKENS.replace("tokens: 1000", "tokens: 600")
        refused = await env.finish(await env.start(tighter))
        (research,) = [t for t in refused.tasks if t.task_id == "research"]
        assert research.error.type == "BudgetExceeded"
        assert research.error.message.startswith(
            "for_each research: 3 items x tokens 220 = 660 exceeds what is left of the "
            "budget: 600 of tokens 600"
        )


LOOP = """
name: loop-usage
tasks:
  - id: write
    type: ru.draft
    repeat: {until: "output.score >= 3", max_iterations: 5}
    inputs: {round: "${{ iteration }}"}
"""


async def test_repeat_iterations_add_up_and_count_toward_the_attempt_cap(
    tmp_path: Path,
) -> None:
    async def draft(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        ctx.usage(tokens_out=10 * (int(inputs["round"]) + 1))
        return {"score": int(inputs["round"]) + 1}

    engine = dataclasses.replace(FAST, max_attempts_per_execution=1)
    async with environment(Env, tmp_path, engine) as env:
        env.worker({"ru.draft": draft})
        # Unlimited but one: iterations 0 and 1 (one per task of the plan, and 1 more).
        capped = await env.finish(await env.start(LOOP))
        assert capped.state == ex.EXECUTION_STATE_FAILED
        (write,) = capped.tasks
        assert write.error.type == "TooManyAttempts"
        assert [a.iteration for a in write.attempts] == [0, 1]
        assert _counters(write.usage) == {"tokens_out": 30.0}
    (tmp_path / "b").mkdir()
    async with environment(Env, tmp_path / "b") as env:
        env.worker({"ru.draft": draft})
        done = await env.finish(await env.start(LOOP))
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        (write,) = done.tasks
        assert [a.iteration for a in write.attempts] == [0, 1, 2]
        assert [_counters(a.usage) for a in write.attempts] == [
            {"tokens_out": 10.0},
            {"tokens_out": 20.0},
            {"tokens_out": 30.0},
        ]
        assert _counters(write.usage) == {"tokens_out": 60.0}
        assert _counters(done.usage) == {"tokens_out": 60.0}


CHILD = """
name: review
version: "1"
inputs: {draft: {type: string, required: true}}
tasks:
  - id: check
    type: ru.check
    retry: {max_attempts: 1}
    inputs: {draft: "${{ workflow.inputs.draft }}"}
outputs:
  verdict: "${{ tasks.check.output }}"
"""
PARENT = """
name: parent-usage
tasks:
  - id: review
    type: builtin.workflow
    workflow: review@1
    for_each: "['a', 'b', 'c']"
    max_parallel: 1
    retry: {max_attempts: 1}
    inputs: {draft: "${{ item }}"}
"""


async def test_a_parent_counts_every_childs_usage_failed_ones_too(tmp_path: Path) -> None:
    async def check(inputs: dict[str, Any], ctx: TaskContext) -> str:
        ctx.usage(cost=1.0, tokens_in=50)
        if inputs["draft"] == "b":
            raise ValueError("b is bad (after spending)")
        return "ok"

    async with environment(Env, tmp_path) as env:
        await env.client.register(source=CHILD)
        env.worker({"ru.check": check})
        done = await env.finish(await env.start(PARENT))
        assert done.state == ex.EXECUTION_STATE_FAILED  # child b failed; c never started
        runs = {t.task_id: t for t in done.tasks}
        assert _counters(runs["review"].usage) == {"cost": 2.0, "tokens_in": 100.0}
        for i in range(2):
            assert _counters(runs[f"review[{i}]"].usage) == {"cost": 1.0, "tokens_in": 50.0}
        assert _counters(done.usage) == {"cost": 2.0, "tokens_in": 100.0}
        failed_child = await env.client.get(runs["review[1]"].child_execution_id)
        assert failed_child.state == ex.EXECUTION_STATE_FAILED
        assert _counters(failed_child.usage) == {"cost": 1.0, "tokens_in": 50.0}
        events = await env.history(done.execution_id)
        ended = [e.child_execution_ended for e in events if e.HasField("child_execution_ended")]
        assert [_counters(e.usage)["cost"] for e in ended] == [1.0, 1.0]
        # GetUsage walks the children's own rows: the same total, nothing twice.
        total = await env.client.usage(execution_id=done.execution_id)
        assert _counters(total.usage) == {"cost": 2.0, "tokens_in": 100.0}
        replay = await env.client.replay(done.execution_id)
        assert replay.deterministic, replay.divergence


ESTIMATED_CHILD = CHILD.replace("    retry: {max_attempts: 1}\n", "    estimate: {cost: 1.0}\n")
BUDGETED_PARENT = PARENT.replace(
    "name: parent-usage\n", "name: parent-budget\nbudget: {cost: 2.5}\n"
)


async def test_a_child_starts_under_what_is_left_of_its_parents_budget(tmp_path: Path) -> None:
    async def check(inputs: dict[str, Any], ctx: TaskContext) -> str:
        ctx.usage(cost=1.0)
        return "ok"

    async with environment(Env, tmp_path) as env:
        await env.client.register(source=ESTIMATED_CHILD)
        env.worker({"ru.check": check})
        parent_id = await env.start(BUDGETED_PARENT)
        third: list[str] = []

        async def third_paused() -> bool:
            parent = await env.client.get(parent_id)
            runs = {t.task_id: t for t in parent.tasks}
            child_id = runs["review[2]"].child_execution_id if "review[2]" in runs else ""
            if not child_id:
                return False
            child = await env.client.get(child_id)
            third[:] = [child_id]
            return child.state == ex.EXECUTION_STATE_PAUSED

        await env.until(third_paused)
        child = await env.client.get(third[0])
        # 2.5 - 1.0 - 1.0 = 0.5 was left when it started: its 1.0 estimate would go over.
        assert child.budget.cost == pytest.approx(0.5)
        assert child.budget_exceeded.message == (
            "cost 0 spent + 1 estimated for check would exceed the budget of 0.5"
        )
        assert (await env.client.get(parent_id)).state == ex.EXECUTION_STATE_RUNNING
        await env.client.set_budget(third[0], cost=1.0, resume=True)
        done = await env.finish(parent_id)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        assert _counters(done.usage) == {"cost": 3.0}


AGENT = """
name: agent-usage
budget: {cost: 10}
tasks:
  - id: agent
    type: ru.agent
    dynamic: true
"""


async def test_a_dynamic_task_counts_its_sub_plan(tmp_path: Path) -> None:
    async def agent(inputs: dict[str, Any], ctx: TaskContext) -> SubPlan:
        ctx.usage(cost=1.0)  # writing the plan
        steps = [{"id": "a", "type": "ru.step"}, {"id": "b", "type": "ru.step"}]
        return SubPlan({"name": "sub", "tasks": steps})

    async def step(inputs: dict[str, Any], ctx: TaskContext) -> str:
        ctx.usage(cost=0.25, tokens_out=10)
        return ctx.task_id

    async with environment(Env, tmp_path) as env:
        env.worker({"ru.agent": agent, "ru.step": step})
        done = await env.finish(await env.start(AGENT))
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        runs = {t.task_id: t for t in done.tasks}
        assert _counters(runs["agent/a"].usage) == {"cost": 0.25, "tokens_out": 10.0}
        assert _counters(runs["agent"].usage) == {"cost": 1.5, "tokens_out": 20.0}
        assert _counters(done.usage) == {"cost": 1.5, "tokens_out": 20.0}
        by_task = await env.client.usage(execution_id=done.execution_id, group_by="task")
        groups = {g.key: _counters(g.usage)["cost"] for g in by_task.groups}
        assert groups == {"agent": 1.0, "agent/a": 0.25, "agent/b": 0.25}


STOPPED_PARENT = """
name: parent-stopped
tasks:
  - id: review
    type: builtin.workflow
    workflow: review@1
    retry: {max_attempts: 2, initial_interval: 10ms}
    timeouts: {start_to_close: 1s}
    inputs: {draft: "x"}
"""


async def test_a_child_stopped_by_its_tasks_timeout_still_counts(tmp_path: Path) -> None:
    children = 0

    async def check(inputs: dict[str, Any], ctx: TaskContext) -> str:
        nonlocal children
        children += 1
        ctx.usage(cost=1.0)
        if children == 1:
            await ctx.wait_cancelled()  # the parent's attempt times out: cancelled
            return "never"
        await asyncio.sleep(0.5)  # the parent is still running when the first one ends
        return "ok"

    async with environment(Env, tmp_path) as env:
        await env.client.register(source=CHILD)
        env.worker({"ru.check": check})
        done = await env.finish(await env.start(STOPPED_PARENT))
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        (review,) = done.tasks
        assert [a.error.type for a in review.attempts][:1] == ["Timeout"]
        assert _counters(review.usage) == {"cost": 2.0}
        assert _counters(done.usage) == {"cost": 2.0}
        events = await env.history(done.execution_id)
        ended = [e.child_execution_ended for e in events if e.HasField("child_execution_ended")]
        assert sorted(ex.ExecutionState.Name(e.state) for e in ended) == [
            "EXECUTION_STATE_CANCELLED",
            "EXECUTION_STATE_SUCCEEDED",
        ]
        total = await env.client.usage(execution_id=done.execution_id)
        assert _counters(total.usage) == {"cost": 2.0}
        replay = await env.client.replay(done.execution_id)
        assert replay.deterministic, replay.divergence
