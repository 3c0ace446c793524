"""Reaching an execution through a replica that does not own it (in-process servers):
reads and WatchExecution come from the store (woken by NOTIFY), control calls are
forwarded to the owner; a graceful stop hands executions over at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from execplan.client import ExecutorClient
from execplan.config import ServerConfig
from execplan.executor.runtime.engine import EngineConfig
from execplan.executor.runtime.replicas import ReplicaConfig
from execplan.server import ExecplanServer, ExecutorComponent, PlannerComponent
from execplan.v1 import execution_pb2 as ex
from execplan.worker import Worker

from .cluster import free_port

CHAIN = """
name: chain
inputs: {x: {type: integer, required: true}}
tasks:
  - {id: a, type: t.inc, inputs: {v: "${{ workflow.inputs.x }}"}}
  - {id: b, type: t.inc, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}"}}
outputs: {v: "${{ tasks.b.output.v }}"}
"""

FAST = EngineConfig(ack_deadline_ms=1_000, reconnect_grace_ms=500, recovery_grace_ms=500)


async def inc(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"v": inputs["v"] + 1}


@contextlib.asynccontextmanager
async def replica(dsn: str, replica_id: str) -> AsyncIterator[ExecplanServer]:
    listen = f"127.0.0.1:{free_port()}"
    config = ServerConfig(listen=listen, db_path=dsn, grace_seconds=1)
    executor = ExecutorComponent(
        dsn,
        config=FAST,
        silence_ms=3_000,
        replica=ReplicaConfig(replica_id, listen, lease_ms=2_000, renew_ms=300),
    )
    async with ExecplanServer(config, [executor, PlannerComponent(config)]) as server:
        yield server


async def test_reads_watch_and_control_through_a_non_owner(pg_dsn: str) -> None:
    async with replica(pg_dsn, "a") as a, replica(pg_dsn, "b") as b:
        owner, other = ExecutorClient(a.address), ExecutorClient(b.address)
        try:
            started = await owner.start(source=CHAIN, inputs={"x": 1})
            eid = started.execution_id
            watched: list[str] = []

            async def watch() -> None:
                async for event in other.watch(eid):
                    watched.append(event.WhichOneof("kind") or "")

            watching = asyncio.create_task(watch())
            assert (await other.get(eid)).state == ex.EXECUTION_STATE_RUNNING
            assert await other.pause(eid, "by b") == ex.EXECUTION_STATE_PAUSED
            assert (await owner.get(eid)).state == ex.EXECUTION_STATE_PAUSED
            # A budget change goes to the owner too (and is answered with its budget).
            changed = await other.set_budget(eid, cost=3, reason="from b")
            assert changed.budget.cost == 3 and changed.state == ex.EXECUTION_STATE_PAUSED
            assert (await owner.get(eid)).budget.cost == 3
            assert await other.resume(eid) == ex.EXECUTION_STATE_RUNNING
            worker = Worker(f"{a.address},{b.address}", slots=4)
            worker.task("t.inc")(inc)
            serving = asyncio.create_task(worker.serve())
            try:
                async with asyncio.timeout(20):
                    await watching
            finally:
                await worker.stop()
                await serving
            assert watched[0] == "execution_started"
            assert watched[-1] == "execution_completed"
            assert "execution_paused" in watched and "execution_resumed" in watched
            assert "budget_changed" in watched
            done = await other.get(eid)
            assert done.state == ex.EXECUTION_STATE_SUCCEEDED
        finally:
            await owner.close()
            await other.close()


async def test_graceful_stop_hands_executions_over_at_once(pg_dsn: str) -> None:
    async with replica(pg_dsn, "b") as b:
        client_b = ExecutorClient(b.address)
        try:
            async with replica(pg_dsn, "a") as a:
                client_a = ExecutorClient(a.address)
                eid = (await client_a.start(source=CHAIN, inputs={"x": 5})).execution_id
                await client_a.close()
            stopped = time.monotonic()
            # a released its lease on stop: b claims on its next tick, not after 2 s.
            worker = Worker(b.address, slots=2)
            worker.task("t.inc")(inc)
            serving = asyncio.create_task(worker.serve())
            try:
                async with asyncio.timeout(10):
                    async for _ in client_b.watch(eid):
                        pass
                assert time.monotonic() - stopped < 2.0  # the lease
            finally:
                await worker.stop()
                await serving
            assert (await client_b.get(eid)).outputs["v"] == 7
        finally:
            await client_b.close()


async def test_cancel_through_a_non_owner(pg_dsn: str) -> None:
    async with replica(pg_dsn, "a") as a, replica(pg_dsn, "b") as b:
        owner, other = ExecutorClient(a.address), ExecutorClient(b.address)
        try:
            eid = (await owner.start(source=CHAIN, inputs={"x": 1})).execution_id
            assert await other.cancel(eid, "no") == ex.EXECUTION_STATE_CANCELLED
            events = [e.WhichOneof("kind") async for e in other.watch(eid)]
            assert events[-1] == "execution_completed"
        finally:
            await owner.close()
            await other.close()
