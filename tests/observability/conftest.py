"""An in-process server (real SQLite file, port 0) with the sample worker of examples/."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import ExecutorClient
from execplan.server import ExecplanServer, ExecutorComponent
from execplan.v1 import events_pb2, execution_pb2
from execplan.worker import Worker

if TYPE_CHECKING:
    from tests.support import EXAMPLES
    from tests.support.server import FAST, finish, history, serving, stop_worker
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support import EXAMPLES
    from support.server import FAST, finish, history, serving, stop_worker

__all__ = ["EXAMPLES", "FAST"]


def sample_workers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("examples_workers", EXAMPLES / "workers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Env:
    server: ExecplanServer
    executor: ExecutorComponent
    client: ExecutorClient

    async def start(self, name: str, inputs: dict[str, Any]) -> str:
        source = (EXAMPLES / name).read_text(encoding="utf-8")
        return (await self.client.start(source=source, inputs=inputs)).execution_id

    async def finish(self, execution_id: str, within: float = 15.0) -> execution_pb2.Execution:
        return await finish(self.client, execution_id, within)

    async def history(self, execution_id: str) -> list[events_pb2.ExecutionEvent]:
        return await history(self.client, execution_id)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with serving(tmp_path / "execplan.db", FAST) as (server, executor):
        sample = sample_workers().worker
        worker = Worker(server.address, slots=16, labels=sample.labels)
        worker.capacity = sample.capacity
        worker._handlers.update(sample._handlers)  # the sample's handlers, our address
        task = asyncio.create_task(worker.serve())
        client = ExecutorClient(server.address)
        try:
            yield Env(server, executor, client)
        finally:
            await client.close()
            await stop_worker(worker, task)
