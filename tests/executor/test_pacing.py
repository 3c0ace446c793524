"""A worker that does not ack cannot starve a task type (executor/runtime/pacing.py).

The pacing window on its own, then the reported case end to end: a 64-slot worker
that registers and never acks, next to a healthy SDK worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from execplan.executor.runtime.pacing import (
    INITIAL_WINDOW,
    MAX_PROBATION_MS,
    PROBATION_MS,
    QUARANTINE_AFTER,
    Pace,
)
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws

if TYPE_CHECKING:
    from tests.support.raw_worker import RawWorker
    from tests.support.server import Env
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.raw_worker import RawWorker
    from support.server import Env

DEADLINE = 1_000


def test_a_new_worker_starts_small_and_grows_by_one_per_ack() -> None:
    pace = Pace.start(64)
    assert pace.limit(64) == INITIAL_WINDOW
    assert Pace.start(2).limit(2) == 2
    for _ in range(100):
        pace.acked(64)
    assert pace.limit(64) == 64  # never above the registered slots
    assert pace.keeping_up


def test_misses_halve_once_per_deadline_then_quarantine_with_growing_probation() -> None:
    pace = Pace(window=64)
    assert pace.missed(0, DEADLINE) == 0
    assert (pace.window, pace.misses) == (32, 1)
    # The rest of the same burst expires within the deadline: no further cut.
    assert pace.missed(DEADLINE - 1, DEADLINE) == 0
    assert pace.window == 32
    assert not pace.keeping_up
    now = DEADLINE
    assert pace.missed(now, DEADLINE) == 0
    assert (pace.window, pace.misses) == (16, 2)
    now += DEADLINE
    assert QUARANTINE_AFTER == 3
    assert pace.missed(now, DEADLINE) == PROBATION_MS
    assert pace.window == 0  # no dispatch during the probation
    pace.probation_over()
    assert pace.window == 1  # one probe
    now += PROBATION_MS + DEADLINE
    assert pace.missed(now, DEADLINE) == 2 * PROBATION_MS  # the probe missed too
    probations = []
    for _ in range(10):
        pace.probation_over()
        now += MAX_PROBATION_MS + DEADLINE
        probations.append(pace.missed(now, DEADLINE))
    assert probations[-1] == MAX_PROBATION_MS
    # One timely ack: back to keeping up, and the window grows again.
    pace.probation_over()
    pace.acked(64)
    assert pace.keeping_up and pace.window == 2
    pace.missed(now + MAX_PROBATION_MS, DEADLINE)
    assert pace.window == 1 and pace.misses == 1  # a fresh count, no quarantine


CHAIN = """
name: paced
tasks:
  - {id: a, type: s.work}
  - {id: b, type: s.work, depends_on: [a]}
  - {id: c, type: s.work, depends_on: [b]}
"""


async def test_a_worker_that_never_acks_does_not_starve_the_task_type(env: Env) -> None:
    """With the ack deadline of 1 s (tests/support/server.FAST); the reported case
    took 500 dispatches and finished 0 of 20 executions in 120 s."""
    never = ws.WorkerRegistration(worker_id="w-never-acks", task_types=["s.work"], slots=64)
    async with RawWorker.open(env.channel, never) as bad:
        await bad.registered()

        async def keep_talking() -> None:  # so the silence rule does not drop it
            while True:
                bad.send(ws.ConnectRequest())
                await asyncio.sleep(0.5)

        talker = asyncio.create_task(keep_talking())
        try:
            began = time.monotonic()
            ids = [await env.start(CHAIN) for _ in range(20)]
            await bad.dispatches(1)  # it was alone: it got the first tasks

            async def work(inputs: dict[str, Any]) -> str:
                await asyncio.sleep(0.1)
                return "done"

            env.worker({"s.work": work}, slots=4, worker_id="w-healthy")
            done = [await env.finish(i, within=60) for i in ids]
            elapsed = time.monotonic() - began
            listed = {w.worker_id: w for w in await env.client.list_workers(["s.work"])}
        finally:
            talker.cancel()
    assert [d.state for d in done] == [ex.EXECUTION_STATE_SUCCEEDED] * 20
    # A loaded 2-core box: generous. Unpaced, none of them finished in 120 s.
    print(
        f"20 executions in {elapsed:.1f} s; {len(bad.all_dispatches())} dispatches to w-never-acks"
    )
    assert elapsed < 40, elapsed
    # Four at first, then fewer and fewer, then a probe per probation.
    assert len(bad.all_dispatches()) <= 12, len(bad.all_dispatches())
    # Operators see it: ListWorkers shows what each may hold now.
    assert listed["w-healthy"].capacity == 4
    assert listed["w-never-acks"].capacity < 4
