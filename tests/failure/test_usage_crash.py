"""SIGKILL of the executor (a real server process on SQLite) between a task reporting
usage and completing its attempt: no usage is lost and none is counted twice.

The worker reports usage, the server records it, the server is killed; the worker
reports more while the server is down (the SDK keeps it and sends it after the
reconnect, with whatever was not acknowledged), then completes with usage beside its
output. Every lease's usage on the server equals, exactly, what the handler that ran
it reported: whether the restarted server let the worker reclaim its lease or
re-leased the attempt (then both runs' usage counts, each once)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import ExecutorClient, UnavailableError
from execplan.v1 import execution_pb2 as ex
from execplan.worker import Output, TaskContext, Worker

if TYPE_CHECKING:
    from tests.integration.harness import Cluster
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from integration.harness import Cluster

from .test_executor_crash import until_event

FLOW = """
name: usage-crash
tasks:
  - id: agent
    type: crash.agent
    retry: {max_attempts: 3, initial_interval: 10ms, jitter: 0}
"""


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


async def _start_again(cluster: Cluster, client: ExecutorClient) -> ExecutorClient:
    await client.close()
    await asyncio.to_thread(cluster.start_server)
    client = ExecutorClient(cluster.address)
    async with asyncio.timeout(10):
        while True:  # the first call on a new channel may race the listener
            try:
                await client.list_circuit_breakers()
                return client
            except UnavailableError:
                await asyncio.sleep(0.05)


async def test_sigkill_between_reporting_usage_and_completing_loses_none(
    cluster: Cluster, client: ExecutorClient
) -> None:
    reported: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    down = asyncio.Event()  # the server has been killed: report more, then wait
    back = asyncio.Event()  # the server is back: complete

    def usage(ctx: TaskContext, **amounts: float) -> None:
        ctx.usage(**amounts)
        mine = reported[(ctx.attempt, ctx.lease_epoch)]
        for name, amount in amounts.items():
            mine[name] = mine.get(name, 0.0) + amount

    async def agent(inputs: dict[str, Any], ctx: TaskContext) -> Any:
        usage(ctx, tokens_in=1200, cost=0.25)
        await down.wait()
        usage(ctx, tokens_out=300, cost=0.125)  # while the server is down
        await back.wait()
        mine = reported[(ctx.attempt, ctx.lease_epoch)]
        mine["cost"] = mine.get("cost", 0.0) + 0.5
        return Output({"answer": 42}, usage={"cost": 0.5})

    worker = Worker(cluster.address, worker_id="usage-w1")
    worker.task("crash.agent")(agent)
    serving = asyncio.create_task(worker.serve())
    try:
        started = await client.start(source=FLOW)
        execution_id = started.execution_id
        await until_event(client, execution_id, "task_usage")  # the first report is durable
        cluster.kill_server()  # SIGKILL
        down.set()
        await asyncio.sleep(0.3)  # the second report is made while nothing listens
        client = await _start_again(cluster, client)
        back.set()
        async with asyncio.timeout(30):
            async for event in client.watch(execution_id):
                if event.HasField("execution_completed"):
                    break
        execution = await client.get(execution_id)
    finally:
        down.set()
        back.set()
        await worker.stop()
        serving.cancel()

    assert execution.state == ex.EXECUTION_STATE_SUCCEEDED, execution.error
    (task,) = execution.tasks
    on_server = {
        (a.attempt, a.lease_epoch): dict(a.usage.counters)
        for a in task.attempts
        if a.usage.counters
    }
    assert on_server == dict(reported)  # every lease: exactly what its handler reported
    total: dict[str, float] = {}
    for amounts in reported.values():
        for name, amount in amounts.items():
            total[name] = total.get(name, 0.0) + amount
    assert dict(execution.usage.counters) == total
    assert total["cost"] >= 0.875  # at least one full run: 0.25 + 0.125 + 0.5
    rolled = await client.usage(execution_id=execution_id)
    assert dict(rolled.usage.counters) == total
    events = [e async for e in client.history(execution_id)]
    seen = [
        (e.task_usage.token.attempt, e.task_usage.token.lease_epoch, e.task_usage.report)
        for e in events
        if e.HasField("task_usage")
    ]
    assert len(seen) == len(set(seen))  # no report recorded twice
