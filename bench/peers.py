"""execplan against Dask distributed on the same three workloads, in one invocation.

    .venv/bin/pip install -e '.[bench]'          # Dask goes in the `bench` extra only
    .venv/bin/python bench/peers.py [--workload w1,w2,w3] [--repeat 5]
        [--dask-threads 1] [--dir /path/on/real/disk] [--json FILE] [--source CHECKOUT]

Each repeat runs every workload on Dask and then on execplan (the order flips every
repeat, so neither always runs on a box warmed or loaded by the other), each on a
fresh cluster, and prints medians (min-max) and the ratios of the medians.

- execplan exactly as `executor_bench.py` runs it: a fresh `execplan serve` on a
  new SQLite file (WAL, `synchronous=FULL`: every acknowledged event is fsynced),
  2 worker processes x 64 slots of the Python SDK with a no-op async handler, the
  workflow sent as YAML through the public client, completion seen on one
  WatchExecutions stream.
- Dask: `distributed.LocalCluster(n_workers=2, threads_per_worker=--dask-threads,
  processes=True)` (2 worker processes; the scheduler runs in its client's process,
  as LocalCluster does; each Dask run in a fresh process of its own, so neither
  side's client shares a process with the other's leftovers) and `Client.submit`
  chains of a no-op function returning {} (`pure=False`, so equal calls are not
  merged), submitted all at once. In memory:
  nothing is durable, a lost worker loses its results.

Both warm up first with a 64-wide fan-out on the same cluster (workers connected,
code paths warm). Wall time runs from just before the first submit / StartExecution
until the client has the final result / terminal state.

- w1: fan-out 1 -> 1000 -> 1; tasks/s = 1002 / wall.
- w2: a chain of 200; ms/step = wall / 200; step p50/p99 from the task end times
  (Dask: the task stream's compute `stop`; execplan: `recorded_at` of task_succeeded,
  millisecond resolution).
- w3: 200 independent a -> b -> c started at once; tasks/s = 600 / wall.

Ratios: W1/W3 execplan tasks/s over Dask's ("4.0x" = execplan four times the
throughput); W2 execplan ms/step over Dask's (0.25 = a step in a quarter of the time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import executor_bench as eb

WORKLOADS = ("w1", "w2", "w3")


@dataclass(slots=True)
class Result:
    wall_s: float
    tasks_per_s: float
    step_ms: float = 0.0
    step_p50_ms: float = 0.0
    step_p99_ms: float = 0.0


def _steps(wall: float, stops: list[float]) -> Result:
    """A W2 result from the chain's task end times (seconds or ms, as given in ms)."""
    gaps = sorted(b - a for a, b in itertools.pairwise(sorted(stops)))
    return Result(
        wall,
        200 / wall,
        step_ms=wall * 1e3 / 200,
        step_p50_ms=gaps[len(gaps) // 2],
        step_p99_ms=gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))],
    )


# -- Dask --------------------------------------------------------------------------------


def noop(*upstream: object) -> dict[str, Any]:
    """The task body on Dask: what execplan's no-op handler returns."""
    return {}


@contextlib.contextmanager
def dask_cluster(threads: int, directory: Path) -> Iterator[Any]:
    """A fresh 2-process LocalCluster and its Client (no dashboard)."""
    from distributed import Client, LocalCluster  # noqa: PLC0415 (the bench extra)

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            local_directory=str(directory),
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        yield client


def dask_fan_out(client: Any, width: int) -> float:
    began = time.perf_counter()
    root = client.submit(noop, pure=False)
    middle = [client.submit(noop, root, pure=False) for _ in range(width)]
    client.submit(noop, *middle, pure=False).result()
    return time.perf_counter() - began


def dask_run(client: Any, kind: str) -> Result:
    from distributed import get_task_stream, wait  # noqa: PLC0415

    dask_fan_out(client, 64)  # warm-up
    if kind == "w1":
        wall = dask_fan_out(client, 1000)
        return Result(wall, 1002 / wall)
    if kind == "w2":
        with get_task_stream(client) as stream:
            began = time.perf_counter()
            future = client.submit(noop, pure=False)
            for _ in range(199):
                future = client.submit(noop, future, pure=False)
            future.result()
            wall = time.perf_counter() - began
        stops = [
            ss["stop"] * 1e3
            for record in stream.data
            for ss in record["startstops"]
            if ss["action"] == "compute"
        ]
        assert len(stops) == 200, len(stops)
        return _steps(wall, stops)
    assert kind == "w3"
    began = time.perf_counter()
    ends = []
    for _ in range(200):
        a = client.submit(noop, pure=False)
        b = client.submit(noop, a, pure=False)
        ends.append(client.submit(noop, b, pure=False))
    wait(ends)
    wall = time.perf_counter() - began
    assert all(f.status == "finished" for f in ends)
    return Result(wall, 600 / wall)


def dask_once(threads: int, directory: Path, kind: str) -> Result:
    with dask_cluster(threads, directory) as client:
        return dask_run(client, kind)


