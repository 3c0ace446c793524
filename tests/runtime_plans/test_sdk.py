"""Plans that grow at runtime, end to end through the Python SDK against a real server
(in process, SQLite file, port 0): for_each with max_parallel measured in the
worker, repeat, child workflows (with cancel reaching them) and dynamic sub-plans
with the repair loop (docs/runtime-plans.md)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import from_struct
from execplan.v1 import execution_pb2 as ex
from execplan.worker import SubPlan, TaskContext

if TYPE_CHECKING:
    from tests.support.server import Env, environment
else:
    from support.server import Env, environment

S = ex  # states


FAN = """
name: fan
inputs: {n: {type: integer, default: 12}, width: {type: integer, default: 3}}
tasks:
  - id: plan
    type: rp.plan
    inputs: {n: "${{ workflow.inputs.n }}"}
  - id: research
    type: rp.research
    for_each: "${{ tasks.plan.output.items }}"
    max_parallel: 3
    inputs: {q: "${{ item }}", i: "${{ index }}"}
  - id: write
    type: rp.write
    inputs: {notes: "${{ tasks.research.output }}"}
outputs:
  count: "${{ size(tasks.research.output) }}"
  third: "${{ tasks.research.output[2].answer }}"
  written: "${{ tasks.write.output }}"
"""


async def test_for_each_respects_max_parallel_measured_in_the_worker(tmp_path: Path) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    seen: list[tuple[str, Any]] = []

    async def research(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            seen.append((ctx.task_id, inputs["q"]))
        await asyncio.sleep(0.05)
        with lock:
            running -= 1
        return {"answer": f"a-{inputs['q']}", "i": inputs["i"]}

    async with environment(Env, tmp_path) as env:
        env.worker(
            {
                "rp.plan": lambda i: {"items": [f"q{k}" for k in range(int(i["n"]))]},
                "rp.research": research,
                "rp.write": lambda i: len(i["notes"]),
            },
            slots=16,
        )
        execution = await env.finish(await env.start(FAN))
        assert execution.state == S.EXECUTION_STATE_SUCCEEDED, execution.error
        assert from_struct(execution.outputs) == {"count": 12.0, "third": "a-q2", "written": 12.0}
        assert peak == 3  # the worker had 16 slots; the task said 3 at once
        assert sorted(seen) == sorted((f"research[{k}]", f"q{k}") for k in range(12))
        runs = {t.task_id: t for t in execution.tasks}
        assert runs["research"].instance_count == 12
        assert runs["research[5]"].parent_task_id == "research"
        assert runs["research[5]"].item_index == 5
        assert not runs["plan"].HasField("item_index")
        events = [e.WhichOneof("kind") for e in await env.history(execution.execution_id)]
        assert events.count("task_expanded") == 1
        replay = await env.client.replay(execution.execution_id)
        assert replay.deterministic, replay.divergence


async def test_an_empty_list_and_a_failing_instance(tmp_path: Path) -> None:
    async def research(inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs["q"] == "bad":
            raise ValueError("no answer for bad")
        return {"answer": inputs["q"]}

    async with environment(Env, tmp_path) as env:
        env.worker(
            {
                "rp.plan": lambda i: {"items": [] if i["n"] == 0 else ["ok", "bad", "ok2"]},
                "rp.research": research,
                "rp.write": lambda i: len(i["notes"]),
            }
        )
        fan = FAN.replace('  third: "${{ tasks.research.output[2].answer }}"\n', "")
        empty = await env.finish(await env.start(fan, {"n": 0}))
        assert empty.state == S.EXECUTION_STATE_SUCCEEDED
        assert from_struct(empty.outputs)["count"] == 0
        source = fan.replace(
            "    max_parallel: 3\n",
            "    max_parallel: 3\n    retry: {max_attempts: 2, initial_interval: 10ms}\n",
        )
        failed = await env.finish(await env.start(source, {"n": 3}))
        assert failed.state == S.EXECUTION_STATE_FAILED
        assert failed.error.type == "ValueError"
        assert "research[1]: no answer for bad" in failed.error.message
        runs = {t.task_id: t for t in failed.tasks}
        assert runs["research[1]"].attempt == 2  # its own retries first
        assert runs["research"].state == S.TASK_STATE_FAILED


LOOP = """
name: loop
tasks:
  - id: write
    type: rp.draft
    inputs: {previous: "${{ previous }}", round: "${{ iteration }}"}
    repeat: {until: "output.score >= 3", max_iterations: 5}
outputs:
  final: "${{ tasks.write.output }}"
