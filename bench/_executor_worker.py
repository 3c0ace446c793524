"""Worker process for `executor_bench.py`: `instances` SDK Workers with no-op handlers.

    .venv/bin/python bench/_executor_worker.py ADDRESS [--slots 64] [--instances 1]

Prints `ready` once the handlers are registered, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from execplan.worker import TaskContext, Worker


async def noop(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {}


def make_worker(address: str, slots: int) -> Worker:
    worker = Worker(address, slots=slots)
    worker.task("bench.noop")(noop)
    return worker


async def serve(address: str, slots: int, instances: int) -> None:
    workers = [make_worker(address, slots) for _ in range(instances)]
    print("ready", flush=True)
    if instances == 1:
        await workers[0]._run_with_signals()
        return
    await asyncio.gather(*(w.serve() for w in workers))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--instances", type=int, default=1)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.address, args.slots, args.instances))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
