"""SIGKILL of the executor (a server process on real SQLite) during a retry backoff,
during compensation, and with a circuit breaker open; each run completes correctly
after a restart, with the same event sequence as without the crash."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from execplan.client import ExecutorClient, UnavailableError
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1.executor_service_pb2_grpc import ExecutorServiceStub
from execplan.worker import NonRetryableError, TaskContext, Worker
from google.protobuf import struct_pb2

if TYPE_CHECKING:
    from tests.integration.harness import ACK_FLUSH_ENV, Cluster
    from tests.support.server import history
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from integration.harness import ACK_FLUSH_ENV, Cluster
    from support.server import history

from .conftest import BACKOFF, RUN, finish, task_kinds


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start_server()
        yield c
    finally:
        c.close()


@pytest.fixture
async def workers(cluster: Cluster) -> AsyncIterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        await worker.stop()


def serve(cluster: Cluster, handlers: dict[str, Any], made: list[Worker]) -> asyncio.Task[None]:
    worker = Worker(cluster.address, worker_id="w-1")
    for task_type, fn in handlers.items():
        worker.task(task_type)(fn)
    made.append(worker)
    return asyncio.create_task(worker.serve())


async def until_event(client: ExecutorClient, execution_id: str, kind: str, count: int = 1) -> None:
    async with asyncio.timeout(15):
        while True:
            events = await history(client, execution_id)
            if sum(1 for e in events if e.WhichOneof("kind") == kind) >= count:
                return
            await asyncio.sleep(0.02)


async def restart(cluster: Cluster, client: ExecutorClient) -> ExecutorClient:
    cluster.kill_server()  # SIGKILL
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


BACKOFF_FLOW = """
name: crash-backoff
tasks:
  - id: a
    type: k.flaky
    retry: {max_attempts: 3, initial_interval: 1500ms}
outputs: {v: "${{ tasks.a.output }}"}
"""


async def test_sigkill_during_retry_backoff(cluster: Cluster, workers: list[Worker]) -> None:
    async def flaky(inputs: dict[str, Any], ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return ctx.attempt

    serve(cluster, {"k.flaky": flaky}, workers)
    client = ExecutorClient(cluster.address)
    execution_id = (await client.start(source=BACKOFF_FLOW)).execution_id
    await until_event(client, execution_id, "timer_scheduled")
    client = await restart(cluster, client)  # the backoff timer is durable
    try:
        done = await finish(client, execution_id, within=30)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED
        assert done.outputs["v"] == 2
        events = await history(client, execution_id)
        assert task_kinds(events, "a") == [*RUN, "task_failed", *BACKOFF, *RUN, "task_succeeded"]
    finally:
        await client.close()


ACK_FLOW = """
name: crash-ack
tasks: [{id: a, type: k.slow}]
outputs: {v: "${{ tasks.a.output }}"}
"""


async def test_sigkill_before_an_ack_is_durable_runs_the_attempt_once(
    cluster: Cluster, workers: list[Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An assignment ack has no commit of its own (docs/architecture.md): killed while
    the worker runs the attempt and its ack is not in the log, the restarted server
    neither re-dispatches it nor loses it; the result records the start with it."""
    cluster.kill_server()
    monkeypatch.setenv(ACK_FLUSH_ENV, "60000")  # the ack waits for another round
    cluster.start_server()
    began = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    async def slow(inputs: dict[str, Any], ctx: TaskContext) -> int:
        runs.append(ctx.attempt)
        began.set()
        await release.wait()
        return 7

    serve(cluster, {"k.slow": slow}, workers)
    client = ExecutorClient(cluster.address)
    flow = ACK_FLOW
    execution_id = (await client.start(source=flow)).execution_id
    async with asyncio.timeout(10):
        await began.wait()
    await asyncio.sleep(0.2)  # the ack is sent; the ack deadline (1.5 s) is far
    assert task_kinds(await history(client, execution_id), "a") == RUN[:2]  # not durable
    client = await restart(cluster, client)
    try:
        async with asyncio.timeout(10):  # the worker is back, reclaiming the attempt
            while True:
                if await client.list_workers():
                    break
                await asyncio.sleep(0.05)
        release.set()
        done = await finish(client, execution_id, within=30)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED
        assert done.outputs["v"] == 7
        events = await history(client, execution_id)
        assert task_kinds(events, "a") == [*RUN, "task_succeeded"]
        assert runs == [1]
    finally:
        await client.close()


