"""Retention under a steady load: finished executions are deleted in the background
while new ones keep starting; the SQLite file stops growing and starts stay fast."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from execplan.client import ExecutorClient
from execplan.config import ServerConfig
from execplan.retention import RetentionPolicy
from execplan.server import ExecplanServer, ExecutorComponent, PlannerComponent

QUICK = """
name: steady
tasks:
  - id: a
    type: builtin.sleep
    inputs: {duration: 1ms}
  - id: b
    type: builtin.sleep
    depends_on: [a]
    inputs: {duration: 1ms}
"""
RATE = 40  # starts a second
RUN_SECONDS = 24


@contextlib.asynccontextmanager
async def server(db: Path) -> AsyncIterator[tuple[ExecplanServer, ExecutorComponent]]:
    config = ServerConfig(listen="127.0.0.1:0", db_path=str(db), grace_seconds=1)
    executor = ExecutorComponent(config.db_path, retention=RetentionPolicy(1_000))
    async with ExecplanServer(config, [executor, PlannerComponent(config)]) as srv:
        yield srv, executor


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def test_retention_keeps_the_file_size_steady_under_load(tmp_path: Path) -> None:
    db = tmp_path / "execplan.db"
    async with server(db) as (srv, executor):
        channel = grpc.aio.insecure_channel(srv.address)
        client = ExecutorClient(channel=channel)
        latencies: list[float] = []
        sizes: dict[int, tuple[int, int]] = {}
        began = time.monotonic()
        started = 0
        try:
            while (elapsed := time.monotonic() - began) < RUN_SECONDS:
                t0 = time.monotonic()
                await client.start(source=QUICK)
                latencies.append(time.monotonic() - t0)
                started += 1
                second = int(elapsed)
                if second in (10, RUN_SECONDS - 1) and second not in sizes:
                    sizes[second] = (size(db), size(db.with_name(db.name + "-wal")))
                await asyncio.sleep(max(0.0, began + started / RATE - time.monotonic()))
            left = len([e async for e in client.list(page_size=1000)])
        finally:
            await channel.close()
        deleted = executor.operations.pruner.deleted_total
    early, late = sizes[10], sizes[RUN_SECONDS - 1]
    # Deleted as they expire (1 s after the end, a pass every second or so).
    assert started >= RATE * RUN_SECONDS * 0.8, started
    assert deleted >= started * 0.8, (deleted, started)
    assert left <= RATE * 6, left
    # The file reuses the pages retention frees: no growth over the last 13 seconds
    # (without retention it grows by the same amount as over the first ten).
    assert late[0] <= early[0] * 1.2 + 64 * 1024, (early, late)
    assert late[1] <= 16 * 1024 * 1024, late  # the WAL stays bounded by checkpoints
    # The engine kept up: starting stayed quick while retention deleted in the background.
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.5, p99
