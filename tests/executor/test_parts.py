"""What the runtime's parts own, and that letting go of an execution clears all of it:
deadline handles end with the execution, one `forget` frees its worker slots, the
plan cache is bounded, a heartbeat counts only for the lease it names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from execplan.executor.decide.fencing import Claim
from execplan.executor.plan_view import PlanView, decode_plan
from execplan.executor.runtime.background import Background
from execplan.executor.runtime.checkpoints import Checkpoints
from execplan.executor.runtime.engine import Engine, EngineConfig
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.inbox import Action, Answer, Inbox
from execplan.executor.runtime.leases import Leases
from execplan.executor.runtime.workers import WorkerConn, WorkerRegistry
from execplan.executor.state import new_state
from execplan.planner import compile_source
from execplan.store.memory import MemoryStore
from execplan.store.port import Snapshot
from execplan.store.sqlite.store import SqliteStore
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from execplan.wire.plan_codec import encode_plan

TIMED = """
name: timed
tasks:
  - id: a
    type: t
    timeouts: {start_to_close: 1h, heartbeat: 1h, schedule_to_close: 1h}
  - {id: b, type: t, timeouts: {start_to_close: 1h}}
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = SqliteStore(str(tmp_path / "parts.db"))
    await store.open()
    engine = Engine(store, EngineConfig(ack_flush_ms=1, plan_cache=2))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await store.close()


async def _plan(engine: Engine, source: str) -> PlanView:
    compiled = compile_source(source)
    assert compiled.plan is not None, compiled.diagnostics
    return await engine.register_plan(encode_plan(compiled.plan))


async def _until(check: Callable[[], bool], seconds: float = 5) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def _dispatches(sent: list[ws.ConnectResponse]) -> list[ws.Dispatch]:
    return [d for message in sent for d in message.dispatches]


async def _running(engine: Engine, slots: int) -> tuple[str, WorkerConn, list[ws.ConnectResponse]]:
    sent: list[ws.ConnectResponse] = []
    registration = ws.WorkerRegistration(worker_id="w1", task_types=["t"], slots=slots)
    worker, _ = engine.connect_worker(registration, sent.append)
    execution_id, _ = await engine.start_execution(await _plan(engine, TIMED), {})
    await _until(lambda: len(_dispatches(sent)) == min(2, slots))
    return execution_id, worker, sent


def _succeed_all(engine: Engine, worker: WorkerConn, sent: list[ws.ConnectResponse]) -> None:
    results = []
    for dispatch in _dispatches(sent):
        result = ws.TaskResult(attempt=dispatch.attempt)
        result.output.struct_value.SetInParent()
        results.append(result)
    engine.worker_message(worker, ws.ConnectRequest(results=results))


async def test_deadline_handles_end_with_their_execution(engine: Engine) -> None:
    execution_id, worker, sent = await _running(engine, slots=2)
    assert engine.deadlines.pending(execution_id) > 0  # ack, start_to_close, heartbeat...
    _succeed_all(engine, worker, sent)
    await _until(lambda: engine.executions.finished(execution_id))
    # Nothing armed for it outlives it (the hour-long timeouts would have, before).
    assert engine.deadlines.pending(execution_id) == 0


async def _engine_with_ack_deadline(tmp_path: Path, ack_deadline_ms: int) -> Engine:
    store = SqliteStore(str(tmp_path / "acks.db"))
    await store.open()
    engine = Engine(store, EngineConfig(ack_flush_ms=1, ack_deadline_ms=ack_deadline_ms))
    await engine.start()
    return engine


