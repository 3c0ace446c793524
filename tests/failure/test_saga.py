"""Saga compensation (reverse completion order, own retries, COMPENSATION_FAILED,
compensate on cancel) and auto-pause after consecutive failures."""

from __future__ import annotations

import asyncio
from typing import Any

from execplan.v1 import execution_pb2 as ex
from execplan.worker import NonRetryableError, TaskContext

from .conftest import RUN, Env, execution_kinds, task_kinds

COMPENSATE = [
    "task_queued:compensation",
    "task_dispatched:compensation",
    "task_started:compensation",
]

SAGA = """
name: saga
on_failure: compensate
inputs: {ship_fail: {type: boolean, default: true}, refund_fails: {type: integer, default: 1}}
tasks:
  - id: reserve
    type: s.reserve
    compensation: {type: s.release, inputs: {what: "${{ tasks.reserve.output }}"}}
  - id: charge
    type: s.charge
    depends_on: [reserve]
    compensation:
      type: s.refund
      inputs: {fails: "${{ workflow.inputs.refund_fails }}"}
      retry: {max_attempts: 2, initial_interval: 10ms}
  - id: ship
    type: s.ship
    depends_on: [charge]
    inputs: {fail: "${{ workflow.inputs.ship_fail }}"}
"""


class Shop:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.keys: list[str] = []
        self.hold = asyncio.Event()
        self.hold.set()

    def handlers(self) -> dict[str, Any]:
        async def reserve(inputs: dict[str, Any]) -> str:
            self.log.append("reserve")
            return "r-1"

        async def charge(inputs: dict[str, Any]) -> str:
            self.log.append("charge")
            await self.hold.wait()
            return "c-1"

        async def ship(inputs: dict[str, Any]) -> str:
            self.log.append("ship")
            if inputs["fail"]:
                raise NonRetryableError("no courier")
            return "s-1"

        async def release(inputs: dict[str, Any], ctx: TaskContext) -> str:
            self.log.append(f"release {inputs['what']}")
            self.keys.append(ctx.idempotency_key)
            return "released"

        async def refund(inputs: dict[str, Any], ctx: TaskContext) -> str:
            self.log.append(f"refund #{ctx.attempt}")
            self.keys.append(ctx.idempotency_key)
            if ctx.attempt <= int(inputs["fails"]):
                raise RuntimeError("gateway timeout")
            return "refunded"

        return {
            "s.reserve": reserve,
            "s.charge": charge,
            "s.ship": ship,
            "s.release": release,
            "s.refund": refund,
        }


async def test_compensation_runs_in_reverse_order_with_its_own_retries(env: Env) -> None:
    shop = Shop()
    env.worker(shop.handlers())
    execution_id = await env.start(SAGA)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_COMPENSATED
    assert shop.log == ["reserve", "charge", "ship", "refund #1", "refund #2", "release r-1"]
    assert shop.keys == [
        f"{execution_id}/charge/compensation/1",
        f"{execution_id}/charge/compensation/2",
        f"{execution_id}/reserve/compensation/1",
    ]
    events = await env.history(execution_id)
    assert execution_kinds(events) == [
        "execution_started",
        "compensation_started",
        "execution_completed",
    ]
    assert task_kinds(events, "ship") == [*RUN, "task_failed"]
    assert task_kinds(events, "charge") == [
        *RUN,
        "task_succeeded",
        *COMPENSATE,
        "task_failed:compensation",
        "task_retry_scheduled:compensation",
        "timer_scheduled",
        "timer_fired",
        *COMPENSATE,
        "task_succeeded:compensation",
    ]
    assert task_kinds(events, "reserve") == [
        *RUN,
        "task_succeeded",
        *COMPENSATE,
        "task_succeeded:compensation",
    ]
    started = next(e.compensation_started for e in events if e.HasField("compensation_started"))
    assert list(started.task_ids) == ["charge", "reserve"]


