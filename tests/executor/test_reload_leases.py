"""Leases and worker messages across a failed commit (the engine's `_reload`).

The engine runs directly against a real SQLite store whose next commit can be made
to fail, and whose next read of an execution (the reload) can be held.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from execplan.errors import ExecplanError, StoreError
from execplan.executor.runtime.engine import Engine, EngineConfig
from execplan.executor.runtime.workers import WorkerConn
from execplan.planner import compile_source
from execplan.store.port import Append, ExecutionRecord
from execplan.store.sqlite.store import SqliteStore
from execplan.v1 import worker_service_pb2 as ws
from execplan.wire.plan_codec import encode_plan

TWO = """
name: two
tasks:
  - {id: a, type: t}
  - {id: b, type: t}
"""


class FlakyStore(SqliteStore):
    """A real store whose next commit fails when armed; its next read can be held."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.fail_next = False
        self.hold_next_read: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def append_each(self, batch: Sequence[Append]) -> dict[str, ExecplanError]:
        if self.fail_next:
            self.fail_next = False
            return {a.execution_id: StoreError("injected commit failure") for a in batch}
        return await super().append_each(batch)

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        hold, self.hold_next_read = self.hold_next_read, None
        if hold is not None:
            self.reading.set()
            await hold.wait()
        return await super().get_execution(execution_id)


class Rig:
    def __init__(self, engine: Engine, store: FlakyStore) -> None:
        self.engine = engine
        self.store = store
        self.sent: list[ws.ConnectResponse] = []

    def connect(self, running: Sequence[ws.AttemptRef] = ()) -> WorkerConn:
        registration = ws.WorkerRegistration(
            worker_id="w1", task_types=["t"], slots=2, running=running
        )
        worker, _ = self.engine.connect_worker(registration, self.sent.append)
        return worker

    def dispatches(self) -> list[ws.AttemptRef]:
        return [d.attempt for m in self.sent for d in m.dispatches]

    def cancels(self) -> list[ws.AttemptRef]:
        return [c.attempt for m in self.sent for c in m.cancels]

    def rejections(self) -> list[ws.ResultRejected]:
        return [r for m in self.sent for r in m.rejections]

    async def kinds(self, execution_id: str) -> list[str]:
        events = await self.engine.history(execution_id, 0, 100)
        return [e.WhichOneof("kind") or "" for e in events]

    async def start_running(self, worker: WorkerConn) -> str:
        """Starts TWO; both tasks end up running on `worker`."""
        result = compile_source(TWO)
        assert result.plan is not None
        plan = await self.engine.register_plan(encode_plan(result.plan))
        execution_id, _ = await self.engine.start_execution(plan, {})
        await until(lambda: len(self.dispatches()) == 2)
        acks = [ws.AssignmentAck(attempt=ref) for ref in self.dispatches()]
        self.engine.worker_message(worker, ws.ConnectRequest(acks=acks))
        await until_async(lambda: self.count(execution_id, "task_started", 2))
        return execution_id

    async def count(self, execution_id: str, kind: str, n: int) -> bool:
        return (await self.kinds(execution_id)).count(kind) == n


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def until_async(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = FlakyStore(str(tmp_path / "execplan.db"))
    await store.open()
    engine = Engine(store, EngineConfig(ack_flush_ms=1, recovery_grace_ms=200))
    await engine.start()
    try:
        yield Rig(engine, store)
    finally:
        if store.hold_next_read is not None:
            store.hold_next_read.set()
        await engine.stop()
        await store.close()


async def test_a_reload_keeps_the_leases_of_a_connected_worker(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.start_running(worker)
    assert len(worker.leases) == 2 and worker.free == 0

    rig.store.fail_next = True  # the pause's first commit fails: the execution reloads
    await rig.engine.pause(execution_id, "x", "r1")
    assert len(worker.leases) == 2 and worker.free == 0  # no over-booking
    assert not rig.engine.leases.orphaned("w1")

    await asyncio.sleep(0.4)  # past recovery_grace_ms: nothing is re-dispatched
    assert len(rig.dispatches()) == 2 and not rig.cancels()
    assert "task_requeued" not in await rig.kinds(execution_id)
    # Its heartbeats and results still count: the lease is the worker's.
    a = rig.dispatches()[0]
    result = ws.TaskResult(attempt=a)
    result.output.string_value = "done"
    rig.engine.worker_message(worker, ws.ConnectRequest(results=[result]))
    await until_async(lambda: rig.count(execution_id, "task_succeeded", 1))
    assert not rig.rejections()


async def test_a_requeue_cancels_the_attempt_on_its_worker(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.start_running(worker)
    a, b = rig.dispatches()
    # The worker comes back claiming only `a`: `b` is re-queued, and the worker told
    # to stop it (it may still run it) before it is leased again.
    rig.connect(running=[a])
    await until(lambda: len(rig.dispatches()) == 3)
    assert [(r.task_id, r.token.lease_epoch) for r in rig.cancels()] == [(b.task_id, 1)]
    again = rig.dispatches()[2]
    assert (again.task_id, again.token.lease_epoch) == (b.task_id, 2)
    assert (await rig.kinds(execution_id)).count("task_requeued") == 1


async def test_a_result_sent_during_a_reload_is_applied_not_rejected(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.start_running(worker)
    a = rig.dispatches()[0]
    rig.store.fail_next = True
    hold = rig.store.hold_next_read = asyncio.Event()
    pausing = asyncio.create_task(rig.engine.pause(execution_id, "x", "r1"))
    await asyncio.wait_for(rig.store.reading.wait(), 5)  # the reload is reading the log

    result = ws.TaskResult(attempt=a)
    result.output.string_value = "done"
    rig.engine.worker_message(worker, ws.ConnectRequest(results=[result]))
    await asyncio.sleep(0.05)
    assert not rig.rejections()

    hold.set()
    await asyncio.wait_for(pausing, 5)
    await until_async(lambda: rig.count(execution_id, "task_succeeded", 1))
    assert not rig.rejections()
