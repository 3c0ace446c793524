"""A StartExecution repeated on another replica that has the plan registered already
(so it leaves the request_id lookup to the store's create_execution): the same
execution, created once; a different request with that request_id is refused. The
same batch of starts sent to two replicas at once: each execution created once."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from execplan.client import AlreadyExistsError, ExecutorClient
from execplan.client.values import to_struct
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1.executor_service_pb2_grpc import ExecutorServiceStub

from .test_routing import CHAIN, replica


async def test_a_repeat_on_a_replica_with_the_plan_cached(pg_dsn: str) -> None:
    async with (
        replica(pg_dsn, "a") as a,
        replica(pg_dsn, "b") as b,
        ExecutorClient(a.address) as on_a,
        ExecutorClient(b.address) as on_b,
    ):
        # b registers (and caches) the plan with a start of its own.
        await on_b.start(source=CHAIN, inputs={"x": 0}, request_id="b-only")
        first = await on_a.start(source=CHAIN, inputs={"x": 1}, request_id="r-1")
        again = await on_b.start(source=CHAIN, inputs={"x": 1}, request_id="r-1")
        assert first.created and not again.created
        assert (again.execution_id, again.plan_id) == (first.execution_id, first.plan_id)
        with pytest.raises(AlreadyExistsError) as caught:
            await on_b.start(source=CHAIN, inputs={"x": 2}, request_id="r-1")
        assert caught.value.reason == "REQUEST_ID_REUSED"
        assert caught.value.metadata["executionId"] == first.execution_id
        started = [e async for e in on_a.list() if e.workflow_name == "chain"]
        assert len(started) == 2  # b-only and r-1, each once


async def test_the_same_batch_on_two_replicas_at_once(pg_dsn: str) -> None:
    # Each replica commits its batch in one group; the request_ids are shared through
    # PostgreSQL's unique index, so every execution is created once, by one of them.
    batch = pb.StartExecutionsRequest(
        requests=[
            pb.StartExecutionRequest(source=CHAIN, inputs=to_struct({"x": n}), request_id=f"r-{n}")
            for n in range(40)
        ]
    )
    async with (
        replica(pg_dsn, "a") as a,
        replica(pg_dsn, "b") as b,
        grpc.aio.insecure_channel(a.address) as to_a,
        grpc.aio.insecure_channel(b.address) as to_b,
    ):
        on_a, on_b = ExecutorServiceStub(to_a), ExecutorServiceStub(to_b)
        answers = await asyncio.gather(on_a.StartExecutions(batch), on_b.StartExecutions(batch))
        for first, second in zip(*(answer.results for answer in answers), strict=True):
            assert first.WhichOneof("result") == second.WhichOneof("result") == "started", (
                first,
                second,
            )
            assert first.started.execution_id == second.started.execution_id
            assert first.started.created != second.started.created  # exactly one created
        async with ExecutorClient(a.address) as client:
            started = [e async for e in client.list() if e.workflow_name == "chain"]
        assert len(started) == 40
