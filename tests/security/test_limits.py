"""Every limit answers RESOURCE_EXHAUSTED with a reason and writes nothing:
message size, inputs and task output size, tasks per workflow, worker streams per
identity, and the StartExecution rate per identity (with RetryInfo)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.client import ExecutorClient
from execplan.config import ServerConfig
from execplan.executor.runtime.engine import EngineConfig
from execplan.server import Component, ExecplanServer, ExecutorComponent, PlannerComponent
from execplan.v1 import (
    execution_pb2,
    executor_service_pb2,
    executor_service_pb2_grpc,
    planner_service_pb2,
    planner_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from execplan.worker import Worker
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from .conftest import TOKENS, WORKER_TYPES, ServerFactory, bearer

SOURCE = "name: tiny\ntasks:\n  - {id: a, type: sec.echo}\n"
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def executor_stub(channel: grpc.aio.Channel) -> executor_service_pb2_grpc.ExecutorServiceAsyncStub:
    return executor_service_pb2_grpc.ExecutorServiceStub(channel)


async def count_executions(channel: grpc.aio.Channel, metadata: Any = ()) -> int:
    reply = await executor_stub(channel).ListExecutions(
        executor_service_pb2.ListExecutionsRequest(), metadata=metadata
    )
    return len(reply.executions)


def details_of(err: grpc.aio.AioRpcError) -> list[Any]:
    status = rpc_status.from_call(err)
    assert status is not None
    found: list[Any] = []
    for detail in status.details:
        for kind in (error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo):
            message = kind()
            if detail.Unpack(message):
                found.append(message)
    return found


async def test_message_size(tmp_path: Path) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0", db_path=str(tmp_path / "db"), max_message_bytes=64 * 1024
    )
    async with ExecplanServer(config) as server, grpc.aio.insecure_channel(server.address) as ch:
        stub = planner_service_pb2_grpc.PlannerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CompilePlan(planner_service_pb2.CompilePlanRequest(source="#" * 100_000))
        assert info.value.code() == EXHAUSTED
        assert "message larger than max" in (info.value.details() or "").lower()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await executor_stub(ch).StartExecution(
                executor_service_pb2.StartExecutionRequest(source=SOURCE + "#" * 100_000)
            )
        assert info.value.code() == EXHAUSTED
        assert await count_executions(ch) == 0
        # Still serving, and within the limit all is well.
        await stub.CompilePlan(planner_service_pb2.CompilePlanRequest(source=SOURCE))


async def test_inputs_and_task_output_payload_size(tmp_path: Path) -> None:
    config = ServerConfig(listen="127.0.0.1:0", db_path=str(tmp_path / "execplan.db"))
    executor = ExecutorComponent(config.db_path, config=EngineConfig(max_payload_bytes=2048))
    components: list[Component] = [executor, PlannerComponent(config)]
    marker = "OVERSIZED-OUTPUT-MARKER"
    async with (
        ExecplanServer(config, components) as server,
        grpc.aio.insecure_channel(server.address) as ch,
    ):
        big = struct_pb2.Struct()
        big.update({"blob": "x" * 4096})
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await executor_stub(ch).StartExecution(
                executor_service_pb2.StartExecutionRequest(source=SOURCE, inputs=big)
            )
        assert info.value.code() == EXHAUSTED
        (quota,) = details_of(info.value)
        assert quota.violations[0].subject == "inputs"
        assert await count_executions(ch) == 0

        worker = Worker(server.address)
        worker.task("sec.echo")(lambda inputs, ctx: {"blob": marker * 200})
        running = asyncio.create_task(worker.serve())
        try:
            started = await executor_stub(ch).StartExecution(
                executor_service_pb2.StartExecutionRequest(source=SOURCE)
            )
            execution = await _finished(ch, started.execution_id)
        finally:
            await worker.stop()
            running.cancel()
    assert execution.state == execution_pb2.EXECUTION_STATE_FAILED
    assert "PayloadTooLarge" in str(execution) or "exceeds the limit" in str(execution)
    assert marker.encode() not in _stored(tmp_path)  # the oversized output was never written


def _stored(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.name.startswith("execplan.db"))


async def _finished(ch: grpc.aio.Channel, execution_id: str) -> execution_pb2.Execution:
    stub = executor_stub(ch)
    async with asyncio.timeout(15):
        while True:
            reply = await stub.GetExecution(
                executor_service_pb2.GetExecutionRequest(execution_id=execution_id)
            )
            if reply.execution.state in (
                execution_pb2.EXECUTION_STATE_SUCCEEDED,
                execution_pb2.EXECUTION_STATE_FAILED,
            ):
                return reply.execution
            await asyncio.sleep(0.05)


async def test_tasks_per_workflow(
    server: ExecplanServer, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("execplan.planner.limits.MAX_TASKS", 5)
    source = "name: wide\ntasks:\n" + "".join(f"  - {{id: t{i}, type: x.y}}\n" for i in range(6))
    planner = planner_service_pb2_grpc.PlannerServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await planner.CompilePlan(planner_service_pb2.CompilePlanRequest(source=source))
    assert info.value.code() == EXHAUSTED
    assert "at most 5" in str(details_of(info.value))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await executor_stub(channel).StartExecution(
            executor_service_pb2.StartExecutionRequest(source=source)
        )
    assert info.value.code() == EXHAUSTED
    assert await count_executions(channel) == 0


def _register(worker_id: str) -> worker_service_pb2.ConnectRequest:
    return worker_service_pb2.ConnectRequest(
        register=worker_service_pb2.WorkerRegistration(
            worker_id=worker_id, task_types=[WORKER_TYPES[0]], slots=1
        )
    )


async def _registered(call: Any) -> bool:
    reply = await call.read()
    return isinstance(reply, worker_service_pb2.ConnectResponse) and reply.HasField("registered")


async def test_worker_streams_per_identity(secured: ServerFactory) -> None:
    async with (
        secured(tls=False, max_worker_streams=2) as server,
        grpc.aio.insecure_channel(server.address) as ch,
    ):
        stub = worker_service_pb2_grpc.WorkerServiceStub(ch)
        open_calls = []
        for n in range(2):
            call = stub.Connect(metadata=bearer("worker"))
            await call.write(_register(f"w{n}"))
            assert await _registered(call)
            open_calls.append(call)
        third = stub.Connect(metadata=bearer("worker"))
        await third.write(_register("w2"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await third.read()
        assert info.value.code() == EXHAUSTED
        assert "worker streams" in (info.value.details() or "")
        # Another identity has its own allowance; a closed stream frees a slot.
        other = stub.Connect(metadata=bearer("admin"))
        await other.write(_register("a0"))
        assert await _registered(other)
        open_calls[0].cancel()
        await asyncio.sleep(0.2)
        again = stub.Connect(metadata=bearer("worker"))
        await again.write(_register("w3"))
        assert await _registered(again)
        for call in (*open_calls, other, again):
            call.cancel()


async def test_start_rate_per_identity(secured: ServerFactory) -> None:
    async with (
        secured(tls=False, start_rate=0.5, start_burst=2) as server,
        grpc.aio.insecure_channel(server.address) as ch,
    ):
        stub = executor_stub(ch)
        request = executor_service_pb2.StartExecutionRequest(source=SOURCE)
        for _ in range(2):
            await stub.StartExecution(request, metadata=bearer("client"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.StartExecution(request, metadata=bearer("client"))
        assert info.value.code() == EXHAUSTED
        (retry,) = details_of(info.value)
        assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 2
        assert await count_executions(ch, bearer("client")) == 2  # nothing half-written
        await stub.StartExecution(request, metadata=bearer("admin"))  # its own bucket
        assert await count_executions(ch, bearer("admin")) == 3


async def test_start_rate_counts_each_item_of_a_batch(secured: ServerFactory) -> None:
    async with (
        secured(tls=False, start_rate=0.5, start_burst=2) as server,
        grpc.aio.insecure_channel(server.address) as ch,
    ):
        stub = executor_stub(ch)
        item = executor_service_pb2.StartExecutionRequest(source=SOURCE)
        batch = executor_service_pb2.StartExecutionsRequest(requests=[item] * 3)
        reply = await stub.StartExecutions(batch, metadata=bearer("client"))
        first, second, third = reply.results
        assert first.started.created and second.started.created
        assert third.error.code == EXHAUSTED.value[0]
        (retry,) = [
            info
            for detail in third.error.details
            if detail.Unpack(info := error_details_pb2.RetryInfo())
        ]
        assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 2
        assert await count_executions(ch, bearer("client")) == 2
        # The same bucket as StartExecution's: it is empty now.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.StartExecution(item, metadata=bearer("client"))
        assert info.value.code() == EXHAUSTED
        # A viewer may not start, one at a time or in a batch.
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.StartExecutions(batch, metadata=bearer("viewer"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_sdk_retries_the_items_over_the_start_rate(secured: ServerFactory) -> None:
    # ExecutorClient.start() calls of one turn travel as one StartExecutions; the
    # items past the rate come back RESOURCE_EXHAUSTED with RetryInfo and are retried
    # on their own after that delay, so every caller gets its execution.
    async with (
        secured(tls=False, start_rate=10, start_burst=2) as server,
        ExecutorClient(server.address, token=TOKENS["client"]) as client,
    ):
        started = await asyncio.gather(*(client.start(source=SOURCE) for _ in range(5)))
        assert all(s.created for s in started)
        assert len({s.execution_id for s in started}) == 5
