"""Ready-queue entries name their attempt: a worker only gets attempts of its types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from execplan.executor.plan_view import PlanView, decode_plan
from execplan.executor.runtime.engine import Engine, EngineConfig
from execplan.executor.runtime.queues import ReadyQueues
from execplan.planner import compile_source
from execplan.store.sqlite.store import SqliteStore
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from execplan.wire.plan_codec import encode_plan

FALLBACK = """
name: fallback-type
tasks:
  - {id: busy, type: A}
  - id: x
    type: A
    retry: {max_attempts: 1}
    timeouts: {schedule_to_start: 200ms}
    fallback: {type: B}
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = SqliteStore(str(tmp_path / "engine.db"))
    await store.open()
    engine = Engine(store, EngineConfig(ack_flush_ms=1))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await store.close()


async def _register(engine: Engine, source: str) -> PlanView:
    compiled = compile_source(source)
    assert compiled.plan is not None, compiled.diagnostics
    return await engine.register_plan(encode_plan(compiled.plan))


async def _until(check: object, seconds: float = 5) -> None:
    assert callable(check)
    async with asyncio.timeout(seconds):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


def _dispatches(messages: list[ws.ConnectResponse]) -> list[ws.Dispatch]:
    return [d for m in messages for d in m.dispatches]


async def test_fallback_is_not_sent_to_a_worker_of_the_main_type(engine: Engine) -> None:
    plan = await _register(engine, FALLBACK)
    got_a: list[ws.ConnectResponse] = []
    worker_a, _ = engine.connect_worker(
        ws.WorkerRegistration(worker_id="wa", task_types=["A"], slots=1), got_a.append
    )
    execution_id, _ = await engine.start_execution(plan, {})
    await _until(lambda: _dispatches(got_a))
    (busy,) = _dispatches(got_a)
    engine.worker_message(
        worker_a, ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=busy.attempt)])
    )
    state = engine.executions[execution_id]
    x = state.tasks[state.plan.index_of["x"]]
    # x's main attempt times out in the queue; its fallback (type B) is queued.
    await _until(lambda: x.phase == ex.TASK_PHASE_FALLBACK and x.state == ex.TASK_STATE_QUEUED)
    result = ws.TaskResult(attempt=busy.attempt)
    result.output.struct_value.fields["k"].string_value = "v"
    engine.worker_message(worker_a, ws.ConnectRequest(results=[result]))  # frees wa's slot
    await asyncio.sleep(0.2)
    sent = _dispatches(got_a)
    assert [(d.attempt.task_id, d.task_type) for d in sent] == [("busy", "A")]
    assert x.phase == ex.TASK_PHASE_FALLBACK


def test_ready_queue_push_is_idempotent_and_drops_stale_attempts() -> None:
    compiled = compile_source(FALLBACK)
    assert compiled.plan is not None
    node = decode_plan(encode_plan(compiled.plan)).nodes[1]
    queues = ReadyQueues()
    for _ in range(3):  # e.g. pushed again on resume
        queues.push("e", "", "A", node, index=node.index, phase=ex.TASK_PHASE_MAIN, attempt=1)
    queues.push("e", "", "B", node, index=node.index, phase=ex.TASK_PHASE_FALLBACK, attempt=1)
    current = (node.index, ex.TASK_PHASE_FALLBACK, 1)
    taken = queues.take("e", lambda *entry: entry == current, set())
    assert taken == ("B", node.index)
    assert queues.take("e", lambda *entry: True, set()) is None
