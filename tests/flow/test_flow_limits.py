"""Concurrency limits and rate limits with real processes (`execplan serve` and two
`execplan worker` processes): what the workers measured, and what `get` and
`execplan limits` show while tasks wait.

- N executions competing for a key limit of 2 never run more than 2 at once, and a
  second key is not held up by the first;
- a 10/s bucket holds 10/s within 10% over 5 s;
- a simulated 429 with a retry-after pauses that key for every task using it;
- a server bucket changed while tasks wait for it lets them go at once;
- limits and buckets survive a SIGKILL of the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from execplan.client import ExecutorClient
from execplan.v1 import execution_pb2 as ex

if TYPE_CHECKING:
    from tests.support.flow_rig import FlowRig
else:
    from support.flow_rig import FlowRig

LIMITED = """
name: limited
inputs:
  model: {type: string}
  ms: {type: integer, default: 300}
tasks:
  - id: call
    type: flow.call
    inputs: {model: "${{ workflow.inputs.model }}", ms: "${{ workflow.inputs.ms }}"}
    limit: {key: "inputs.model", max: 2}
"""

TICKS = """
name: ticks
tasks:
""" + "".join(
    f"  - {{id: t{i}, type: flow.tick, rate_limits: [{{name: ten-per-second}}]}}\n"
    for i in range(70)
)

THROTTLED = """
name: throttled
inputs:
  throttle: {type: boolean, default: false}
tasks:
  - id: call
    type: flow.call
    inputs: {model: m1, throttle: "${{ workflow.inputs.throttle }}", after: 2, ms: 10}
    rate_limits: [{name: api, key: "inputs.model"}]
    retry: {max_attempts: 3, initial_interval: 10ms}
"""


async def until(probe: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not await probe():  # noqa: ASYNC110 - polling the server over gRPC
            await asyncio.sleep(0.05)


async def finished(client: ExecutorClient, execution_id: str, within: float = 60) -> ex.Execution:
    async with asyncio.timeout(within):
        async for event in client.watch(execution_id):
            if event.HasField("execution_completed"):
                break
    return await client.get(execution_id)


def peak(rig: FlowRig, key: str) -> int:
    return max((int(line.split()[1]) for line in rig.lines("concurrency.log")
                if line.split()[0] == key), default=0)  # fmt: skip


async def test_a_key_limit_of_2_never_runs_more_than_2(rig: FlowRig) -> None:
    rig.start_server()
    rig.worker("w1", "--slots", "8")
    rig.worker("w2", "--slots", "8")
    async with ExecutorClient(rig.address) as client:
        ids = [
            (await client.start(source=LIMITED, inputs={"model": "m"})).execution_id
            for _ in range(12)
        ]

        async def waiting() -> bool:
            limits = await client.list_limits()
            return any("is full" in w.waiting.message for w in limits.waiting)

        await until(waiting)
        limits = await client.list_limits()
        (level,) = [c for c in limits.concurrency_limits if c.key == "m"]
        assert level.name == "flow.call" and level.max == 2 and level.in_use <= 2
        assert level.waiting >= 1
        waiter = next(w for w in limits.waiting if "is full" in w.waiting.message)
        run = next(t for t in (await client.get(waiter.execution_id)).tasks)
        assert run.state == ex.TASK_STATE_QUEUED and run.waiting.name == "flow.call"
        assert run.status_message == "concurrency limit flow.call[m] is full (2 running)"

        # Another key is not held up by the full one.
        other = (await client.start(source=LIMITED, inputs={"model": "x", "ms": 10})).execution_id
        started = time.monotonic()
        assert (await finished(client, other)).state == ex.EXECUTION_STATE_SUCCEEDED
        assert time.monotonic() - started < 3.0
        for execution_id in ids:
            assert (await finished(client, execution_id)).state == ex.EXECUTION_STATE_SUCCEEDED
        assert peak(rig, "m") == 2  # reached, never exceeded (measured in the workers)
        assert (await client.get(ids[-1])).tasks[0].attempt == 1  # waiting spent no attempt
        workers = {line.split()[0] for line in rig.lines("concurrency.log")}
        assert workers == {"m", "x"}


FANNED = """
name: fanned
tasks:
  - id: call
    type: flow.call
    for_each: "${{ [1, 2, 3, 4, 5, 6] }}"
    inputs: {model: fan, ms: 300, n: "${{ item }}"}
    limit: {key: "inputs.model", max: 2}
