"""StartExecution compiles a workflow on the way: a big one off the event loop, and the
cache of compiled plans is bounded in bytes, not only in entries."""

from __future__ import annotations

import asyncio
import json
import time

from execplan.v1 import plan_pb2
from execplan.v1 import planner_service_pb2 as planner_pb
from execplan.wire.executor_servicer import CachingCompiler, LocalCompiler


class _Counting:
    """A compiler whose plans are `size` bytes of description, counting its calls."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0

    async def compile(self, request: planner_pb.CompilePlanRequest) -> plan_pb2.ExecutionPlan:
        self.calls += 1
        return plan_pb2.ExecutionPlan(plan_id=request.source, description="x" * self.size)


def _request(n: int) -> planner_pb.CompilePlanRequest:
    return planner_pb.CompilePlanRequest(source=f"w{n}")


async def test_the_plan_cache_is_bounded_in_bytes() -> None:
    inner = _Counting(size=400)
    cache = CachingCompiler(inner, size=100, max_bytes=1_000)  # two plans fit
    for n in (1, 2, 1, 3, 1):
        await cache.compile(_request(n))
    # 1 and 2 fit; 3 evicts 2 (1 was used more recently); 1 is still cached.
    assert inner.calls == 3
    await cache.compile(_request(2))
    assert inner.calls == 4
    big = CachingCompiler(_Counting(size=5_000), max_bytes=1_000)
    for _ in range(3):
        await big.compile(_request(9))  # bigger than the whole cache: never kept
    assert big._inner.calls == 3  # type: ignore[attr-defined]


async def test_a_big_workflow_compiles_off_the_event_loop() -> None:
    """StartExecution(source=...) in `execplan serve` compiles through LocalCompiler:
    a 10k-task chain takes a good fraction of a second, which inline would stall
    every other call on the loop for all of it."""
    tasks = [
        {"id": f"t{i}", "type": "x", "depends_on": [f"t{i - 1}"] if i else []}
        for i in range(10_000)
    ]
    request = planner_pb.CompilePlanRequest(source=json.dumps({"name": "big", "tasks": tasks}))
    compiling = asyncio.ensure_future(LocalCompiler().compile(request))
    started = last = time.monotonic()
    worst = 0.0
    while not compiling.done():
        await asyncio.sleep(0.002)
        now = time.monotonic()
        worst, last = max(worst, now - last), now
    took = time.monotonic() - started
    assert len((await compiling).nodes) == 10_000
    assert worst < max(0.5 * took, 0.05), f"loop stalled {worst:.3f}s of a {took:.3f}s compile"
