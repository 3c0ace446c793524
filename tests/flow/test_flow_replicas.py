"""Two executor replicas (`execplan serve` processes) on one PostgreSQL database
share a concurrency limit (executions started on either, tasks measured in a worker
connected to both, never more than the limit at once) and a token bucket (no more
taken than it holds, and a change made on one replica lets the other's tasks go)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from execplan.client import ExecutorClient
from execplan.v1 import execution_pb2 as ex
from store.pg import pg_dsn, pg_server  # type: ignore[import-not-found]

if TYPE_CHECKING:
    from tests.support.flow_rig import FlowRig
else:
    from support.flow_rig import FlowRig

__all__ = ["pg_dsn", "pg_server"]  # fixtures, imported for pytest

SHARED = """
name: shared
tasks:
  - id: call
    type: flow.call
    inputs: {model: shared, ms: 250}
    limit: {key: "inputs.model", max: 2}
"""


async def test_two_replicas_share_one_limit(pg_dsn: str, tmp_path: Path) -> None:
    rig = FlowRig(tmp_path, db=pg_dsn)
    try:
        first = rig.start_server("--replica-id", "r1")
        second = rig.start_server("--replica-id", "r2")
        rig.worker("w1", "--slots", "16", address=f"{first},{second}")
        async with ExecutorClient(first) as one, ExecutorClient(second) as two:
            ids = []
            for i in range(10):
                client = one if i % 2 else two
                ids.append((await client.start(source=SHARED)).execution_id)
            for i, execution_id in enumerate(ids):
                client = one if i % 2 else two
                async with asyncio.timeout(60):
                    async for event in client.watch(execution_id):
                        if event.HasField("execution_completed"):
                            break
                assert (await client.get(execution_id)).state == ex.EXECUTION_STATE_SUCCEEDED
        peaks = [int(line.split()[1]) for line in rig.lines("concurrency.log")]
        assert len(peaks) == 10
        assert max(peaks) == 2, peaks  # reached on two replicas, never exceeded
    finally:
        rig.close()


TICK = """
name: pg-tick
tasks:
  - {id: t, type: flow.tick, rate_limits: [{name: pg-tick}]}
"""


async def test_two_replicas_take_from_one_bucket_and_see_its_change(
    pg_dsn: str, tmp_path: Path
) -> None:
    rig = FlowRig(tmp_path, db=pg_dsn)
    try:
        first = rig.start_server("--replica-id", "r1")
        second = rig.start_server("--replica-id", "r2")
        rig.worker("w1", "--slots", "16", address=f"{first},{second}")
        async with ExecutorClient(first) as one, ExecutorClient(second) as two:
            await one.set_rate_limit("pg-tick", 1, 60_000, burst=3)  # 3 now, then 1/min
            ids = [((one, two)[i % 2], (await (one, two)[i % 2].start(source=TICK)).execution_id)
                   for i in range(6)]  # fmt: skip

            async def three_wait() -> bool:
                waiting = [len((await c.list_limits("pg-tick")).waiting) for c in (one, two)]
                return sum(waiting) == 3

            async with asyncio.timeout(30):
                while not await three_wait():  # noqa: ASYNC110 - polling over gRPC
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # both replicas asked again meanwhile: still 3 ran
            assert len(rig.lines("ticks.log")) == 3
            await two.set_rate_limit("pg-tick", 100, 1000, burst=10)  # on the other replica
            for client, execution_id in ids:
                async with asyncio.timeout(30):
                    async for event in client.watch(execution_id):
                        if event.HasField("execution_completed"):
                            break
                assert (await client.get(execution_id)).state == ex.EXECUTION_STATE_SUCCEEDED
        assert len(rig.lines("ticks.log")) == 6
    finally:
        rig.close()
