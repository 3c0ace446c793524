"""One execution's trouble stays its own: a failing input or a refused append in a
group commit reloads that execution from the log, while every other execution of
the round commits, acts and publishes as usual (review findings 1, 2 and 6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from execplan.errors import ConcurrencyConflict, ExecplanError
from execplan.executor.decide.machine import Machine
from execplan.executor.runtime.engine import Engine, EngineConfig
from execplan.executor.runtime.workers import WorkerConn
from execplan.planner import compile_source
from execplan.store.port import Append
from execplan.store.sqlite import SqliteStore
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from execplan.wire.plan_codec import encode_plan

ONE = "name: one\ntasks:\n  - {id: a, type: t}\noutputs: {k: '${{ tasks.a.output.k }}'}\n"
NAP = """
name: nap
tasks:
  - {id: a, type: t}
  - {id: nap, type: builtin.sleep, depends_on: [a], inputs: {duration: "${{ tasks.a.output.d }}"}}
"""


class RefusingStore(SqliteStore):
    """The real SQLite store, refusing the appends of chosen executions once each
    (a fake that subclasses the port, as a lost optimistic-concurrency race)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.refuse: set[str] = set()
        # Called once, inside the next group commit that refuses an execution: what
        # arrives while a commit is in flight.
        self.during_refusal: Callable[[], None] | None = None

    async def append_each(self, batch: Sequence[Append]) -> dict[str, ExecplanError]:
        refused = {a.execution_id for a in batch} & self.refuse
        during = self.during_refusal
        if refused and during is not None:
            self.during_refusal = None
            during()
        self.refuse -= refused
        failures = await super().append_each([a for a in batch if a.execution_id not in refused])
        failures.update({e: ConcurrencyConflict(f"simulated race on {e}") for e in refused})
        return failures


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = RefusingStore(tmp_path / "x.db")
    await store.open()
    engine = Engine(store, EngineConfig(ack_flush_ms=1, recovery_grace_ms=200))
    await engine.start()
    yield engine
    await engine.stop()
    await store.close()


async def _start_two(
    engine: Engine, source: str
) -> tuple[list[ws.Dispatch], ws.WorkerRegistration, WorkerConn, str, str]:
    result = compile_source(source)
    assert result.plan is not None
    plan = await engine.register_plan(encode_plan(result.plan))
    sent: list[ws.ConnectResponse] = []
    registration = ws.WorkerRegistration(worker_id="w1", task_types=["t"], slots=4)
    worker, _ = engine.connect_worker(registration, sent.append)
    first, _ = await engine.start_execution(plan, {})
    second, _ = await engine.start_execution(plan, {})
    for _ in range(100):
        dispatches = [d for m in sent for d in m.dispatches]
        if len(dispatches) == 2:
            return dispatches, registration, worker, first, second
        await asyncio.sleep(0.01)
    raise AssertionError("both executions should have been dispatched")


def _result(dispatch: ws.Dispatch, **output: str) -> ws.TaskResult:
    result = ws.TaskResult(attempt=dispatch.attempt)
    result.output.struct_value.SetInParent()
    for key, value in output.items():
        result.output.struct_value.fields[key].string_value = value
    return result


async def _store_matches_memory(engine: Engine, execution_id: str) -> ex.Execution:
    stored = await engine.history(execution_id, 0, 1000)
    live = await engine.load_state(execution_id)
    assert live.last_sequence == stored[-1].sequence
    return await engine.get_execution(execution_id)


async def _until(check: object, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_a_duration_from_bad_data_fails_that_task_only(engine: Engine) -> None:
    dispatches, _, worker, first, second = await _start_two(engine, NAP)
    results = [
        _result(d, d="abc" if d.attempt.execution_id == first else "10ms") for d in dispatches
    ]
    engine.worker_message(worker, ws.ConnectRequest(results=results))
    await _until(lambda: engine.executions.finished(first) and engine.executions.finished(second))
    failed = await _store_matches_memory(engine, first)
    assert failed.state == ex.EXECUTION_STATE_FAILED
    assert failed.error.type == "BindingError"
    assert (await _store_matches_memory(engine, second)).state == ex.EXECUTION_STATE_SUCCEEDED


async def test_an_input_that_raises_poisons_only_its_execution(engine: Engine) -> None:
    dispatches, _, worker, first, second = await _start_two(engine, ONE)

    def explode(machine: Machine) -> None:
        machine.pause("half-done", "")  # an event emitted, then a bug
        raise RuntimeError("boom")

    paused = asyncio.get_running_loop().create_future()
    engine.inbox.submit(first, lambda m: m.pause("before the bug", "r1"), paused)
    broken = asyncio.get_running_loop().create_future()
    engine.inbox.submit(first, explode, broken)
    engine.worker_message(
        worker, ws.ConnectRequest(results=[_result(d, k="v") for d in dispatches])
    )
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(broken, 5)
    await asyncio.wait_for(paused, 5)  # run again after the reload, then answered
    # The other execution committed and finished in the same round.
    await _until(lambda: engine.executions.finished(second))
    assert (await _store_matches_memory(engine, second)).state == ex.EXECUTION_STATE_SUCCEEDED
    # The poisoned one holds no uncommitted event: memory equals the log, and the
    # inputs of its round that did not raise were applied after the reload.
    view = await _store_matches_memory(engine, first)
    history = [e.WhichOneof("kind") for e in await engine.history(first, 0, 100)]
    assert history.count("execution_paused") == 1
    assert view.state in (ex.EXECUTION_STATE_PAUSED, ex.EXECUTION_STATE_SUCCEEDED)


async def test_a_refused_append_does_not_hold_back_the_rest_of_the_group(engine: Engine) -> None:
    dispatches, _, worker, first, second = await _start_two(engine, ONE)
    seen: list[str] = []

    async def watch() -> None:
        async for event in engine.watch(second, 0):
            seen.append(event.WhichOneof("kind") or "")

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.05)
    assert isinstance(engine.store, RefusingStore)
    engine.store.refuse.add(first)
    engine.worker_message(
        worker, ws.ConnectRequest(results=[_result(d, k="v") for d in dispatches])
    )
    # The committed execution is published to its watcher and ends.
    await asyncio.wait_for(watcher, 5)
    assert seen[-1] == "execution_completed"
    # The refused one is reloaded from the log, its result applied again: it ends too.
    await _until(lambda: engine.executions.finished(first))
    done = await _store_matches_memory(engine, first)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert dict(done.outputs.fields)["k"].string_value == "v"


async def test_a_refused_execution_runs_its_inputs_again_before_later_ones(
    engine: Engine,
) -> None:
    """Inputs that arrive while a refused commit is in flight came after the round's
    own: after the reload the result is applied first, then the pause (which then
    is refused: the execution has succeeded), not the other way round."""
    dispatches, _, worker, first, _ = await _start_two(engine, ONE)
    assert isinstance(engine.store, RefusingStore)
    paused = asyncio.get_running_loop().create_future()
    engine.store.refuse.add(first)
    engine.store.during_refusal = lambda: engine.inbox.submit(
        first, lambda m: m.pause("after the result", "r1"), paused
    )
    mine = [_result(d, k="v") for d in dispatches if d.attempt.execution_id == first]
    engine.worker_message(worker, ws.ConnectRequest(results=mine))
    with pytest.raises(ExecplanError, match="in state SUCCEEDED"):
        await asyncio.wait_for(paused, 5)
    done = await _store_matches_memory(engine, first)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    kinds = [e.WhichOneof("kind") for e in await engine.history(first, 0, 100)]
    assert "execution_paused" not in kinds
