"""kill -9 of the executor during a run of 200 executions, three times."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from execplan.client import ExecutorClient, UnavailableError
from execplan.executor.decide.evolve import evolve
from execplan.executor.plan_view import decode_plan
from execplan.executor.state import new_state
from execplan.executor.view import encode_execution
from execplan.v1 import events_pb2
from execplan.v1 import execution_pb2 as ex

from .harness import DIAMOND, Cluster, expected_total

COUNT = 200
KILLS = 3


async def _start(client: ExecutorClient, x: int, retried: list[int]) -> str:
    """StartExecution until OK; retries use the same request_id."""
    while True:
        try:
            async with asyncio.timeout(5):
                response = await client.start(source=DIAMOND, inputs={"x": x}, request_id=f"r-{x}")
            return response.execution_id
        except (UnavailableError, TimeoutError):
            retried.append(x)
            await asyncio.sleep(0.05)


async def _history(client: ExecutorClient, execution_id: str) -> list[events_pb2.ExecutionEvent]:
    while True:
        try:
            return [e async for e in client.history(execution_id)]
        except UnavailableError:
            await asyncio.sleep(0.1)


def check_dispatches(events: list[events_pb2.ExecutionEvent]) -> int:
    """Every dispatch beyond the first of a (task, phase, attempt) is a recorded re-lease;
    every later attempt follows a recorded failure of the one before. Returns re-leases."""
    dispatched: Counter[tuple[str, int, int]] = Counter()
    requeued: Counter[tuple[str, int, int]] = Counter()
    failed: set[tuple[str, int, int]] = set()
    for event in events:
        kind = event.WhichOneof("kind")
        body = getattr(event, kind or "")
        if kind in ("task_dispatched", "task_requeued", "task_failed", "task_timed_out"):
            key = (body.task_id, body.phase, body.token.attempt)
        if kind == "task_dispatched":
            assert dispatched[key] == requeued[key], f"unrecorded re-dispatch of {key}"
            if key[2] > 1:
                assert (key[0], key[1], key[2] - 1) in failed, f"attempt without failure {key}"
            dispatched[key] += 1
        elif kind == "task_requeued":
            assert body.reason, "a re-lease records its reason"
            requeued[key] += 1
        elif kind in ("task_failed", "task_timed_out"):
            failed.add(key)
    return sum(requeued.values())


async def test_kill_dash_nine_three_times_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    rng = random.Random(20261126)
    cluster.start_server()
    starts_log = tmp_path / "starts.log"
    for name in ("w1", "w2"):
        cluster.start_worker(name, slots=8, delay=0.02, starts=starts_log)
    began = time.monotonic()
    acknowledged: dict[int, str] = {}
    retried: list[int] = []
    acknowledged_at_kill: list[int] = []
    async with ExecutorClient(cluster.address) as client:

        async def start_all() -> None:
            for x in range(COUNT):
                acknowledged[x] = await _start(client, x, retried)
                await asyncio.sleep(0.03)

        starter = asyncio.create_task(start_all())
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.6, 1.6))
            acknowledged_at_kill.append(len(acknowledged))
            cluster.kill_server()  # SIGKILL, at whatever moment this is
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            cluster.start_server()  # same port, same db; workers reconnect themselves
        await starter
        assert len(acknowledged) == COUNT

        async def finished(execution_id: str) -> ex.Execution:
            async for _ in _watch(client, execution_id):
                pass
            while True:
                try:
                    return await client.get(execution_id)
                except UnavailableError:
                    await asyncio.sleep(0.1)

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(finished(e) for e in acknowledged.values()))
        listed = [e async for e in client.list()]
        plan = decode_plan(await client.get_plan(results[0].plan_id))
        releases = 0
        for x, execution in enumerate(results):
            assert execution.state == ex.EXECUTION_STATE_SUCCEEDED, (x, execution.error)
            assert execution.outputs["total"] == expected_total(x)
            events = await _history(client, execution.execution_id)
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert events[-1].HasField("execution_completed")
            succeeded = Counter(
                e.task_succeeded.task_id for e in events if e.HasField("task_succeeded")
            )
            assert succeeded == dict.fromkeys("abcd", 1)
            releases += check_dispatches(events)
            replayed = new_state(execution.execution_id, plan)
            for event in events:
                evolve(replayed, event)
            assert encode_execution(replayed) == execution  # state is a fold of the log
        # Nothing acknowledged lost, nothing started twice for one request_id.
        assert sorted(e.execution_id for e in listed) == sorted(acknowledged.values())
        assert len(set(acknowledged.values())) == COUNT
        # Workers ran each (attempt, lease epoch) at most once.
        runs = Counter(tuple(line.split()[1:3]) for line in starts_log.read_text().splitlines())
        assert max(runs.values()) == 1, [k for k, n in runs.items() if n > 1][:5]
    # Every kill landed while executions were still being started, i.e. mid-run.
    assert all(n < COUNT for n in acknowledged_at_kill), acknowledged_at_kill
    elapsed = time.monotonic() - began
    print(
        f"\ncrash test: {KILLS} kills (after {acknowledged_at_kill} starts), {COUNT} executions, "
        f"{len(retried)} start retries on UNAVAILABLE, {releases} re-leases, "
        f"{sum(runs.values())} attempt runs for {4 * COUNT} tasks, {elapsed:.1f}s"
    )


async def _watch(
    client: ExecutorClient, execution_id: str
) -> AsyncIterator[events_pb2.ExecutionEvent]:
    async for event in client.watch(execution_id):
        yield event