async def test_a_missed_ack_deadline_requeues_and_a_kept_one_costs_no_round(
    tmp_path: Path,
) -> None:
    engine = await _engine_with_ack_deadline(tmp_path, 200)
    try:
        sent: list[ws.ConnectResponse] = []
        registration = ws.WorkerRegistration(worker_id="w1", task_types=["t"], slots=4)
        worker, _ = engine.connect_worker(registration, sent.append)
        plan = await _plan(engine, "name: acks\ntasks:\n  - {id: a, type: t}\n")
        kept, _ = await engine.start_execution(plan, {})
        missed, _ = await engine.start_execution(plan, {})
        await _until(lambda: len(_dispatches(sent)) == 2)
        ack = next(d.attempt for d in _dispatches(sent) if d.attempt.execution_id == kept)
        engine.worker_message(worker, ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=ack)]))
        await _until(lambda: _task_state(engine, kept) == ex.TASK_STATE_RUNNING)
        submitted: list[str] = []
        submit = engine.inbox.submit

        def counting(execution_id: str, action: Action, future: Answer | None = None) -> None:
            submitted.append(execution_id)
            submit(execution_id, action, future)

        engine.inbox.submit = counting  # type: ignore[method-assign]
        # The unacknowledged one is taken back and dispatched again (epoch 2)...
        await _until(lambda: len(_dispatches(sent)) == 3)
        again = _dispatches(sent)[-1].attempt
        assert (again.execution_id, again.token.lease_epoch) == (missed, 2)
        # ...the acknowledged one's deadline passed without an input for the pump.
        await asyncio.sleep(0.1)
        assert kept not in submitted and missed in submitted
        assert engine.deadlines.pending(kept) == 0
    finally:
        await engine.stop()
        await engine.store.close()


async def test_deadlines_fire_in_due_order_across_executions(tmp_path: Path) -> None:
    """One sweep serves every execution: deadlines armed out of order fire in order,
    and those of a forgotten execution never fire."""
    engine = await _engine_with_ack_deadline(tmp_path, 5_000)
    try:
        fired: list[str] = []
        deadlines = engine.deadlines
        now = engine.now_ms()
        for name, at in (("c", 90), ("a", 30), ("gone", 40), ("b", 60)):
            deadlines._at(name, now + at, lambda n=name: fired.append(n))  # type: ignore[misc]
        deadlines.forget("gone")
        assert deadlines.pending("a") == 1 and deadlines.pending("gone") == 0
        await _until(lambda: len(fired) == 3)
        await asyncio.sleep(0.05)
        assert fired == ["a", "b", "c"]
        assert all(deadlines.pending(n) == 0 for n in "abc")
    finally:
        await engine.stop()
        await engine.store.close()


async def test_ack_deadlines_armed_together_fire_each_once(tmp_path: Path) -> None:
    """A round's ack deadlines (due at the same ms) share one entry of the heap: each
    still fires once, a forgotten execution's not at all; and a batch the sweep
    dropped (only forgotten deadlines left) takes no more."""
    engine = await _engine_with_ack_deadline(tmp_path, 5_000)
    try:
        deadlines = engine.deadlines
        due: list[str] = []
        clock = [engine.now_ms()]
        deadlines._now_ms = lambda: clock[0]

        def ack_due(execution_id: str, index: int, claim: Claim) -> None:
            due.append(f"{execution_id}/{index}")

        deadlines._ack_due = ack_due  # type: ignore[method-assign]
        claim = Claim(0, 1, 1)
        for name, index in (("a", 0), ("b", 0), ("a", 1), ("gone", 0)):
            deadlines._watch_ack(name, index, claim, 40)
        deadlines.forget("gone")
        assert deadlines.pending("a") == 2 and deadlines.pending("gone") == 0
        clock[0] += 40
        await _until(lambda: len(due) == 3)
        assert due == ["a/0", "b/0", "a/1"]
        assert deadlines.pending("a") == 0 and deadlines.pending("b") == 0
        # Same ms again: one forgotten ack deadline in a new batch; a deadline due now
        # makes the sweep drop the heap, and the batch with it.
        deadlines._watch_ack("x", 0, claim, 60)
        deadlines.forget("x")
        deadlines._at("now", clock[0], lambda: due.append("now"))
        await _until(lambda: due[-1] == "now")
        deadlines._watch_ack("z", 0, claim, 60)  # the same due ms as x's
        clock[0] += 60
        await _until(lambda: due[-1] == "z/0")
        await asyncio.sleep(0.05)
        assert due == ["a/0", "b/0", "a/1", "now", "z/0"]
    finally:
        await engine.stop()
        await engine.store.close()


def _task_state(engine: Engine, execution_id: str) -> int:
    state = engine.executions.get(execution_id)
    assert state is not None
    return state.tasks[0].state


