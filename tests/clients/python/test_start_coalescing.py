"""`ExecutorClient.start()` coalesces the starts of one loop turn into one
StartExecutions call (real server on loopback, the calls counted by a client
interceptor), and every caller still gets its own answer or its own error."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.client import (
    AlreadyExistsError,
    ExecutorClient,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import executor_service_pb2_grpc as pb_grpc

from tests.support.server import serving
from tests.support.workflows import waiting

WAIT = waiting("coalesce")
START = "/execplan.v1.ExecutorService/StartExecution"
START_MANY = "/execplan.v1.ExecutorService/StartExecutions"


class Calls(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts the unary calls the client makes, by method."""

    def __init__(self) -> None:
        self.made: Counter[str] = Counter()

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        method = details.method
        self.made[method.decode() if isinstance(method, bytes) else method] += 1
        return await continuation(details, request)


@pytest.fixture
async def counted(tmp_path: Path) -> AsyncIterator[tuple[ExecutorClient, Calls]]:
    calls = Calls()
    async with (
        serving(tmp_path / "execplan.db") as (server, _),
        grpc.aio.insecure_channel(server.address, interceptors=[calls]) as channel,
    ):
        yield ExecutorClient(channel=channel), calls


async def test_starts_of_one_turn_travel_together(
    counted: tuple[ExecutorClient, Calls],
) -> None:
    client, calls = counted
    alone = await client.start(source=WAIT, inputs={"n": 0})
    assert calls.made == {START: 1}
    outcomes = await asyncio.gather(
        *(client.start(source=WAIT, inputs={"n": n}) for n in range(40)),
        client.start(source=WAIT, inputs={"n": "not a number"}),
        client.start(plan_id="no-such-plan"),
        return_exceptions=True,
    )
    assert calls.made == {START: 1, START_MANY: 1}
    started = outcomes[:40]
    assert all(isinstance(s, pb.StartExecutionResponse) and s.created for s in started)
    assert len({s.execution_id for s in started} | {alone.execution_id}) == 41  # type: ignore[union-attr]
    bad_input, no_plan = outcomes[40:]
    # The error a lone start gets: same type, message and field paths (no prefix).
    with pytest.raises(InvalidArgumentError) as lone:
        await client.start(source=WAIT, inputs={"n": "not a number"})
    assert isinstance(bad_input, InvalidArgumentError)
    assert (str(bad_input), bad_input.violations) == (str(lone.value), lone.value.violations)
    assert [v.field for v in bad_input.violations] == ["inputs.n"]
    assert isinstance(no_plan, NotFoundError)


async def test_request_ids_within_one_turn(counted: tuple[ExecutorClient, Calls]) -> None:
    client, calls = counted
    outcomes = await asyncio.gather(
        client.start(source=WAIT, inputs={"n": 1}, request_id="same"),
        client.start(source=WAIT, inputs={"n": 1}, request_id="same"),
        client.start(source=WAIT, inputs={"n": 2}, request_id="same"),
        return_exceptions=True,
    )
    assert calls.made == {START_MANY: 1}
    first, again, other = outcomes
    assert isinstance(first, pb.StartExecutionResponse) and first.created
    assert isinstance(again, pb.StartExecutionResponse) and not again.created
    assert again.execution_id == first.execution_id
    assert isinstance(other, AlreadyExistsError)
    assert other.reason == "REQUEST_ID_REUSED"
    assert other.metadata["executionId"] == first.execution_id


class OlderServer(pb_grpc.ExecutorServiceServicer):
    """A server from before StartExecutions: it answers UNIMPLEMENTED to it."""

    def __init__(self) -> None:
        self.starts = 0

    async def StartExecution(
        self, request: pb.StartExecutionRequest, context: Any
    ) -> pb.StartExecutionResponse:
        self.starts += 1
        return pb.StartExecutionResponse(execution_id=f"e-{request.request_id}", created=True)


async def test_an_older_server_gets_each_start_alone() -> None:
    older = OlderServer()  # type: ignore[abstract]
    server = grpc.aio.server()
    pb_grpc.add_ExecutorServiceServicer_to_server(older, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    calls = Calls()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=[calls]) as ch:
            client = ExecutorClient(channel=ch)
            for _ in range(2):  # the second turn goes straight to StartExecution
                ids = [f"r{n}" for n in range(5)]
                got = await asyncio.gather(*(client.start(plan_id="p", request_id=i) for i in ids))
                assert [g.execution_id for g in got] == [f"e-{i}" for i in ids]
    finally:
        await server.stop(None)
    assert calls.made == {START_MANY: 1, START: 10}
    assert older.starts == 10


async def test_a_batch_that_fails_as_a_whole_fails_each_caller_on_its_own() -> None:
    # Nothing listens there: the one StartExecutions fails UNAVAILABLE (one address: no
    # retry), and every caller gets an error of its own, as three lone calls would.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with ExecutorClient(f"127.0.0.1:{port}") as client:
        outcomes = await asyncio.gather(
            *(client.start(plan_id="p", request_id=f"r{n}") for n in range(3)),
            return_exceptions=True,
        )
    assert all(isinstance(o, UnavailableError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3


async def test_a_start_cancelled_before_its_batch_leaves_is_not_sent(
    counted: tuple[ExecutorClient, Calls],
) -> None:
    client, calls = counted
    tasks = [asyncio.ensure_future(client.start(source=WAIT, request_id=f"c{n}")) for n in range(3)]
    await asyncio.sleep(0)  # each start is queued; the batch leaves on the next turn
    tasks[1].cancel()
    first, cancelled, last = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(cancelled, asyncio.CancelledError)
    assert isinstance(first, pb.StartExecutionResponse) and first.created
    assert isinstance(last, pb.StartExecutionResponse) and last.created
    assert calls.made == {START_MANY: 1}
    # Its request_id was never used: a start with it now creates the execution.
    again = await client.start(source=WAIT, request_id="c1")
    assert again.created
