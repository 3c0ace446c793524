"""An in-process execplan server (real SQLite file, port 0) and SDK workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.client import ExecutorClient
from execplan.config import ServerConfig
from execplan.executor.component import ExecutorComponent
from execplan.executor.engine import EngineConfig
from execplan.server import ExecplanServer, PlannerComponent
from execplan.v1 import events_pb2, execution_pb2, executor_service_pb2_grpc
from execplan.worker import Worker


@dataclass
class Env:
    server: ExecplanServer
    executor: ExecutorComponent
    client: ExecutorClient
    channel: grpc.aio.Channel
    workers: list[tuple[Worker, asyncio.Task[None]]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def stub(self) -> executor_service_pb2_grpc.ExecutorServiceAsyncStub:
        return executor_service_pb2_grpc.ExecutorServiceStub(self.channel)

    def worker(
        self, handlers: dict[str, Callable[..., Any]], slots: int = 8, worker_id: str | None = None
    ) -> Worker:
        worker = Worker(self.address, slots=slots, worker_id=worker_id)
        for task_type, fn in handlers.items():
            worker.task(task_type)(fn)
        self.workers.append((worker, asyncio.create_task(worker.serve())))
        return worker

    async def start(self, source: str, inputs: dict[str, Any] | None = None, **kw: Any) -> str:
        response = await self.client.start(source=source, inputs=inputs or {}, **kw)
        return response.execution_id

    async def finish(self, execution_id: str, within: float = 15.0) -> execution_pb2.Execution:
        async with asyncio.timeout(within):
            async for event in self.client.watch(execution_id):
                if event.HasField("execution_completed"):
                    break
        return await self.client.get(execution_id)

    async def history(self, execution_id: str) -> list[events_pb2.ExecutionEvent]:
        return [e async for e in self.client.history(execution_id)]

    async def until(
        self, probe: Callable[[], Any], within: float = 10.0, every: float = 0.02
    ) -> None:
        async with asyncio.timeout(within):
            while not await probe():  # noqa: ASYNC110 - polling the server over gRPC
                await asyncio.sleep(every)


FAST = EngineConfig(ack_deadline_ms=1_000, reconnect_grace_ms=500, recovery_grace_ms=500)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    config = ServerConfig(
        listen="127.0.0.1:0", db_path=str(tmp_path / "execplan.db"), grace_seconds=1
    )
    executor = ExecutorComponent(config.db_path, config=FAST, silence_ms=3_000)
    async with ExecplanServer(config, [executor, PlannerComponent(config)]) as server:
        channel = grpc.aio.insecure_channel(server.address)
        client = ExecutorClient(channel=channel)
        environment = Env(server, executor, client, channel)
        try:
            yield environment
        finally:
            for worker, task in environment.workers:
                await worker.stop()
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await channel.close()
