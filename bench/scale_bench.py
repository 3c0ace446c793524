"""Memory and time at scale: many idle running executions, and one very large one.

A real `execplan serve` (durable SQLite, as `executor_bench.py` starts it) and real
worker processes (2 x 64 slots, a no-op handler), over loopback gRPC:

- **idle**: N executions (default 10,000) of `wait -> b -> c`, where `wait` is a
  `builtin.wait_for_event` without a timeout, so each execution is RUNNING with
  nothing to do and no timer. The plan is registered and one execution run through
  first (warm code paths, plan cached). Reported: the time to start all N (at most
  `--in-flight` StartExecution calls at a time), the server's VmRSS before and after
  (per execution: the difference over N, in KiB), then the time from sending every
  execution its event until all N succeeded (2 worker tasks each), and VmHWM.
- **large**: one execution of a fan-out 1 -> (T-2) -> 1 (default T = 50,000), sent as
  YAML source (the compile is inside the time): wall time to SUCCEEDED, tasks/s,
  server CPU seconds, VmHWM.

    .venv/bin/python bench/scale_bench.py                       # both, defaults
    .venv/bin/python bench/scale_bench.py --part idle --executions 10000
    .venv/bin/python bench/scale_bench.py --part large --tasks 50000 --source /tmp/snap

Results and the machine they were measured on are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execplan.client import ExecutorClient
from execplan.v1 import execution_pb2

from bench import executor_bench as eb

EVENT = "go"


def idle_yaml(name: str) -> str:
    return (
        f"name: {name}\n"
        "tasks:\n"
        f"  - {{id: wait, type: builtin.wait_for_event, inputs: {{event: {EVENT}}}}}\n"
        f"  - {{id: b, type: {eb.TASK_TYPE}, depends_on: [wait]}}\n"
        f"  - {{id: c, type: {eb.TASK_TYPE}, depends_on: [b]}}\n"
    )


def rss_kib(c: eb.Cluster) -> tuple[int, int]:
    """VmRSS, VmHWM of the server in KiB."""
    found = {}
    for line in Path(f"/proc/{c.server.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


async def bounded(calls: list[Callable[[], Awaitable[object]]], in_flight: int) -> list[object]:
    """Runs the calls with at most `in_flight` awaiting at a time; results in order."""
    results: list[object] = [None] * len(calls)
    next_call = iter(range(len(calls)))

    async def lane() -> None:
        for i in next_call:
            results[i] = await calls[i]()

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return results


class Terminal:
    """Counts executions of one workflow reaching a terminal state (WatchExecutions)."""

    def __init__(self, client: ExecutorClient, name: str) -> None:
        self._client = client
        self._name = name
        self.done: set[str] = set()
        self._target = 0
        self._reached = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Terminal:
        subscribed = asyncio.Event()

        async def watch() -> None:
            stream = self._client.watch_all(states=eb.TERMINAL, workflow_name=self._name)
            subscribed.set()
            async for execution in stream:
                if execution.state != execution_pb2.EXECUTION_STATE_SUCCEEDED:
                    raise RuntimeError(f"execution ended {execution.state}")
                self.done.add(execution.execution_id)
                if self._target and len(self.done) >= self._target:
                    self._reached.set()

        self._task = asyncio.create_task(watch())
        await subscribed.wait()
        await asyncio.sleep(0.3)  # let the server register the subscription
        return self

    async def reach(self, count: int, seconds: float) -> None:
        self._target = count
        if len(self.done) >= count:
            return
        assert self._task is not None
        reached = asyncio.create_task(self._reached.wait())
        await asyncio.wait({self._task, reached}, timeout=seconds, return_when="FIRST_COMPLETED")
        reached.cancel()
        if self._task.done() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]
        if len(self.done) < count:
            raise RuntimeError(f"{len(self.done)} of {count} executions ended in {seconds} s")

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def idle_part(c: eb.Cluster, executions: int, in_flight: int) -> list[str]:
    name = f"scale-idle-{time.monotonic_ns()}"
    source = idle_yaml(name)
    async with ExecutorClient(c.address) as client:
        await eb.warm_up(client, "scale")
        plan_id = (await client.register(source=source)).plan_id
        async with Terminal(client, name) as ended:
            first = (await client.start(plan_id=plan_id)).execution_id
            await client.send_event(first, EVENT)
            await ended.reach(1, 60)
        await asyncio.sleep(1.0)
        rss0, _ = rss_kib(c)
        cpu0 = c.cpu_seconds()
        began = time.perf_counter()
        started = await bounded(
            [lambda: client.start(plan_id=plan_id) for _ in range(executions)], in_flight
        )
        start_s = time.perf_counter() - began
        start_cpu = c.cpu_seconds() - cpu0
        ids = [r.execution_id for r in started]  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)
        rss1, hwm1 = rss_kib(c)
        async with Terminal(client, name) as ended:
            cpu0 = c.cpu_seconds()
            began = time.perf_counter()
            await bounded([partial(client.send_event, i, EVENT) for i in ids], in_flight)
            await ended.reach(executions, 1200)
            finish_s = time.perf_counter() - began
            finish_cpu = c.cpu_seconds() - cpu0
        await asyncio.sleep(1.0)
        rss2, hwm2 = rss_kib(c)
    per = (rss1 - rss0) / executions
    return [
        f"| idle: start {executions:,} executions of wait -> b -> c ({in_flight} calls in "
        f"flight) | {start_s:.1f} s ({executions / start_s:,.0f}/s) | server CPU "
        f"{start_cpu:.1f} s |",
        f"| idle: server VmRSS before / with {executions:,} running | {rss0 / 1024:.0f} / "
        f"{rss1 / 1024:.0f} MiB | **{per:.1f} KiB per running execution** |",
        f"| idle: events to all, until all {executions:,} SUCCEEDED ({2 * executions:,} worker "
        f"tasks) | {finish_s:.1f} s ({2 * executions / finish_s:,.0f} tasks/s) | server CPU "
        f"{finish_cpu:.1f} s |",
        f"| idle: server VmRSS / VmHWM after | {rss2 / 1024:.0f} / {max(hwm1, hwm2) / 1024:.0f}"
        " MiB | |",
    ]


async def large_part(c: eb.Cluster, tasks: int) -> list[str]:
    name = f"scale-large-{time.monotonic_ns()}"
    async with ExecutorClient(c.address) as client:
        await eb.warm_up(client, "scale")
        await asyncio.sleep(1.0)
        rss0, _ = rss_kib(c)
        cpu0 = c.cpu_seconds()
        wall, _ = await eb._run_executions(client, [eb.fan_out_yaml(name, tasks - 2)], name)
        cpu = c.cpu_seconds() - cpu0
        await asyncio.sleep(1.0)
        rss1, hwm = rss_kib(c)
    return [
        f"| large: one fan-out 1 -> {tasks - 2:,} -> 1 from source, until SUCCEEDED | "
        f"{wall:.1f} s ({tasks / wall:,.0f} tasks/s) | server CPU {cpu:.1f} s |",
        f"| large: server VmRSS before / after, VmHWM | {rss0 / 1024:.0f} / "
        f"{rss1 / 1024:.0f} MiB, **{hwm / 1024:.0f} MiB** | |",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("idle", "large", "all"), default="all")
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=None, help="where the db goes")
    parser.add_argument("--source", type=Path, default=None, help="run this checkout")
    args = parser.parse_args()
    print(f"# {eb.machine()}")
    print(f"# workers={args.workers} processes x {args.slots} slots, source={args.source}")
    print("| what | result | |\n|---|---:|---|")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        parts = ("idle", "large") if args.part == "all" else (args.part,)
        for part in parts:
            print(f"# load average before: {os.getloadavg()}", flush=True)
            with eb.cluster(Path(tmp), args.workers, args.slots, 1, args.source) as c:
                if part == "idle":
                    lines = await idle_part(c, args.executions, args.in_flight)
                else:
                    lines = await large_part(c, args.tasks)
            print("\n".join(lines), flush=True)
        print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
