"""A worker stream that ends in any way leaves no task of the servicer behind: a
pending task that is garbage-collected is an asyncio error in the server's log
("Task was destroyed but it is pending!"), seen when workers went away mid-wait."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any

from execplan.v1 import worker_service_pb2 as ws

if TYPE_CHECKING:
    from tests.support.raw_worker import RawWorker
    from tests.support.server import Env
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.raw_worker import RawWorker
    from support.server import Env


async def test_streams_cancelled_by_the_worker_leave_no_pending_task(env: Env) -> None:
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()

    def collect(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reported.append(str(context.get("message")))

    loop.set_exception_handler(collect)
    try:
        for i in range(5):
            registration = ws.WorkerRegistration(worker_id=f"w-{i}", task_types=["t.x"], slots=1)
            raw = RawWorker(env.channel, registration)
            await raw.registered()
            await raw.close()  # cancels the call while the servicer waits for work
        await asyncio.sleep(0.5)  # the server side of each stream finishes
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [m for m in reported if "destroyed but it is pending" in m] == []
