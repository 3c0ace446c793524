"""Resources for real, with real processes: a GPU task waits (visibly, as
unplaceable) until the one GPU worker connects and runs there; two GPU tasks on a
one-GPU worker run one after the other while CPU tasks go elsewhere; workers show
their declared and used resources."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from execplan.client import ExecutorClient, from_struct
from execplan.v1 import execution_pb2 as ex

if TYPE_CHECKING:
    from tests.support.flow_rig import FlowRig
    from tests.support.processes import CLI
else:
    from support.flow_rig import FlowRig
    from support.processes import CLI

GPU_FLOW = """
name: gpu-flow
tasks:
  - id: train
    type: flow.where
    inputs: {ms: 400}
    resources: {gpu: 1, custom: {model-slots: 1}}
  - id: train2
    type: flow.where
    inputs: {ms: 400}
    resources: {gpu: 1}
  - id: prep
    type: flow.where
    inputs: {ms: 10}
    resources: {cpu: "1"}
"""


async def task(client: ExecutorClient, execution_id: str, task_id: str) -> ex.TaskRun:
    (run,) = [t for t in (await client.get(execution_id)).tasks if t.task_id == task_id]
    return run


async def until(probe: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not await probe():  # noqa: ASYNC110 - polling the server over gRPC
            await asyncio.sleep(0.05)


async def test_a_gpu_task_waits_for_the_gpu_worker_and_runs_there(rig: FlowRig) -> None:
    rig.start_server("--metrics-listen", "127.0.0.1:0")
    rig.worker("cpu-1", "--capacity", "cpu=4", "--capacity", "memory=8Gi")
    async with ExecutorClient(rig.address) as client:
        started = await client.start(source=GPU_FLOW)
        execution_id = started.execution_id

        async def unplaceable() -> bool:
            run = await task(client, execution_id, "train")
            return run.waiting.kind == ex.WAIT_KIND_UNPLACEABLE

        await until(unplaceable)
        run = await task(client, execution_id, "train")
        assert run.state == ex.TASK_STATE_QUEUED and run.attempt <= 1
        assert run.waiting.name == "gpu"
        assert run.status_message == (
            "needs 1 gpu; no live worker could ever fit it (the largest has 0)"
        )
        # ... and in /metrics: both GPU tasks, nothing else.
        metric = "execplan_tasks_waiting"
        assert await asyncio.to_thread(rig.metric, metric, reason="unplaceable") == 2
        shown = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "get", execution_id, "--address", rig.address],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        (line,) = [ln for ln in shown.stdout.splitlines() if "train " in ln or ln.endswith("train")]
        assert "QUEUED     1  needs 1 gpu; no live worker could ever fit" in line, shown.stdout

        async def prepped() -> bool:
            return (await task(client, execution_id, "prep")).state == ex.TASK_STATE_SUCCEEDED

        await until(prepped)  # a CPU task behind the waiting GPU ones was not held up

        rig.worker("gpu-1", "--capacity", "gpu=1", "--capacity", "model-slots=1",
                   "--slots", "4")  # fmt: skip
        async with asyncio.timeout(30):
            async for event in client.watch(execution_id):
                if event.HasField("execution_completed"):
                    break
        final = await client.get(execution_id)
        assert final.state == ex.EXECUTION_STATE_SUCCEEDED, final.error
        outputs = {t.task_id: from_struct(t.output.struct_value) for t in final.tasks}
        assert outputs["train"]["worker"] == outputs["train2"]["worker"] == "gpu-1"
        assert outputs["prep"]["worker"] == "cpu-1"
        first, second = sorted((outputs["train"], outputs["train2"]), key=lambda o: o["start"])
        assert second["start"] >= first["end"] - 0.01  # one GPU: one after the other
        workers = {w.worker_id: w for w in await client.list_workers()}
        assert workers["gpu-1"].resources.gpu == 1
        assert dict(workers["gpu-1"].resources.custom) == {"model-slots": 1}
        assert workers["gpu-1"].resources_in_use.gpu == 0
        assert workers["cpu-1"].resources.cpu_millis == 4000
        for reason in ("unplaceable", "resources"):
            assert await asyncio.to_thread(rig.metric, "execplan_tasks_waiting", reason=reason) == 0
