"""Handlers for tests/ops: a worker module served by `execplan worker`."""

from __future__ import annotations

import asyncio
from typing import Any

from execplan.worker import TaskContext, Worker

worker = Worker(slots=8)


@worker.task("ops.talk")
async def talk(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Streams `words` one chunk each, `pause` seconds apart; returns them joined."""
    words = [str(w) for w in inputs.get("words", ["hello ", "world"])]
    for word in words:
        ctx.stream(word)
        await asyncio.sleep(float(inputs.get("pause", 0.01)))
    ctx.stream({"done": True})
    return {"text": "".join(words)}


@worker.task("ops.progress")
async def progress(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Reports progress `steps` times over `seconds`, then the last value."""
    steps = int(inputs.get("steps", 200))
    seconds = float(inputs.get("seconds", 2.0))
    for i in range(1, steps + 1):
        ctx.heartbeat({"step": i, "of": steps})
        await asyncio.sleep(seconds / steps)
    await asyncio.sleep(0.3)  # past the progress interval: the last value gets recorded
    return {"steps": steps}


@worker.task("ops.tag")
async def tag(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sets search attributes from `attributes` (a None value removes one)."""
    ctx.set_search_attributes(inputs.get("attributes", {}))
    await asyncio.sleep(float(inputs.get("hold", 0)))
    return {}
