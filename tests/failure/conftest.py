"""An in-process server (real SQLite file, port 0) for failure-handling tests.

The same pattern as tests/executor/conftest.py, with shorter engine graces, plus
helpers that reduce a history to the exact event kinds of one task.
"""

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
from execplan.v1 import events_pb2, execution_pb2
from execplan.worker import Worker

FAST = EngineConfig(
    ack_deadline_ms=1_000, reconnect_grace_ms=300, recovery_grace_ms=300, heartbeat_interval_ms=100
)


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

    def worker(
        self, handlers: dict[str, Callable[..., Any]], slots: int = 8, worker_id: str | None = None
    ) -> Worker:
        worker = Worker(self.address, slots=slots, worker_id=worker_id)
        for task_type, fn in handlers.items():
            worker.task(task_type)(fn)
        self.workers.append((worker, asyncio.create_task(worker.serve())))
        return worker

    async def start(self, source: str, inputs: dict[str, Any] | None = None) -> str:
        response = await self.client.start(source=source, inputs=inputs or {})
        return response.execution_id

    async def finish(self, execution_id: str, within: float = 15.0) -> execution_pb2.Execution:
        return await finish(self.client, execution_id, within)

    async def history(self, execution_id: str) -> list[events_pb2.ExecutionEvent]:
        return [e async for e in self.client.history(execution_id)]

    async def kinds(self, execution_id: str, task_id: str) -> list[str]:
        return task_kinds(await self.history(execution_id), task_id)


async def finish(
    client: ExecutorClient, execution_id: str, within: float = 15.0
) -> execution_pb2.Execution:
    async with asyncio.timeout(within):
        async for event in client.watch(execution_id):
            if event.HasField("execution_completed"):
                break
    return await client.get(execution_id)


_SHORT = {"task_parked": lambda body: "task_parked" if body.parked else "task_unparked"}


def task_kinds(events: list[events_pb2.ExecutionEvent], task_id: str) -> list[str]:
    """The event kinds of one task, in order (`task_unparked` = task_parked{parked:false};
    a phase other than main is appended as `:fallback` / `:compensation`)."""
    kinds = []
    for event in events:
        kind = event.WhichOneof("kind") or ""
        body = getattr(event, kind)
        if getattr(body, "task_id", None) != task_id:
            continue
        name = _SHORT[kind](body) if kind in _SHORT else kind
        phase: execution_pb2.TaskPhase.ValueType = getattr(
            body, "phase", execution_pb2.TASK_PHASE_UNSPECIFIED
        )
        if phase and phase != execution_pb2.TASK_PHASE_MAIN:
            name += ":" + execution_pb2.TaskPhase.Name(phase).removeprefix("TASK_PHASE_").lower()
        kinds.append(name)
    return kinds


def execution_kinds(events: list[events_pb2.ExecutionEvent]) -> list[str]:
    """Kinds of the events that belong to no task."""
    return [
        kind
        for e in events
        if not getattr(getattr(e, kind := e.WhichOneof("kind") or ""), "task_id", "")
    ]


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
