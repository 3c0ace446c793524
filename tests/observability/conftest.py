"""An in-process server (real SQLite file, port 0) with the sample worker of examples/."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from execplan.client import ExecutorClient
from execplan.config import ServerConfig
from execplan.executor.component import ExecutorComponent
from execplan.executor.engine import EngineConfig
from execplan.server import ExecplanServer, PlannerComponent
from execplan.v1 import events_pb2, execution_pb2
from execplan.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FAST = EngineConfig(ack_deadline_ms=1_000, reconnect_grace_ms=500, recovery_grace_ms=500)


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
        async with asyncio.timeout(within):
            async for event in self.client.watch(execution_id):
                if event.HasField("execution_completed"):
                    break
        return await self.client.get(execution_id)

    async def history(self, execution_id: str) -> list[events_pb2.ExecutionEvent]:
        return [e async for e in self.client.history(execution_id)]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    config = ServerConfig(
        listen="127.0.0.1:0", db_path=str(tmp_path / "execplan.db"), grace_seconds=1
    )
    executor = ExecutorComponent(config.db_path, config=FAST, silence_ms=3_000)
    async with ExecplanServer(config, [executor, PlannerComponent(config)]) as server:
        sample = sample_workers().worker
        worker = Worker(server.address, slots=16, labels=sample.labels)
        worker._handlers.update(sample._handlers)  # the sample's handlers, our address
        task = asyncio.create_task(worker.serve())
        client = ExecutorClient(server.address)
        try:
            yield Env(server, executor, client)
        finally:
            await client.close()
            await worker.stop()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
