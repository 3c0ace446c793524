"""An in-process execplan server on 127.0.0.1:0, as the composition root builds it
(executor + planner), on a real store: a SQLite file or a PostgreSQL DSN.

    async with serving(tmp_path / "execplan.db", FAST) as (server, executor): ...

or, for tests that drive it through SDK workers and the typed client:

    async with environment(Env, tmp_path, FAST) as env:
        env.worker({"t.add": add})
        done = await env.finish(await env.start(SOURCE, {"x": 1}))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from execplan.client import ExecutorClient
from execplan.config import ServerConfig
from execplan.executor.runtime.engine import EngineConfig
from execplan.server import ExecplanServer, ExecutorComponent, PlannerComponent
from execplan.v1 import events_pb2, execution_pb2, executor_service_pb2_grpc
from execplan.worker import Worker

# Engine graces short enough for tests that wait on them.
FAST = EngineConfig(ack_deadline_ms=1_000, reconnect_grace_ms=500, recovery_grace_ms=500)


@contextlib.asynccontextmanager
async def serving(
    db_path: str | Path, engine: EngineConfig = FAST
) -> AsyncIterator[tuple[ExecplanServer, ExecutorComponent]]:
    """A started server on `db_path` (a file path or a postgresql:// DSN)."""
    config = ServerConfig(listen="127.0.0.1:0", db_path=str(db_path), grace_seconds=1)
    executor = ExecutorComponent(config.db_path, config=engine, silence_ms=3_000)
    async with ExecplanServer(config, [executor, PlannerComponent(config)]) as server:
        yield server, executor


async def stop_worker(worker: Worker, task: asyncio.Task[None]) -> None:
    """Drain `worker`, then make sure its `serve()` task is gone."""
    await worker.stop()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def finish(
    client: ExecutorClient, execution_id: str, within: float = 15.0
) -> execution_pb2.Execution:
    """The execution once it has completed (watched, not polled)."""
    async with asyncio.timeout(within):
        async for event in client.watch(execution_id):
            if event.HasField("execution_completed"):
                break
    return await client.get(execution_id)


async def history(client: ExecutorClient, execution_id: str) -> list[events_pb2.ExecutionEvent]:
    return [e async for e in client.history(execution_id)]


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
        """An SDK worker serving `handlers`, stopped when the environment closes."""
        worker = Worker(self.address, slots=slots, worker_id=worker_id)
        for task_type, fn in handlers.items():
            worker.task(task_type)(fn)
        self.workers.append((worker, asyncio.create_task(worker.serve())))
        return worker

    async def start(self, source: str, inputs: dict[str, Any] | None = None, **kw: Any) -> str:
        response = await self.client.start(source=source, inputs=inputs or {}, **kw)
        return response.execution_id

    async def finish(self, execution_id: str, within: float = 15.0) -> execution_pb2.Execution:
        return await finish(self.client, execution_id, within)

    async def history(self, execution_id: str) -> list[events_pb2.ExecutionEvent]:
        return await history(self.client, execution_id)

    async def until(
        self, probe: Callable[[], Any], within: float = 10.0, every: float = 0.02
    ) -> None:
        async with asyncio.timeout(within):
            while not await probe():  # noqa: ASYNC110 - polling the server over gRPC
                await asyncio.sleep(every)


E = TypeVar("E", bound=Env)


@contextlib.asynccontextmanager
async def environment(
    kind: type[E], tmp_path: Path, engine: EngineConfig = FAST, *, db: str | Path | None = None
) -> AsyncIterator[E]:
    """`serving` on `db` (default tmp_path/execplan.db; a postgresql:// DSN too),
    wrapped in `kind` (Env or a subclass); the workers it started are stopped at exit."""
    async with serving(db if db is not None else tmp_path / "execplan.db", engine) as (
        server,
        executor,
    ):
        channel = grpc.aio.insecure_channel(server.address)
        env = kind(server, executor, ExecutorClient(channel=channel), channel)
        try:
            yield env
        finally:
            for worker, task in env.workers:
                await stop_worker(worker, task)
            await channel.close()
