"""SIGKILL of the executor (a real server process on SQLite) while a plan grows: right
after a for_each recorded its items, after a dynamic task's sub-plan was recorded,
after a child execution was started and after an iteration of a repeat ended. Each
time the restarted server goes on from the log: nothing is lost, nothing expands
twice (one task_expanded, one plan_revised, one child, each iteration once), and the
outputs are what an uninterrupted run gives (docs/runtime-plans.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import ExecutorClient, from_struct
from execplan.v1 import execution_pb2 as ex
from execplan.worker import SubPlan, TaskContext, Worker

if TYPE_CHECKING:
    from tests.integration.harness import Cluster
    from tests.support.server import history
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from integration.harness import Cluster
    from support.server import history

from .test_executor_crash import restart, until_event

CHILD = """
name: grow-child
version: "1"
inputs: {n: {type: integer, required: true}}
tasks:
  - id: double
    type: grow.step
    inputs: {value: "${{ workflow.inputs.n }}", add: "${{ workflow.inputs.n }}"}
outputs:
  doubled: "${{ tasks.double.output.value }}"
"""

FLOW = """
name: grow
tasks:
  - id: fan
    type: grow.item
    for_each: "[1, 2, 3, 4, 5, 6]"
    max_parallel: 2
    inputs: {x: "${{ item }}"}
  - id: agent
    type: grow.agent
    dynamic: true
    depends_on: [fan]
    inputs: {start: "${{ size(tasks.fan.output) }}"}
  - id: child
    type: builtin.workflow
    workflow: grow-child@1
    inputs: {n: "${{ tasks.agent.output.value }}"}
  - id: loop
    type: grow.step
    depends_on: [child]
    inputs: {value: "${{ previous == null ? 0 : previous.value }}"}
    repeat: {until: "iteration >= 2", max_iterations: 5}
outputs:
  fan: "${{ tasks.fan.output.map(o, o.v) }}"
  agent: "${{ tasks.agent.output.value }}"
  child: "${{ tasks.child.output.doubled }}"
  loop: "${{ tasks.loop.output.value }}"
"""

SUB = {
    "name": "grow-sub",
    "inputs": {"start": {"type": "integer", "required": True}},
    "tasks": [
        {"id": "a", "type": "grow.step", "inputs": {"value": "${{ workflow.inputs.start }}"}},
        {
            "id": "b",
            "type": "grow.step",
            "inputs": {"value": "${{ tasks.a.output.value }}", "add": 10},
        },
    ],
    "outputs": {"value": "${{ tasks.b.output.value }}"},
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start_server()
        yield c
    finally:
        c.close()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[ExecutorClient]:
    async with ExecutorClient(cluster.address) as c:
        yield c


async def test_sigkill_while_the_plan_grows_loses_nothing_and_expands_once(
    cluster: Cluster, client: ExecutorClient
) -> None:
    async def item(inputs: dict[str, Any], ctx: TaskContext) -> Any:
        await asyncio.sleep(0.05)
        return {"v": inputs["x"] * 10}

    async def agent(inputs: dict[str, Any], ctx: TaskContext) -> SubPlan:
        return SubPlan(SUB, inputs={"start": inputs["start"]})

    async def step(inputs: dict[str, Any], ctx: TaskContext) -> Any:
        await asyncio.sleep(0.05)
        return {"value": inputs["value"] + inputs.get("add", 1)}

    worker = Worker(cluster.address, worker_id="grow-w1", slots=4)
    worker.task("grow.item")(item)
    worker.task("grow.agent")(agent)
    worker.task("grow.step")(step)
    serving = asyncio.create_task(worker.serve())
    try:
        await client.register(source=CHILD)
        execution_id = (await client.start(source=FLOW)).execution_id
        for kind in (
            "task_expanded",
            "plan_revised",
            "child_execution_started",
            "iteration_completed",
        ):
            await until_event(client, execution_id, kind)  # durable: kill right after
            client = await restart(cluster, client)
        async with asyncio.timeout(60):
            async for event in client.watch(execution_id):
                if event.HasField("execution_completed"):
                    break
        execution = await client.get(execution_id)
        events = await history(client, execution_id)
        children = [e async for e in client.list(parent_execution_id=execution_id)]
        replay = await client.replay(execution_id)
    finally:
        await worker.stop()
        serving.cancel()

    assert execution.state == ex.EXECUTION_STATE_SUCCEEDED, execution.error
    # 6 items; the sub-plan: a = 6 + 1, b = a + 10 = 17; the child doubles it.
    assert from_struct(execution.outputs) == {
        "fan": [10, 20, 30, 40, 50, 60],
        "agent": 17,
        "child": 34,
        "loop": 3,  # three iterations, each adding 1 to the previous one's value
    }
    kinds = Counter(e.WhichOneof("kind") for e in events)
    assert kinds["task_expanded"] == 1
    assert kinds["plan_revised"] == 1
    assert kinds["child_execution_started"] == 1
    iterations = [
        e.iteration_completed.iteration for e in events if e.HasField("iteration_completed")
    ]
    assert iterations == [0, 1, 2]
    succeeded = Counter(e.task_succeeded.task_id for e in events if e.HasField("task_succeeded"))
    assert all(n == 1 for n in succeeded.values()), succeeded
    assert {f"fan[{i}]" for i in range(6)} | {"agent/a", "agent/b"} <= set(succeeded)
    assert len(children) == 1
    assert children[0].state == ex.EXECUTION_STATE_SUCCEEDED
    assert replay.deterministic, replay.divergence
