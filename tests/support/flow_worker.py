"""The worker of the flow-control tests, run as a real process:

    FLOW_DIR=/tmp/x FLOW_WORKER=gpu-1 execplan worker tests/support/flow_worker.py \\
        --capacity gpu=1 --worker-id gpu-1

Handlers write what they saw under $FLOW_DIR, so a test measures from outside what
happened inside every worker process:

- `flow.call`: holds a file `running/<key>/<attempt>` while it runs and appends the
  number of files it saw to `concurrency.log` (the most that ran at once per key);
  with `throttle: true` its first attempt answers like a provider's 429;
- `flow.tick`: appends its start time to `ticks.log` (a bucket's rate);
- `flow.where`: which worker ran it, and when (placement by resources);
- `flow.count`: appends to `calls.log` (how often a cached task really ran);
- `iso.alloc`: `isolated.allocate` (holds `mib` MiB), for tasks that ask for isolation.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import isolated  # type: ignore[import-not-found]  # beside this file (sys.path)
from execplan.worker import RateLimited, TaskContext, Worker

worker = Worker()
worker.task("iso.alloc")(isolated.allocate)
DIR = Path(os.environ.get("FLOW_DIR", "."))
NAME = os.environ.get("FLOW_WORKER", "worker")


def _append(name: str, line: str) -> None:
    # O_APPEND: each small write lands whole, whichever process writes.
    fd = os.open(DIR / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@worker.task("flow.call")
async def call(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    if inputs.get("throttle") and ctx.attempt == 1:
        _append("throttled.log", f"{time.time():.3f} {ctx.execution_id}")
        raise RateLimited("provider answered 429", retry_after=float(inputs.get("after", 2)))
    if inputs.get("fail"):
        raise RuntimeError(f"model {inputs.get('model')} is down")
    key = str(inputs.get("model", "none"))
    running = DIR / "running" / key
    running.mkdir(parents=True, exist_ok=True)
    mine = running / f"{ctx.execution_id}-{ctx.task_id}-{ctx.attempt}"
    mine.touch()
    try:
        seen = len(os.listdir(running))
        _append("concurrency.log", f"{key} {seen} {time.time():.3f}")
        await asyncio.sleep(float(inputs.get("ms", 100)) / 1000)
    finally:
        mine.unlink()
    return {"model": key, "worker": NAME}


@worker.task("flow.tick")
async def tick(inputs: dict[str, Any]) -> float:
    now = time.time()
    _append("ticks.log", f"{now:.4f}")
    return now


@worker.task("flow.where")
async def where(inputs: dict[str, Any]) -> dict[str, Any]:
    start = time.time()
    await asyncio.sleep(float(inputs.get("ms", 50)) / 1000)
    return {"worker": NAME, "start": start, "end": time.time()}


@worker.task("flow.count")
async def count(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    _append("calls.log", f"{ctx.execution_id} {inputs.get('q')}")
    return {"answer": f"answer to {inputs.get('q')}"}