"""


async def test_for_each_instances_each_hold_their_own_slot(rig: FlowRig) -> None:
    rig.start_server()
    rig.worker("w1", "--slots", "8")
    async with ExecutorClient(rig.address) as client:
        execution_id = (await client.start(source=FANNED)).execution_id
        done = await finished(client, execution_id)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        limits = await client.list_limits("flow.call")
        assert not limits.waiting  # every slot given back
    assert len(rig.lines("concurrency.log")) == 6
    assert peak(rig, "fan") == 2  # two at once: instances are not one holder


async def test_a_10_per_second_bucket_holds_its_rate(rig: FlowRig) -> None:
    rig.start_server()
    rig.worker("w1", "--slots", "16")
    async with ExecutorClient(rig.address) as client:
        # A burst of 2, not 1: a bucket that holds one token loses the time between
        # a token coming back and the next dispatch taking it (a few ms, tens under
        # load), which a steady 10/s cannot afford; with 2 that time is kept and the
        # rate is the bucket's alone (the first two ticks, at once, are before the window).
        await client.set_rate_limit("ten-per-second", 10, 1000, burst=2)
        execution_id = (await client.start(source=TICKS)).execution_id
        assert (await finished(client, execution_id, 30)).state == ex.EXECUTION_STATE_SUCCEEDED
    ticks = sorted(float(t) for t in rig.lines("ticks.log"))
    assert len(ticks) == 70
    window = [t for t in ticks if ticks[0] + 0.5 <= t < ticks[0] + 5.5]
    rate = len(window) / 5
    assert 9.0 <= rate <= 11.0, rate


async def test_a_429_with_retry_after_pauses_the_key(rig: FlowRig) -> None:
    rig.start_server()
    rig.worker("w1", "--slots", "8")
    async with ExecutorClient(rig.address) as client:
        await client.set_rate_limit("api", 100, 1000, burst=100)
        first = (await client.start(source=THROTTLED, inputs={"throttle": True})).execution_id

        async def throttled() -> bool:
            return bool(rig.lines("throttled.log"))

        await until(throttled)
        at = float(rig.lines("throttled.log")[0].split()[0])
        second = (await client.start(source=THROTTLED)).execution_id

        async def paused() -> bool:
            run = (await client.get(second)).tasks[0]
            return run.waiting.kind == ex.WAIT_KIND_RATE_LIMIT

        await until(paused)
        run = (await client.get(second)).tasks[0]
        assert run.waiting.name == "api" and run.waiting.key == "m1"
        limits = await client.list_limits("api")
        (key,) = limits.rate_limits[0].keys
        assert key.key == "m1" and key.HasField("paused_until")
        for execution_id in (first, second):
            assert (await finished(client, execution_id)).state == ex.EXECUTION_STATE_SUCCEEDED
        failed = (await client.get(first)).tasks[0].attempts[0].error
        assert failed.type == "RateLimited" and failed.retry_after.seconds == 2
    calls = [float(line.split()[2]) for line in rig.lines("concurrency.log")]
    assert len(calls) == 2
    assert min(calls) >= at + 1.9, (at, calls)  # both waited out the provider's 2 s


SLOW = """
name: slow
tasks:
""" + "".join(
    f"  - {{id: t{i}, type: flow.tick, rate_limits: [{{name: slow}}]}}\n" for i in range(3)
)


async def test_a_bucket_changed_while_tasks_wait_applies_at_once(rig: FlowRig) -> None:
    rig.start_server()
    rig.worker("w1", "--slots", "8")
    async with ExecutorClient(rig.address) as client:
        await client.set_rate_limit("slow", 1, 60_000, burst=1)  # one a minute
        execution_id = (await client.start(source=SLOW)).execution_id

        async def two_wait() -> bool:
            limits = await client.list_limits("slow")
            return len(limits.waiting) == 2 and len(rig.lines("ticks.log")) == 1

        await until(two_wait)
        waits = [w.waiting for w in (await client.list_limits("slow")).waiting]
        assert {w.kind for w in waits} == {ex.WAIT_KIND_RATE_LIMIT}
        assert all(w.name == "slow" and "is empty for" in w.message for w in waits)
        assert all(w.until.ToMilliseconds() - w.since.ToMilliseconds() > 30_000 for w in waits)
        changed = time.time()
        await client.set_rate_limit("slow", 100, 1000, burst=10)  # `execplan limits set`
        done = await finished(client, execution_id, 20)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED
        assert all(t.attempt == 1 for t in done.tasks)  # waiting spent no attempt
    ticks = sorted(float(t) for t in rig.lines("ticks.log"))
    assert len(ticks) == 3
    assert ticks[-1] - changed < 5, ticks[-1] - changed  # not the minute the old rate said


async def test_limits_and_buckets_survive_a_sigkill(rig: FlowRig) -> None:
    rig.start_server()
    rig.worker("w1", "--slots", "8")
    async with ExecutorClient(rig.address) as client:
        await client.set_rate_limit("slow", 1, 60_000, burst=1)
        source = LIMITED.replace("max: 2", "max: 1") + (
            "    rate_limits: [{name: slow, key: inputs.model}]\n"
        )
        first = (await client.start(source=source, inputs={"model": "k", "ms": 3000})).execution_id

        async def running() -> bool:
            return (await client.get(first)).tasks[0].state == ex.TASK_STATE_RUNNING

        await until(running)
    rig.kill_server()
    rig.start_server(listen=rig.address)
    async with ExecutorClient(rig.address) as client:
        second = (await client.start(source=source, inputs={"model": "k", "ms": 10})).execution_id

        async def waits() -> bool:
            run = (await client.get(second)).tasks[0]
            return run.waiting.kind != ex.WAIT_KIND_UNSPECIFIED

        await until(waits)
        run = (await client.get(second)).tasks[0]
        # The running attempt still holds the one slot, or the bucket is still empty:
        # both were kept through the SIGKILL.
        assert run.waiting.kind in (ex.WAIT_KIND_CONCURRENCY_LIMIT, ex.WAIT_KIND_RATE_LIMIT)
        assert (await finished(client, first)).state == ex.EXECUTION_STATE_SUCCEEDED
        limits = await client.list_limits("slow")
        assert limits.rate_limits[0].keys[0].tokens < 0.5

        async def rate_limited() -> bool:  # the slot is free now; the bucket is not
            run = (await client.get(second)).tasks[0]
            return run.waiting.kind == ex.WAIT_KIND_RATE_LIMIT

        await until(rate_limited, 10)
        assert (await client.get(second)).tasks[0].state == ex.TASK_STATE_QUEUED
    assert peak(rig, "k") == 1
