"""Append throughput of the SQLite store (group commit, synchronous=FULL).

    .venv/bin/python bench/store_bench.py [--seconds 2] [--runs 3] [--events 1] [--dir DIR]

For 1, 10 and 100 concurrent appenders (one execution each, `--events` ~200-byte
events per `append()` call, each caller awaiting its own durable commit), prints
appends/s (events/s = appends/s x events), the
mean group size and the p50/p99 append latency; the median of `--runs` runs. Use a
directory on the disk you will deploy on: tmpfs makes fsync free and the numbers
meaningless.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from execplan.store import Append, ExecutionRecord, SqliteStore, StoredEvent

PAYLOAD = b"x" * 200


@dataclass(frozen=True, slots=True)
class Result:
    appends_per_s: float
    mean_group: float
    p50_ms: float
    p99_ms: float


async def one_run(directory: Path, appenders: int, seconds: float, per_append: int) -> Result:
    store = SqliteStore(directory / f"bench-{appenders}-{time.monotonic_ns()}.db")
    await store.open()
    ids = [f"b{i}" for i in range(appenders)]
    await asyncio.gather(
        *(store.create_execution(ExecutionRecord(i, "p", "w", "RUNNING", 0, 0, 0), []) for i in ids)
    )
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    start_tx, start_ops = store.stats.transactions, store.stats.operations

    async def appender(execution_id: str) -> int:
        sequence = 0
        appends = 0
        while time.perf_counter() < deadline:
            batch = tuple(
                StoredEvent(execution_id, s, "Tick", s, PAYLOAD)
                for s in range(sequence + 1, sequence + per_append + 1)
            )
            sequence += per_append
            began = time.perf_counter()
            await store.append([Append(execution_id, batch)])
            latencies.append(time.perf_counter() - began)
            appends += 1
        return appends

    began = time.perf_counter()
    counts = await asyncio.gather(*(appender(i) for i in ids))
    elapsed = time.perf_counter() - began
    transactions = store.stats.transactions - start_tx
    operations = store.stats.operations - start_ops
    await store.close()
    latencies.sort()
    return Result(
        appends_per_s=sum(counts) / elapsed,
        mean_group=operations / max(transactions, 1),
        p50_ms=latencies[len(latencies) // 2] * 1e3,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1e3,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=1, help="events per append")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    print(f"# {platform.platform()}, Python {platform.python_version()}, {args.events} event(s)")
    print("| appenders | appends/s | mean group | p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for appenders in (1, 10, 100):
            runs = [
                await one_run(Path(tmp), appenders, args.seconds, args.events)
                for _ in range(args.runs)
            ]
            median = sorted(runs, key=lambda r: r.appends_per_s)[len(runs) // 2]
            print(
                f"| {appenders} | {median.appends_per_s:,.0f} | {median.mean_group:.1f} "
                f"| {median.p50_ms:.2f} | {median.p99_ms:.2f} |"
            )


if __name__ == "__main__":
    asyncio.run(main())
