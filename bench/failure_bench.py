"""Cost of failure handling: 1,000 tasks that each fail twice and then succeed, against
the same workflow failing never. A real server and real worker processes.

    .venv/bin/python bench/failure_bench.py [--repeat 3] [--workers 2] [--slots 64]
        [--interval 1ms] [--dir /path/on/real/disk]

Both workloads are one execution of 1,000 independent tasks (fan-out 1 -> 1000 -> 1,
as w1 of executor_bench.py) with `retry: {max_attempts: 3, initial_interval: 1ms}`.
In the failing one, attempt 1 and 2 of every middle task raise a retryable error, so
each task costs three dispatches, two failures, two durable backoff timers
(timer_scheduled + timer_fired) and two retry events instead of one dispatch.
tasks/s = 1002 / wall; the ratio is failing-never tasks/s over failing-twice tasks/s.
Reuses executor_bench.py's cluster (fresh `execplan serve` on SQLite per run) with
this file as the worker script: run with an ADDRESS argument it is a worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execplan.client import ExecutorClient
from execplan.worker import TaskContext, Worker

from bench import executor_bench as eb

WIDTH = 1000
SELF = Path(__file__).resolve()


def flaky_yaml(name: str, fail: int, interval: str) -> str:
    lines = [
        f"name: {name}",
        f"defaults: {{retry: {{max_attempts: 3, initial_interval: {interval}}}}}",
        "tasks:",
        "  - {id: start, type: bench.noop}",
    ]
    for i in range(WIDTH):
        lines.append(
            f"  - {{id: t{i}, type: bench.flaky, depends_on: [start], inputs: {{fail: {fail}}}}}"
        )
    ids = ", ".join(f"t{i}" for i in range(WIDTH))
    lines.append(f"  - {{id: end, type: bench.noop, depends_on: [{ids}]}}")
    return "\n".join(lines) + "\n"


# -- worker process ---------------------------------------------------------------------
async def noop(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {}


async def flaky(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    if ctx.attempt <= int(inputs.get("fail", 0)):
        raise ConnectionError(f"attempt {ctx.attempt} fails (injected)")
    return {}


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--instances", type=int, default=1)
    args = parser.parse_args(argv)
    worker = Worker(args.address, slots=args.slots)
    worker.task("bench.noop")(noop)
    worker.task("bench.flaky")(flaky)
    print("ready", flush=True)
    worker.run()


# -- driver -------------------------------------------------------------------------------
async def one_run(directory: Path, args: argparse.Namespace, fail: int, tag: str) -> float:
    eb.WORKER_SCRIPT = SELF
    with eb.cluster(directory, args.workers, args.slots, 1, None) as c:
        async with ExecutorClient(c.address) as client:
            await eb.warm_up(client, tag)
            name = f"flaky-{fail}-{tag}"
            wall, ids = await eb._run_executions(
                client, [flaky_yaml(name, fail, args.interval)], name
            )
            attempts = 0
            async for event in client.history(ids[0]):
                attempts += event.HasField("task_dispatched")
            expected = (WIDTH * (fail + 1)) + 2
            if attempts != expected:
                raise RuntimeError(f"{attempts} dispatches, expected {expected}")
            return (WIDTH + 2) / wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--interval", default="1ms", help="retry initial_interval")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    results: dict[int, list[float]] = {0: [], 2: []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in range(args.repeat):
            for fail in (0, 2):
                rate = await one_run(Path(tmp), args, fail, f"{n}")
                results[fail].append(rate)
                print(f"run {n}: fail={fail} {rate:,.0f} tasks/s", file=sys.stderr)
    never, twice = (statistics.median(results[k]) for k in (0, 2))
    print(f"machine: {eb.machine()}")
    print(f"interval {args.interval}, {args.workers} workers x {args.slots} slots")
    print("| workload | tasks/s (median, min-max) | attempts per task |")
    print("|---|---|---|")
    for fail, label in ((0, "failing never"), (2, "failing twice, then succeeding")):
        rates = results[fail]
        print(
            f"| {label} | {statistics.median(rates):,.0f} "
            f"({min(rates):,.0f}-{max(rates):,.0f}) | {fail + 1} |"
        )
    print(f"\nslowdown: {never / twice:.2f}x (tasks/s failing never / failing twice)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        worker_main(sys.argv[1:])  # started by executor_bench.cluster() as a worker
    else:
        asyncio.run(main())
