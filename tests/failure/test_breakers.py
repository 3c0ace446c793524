"""Circuit breakers per task type: open, park, half-open canaries, close; fail_fast."""

from __future__ import annotations

import asyncio
from typing import Any

from execplan.executor.decide import breaker as cb
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.worker import TaskContext

from .conftest import RUN, Env, task_kinds

BREAKER = """
name: breaker
tasks:
  - id: a
    type: t.dep
    retry: {max_attempts: 3, initial_interval: 10ms}
    circuit_breaker: {failure_threshold: 2, open_for: 400ms, half_open_max_calls: 1}
outputs: {v: "${{ tasks.a.output }}"}
"""


class Dependency:
    """A task type whose backend is down until the test says otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def handle(self, inputs: dict[str, Any], ctx: TaskContext) -> int:
        self.calls += 1
        if self.down:
            raise RuntimeError("backend down")
        return ctx.attempt


async def _state(env: Env) -> tuple[str, int, int]:
    (status,) = await env.client.list_circuit_breakers(["t.dep"])
    name = pb.BreakerState.Name(status.state).removeprefix("BREAKER_STATE_").lower()
    return name, status.consecutive_failures, status.parked_tasks


async def _until_state(env: Env, wanted: str, parked: int | None = None) -> None:
    async with asyncio.timeout(10):
        while True:
            statuses = await env.client.list_circuit_breakers(["t.dep"])
            if statuses:
                name, _, count = await _state(env)
                if name == wanted and (parked is None or count == parked):
                    return
            await asyncio.sleep(0.02)


async def test_open_breaker_parks_then_canary_closes_it(env: Env) -> None:
    dep = Dependency()
    env.worker({"t.dep": dep.handle})
    opener = await env.start(BREAKER)
    await _until_state(env, "open", parked=1)  # its third attempt is parked
    assert await _state(env) == ("open", 2, 1)
    stored = None
    async with asyncio.timeout(5):
        while stored is None:  # transitions are written in the background
            await asyncio.sleep(0.01)
            stored = await env.executor.engine.store.get_kv(cb.NAMESPACE, "t.dep")
    assert cb.decode("t.dep", stored).state == cb.OPEN
    parked = [await env.start(BREAKER) for _ in range(2)]
    await _until_state(env, "open", parked=3)
    calls_while_open = dep.calls
    dep.down = False
    for execution_id in [opener, *parked]:
        done = await env.finish(execution_id)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, task_kinds(
            await env.history(execution_id), "a"
        )
    # The opener spent two attempts, was parked, and its third attempt was a canary.
    events = await env.history(opener)
    assert task_kinds(events, "a") == [
        *RUN,
        "task_failed",
        "task_retry_scheduled",
        "timer_scheduled",
        "timer_fired",
        *RUN,
        "task_failed",
        "task_retry_scheduled",
        "timer_scheduled",
        "timer_fired",
        "task_queued",
        "task_parked",
        "task_unparked",
        "task_dispatched",
        "task_started",
        "task_succeeded",
    ]
    for execution_id in parked:
        events = await env.history(execution_id)
        assert task_kinds(events, "a") == [
            "task_queued",
            "task_parked",
            "task_unparked",
            "task_dispatched",
            "task_started",
            "task_succeeded",
        ]
        # Parking spent no attempt.
        assert [
            e.task_dispatched.token.attempt for e in events if e.HasField("task_dispatched")
        ] == [1]
    assert dep.calls == calls_while_open + 3
    assert await _state(env) == ("closed", 0, 0)
    transitions = env.executor.engine.breakers.transitions
    assert transitions == {("t.dep", "open"): 1, ("t.dep", "half_open"): 1, ("t.dep", "closed"): 1}


ONE_SHOT = BREAKER.replace("max_attempts: 3", "max_attempts: 1")


async def test_failed_canary_reopens_the_breaker(env: Env) -> None:
    dep = Dependency()
    env.worker({"t.dep": dep.handle})
    for _ in range(2):
        await env.finish(await env.start(ONE_SHOT))
    await _until_state(env, "open")
    canary, waiting = await env.start(ONE_SHOT), await env.start(ONE_SHOT)
    await _until_state(env, "open", parked=2)
    done = await env.finish(canary)  # half-opens after 400 ms; the canary fails
    assert done.state == ex.EXECUTION_STATE_FAILED
    assert task_kinds(await env.history(canary), "a") == [
        "task_queued",
        "task_parked",
        "task_unparked",
        "task_dispatched",
        "task_started",
        "task_failed",
    ]
    assert (await _state(env))[0] == "open"
    assert (await _state(env))[2] == 1  # the other one is still parked
    dep.down = False
    done = await env.finish(waiting)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert task_kinds(await env.history(waiting), "a") == [
        "task_queued",
        "task_parked",
        "task_unparked",
        "task_dispatched",
        "task_started",
        "task_succeeded",
    ]
    assert env.executor.engine.breakers.transitions == {
        ("t.dep", "open"): 2,
        ("t.dep", "half_open"): 2,
        ("t.dep", "closed"): 1,
    }


FAIL_FAST = """
name: breaker-fail-fast
tasks:
  - id: a
    type: t.dep
    retry: {max_attempts: 1}
    circuit_breaker: {failure_threshold: 1, open_for: 1m, on_open: fail_fast}
    fallback: {type: t.cached}
outputs: {v: "${{ tasks.a.output }}"}
"""


async def test_fail_fast_breaker_goes_to_the_fallback(env: Env) -> None:
    dep = Dependency()

    async def cached(inputs: dict[str, Any]) -> str:
        return "cached"

    env.worker({"t.dep": dep.handle, "t.cached": cached})
    first = await env.finish(await env.start(FAIL_FAST))
    assert first.outputs["v"] == "cached"  # failed, then its fallback ran
    await _until_state(env, "open")
    execution_id = await env.start(FAIL_FAST)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["v"] == "cached"
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [
        "task_queued",
        "task_failed",
        "task_queued:fallback",
        "task_dispatched:fallback",
        "task_started:fallback",
        "task_succeeded:fallback",
    ]
    failed = next(e.task_failed for e in events if e.HasField("task_failed"))
    assert failed.error.type == "CircuitOpen" and not failed.error.retryable
    assert dep.calls == 1  # only the first execution reached the backend


RATE = """
name: breaker-rate
tasks:
  - id: a
    type: t.dep
    retry: {max_attempts: 1}
    circuit_breaker: {failure_threshold: 4, failure_rate_threshold: 0.5, window: 10s, open_for: 1m}
"""


async def test_failure_rate_over_a_window_opens_the_breaker(env: Env) -> None:
    outcomes = iter([True, False, True, False])  # never 4 in a row, but 50 % failures

    async def alternate(inputs: dict[str, Any]) -> str:
        if next(outcomes):
            raise RuntimeError("flaky")
        return "ok"

    env.worker({"t.dep": alternate}, slots=1)
    for _ in range(3):
        await env.finish(await env.start(RATE))
    assert (await _state(env))[0] == "closed"
    await env.finish(await env.start(RATE))
    await _until_state(env, "open")