def dask_in_process_of_its_own(threads: int, directory: Path, kind: str) -> Result:
    """`dask_once` in a fresh Python process (this script with `--dask-run`).

    Each side's client gets a process of its own: run here, Dask's scheduler, its
    client's IO thread and the ~55,000 objects `distributed` brings stayed in the
    process that then ran execplan's client, which made execplan's W3 ~10-20% slower
    than in a process that never imported Dask."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--dask-run",
            kind,
            "--dask-threads",
            str(threads),
            "--dir",
            str(directory),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Result(**json.loads(out.strip().splitlines()[-1]))


# -- execplan ----------------------------------------------------------------------------


async def execplan_run(kind: str, directory: Path, i: int, source: Path | None) -> Result:
    """One run through executor_bench's cluster (fresh server, db and workers)."""
    with eb.cluster(directory, workers=2, slots=64, instances=1, source=source) as c:
        run = await eb.workload(kind, c, f"peers-{i}-{time.monotonic_ns()}")
    if kind == "w2":
        return Result(run.wall_s, run.tasks_per_s, run.step_ms, run.step_p50_ms, run.step_p99_ms)
    return Result(run.wall_s, run.tasks_per_s)


# -- report ------------------------------------------------------------------------------


def _med(results: list[Result], pick: Callable[[Result], float]) -> float:
    return statistics.median(pick(r) for r in results)


def _cell(results: list[Result], pick: Callable[[Result], float], fmt: str) -> str:
    values = [pick(r) for r in results]
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def report(kind: str, dask: list[Result], ours: list[Result]) -> list[str]:
    def tput(r: Result) -> float:
        return r.tasks_per_s

    def step(r: Result) -> float:
        return r.step_ms

    def p50(r: Result) -> float:
        return r.step_p50_ms

    def p99(r: Result) -> float:
        return r.step_p99_ms

    if kind == "w2":
        rows = [
            ("W2 chain 200", "ms/step (wall/200)", step, ".2f"),
            ("W2 chain 200", "step p50 ms", p50, ".1f"),
            ("W2 chain 200", "step p99 ms", p99, ".1f"),
        ]
    else:
        name = "W1 fan-out 1->1000->1" if kind == "w1" else "W3 200 x (a->b->c)"
        rows = [(name, "tasks/s", tput, ",.0f")]
    out = []
    for label, metric, pick, fmt in rows:
        ratio = _med(ours, pick) / max(_med(dask, pick), 1e-9)
        out.append(
            f"| {label} | {metric} | {_cell(dask, pick, fmt)} | {_cell(ours, pick, fmt)} "
            f"| {ratio:.2f}x |"
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workload", default="w1,w2,w3", help="comma-separated: w1,w2,w3")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dask-threads", type=int, default=1, help="threads per Dask worker")
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite db goes")
    parser.add_argument("--json", type=Path, default=None, help="write raw runs here")
    parser.add_argument(
        "--source", type=Path, default=None, help="run execplan from this checkout (git archive)"
    )
    parser.add_argument("--dask-run", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dask_run:  # one Dask run, in the process `dask_in_process_of_its_own` made
        directory = args.dir if args.dir is not None else Path(tempfile.gettempdir())
        # Dask's client is synchronous: its cluster lives off the event loop.
        result = await asyncio.to_thread(dask_once, args.dask_threads, directory, args.dask_run)
        print(json.dumps(asdict(result)), flush=True)
        return
    kinds = [k for k in args.workload.split(",") if k]
    if unknown := set(kinds) - set(WORKLOADS):
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    import distributed  # noqa: PLC0415

    print(f"# {eb.machine()}, Dask distributed {distributed.__version__}")
    print(
        f"# repeat={args.repeat}; execplan 2 worker processes x 64 slots, SQLite "
        f"synchronous=FULL; Dask LocalCluster 2 processes x {args.dask_threads} thread(s)"
    )
    print(f"# load average before: {os.getloadavg()}", flush=True)
    dask: dict[str, list[Result]] = {k: [] for k in kinds}
    ours: dict[str, list[Result]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        for i in range(args.repeat):
            for kind in kinds:
                for side in ("dask", "execplan") if i % 2 == 0 else ("execplan", "dask"):
                    if side == "dask":
                        run = asyncio.to_thread(
                            dask_in_process_of_its_own, args.dask_threads, directory, kind
                        )
                        dask[kind].append(await run)
                    else:
                        ours[kind].append(await execplan_run(kind, directory, i, args.source))
            print(f"# repeat {i + 1} done, load average {os.getloadavg()}", flush=True)
    print("| workload | metric | Dask median (min-max) | execplan median (min-max) | ratio |")
    print("|---|---|---:|---:|---:|")
    for kind in kinds:
        for row in report(kind, dask[kind], ours[kind]):
            print(row)
    print(f"# load average after: {os.getloadavg()}")
    if args.json:
        raw = {
            kind: {
                "dask": [asdict(r) for r in dask[kind]],
                "execplan": [asdict(r) for r in ours[kind]],
            }
            for kind in kinds
        }
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