"""


async def test_repeat_until_with_previous_and_iteration(tmp_path: Path) -> None:
    rounds: list[Any] = []

    def draft(inputs: dict[str, Any]) -> dict[str, Any]:
        rounds.append(inputs)
        score = int(inputs["round"]) + 1
        return {"score": score, "text": f"v{score}"}

    async with environment(Env, tmp_path) as env:
        env.worker({"rp.draft": draft})
        execution = await env.finish(await env.start(LOOP))
        assert execution.state == S.EXECUTION_STATE_SUCCEEDED, execution.error
        assert from_struct(execution.outputs) == {"final": {"score": 3.0, "text": "v3"}}
        assert [r["round"] for r in rounds] == [0, 1, 2]
        assert rounds[0]["previous"] is None and rounds[2]["previous"]["text"] == "v2"
        write = next(t for t in execution.tasks if t.task_id == "write")
        assert write.iteration == 2
        assert [a.iteration for a in write.attempts] == [0, 1, 2]
        exhausted = await env.finish(
            await env.start(LOOP.replace("max_iterations: 5", "max_iterations: 2"))
        )
        assert exhausted.state == S.EXECUTION_STATE_FAILED
        assert exhausted.error.type == "RepeatExhausted"


CHILD = """
name: review
version: "1"
inputs: {draft: {type: string, required: true}}
tasks:
  - id: check
    type: rp.check
    inputs: {draft: "${{ workflow.inputs.draft }}"}
outputs:
  verdict: "${{ tasks.check.output.verdict }}"
"""
PARENT = """
name: parent
tasks:
  - id: review
    type: builtin.workflow
    workflow: review@1
    for_each: "['a', 'b', 'c']"
    inputs: {draft: "${{ item }}"}
outputs:
  verdicts: "${{ tasks.review.output.map(r, r.verdict) }}"
"""


async def test_child_workflows_one_per_item(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        await env.client.register(source=CHILD)
        env.worker({"rp.check": lambda i: {"verdict": f"ok-{i['draft']}"}})
        execution = await env.finish(await env.start(PARENT))
        assert execution.state == S.EXECUTION_STATE_SUCCEEDED, execution.error
        assert from_struct(execution.outputs) == {"verdicts": ["ok-a", "ok-b", "ok-c"]}
        children = [t for t in execution.tasks if t.child_execution_id]
        assert len(children) == 3
        child = await env.client.get(children[1].child_execution_id)
        assert child.parent_execution_id == execution.execution_id
        assert child.parent_task_id == "review[1]"
        assert child.workflow_name == "review" and child.state == S.EXECUTION_STATE_SUCCEEDED
        listed = [e async for e in env.client.list(parent_execution_id=execution.execution_id)]
        assert sorted(e.execution_id for e in listed) == sorted(
            t.child_execution_id for t in children
        )
        replay = await env.client.replay(execution.execution_id)
        assert replay.deterministic, replay.divergence


async def test_an_unregistered_child_and_a_failing_child(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        missing = await env.finish(await env.start(PARENT))
        assert missing.state == S.EXECUTION_STATE_FAILED
        assert missing.error.type == "WorkflowNotFound"
        await env.client.register(source=CHILD)

        def check(inputs: dict[str, Any]) -> dict[str, Any]:
            if inputs["draft"] == "b":
                raise ValueError("b is bad")
            return {"verdict": "ok"}

        env.worker({"rp.check": check})
        source = PARENT.replace("    inputs:", "    retry: {max_attempts: 1}\n    inputs:")
        failed = await env.finish(await env.start(source))
        assert failed.state == S.EXECUTION_STATE_FAILED
        assert failed.error.type == "ChildFailed"
        assert "ended FAILED" in failed.error.message


async def test_cancel_and_terminate_reach_running_children(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        await ctx.wait_cancelled()
        return {"verdict": "never"}

    async with environment(Env, tmp_path) as env:
        await env.client.register(source=CHILD.replace("type: rp.check", "type: rp.slow"))
        env.worker({"rp.slow": slow})
        for terminate in (False, True):
            execution_id = await env.start(PARENT)

            async def children_running(execution_id: str = execution_id) -> bool:
                execution = await env.client.get(execution_id)
                return sum(1 for t in execution.tasks if t.child_execution_id) == 3

            await env.until(children_running)
            execution = await env.client.get(execution_id)
            child_ids = [t.child_execution_id for t in execution.tasks if t.child_execution_id]
            if terminate:
                await env.client.terminate(execution_id, reason="stop")
            else:
                await env.client.cancel(execution_id, reason="stop")
            done = await env.finish(execution_id)
            expected = S.EXECUTION_STATE_TERMINATED if terminate else S.EXECUTION_STATE_CANCELLED
            assert done.state == expected
            for child_id in child_ids:
                child = await env.finish(child_id)
                assert child.state == expected, (terminate, child_id)
    release.set()


async def test_a_child_past_its_tasks_timeout_is_cancelled_and_the_attempt_fails(
    tmp_path: Path,
) -> None:
    async def slow(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        await ctx.wait_cancelled()
        return {"verdict": "never"}

    async with environment(Env, tmp_path) as env:
        await env.client.register(source=CHILD.replace("type: rp.check", "type: rp.slow"))
        env.worker({"rp.slow": slow})
        for timeouts, kind in (
            ("{start_to_close: 300ms}", "start_to_close"),
            ("{schedule_to_close: 300ms}", "schedule_to_close"),
        ):
            source = PARENT.replace(
                "    inputs:",
                f"    retry: {{max_attempts: 2, initial_interval: 10ms}}\n"
                f"    timeouts: {timeouts}\n    inputs:",
            )
            source = source.replace("""    for_each: "['a', 'b', 'c']"\n""", "")
            source = source.replace("${{ item }}", "a").replace(".map(r, r.verdict)", "")
            done = await env.finish(await env.start(source))
            assert done.state == S.EXECUTION_STATE_FAILED, kind
            assert done.error.type == "Timeout", (kind, done.error)
            assert kind in done.error.message
            listed = [e async for e in env.client.list(parent_execution_id=done.execution_id)]
            # start_to_close fails one attempt (a retry starts a second child);
            # schedule_to_close bounds the task as a whole, so no retry follows it.
            assert len(listed) == (2 if kind == "start_to_close" else 1), kind
            for child in listed:
                ended = await env.finish(child.execution_id)
                assert ended.state == S.EXECUTION_STATE_CANCELLED, (kind, child.execution_id)
            assert (await env.client.replay(done.execution_id)).deterministic


AGENT = """
name: agent
inputs: {goal: {type: string, default: ship}}
tasks:
  - id: agent
    type: rp.agent
    dynamic: true
    inputs: {goal: "${{ workflow.inputs.goal }}"}
    retry: {max_attempts: 3, initial_interval: 10ms}