SAGA_FLOW = """
name: crash-saga
on_failure: compensate
tasks:
  - id: reserve
    type: k.reserve
    compensation:
      type: k.release
      retry: {max_attempts: 3, initial_interval: 1500ms}
  - {id: ship, type: k.ship, depends_on: [reserve]}
"""


async def test_sigkill_during_compensation(cluster: Cluster, workers: list[Worker]) -> None:
    releases: list[int] = []

    async def reserve(inputs: dict[str, Any]) -> str:
        return "r-1"

    async def ship(inputs: dict[str, Any]) -> None:
        raise NonRetryableError("no courier")

    async def release(inputs: dict[str, Any], ctx: TaskContext) -> str:
        releases.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("inventory service busy")
        return "released"

    serve(cluster, {"k.reserve": reserve, "k.ship": ship, "k.release": release}, workers)
    client = ExecutorClient(cluster.address)
    execution_id = (await client.start(source=SAGA_FLOW)).execution_id
    await until_event(client, execution_id, "task_retry_scheduled")  # compensating
    client = await restart(cluster, client)
    try:
        done = await finish(client, execution_id, within=30)
        assert done.state == ex.EXECUTION_STATE_COMPENSATED
        assert releases == [1, 2]
        events = await history(client, execution_id)
        comp = [
            "task_queued:compensation",
            "task_dispatched:compensation",
            "task_started:compensation",
        ]
        assert task_kinds(events, "reserve") == [
            *RUN,
            "task_succeeded",
            *comp,
            "task_failed:compensation",
            "task_retry_scheduled:compensation",
            "timer_scheduled",
            "timer_fired",
            *comp,
            "task_succeeded:compensation",
        ]
        assert task_kinds(events, "ship") == [*RUN, "task_failed"]
    finally:
        await client.close()


BREAKER_FLOW = """
name: crash-breaker
tasks:
  - id: a
    type: k.dep
    retry: {max_attempts: 1}
    circuit_breaker: {failure_threshold: 1, open_for: 4s}
"""


async def stored_breaker(db: str, task_type: str) -> dict[str, Any]:
    """The breaker state in the SQLite file once it is written (in the background)."""
    async with asyncio.timeout(10):
        while True:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                row = conn.execute(
                    "SELECT payload FROM kv WHERE namespace = 'breakers' AND key = ?",
                    (task_type,),
                ).fetchone()
            if row is not None:
                stored: dict[str, Any] = json.loads(row[0])
                return stored
            await asyncio.sleep(0.02)


