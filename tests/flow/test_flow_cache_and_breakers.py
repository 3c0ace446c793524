"""Result caching, keyed breakers and isolated attempts, with real processes.

- a cache hit completes the task without a dispatch, recorded as such in the history
  (and replay agrees); a purge or an expired ttl makes the task run again;
- a breaker keyed by model opens for the failing model only;
- a memory-isolated task over its limit fails with ResourceExhausted.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import TYPE_CHECKING

from execplan.client import ExecutorClient, from_struct
from execplan.v1 import execution_pb2 as ex

if TYPE_CHECKING:
    from tests.support.flow_rig import FlowRig
    from tests.support.processes import CLI
else:
    from support.flow_rig import FlowRig
    from support.processes import CLI

CACHED = """
name: cached
inputs:
  q: {type: string}
tasks:
  - id: ask
    type: flow.count
    inputs: {q: "${{ workflow.inputs.q }}"}
    cache: {key: "inputs.q", ttl: TTL}
outputs:
  answer: "${{ tasks.ask.output.answer }}"
"""

KEYED = """
name: keyed
inputs:
  model: {type: string}
  fail: {type: boolean, default: false}
tasks:
  - id: call
    type: flow.call
    inputs: {model: "${{ workflow.inputs.model }}", fail: "${{ workflow.inputs.fail }}", ms: 10}
    retry: {max_attempts: 1}
    circuit_breaker: {key: "inputs.model", failure_threshold: 2, open_for: 1m}
"""

ISOLATED = """
name: isolated
inputs:
  mib: {type: integer}
tasks:
  - id: alloc
    type: iso.alloc
    inputs: {mib: "${{ workflow.inputs.mib }}"}
    resources: {memory: 64Mi, isolate: true}
    retry: {max_attempts: 3}
"""


async def run(client: ExecutorClient, source: str, inputs: dict[str, object]) -> ex.Execution:
    execution_id = (await client.start(source=source, inputs=inputs)).execution_id
    async with asyncio.timeout(60):
        async for event in client.watch(execution_id):
            if event.HasField("execution_completed"):
                break
    return await client.get(execution_id)


async def kinds(client: ExecutorClient, execution_id: str) -> list[str]:
    return [str(e.WhichOneof("kind")) async for e in client.history(execution_id)]


async def test_a_cache_hit_skips_the_dispatch_and_is_recorded(rig: FlowRig) -> None:
    rig.start_server("--metrics-listen", "127.0.0.1:0")
    rig.worker("w1")
    source = CACHED.replace("TTL", "1h")
    async with ExecutorClient(rig.address) as client:
        first = await run(client, source, {"q": "hello"})
        assert first.state == ex.EXECUTION_STATE_SUCCEEDED
        second = await run(client, source, {"q": "hello"})
        assert second.state == ex.EXECUTION_STATE_SUCCEEDED
        assert from_struct(second.outputs) == {"answer": "answer to hello"}
        assert "task_dispatched" not in await kinds(client, second.execution_id)
        (hit,) = [
            e.task_succeeded.cache_hit
            async for e in client.history(second.execution_id)
            if e.HasField("task_succeeded")
        ]
        assert (hit.key, hit.execution_id, hit.task_id) == ("hello", first.execution_id, "ask")
        assert second.tasks[0].attempt == 1 and not second.tasks[0].attempts
        replay = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "replay", second.execution_id, "--address", rig.address],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert (await run(client, source, {"q": "other"})).state == ex.EXECUTION_STATE_SUCCEEDED
        assert len(rig.lines("calls.log")) == 2  # hello once, other once

        assert await client.purge_cache("flow.count", "hello") == 1
        await run(client, source, {"q": "hello"})
        assert len(rig.lines("calls.log")) == 3

        short = CACHED.replace("TTL", "300ms").replace("name: cached", "name: cached-short")
        await run(client, short, {"q": "brief"})
        await run(client, short, {"q": "brief"})
        assert len(rig.lines("calls.log")) == 4  # the second one hit
        await asyncio.sleep(0.4)
        await run(client, short, {"q": "brief"})
        assert len(rig.lines("calls.log")) == 5  # expired
        hits = await asyncio.to_thread(rig.metric, "execplan_cache_hits_total")
        assert hits == 2  # hello, then brief; the purged and the expired ones ran


async def test_a_keyed_breaker_opens_for_the_failing_key_only(rig: FlowRig) -> None:
    rig.start_server()
    rig.worker("w1")
    async with ExecutorClient(rig.address) as client:
        for _ in range(2):
            failed = await run(client, KEYED, {"model": "bad", "fail": True})
            assert failed.state == ex.EXECUTION_STATE_FAILED
        good = await run(client, KEYED, {"model": "good"})
        assert good.state == ex.EXECUTION_STATE_SUCCEEDED
        breakers = {b.task_type: b for b in await client.list_circuit_breakers()}
        assert breakers["flow.call[bad]"].state == 2  # OPEN
        assert breakers["flow.call[good]"].state == 1  # CLOSED
        parked = (await client.start(source=KEYED, inputs={"model": "bad"})).execution_id
        async with asyncio.timeout(20):
            while (await client.get(parked)).tasks[0].state != ex.TASK_STATE_PARKED:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert (await client.get(parked)).tasks[0].status_message == (
            "circuit breaker flow.call[bad] open"
        )


async def test_a_memory_isolated_task_over_its_limit_is_resource_exhausted(rig: FlowRig) -> None:
    rig.start_server()
    rig.worker("w1")
    async with ExecutorClient(rig.address) as client:
        small = await run(client, ISOLATED, {"mib": 16})
        assert small.state == ex.EXECUTION_STATE_SUCCEEDED, small.error
        big = await run(client, ISOLATED, {"mib": 300})
        assert big.state == ex.EXECUTION_STATE_FAILED
        (task,) = big.tasks
        assert task.error.type == "ResourceExhausted"
        assert "memory limit of 64 MiB exceeded" in task.error.message
        assert task.attempt == 1  # not retried: the next attempt gets the same limit
