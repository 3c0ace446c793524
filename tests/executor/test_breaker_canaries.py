"""A half-open breaker's canary slot is freed when the canary ends without a counted result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from execplan.executor.decide import breaker as cb
from execplan.executor.plan_view import BreakerView, PlanView
from execplan.executor.runtime.engine import Engine, EngineConfig
from execplan.executor.runtime.workers import WorkerConn
from execplan.planner import compile_source
from execplan.store.sqlite.store import SqliteStore
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from execplan.wire.plan_codec import encode_plan

BREAKER = """
name: canary
tasks:
  - id: a
    type: t
    retry: {max_attempts: 5, initial_interval: 10ms}
    circuit_breaker: {failure_threshold: 1, open_for: 100ms, half_open_max_calls: 1}
"""
REGISTRATION = ws.WorkerRegistration(worker_id="w1", task_types=["t"], slots=4)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = SqliteStore(str(tmp_path / "engine.db"))
    await store.open()
    engine = Engine(store, EngineConfig(ack_flush_ms=1, reconnect_grace_ms=100))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await store.close()


async def _register(engine: Engine) -> PlanView:
    compiled = compile_source(BREAKER)
    assert compiled.plan is not None, compiled.diagnostics
    return await engine.register_plan(encode_plan(compiled.plan))


async def _until(check: Callable[[], bool], seconds: float = 5) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


def _dispatches(messages: list[ws.ConnectResponse]) -> list[ws.Dispatch]:
    return [d for m in messages for d in m.dispatches]


async def _open_then_canary(
    engine: Engine, plan: PlanView, got: list[ws.ConnectResponse]
) -> tuple[WorkerConn, str, ws.Dispatch]:
    """Fails one attempt (the breaker opens), then waits for the half-open canary."""
    worker, _ = engine.connect_worker(REGISTRATION, got.append)
    execution_id, _ = await engine.start_execution(plan, {})
    await _until(lambda: bool(_dispatches(got)))
    first = _dispatches(got)[-1]
    result = ws.TaskResult(attempt=first.attempt)
    result.error.type = "Boom"
    result.error.retryable = True
    ack = ws.AssignmentAck(attempt=first.attempt)
    engine.worker_message(worker, ws.ConnectRequest(acks=[ack], results=[result]))
    await _until(lambda: len(_dispatches(got)) >= 2)
    breaker = engine.breakers.breakers["t"]
    assert (breaker.state, breaker.canaries) == (cb.HALF_OPEN, 1)
    return worker, execution_id, _dispatches(got)[-1]


async def test_requeued_canary_frees_its_slot(engine: Engine) -> None:
    plan = await _register(engine)
    got: list[ws.ConnectResponse] = []
    worker, execution_id, _ = await _open_then_canary(engine, plan, got)
    engine.disconnect_worker(worker)  # the canary's worker drops
    again: list[ws.ConnectResponse] = []
    engine.connect_worker(REGISTRATION, again.append)  # without the canary
    # The canary is requeued once the grace ends; it may be dispatched again.
    await _until(lambda: bool(_dispatches(again)))
    task = engine.executions[execution_id].tasks[0]
    assert task.state in {ex.TASK_STATE_DISPATCHED, ex.TASK_STATE_RUNNING}
    assert engine.breakers.breakers["t"].canaries == 1


async def test_cancelled_canary_lets_a_parked_task_probe(engine: Engine) -> None:
    plan = await _register(engine)
    got: list[ws.ConnectResponse] = []
    worker, first, canary = await _open_then_canary(engine, plan, got)
    ack = ws.AssignmentAck(attempt=canary.attempt)
    engine.worker_message(worker, ws.ConnectRequest(acks=[ack]))
    second, _ = await engine.start_execution(plan, {})
    parked = engine.executions[second].tasks[0]
    await _until(lambda: parked.state == ex.TASK_STATE_PARKED)
    await engine.cancel(first, "not needed", "", False)
    # The cancelled canary says nothing about `t`: the parked task becomes the canary.
    await _until(lambda: any(d.attempt.execution_id == second for d in _dispatches(got)))
    assert engine.breakers.breakers["t"].canaries == 1


def test_release_canaries_frees_only_lost_ones() -> None:
    breaker = cb.Breaker("t", BreakerView(1, 100, 2, 0.0, 0, False))
    breaker.record(True, 0, "Boom")
    breaker.half_open()
    breaker.admitted(("e1", 0, 1, 2))
    breaker.admitted(("e2", 0, 1, 1))
    assert not breaker.admits()
    assert breaker.release_canaries(lambda key: key[0] == "e1") == 1
    assert breaker.admits()
    assert breaker.canary_keys == {("e1", 0, 1, 2)}
    assert breaker.record(False, 10) == cb.CLOSED
    assert breaker.canaries == 0