async def test_breaker_state_and_parked_tasks_survive_a_restart(
    cluster: Cluster, workers: list[Worker]
) -> None:
    """The breaker opens before the kill and half-opens on the wall clock; a restart
    can take longer than `open_for` on a loaded machine. So the worker is stopped
    before the kill (no canary can run while the backend is still down) and every
    assertion holds however long the restart takes: the restarted server lists the
    same breaker (opened and half-opening at the same instants), keeps the task parked
    until that instant, and a canary closes it once the backend is up."""
    down = [True]

    async def dep(inputs: dict[str, Any]) -> str:
        if down[0]:
            raise RuntimeError("backend down")
        return "up"

    serve(cluster, {"k.dep": dep}, workers)
    client = ExecutorClient(cluster.address)
    first = (await client.start(source=BREAKER_FLOW)).execution_id
    assert (await finish(client, first)).state == ex.EXECUTION_STATE_FAILED
    parked = (await client.start(source=BREAKER_FLOW)).execution_id
    await until_event(client, parked, "task_parked")
    (before,) = await client.list_circuit_breakers()
    assert before.state == pb.BREAKER_STATE_OPEN and before.parked_tasks == 1
    opened_ms = before.opened_at.ToMilliseconds()
    half_open_ms = before.half_open_at.ToMilliseconds()
    assert half_open_ms == opened_ms + 4000
    stored = await stored_breaker(cluster.db, "k.dep")  # durable before the kill
    assert (stored["state"], stored["half_open_at_ms"]) == ("open", half_open_ms)
    for worker in workers:
        await worker.stop()
    client = await restart(cluster, client)
    try:
        (status,) = await client.list_circuit_breakers()
        answered_ms = time.time() * 1000
        assert status.task_type == "k.dep"
        assert "backend down" in status.last_error
        # The same breaker, not a new one: opened, and half-opening, when it was.
        assert status.opened_at.ToMilliseconds() == opened_ms
        assert status.half_open_at.ToMilliseconds() == half_open_ms
        if answered_ms < half_open_ms:  # the restart beat the clock: still open
            assert status.state == pb.BREAKER_STATE_OPEN
            assert status.parked_tasks == 1
        down[0] = False
        serve(cluster, {"k.dep": dep}, workers)
        done = await finish(client, parked, within=30)  # half-opens; the canary closes it
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED
        events = await history(client, parked)
        kinds = task_kinds(events, "a")
        # On a loaded machine a dispatch whose ack misses its deadline is requeued and
        # sent again: correct, and not what this test is about.
        while "task_requeued" in kinds:
            at = kinds.index("task_requeued")
            assert kinds[at - 1] == "task_dispatched", kinds
            del kinds[at - 1 : at + 1]
        assert kinds == [
            "task_queued",
            "task_parked",
            "task_unparked",
            "task_dispatched",
            "task_started",
            "task_succeeded",
        ]
        # Parked through the restart until the breaker half-opened, not released by
        # the recovery (a breaker forgotten in the restart would have let it go).
        (unparked,) = [e for e in events if e.HasField("task_parked") and not e.task_parked.parked]
        assert unparked.recorded_at.ToMilliseconds() >= half_open_ms
        (status,) = await client.list_circuit_breakers()
        assert status.state == pb.BREAKER_STATE_CLOSED
    finally:
        await client.close()


WAIT_FLOW = """
name: crash-batch
inputs:
  n: {type: integer}
tasks:
  - id: w
    type: builtin.wait_for_event
    inputs: {event: go}
"""


async def test_sigkill_right_after_a_batch_start_keeps_every_started_execution(
    cluster: Cluster,
) -> None:
    # StartExecutions answers only once every item's create has committed: killed the
    # moment the answer arrives, the restarted server has all of them.
    batch = pb.StartExecutionsRequest(
        requests=[
            pb.StartExecutionRequest(source=WAIT_FLOW, inputs=_inputs(n), request_id=f"k-{n}")
            for n in range(200)
        ]
    )
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        response = await ExecutorServiceStub(channel).StartExecutions(batch)
    # SIGKILL (restart's first step), before anything else can happen; then restart.
    client = await restart(cluster, ExecutorClient(cluster.address))
    started = [r.started for r in response.results]
    assert all(s.created for s in started)
    try:
        for n, s in enumerate(started):
            execution = await client.get(s.execution_id)
            assert execution.state == ex.EXECUTION_STATE_RUNNING
            assert dict(execution.inputs) == {"n": n}
    finally:
        await client.close()
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        again = await ExecutorServiceStub(channel).StartExecutions(batch)
    # The request_ids were kept too: nothing new is started.
    assert [r.started.execution_id for r in again.results] == [s.execution_id for s in started]
    assert not any(r.started.created for r in again.results)


def _inputs(n: int) -> struct_pb2.Struct:
    values = struct_pb2.Struct()
    values.update({"n": n})
    return values