outputs:
  result: "${{ tasks.agent.output }}"
"""


async def test_the_repair_loop_of_an_invalid_sub_plan(tmp_path: Path) -> None:
    seen: list[Any] = []

    def agent(inputs: dict[str, Any], ctx: TaskContext) -> SubPlan:
        seen.append(ctx.previous_error)
        steps: list[dict[str, Any]] = [
            {"id": "a", "type": "rp.step"},
            {"id": "b", "type": "rp.step", "depends_on": ["a"]},
        ]
        if ctx.previous_error is None:
            steps[1]["depends_on"] = ["nope"]  # invalid: no such task
        doc = {
            "name": "sub",
            "inputs": {"goal": {"type": "string"}},
            "tasks": steps,
            "outputs": {"last": "${{ tasks.b.output }}", "goal": "${{ workflow.inputs.goal }}"},
        }
        return SubPlan(doc, inputs={"goal": inputs["goal"]})

    async with environment(Env, tmp_path) as env:
        env.worker({"rp.agent": agent, "rp.step": lambda i, ctx: ctx.task_id})
        execution = await env.finish(await env.start(AGENT))
        assert execution.state == S.EXECUTION_STATE_SUCCEEDED, execution.error
        assert from_struct(execution.outputs) == {"result": {"last": "agent/b", "goal": "ship"}}
        assert seen[0] is None
        previous = seen[1]
        assert previous.type == "PlanInvalid"
        assert "tasks[1].depends_on[0]" in previous.message
        assert previous.details["diagnostics"][0]["code"] == "unknown-dependency"
        assert [r.revision for r in execution.plan_revisions] == [1]
        sub_id = execution.plan_revisions[0].plan_id
        assert (await env.client.get_plan(sub_id)).workflow_name == "sub"
        runs = {t.task_id: t for t in execution.tasks}
        assert runs["agent/a"].parent_task_id == "agent"
        assert runs["agent"].sub_plan_id == sub_id
        replay = await env.client.replay(execution.execution_id)
        assert replay.deterministic, replay.divergence


async def test_a_sub_plan_from_a_task_that_is_not_dynamic_fails_it(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        env.worker({"rp.agent": lambda i: SubPlan({"name": "x", "tasks": []})})
        source = AGENT.replace("    dynamic: true\n", "")
        execution = await env.finish(await env.start(source))
        assert execution.state == S.EXECUTION_STATE_FAILED
        assert execution.error.type == "SubPlanNotAllowed"


@pytest.mark.parametrize("bad", ["not: [valid", '{"name": "x", "tasks": [{"id": 1}]}'])
async def test_sub_plans_that_do_not_parse_are_plan_invalid(tmp_path: Path, bad: str) -> None:
    async with environment(Env, tmp_path) as env:
        env.worker({"rp.agent": lambda i: SubPlan(bad)})
        execution = await env.finish(await env.start(AGENT))
        assert execution.state == S.EXECUTION_STATE_FAILED
        assert execution.error.type == "PlanInvalid"
        agent = next(t for t in execution.tasks if t.task_id == "agent")
        assert agent.attempt == 3


async def test_a_dynamic_task_timing_out_cancels_its_sub_plan(tmp_path: Path) -> None:
    # schedule_to_close of the dynamic task passes while its sub-plan runs: the task
    # fails with Timeout, the sub-plan's tasks still running are cancelled, and the
    # execution ends (it waited for nothing else). Before, it stayed RUNNING.
    source = """