async def test_a_compensation_failing_for_good_ends_compensation_failed(env: Env) -> None:
    shop = Shop()
    env.worker(shop.handlers())
    execution_id = await env.start(SAGA, {"refund_fails": 5})
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_COMPENSATION_FAILED
    assert "gateway timeout" in done.error.message
    events = await env.history(execution_id)
    assert task_kinds(events, "charge") == [
        *RUN,
        "task_succeeded",
        *COMPENSATE,
        "task_failed:compensation",
        "task_retry_scheduled:compensation",
        "timer_scheduled",
        "timer_fired",
        *COMPENSATE,
        "task_failed:compensation",
    ]
    assert task_kinds(events, "reserve") == [*RUN, "task_succeeded"]  # never reached
    assert "release r-1" not in shop.log


async def test_cancel_of_a_compensating_workflow_compensates(env: Env) -> None:
    shop = Shop()
    shop.hold.clear()  # charge hangs until cancelled
    env.worker(shop.handlers())
    execution_id = await env.start(SAGA, {"ship_fail": False})
    async with asyncio.timeout(10):
        while "charge" not in shop.log:  # noqa: ASYNC110 - waiting on the worker
            await asyncio.sleep(0.01)
    await env.client.cancel(execution_id, "customer changed their mind")
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_CANCELLED
    assert shop.log == ["reserve", "charge", "release r-1"]
    events = await env.history(execution_id)
    assert execution_kinds(events) == [
        "execution_started",
        "execution_cancel_requested",
        "compensation_started",
        "execution_completed",
    ]
    assert task_kinds(events, "charge") == [*RUN, "task_cancelled"]
    assert task_kinds(events, "ship") == ["task_cancelled"]
    assert task_kinds(events, "reserve") == [
        *RUN,
        "task_succeeded",
        *COMPENSATE,
        "task_succeeded:compensation",
    ]


AUTO_PAUSE = """
name: auto-pause
on_failure: continue
pause_after_failures: 2
tasks:
  - {id: f1, type: p.fail}
  - {id: f2, type: p.fail, depends_on: [f1], trigger: all_done}
  - {id: slow, type: p.slow}
  - {id: after, type: p.ok, depends_on: [slow]}
"""


async def test_auto_pause_after_consecutive_failures_and_resume(env: Env) -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def fail(inputs: dict[str, Any]) -> None:
        raise NonRetryableError("broken")

    async def slow(inputs: dict[str, Any]) -> str:
        await release.wait()
        return "slow"

    async def ok(inputs: dict[str, Any], ctx: TaskContext) -> str:
        ran.append(ctx.task_id)
        return "ok"

    env.worker({"p.fail": fail, "p.slow": slow, "p.ok": ok})
    execution_id = await env.start(AUTO_PAUSE)

    async def state() -> ex.Execution:
        return await env.client.get(execution_id)

    async with asyncio.timeout(10):
        while (await state()).state != ex.EXECUTION_STATE_PAUSED:  # noqa: ASYNC110 - polling the server
            await asyncio.sleep(0.02)
    release.set()  # the running attempt finishes while paused
    async with asyncio.timeout(10):
        while (await state()).tasks[2].state != ex.TASK_STATE_SUCCEEDED:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert ran == []  # `after` is ready but not dispatched
    assert (await state()).tasks[3].state == ex.TASK_STATE_QUEUED
    await env.client.resume(execution_id)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED  # continue: the failures still count
    assert ran == ["after"]
    events = await env.history(execution_id)
    assert execution_kinds(events) == [
        "execution_started",
        "execution_paused",
        "execution_resumed",
        "execution_completed",
    ]
    assert task_kinds(events, "after") == [*RUN, "task_succeeded"]
    resumed = next(e.sequence for e in events if e.HasField("execution_resumed"))
    dispatched = next(
        e.sequence
        for e in events
        if e.HasField("task_dispatched") and e.task_dispatched.task_id == "after"
    )
    assert dispatched > resumed
