"""ExecutorClient over a replica pair: when the replica a client uses stops, its
calls and its watch continue on the other one, the watch after the last event seen."""

from __future__ import annotations

import asyncio

from execplan.client import ExecutorClient
from execplan.v1 import execution_pb2 as ex
from execplan.worker import Worker

from .test_routing import CHAIN, inc, replica


async def test_client_fails_over_to_the_other_replica(pg_dsn: str) -> None:
    async with replica(pg_dsn, "b") as b:
        async with replica(pg_dsn, "a") as a:
            client = ExecutorClient(f"{a.address},{b.address}")
            started = await client.start(source=CHAIN, inputs={"x": 1}, request_id="r-1")
            eid = started.execution_id
            assert client.address == a.address
            seen: list[int] = []
            first = asyncio.Event()

            async def watch() -> None:
                async for event in client.watch(eid):
                    seen.append(event.sequence)
                    first.set()

            watching = asyncio.create_task(watch())
            async with asyncio.timeout(10):
                await first.wait()
        # a stopped gracefully: b takes the execution over, the client moves to b.
        try:
            again = await client.start(source=CHAIN, inputs={"x": 1}, request_id="r-1")
            assert (again.execution_id, again.created) == (eid, False)
            assert client.address == b.address
            worker = Worker(b.address, slots=2)
            worker.task("t.inc")(inc)
            serving = asyncio.create_task(worker.serve())
            try:
                async with asyncio.timeout(20):
                    await watching
            finally:
                await worker.stop()
                await serving
            assert seen == list(range(1, len(seen) + 1))
            assert (await client.get(eid)).state == ex.EXECUTION_STATE_SUCCEEDED
        finally:
            watching.cancel()
            await client.close()
