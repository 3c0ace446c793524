"""Latency of partial output: `ctx.stream(chunk)` in a worker -> a watching client.

    .venv/bin/python bench/stream_bench.py [--chunks 2000] [--every-ms 2] [--watchers 1]

Three processes on loopback, as in production: `execplan serve` (SQLite in a
temporary directory), a worker process whose handler streams `--chunks` chunks,
each carrying `time.time_ns()` of its `ctx.stream` call, one every `--every-ms`,
and this process watching the execution with `WatchExecution(stream=True)` (plus
`--watchers - 1` more watchers, to see the fan-out cost). The latency of a chunk is
the receive time minus the time in it (one machine, one clock). Prints a Markdown
table for docs/benchmarks.md with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from execplan.client import ExecutorClient
from execplan.v1 import events_pb2

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = """
name: bench-stream
inputs:
  chunks: {type: number}
  every_ms: {type: number}
tasks:
  - id: talk
    type: bench.stream
    inputs:
      chunks: "${{ workflow.inputs.chunks }}"
      every_ms: "${{ workflow.inputs.every_ms }}"
"""

WORKER = """
import asyncio, time
from execplan.worker import Worker

worker = Worker(slots=4)

@worker.task("bench.stream")
async def talk(inputs, ctx):
    await asyncio.sleep(0.5)  # let the watchers subscribe
    every = inputs["every_ms"] / 1000
    for i in range(int(inputs["chunks"])):
        ctx.stream(f"{time.time_ns()} {i}\\n")
        await asyncio.sleep(every)
    return {"sent": int(inputs["chunks"])}
"""


def _start_server(directory: Path) -> tuple[subprocess.Popen[str], str]:
    out = directory / "server.out"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "execplan.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-ui",
            "--db",
            str(directory / "execplan.db"),
        ],
        stdout=out.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("execplan listening on "):
                return server, line.removeprefix("execplan listening on ").strip()
        if server.poll() is not None:
            raise RuntimeError(out.read_text())
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


async def _watch(address: str, execution_id: str, latencies: list[float] | None) -> int:
    received = 0
    async with ExecutorClient(address) as client:
        async for item in client.watch(execution_id, stream=True):
            if isinstance(item, events_pb2.ExecutionEvent):
                if item.HasField("execution_completed"):
                    return received
                continue
            now = time.time_ns()
            received += 1
            if latencies is not None:
                for line in item.text.splitlines():
                    sent = int(line.split()[0])
                    latencies.append((now - sent) / 1e6)
    return received


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def measure(address: str, args: argparse.Namespace) -> tuple[list[float], list[int]]:
    async with ExecutorClient(address) as client:
        started = await client.start(
            source=WORKFLOW, inputs={"chunks": args.chunks, "every_ms": args.every_ms}
        )
    latencies: list[float] = []
    watchers = [_watch(address, started.execution_id, latencies)]
    watchers += [_watch(address, started.execution_id, None) for _ in range(args.watchers - 1)]
    counts = await asyncio.gather(*watchers)
    return latencies, list(counts)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="execplan-stream-bench-") as tmp:
        directory = Path(tmp)
        server, address = _start_server(directory)
        worker_file = directory / "worker.py"
        worker_file.write_text(WORKER)
        env = {**os.environ, "EXECPLAN_ADDRESS": address}
        worker = subprocess.Popen(
            [sys.executable, "-m", "execplan.cli", "worker", str(worker_file)],
            stdout=(directory / "worker.out").open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        try:
            latencies, counts = asyncio.run(measure(address, args))
        finally:
            _stop(worker)
            _stop(server)
    load = os.getloadavg()
    print("| chunks | every | watchers | received | p50 | p90 | p99 | max | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.chunks} | {args.every_ms} ms | {args.watchers} | {min(counts)} "
        f"| {_pct(latencies, 50):.2f} ms | {_pct(latencies, 90):.2f} ms "
        f"| {_pct(latencies, 99):.2f} ms | {max(latencies):.2f} ms "
        f"| {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} |"
    )
    print(json.dumps({"p50_ms": _pct(latencies, 50), "received": min(counts)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--every-ms", type=float, default=2.0)
    parser.add_argument("--watchers", type=int, default=1)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        run(args)


if __name__ == "__main__":
    main()