name: slow-agent
on_failure: continue
tasks:
  - id: agent
    type: rp.agent
    dynamic: true
    timeouts: {schedule_to_close: 400ms}
  - id: other
    type: rp.slow
"""
    sub = {
        "name": "steps",
        "tasks": [
            {"id": "a", "type": "rp.slow"},
            {"id": "b", "type": "rp.slow", "depends_on": ["a"]},
            {"id": "c", "type": "rp.slow", "depends_on": ["b"]},
        ],
    }

    async def slow(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        await asyncio.sleep(0.25)
        return {}

    async def agent(inputs: dict[str, Any]) -> SubPlan:
        return SubPlan(sub)

    async with environment(Env, tmp_path) as env:
        env.worker({"rp.slow": slow, "rp.agent": agent})
        execution_id = await env.start(source)
        done = await env.finish(execution_id)
        assert done.state == S.EXECUTION_STATE_FAILED
        assert done.error.type == "Timeout" and "schedule_to_close" in done.error.message
        states = {t.task_id: t.state for t in done.tasks}
        assert states["agent"] == S.TASK_STATE_FAILED
        assert states["other"] == S.TASK_STATE_SUCCEEDED
        assert states["agent/a"] == S.TASK_STATE_SUCCEEDED
        assert states["agent/b"] == S.TASK_STATE_CANCELLED
        assert states["agent/c"] == S.TASK_STATE_CANCELLED
        replay = await env.client.replay(execution_id)
        assert replay.deterministic, replay.divergence
        # start_to_close bounds the attempt, which ended when it answered with the
        # sub-plan: a sub-plan running longer than it is not cut short.
        attempt_bound = source.replace("schedule_to_close: 400ms", "start_to_close: 400ms")
        done = await env.finish(await env.start(attempt_bound))
        assert done.state == S.EXECUTION_STATE_SUCCEEDED, done.error
        agent_run = next(t for t in done.tasks if t.task_id == "agent")
        assert len(agent_run.attempts) == 1


async def test_sub_plans_built_in_code_and_started_from_a_builder(tmp_path: Path) -> None:
    # The agent answers with an execplan.builder.Workflow (sent as a Workflow message,
    # compiled by the server), and the parent itself is started from a builder.
    from execplan.builder import Input, Repeat, Workflow, expr, item, previous  # noqa: PLC0415

    def agent(inputs: dict[str, Any]) -> SubPlan:
        sub = Workflow("built-sub", inputs={"n": Input("integer", required=True)})
        fan = sub.task("fan", "rp.double", for_each=expr("[1, 2, 3]"), inputs={"x": item})
        loop = sub.task(
            "loop",
            "rp.count",
            depends_on=[fan],
            inputs={"was": previous},
            repeat=Repeat(until=expr("output.n >= 3"), max_iterations=5),
        )
        sub.output("doubled", fan.output)
        sub.output("rounds", loop.output.n)
        return SubPlan(sub, inputs={"n": inputs["n"]})

    parent = Workflow("built-parent")
    parent.task("agent", "rp.agent", dynamic=True, inputs={"n": 7})
    async with environment(Env, tmp_path) as env:
        env.worker(
            {
                "rp.agent": agent,
                "rp.double": lambda i: i["x"] * 2,
                "rp.count": lambda i: {"n": (i["was"] or {"n": 0})["n"] + 1},
            }
        )
        started = await env.client.start(workflow=parent)
        done = await env.finish(started.execution_id)
        assert done.state == S.EXECUTION_STATE_SUCCEEDED, done.error
        agent_run = next(t for t in done.tasks if t.task_id == "agent")
        assert from_struct(agent_run.output.struct_value) == {"doubled": [2, 4, 6], "rounds": 3}
        assert {t.task_id for t in done.tasks} >= {"agent/fan[2]", "agent/loop"}
        replay = await env.client.replay(done.execution_id)
        assert replay.deterministic, replay.divergence
