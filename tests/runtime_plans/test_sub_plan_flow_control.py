"""Flow control in plans that grow at runtime, through the Python SDK against a real
server (in process, SQLite file, port 0): a dynamic task's sub-plan task is cached,
limited and counted on its (keyed) breaker like a task of the plan itself
(docs/flow-control.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execplan.client import from_struct
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.worker import SubPlan

if TYPE_CHECKING:
    from tests.support.server import Env, environment
else:
    from support.server import Env, environment

SUB = {
    "name": "asker",
    "inputs": {"q": {"type": "string"}},
    "tasks": [
        {
            "id": "ask",
            "type": "rp.ask",
            "inputs": {"q": "${{ workflow.inputs.q }}"},
            "cache": {"key": "inputs.q", "ttl": "1h"},
            "limit": {"key": "inputs.q", "max": 1},
        }
    ],
    "outputs": {"answer": "${{ tasks.ask.output }}"},
}

PARENT = """
name: delegating
tasks:
  - id: agent
    type: rp.agent
    dynamic: true
outputs:
  answer: "${{ tasks.agent.output.answer }}"
"""


async def test_a_sub_plan_task_is_cached_and_gives_its_slot_back(tmp_path: Path) -> None:
    asked: list[str] = []

    async def ask(inputs: dict[str, Any]) -> str:
        asked.append(inputs["q"])
        await asyncio.sleep(0.05)
        return f"answer to {inputs['q']}"

    async with environment(Env, tmp_path) as env:
        env.worker({"rp.agent": lambda i: SubPlan(SUB, {"q": "tides"}), "rp.ask": ask})
        for _ in range(2):
            done = await env.finish(await env.start(PARENT))
            assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
            assert from_struct(done.outputs) == {"answer": "answer to tides"}
        assert asked == ["tides"]  # the second sub-plan's ask was a cache hit
        hits = [
            e.task_succeeded
            for e in await env.history(done.execution_id)
            if e.HasField("task_succeeded") and e.task_succeeded.HasField("cache_hit")
        ]
        assert [h.task_id for h in hits] == ["agent/ask"]
        assert hits[0].cache_hit.task_id == "agent/ask"

        async def released() -> bool:  # the sub-plan task's slot came back
            limits = await env.client.list_limits()
            return all(c.in_use == 0 for c in limits.concurrency_limits)

        await env.until(released)


BROKEN = {
    "name": "broken",
    "tasks": [
        {
            "id": "call",
            "type": "rp.down",
            "retry": {"max_attempts": 1},
            "circuit_breaker": {"key": "inputs.model", "failure_threshold": 1, "open_for": "1m"},
            "inputs": {"model": "m1"},
        }
    ],
}


async def test_a_sub_plan_task_counts_on_its_breaker(tmp_path: Path) -> None:
    async def down(inputs: dict[str, Any]) -> str:
        raise RuntimeError(f"model {inputs['model']} is down")

    async with environment(Env, tmp_path) as env:
        env.worker({"rp.agent": lambda i: SubPlan(BROKEN), "rp.down": down})
        done = await env.finish(await env.start(PARENT.replace("answer:", "unused:")))
        assert done.state == ex.EXECUTION_STATE_FAILED
        (status,) = await env.client.list_circuit_breakers()
        assert status.task_type == "rp.down[m1]"
        assert status.state == pb.BREAKER_STATE_OPEN
        assert "model m1 is down" in status.last_error
