"""Progress, live output and search attributes from the instances of a for_each task
(plans that grow at runtime), through the Python SDK against an in-process server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execplan.client import from_search_attributes, from_value
from execplan.v1 import events_pb2, execution_pb2, executor_service_pb2
from execplan.worker import TaskContext

if TYPE_CHECKING:
    from tests.support.server import Env, environment
else:
    from support.server import Env, environment

FAN = """
name: fan
tasks:
  - id: gate
    type: builtin.wait_for_event
    inputs: {event: go, timeout: 1m}
  - id: each
    type: fan.each
    depends_on: [gate]
    for_each: "['a', 'b', 'c']"
    inputs: {item: "${{ item }}", index: "${{ index }}"}
"""


async def each(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    ctx.heartbeat({"item": inputs["item"]})
    ctx.stream(f"{inputs['item']}-token")
    ctx.set_search_attributes({f"seen_{inputs['item']}": int(inputs["index"])})
    await asyncio.sleep(0.2)  # the heartbeat leaves before the result
    return {"item": inputs["item"]}


async def test_instances_report_progress_stream_and_set_attributes(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        env.worker({"fan.each": each})
        execution_id = await env.start(FAN)
        chunks: list[executor_service_pb2.StreamChunk] = []
        events: list[events_pb2.ExecutionEvent] = []

        async def watch() -> None:
            async for item in env.client.watch(execution_id, stream=True):
                if isinstance(item, executor_service_pb2.StreamChunk):
                    chunks.append(item)
                else:
                    events.append(item)

        watcher = asyncio.create_task(watch())

        async def subscribed() -> bool:
            return env.executor.engine.streams.subscribers(execution_id) >= 1

        await env.until(subscribed)
        await env.client.send_event(execution_id, "go")
        async with asyncio.timeout(20):
            await watcher
        assert events[-1].HasField("execution_completed")
        done = await env.client.get(execution_id)
        assert done.state == execution_pb2.EXECUTION_STATE_SUCCEEDED
        by_task = {c.task_id: c.text for c in chunks}
        assert by_task == {"each[0]": "a-token", "each[1]": "b-token", "each[2]": "c-token"}
        progress = {
            e.task_progress.task_id: from_value(e.task_progress.progress)
            for e in events
            if e.HasField("task_progress")
        }
        assert progress == {f"each[{i}]": {"item": x} for i, x in enumerate("abc")}
        attrs = from_search_attributes(done.search_attributes)
        assert attrs == {"seen_a": 0, "seen_b": 1, "seen_c": 2}
        found = [e.execution_id async for e in env.client.list(filter="seen_b = 1")]
        assert found == [execution_id]
