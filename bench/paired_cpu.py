"""Server and worker CPU per run of two checkouts, paired: finer than executor_bench can tell.

    .venv/bin/python bench/paired_cpu.py --workload w3 --runs 40 BEFORE_DIR AFTER_DIR

`bench/executor_bench.py --source A --source B` starts a fresh server per run and
reads its CPU in 10 ms clock ticks: a change worth 5% of W3's ~0.17 s hides in that
resolution and in the box's noise. Here both servers (with their workers) stay up,
runs alternate between them (A, B, A, B, ...: both see the same moments of load),
and each run's server CPU is the sum over the server's threads of /proc schedstat's
nanoseconds. Prints each side's median and mean and the mean of the paired
differences (B - A) with its standard error, for the server and, the same way, for
the two SDK worker processes together (a change to the Python worker SDK shows
there), and each side's median tasks/s. Unpack each commit with
`git archive COMMIT | tar -x -C DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import executor_bench as eb  # after the path: runs as a script


def process_cpu_ns(pid: int) -> int:
    """CPU of every thread of `pid` so far (threads that ended are not counted, so
    only differences over a run whose threads live on are meaningful)."""
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int(Path(f"/proc/{pid}/task/{thread}/schedstat").read_text().split()[0])
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="w3", choices=("w1", "w2", "w3"))
    parser.add_argument("--runs", type=int, default=40, help="pairs of runs")
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    sources: list[Path] = [args.before, args.after]
    cpu_ms: dict[Path, list[float]] = {source: [] for source in sources}
    worker_ms: dict[Path, list[float]] = {source: [] for source in sources}
    rates: dict[Path, list[float]] = {source: [] for source in sources}
    with contextlib.ExitStack() as stack:
        # One loop for every run: grpc.aio's completion poller stays bound to the loop
        # it started on, so a loop per run (asyncio.run) printed "Event loop is
        # closed" tracebacks once that loop was gone.
        runner = stack.enter_context(asyncio.Runner())
        clusters = {}
        for source in sources:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            clusters[source] = stack.enter_context(eb.cluster(directory, 2, 64, 1, source))
        for source in sources:  # warm-up: plan caches, connections, first allocations
            runner.run(eb.workload(args.workload, clusters[source], "warm"))
        for i in range(args.runs):
            for source in sources:
                cluster = clusters[source]
                pid = cluster.server.pid
                before = process_cpu_ns(pid)
                workers_before = sum(process_cpu_ns(w.pid) for w in cluster.workers)
                run = runner.run(eb.workload(args.workload, cluster, f"p{i}"))
                cpu_ms[source].append((process_cpu_ns(pid) - before) / 1e6)
                workers_after = sum(process_cpu_ns(w.pid) for w in cluster.workers)
                worker_ms[source].append((workers_after - workers_before) / 1e6)
                rates[source].append(run.tasks_per_s)
    print(f"# {args.workload}, {args.runs} paired runs, load average {os.getloadavg()}")
    for what, series in (("server", cpu_ms), ("workers", worker_ms)):
        for source in sources:
            runs = series[source]
            print(
                f"{source.name}: {what} CPU per run (warm-up included) median"
                f" {statistics.median(runs):.1f} ms, mean {statistics.mean(runs):.1f} ms"
            )
        print(f"{what}: paired difference (after - before): {_paired(series, sources)}")
    for source in sources:
        print(f"{source.name}: median {statistics.median(rates[source]):,.0f} tasks/s")
    return 0


def _paired(series: dict[Path, list[float]], sources: list[Path]) -> str:
    before, after = (series[source] for source in sources)
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    error = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return f"{statistics.mean(diffs):+.1f} ms (se {error:.1f})"


if __name__ == "__main__":
    sys.exit(main())