async def test_disown_forgets_an_execution_everywhere(engine: Engine) -> None:
    execution_id, worker, _ = await _running(engine, slots=1)
    assert worker.free == 0  # `a` holds the one slot, `b` waits in the queue
    assert engine.leases.inflight(execution_id) == 1
    engine.disown([execution_id])
    assert engine.executions.get(execution_id) is None
    assert worker.free == 1 and not worker.leases
    assert engine.leases.inflight(execution_id) == 0
    assert engine.deadlines.pending(execution_id) == 0


async def test_the_plan_cache_is_bounded_and_running_executions_keep_their_plan(
    engine: Engine,
) -> None:
    execution_id, worker, sent = await _running(engine, slots=2)
    for i in range(5):
        await _plan(engine, f"name: other{i}\ntasks:\n  - {{id: x, type: t}}\n")
    assert engine.reads.cached_plans() == 2
    _succeed_all(engine, worker, sent)
    await _until(lambda: engine.executions.finished(execution_id))
    assert (await engine.get_execution(execution_id)).tasks[0].task_id == "a"


async def test_a_heartbeat_counts_only_for_the_lease_it_names() -> None:
    workers = WorkerRegistry()
    executions = Executions(finished_cache=10)
    leases = Leases(workers, executions, Inbox(ack_flush_ms=1))
    leases.granted("e", 0, "w1", epoch=1)
    leases.beat("e", 0, epoch=1, now_ms=100)
    assert leases.last_beat("e", 0, epoch=1) == 100
    leases.released("e", 0)
    leases.granted("e", 0, "w1", epoch=2)  # the task leased again
    leases.beat("e", 0, epoch=1, now_ms=500)  # a late heartbeat of the old lease
    assert leases.last_beat("e", 0, epoch=2) == 0
    assert leases.last_beat("e", 0, epoch=1) is None
    leases.beat("e", 0, epoch=2, now_ms=600)
    assert leases.last_beat("e", 0, epoch=2) == 600


async def test_a_wide_execution_checkpoints_every_as_many_events_as_it_has_tasks() -> None:
    """A snapshot costs O(tasks): an execution wider than `checkpoint_every` is
    snapshotted once per that many events, so checkpoints stay O(1) per event."""
    taken: dict[str, list[int]] = {"wide": [], "narrow": []}

    class Saved(MemoryStore):
        async def save_snapshot(self, snapshot: Snapshot) -> None:
            taken[snapshot.execution_id].append(snapshot.sequence)

    background = Background()
    checkpoints = Checkpoints(Saved(), background, every=2)
    wide = new_state("wide", decode_plan(encode_plan(_compiled(_fan_out(6)))))  # 8 tasks
    narrow = new_state("narrow", decode_plan(encode_plan(_compiled(TIMED))))  # 2 tasks
    for sequence in range(1, 21):
        for state in (wide, narrow):
            state.last_sequence = sequence
            checkpoints.committed(state)
    await background.drain()
    assert taken == {"wide": [8, 16], "narrow": list(range(2, 21, 2))}


def _compiled(source: str) -> Any:
    compiled = compile_source(source)
    assert compiled.plan is not None, compiled.diagnostics
    return compiled.plan


def _fan_out(width: int) -> str:
    middle = "".join(f"  - {{id: m{i}, type: t, depends_on: [a]}}\n" for i in range(width))
    ids = ", ".join(f"m{i}" for i in range(width))
    last = f"  - {{id: z, type: t, depends_on: [{ids}]}}\n"
    return f"name: wide\ntasks:\n  - {{id: a, type: t}}\n{middle}{last}"


async def test_a_burst_of_starts_of_a_new_plan_registers_it_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = compile_source("name: burst\ntasks:\n  - {id: x, type: t}\n")
    assert compiled.plan is not None
    plan = encode_plan(compiled.plan)
    stored: list[str] = []
    put_plan = engine.store.put_plan

    async def counted(plan_id: str, payload: bytes) -> None:
        stored.append(plan_id)
        await put_plan(plan_id, payload)

    monkeypatch.setattr(engine.store, "put_plan", counted)
    calls = [asyncio.ensure_future(engine.register_plan(plan)) for _ in range(50)]
    calls[0].cancel()  # a client that went away cancels neither the others nor the work
    views = await asyncio.gather(*calls[1:])
    assert stored == [plan.plan_id]
    assert len({id(view) for view in views}) == 1
    assert calls[0].cancelled()
    assert await engine.register_plan(plan) is views[0]
