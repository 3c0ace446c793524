"""Mutating RPCs are idempotent on `request_id`, and a reused request_id with a
different request is refused (AIP-155): ALREADY_EXISTS, reason REQUEST_ID_REUSED,
the existing execution in the ErrorInfo metadata, and no side effect.

StartExecution runs on SQLite and on PostgreSQL (the digest lives in the store).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from execplan.client import AlreadyExistsError, ExecutorClient
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from store.pg import pg_dsn, pg_server, where  # type: ignore[import-not-found]

from tests.support.server import serving
from tests.support.workflows import waiting

__all__ = ["pg_dsn", "pg_server", "where"]  # fixtures, imported for pytest

WAIT = waiting("idem")
OTHER = waiting("idem-other")


@pytest.fixture
async def client(where: str) -> AsyncIterator[ExecutorClient]:
    async with serving(where) as (server, _), ExecutorClient(server.address) as client:
        yield client


async def test_the_same_request_returns_the_same_execution(client: ExecutorClient) -> None:
    first = await client.start(source=WAIT, inputs={"n": 2}, request_id="r-1", fairness_key="t")
    again = await client.start(source=WAIT, inputs={"n": 2}, request_id="r-1", fairness_key="t")
    assert first.created and not again.created
    assert (again.execution_id, again.plan_id) == (first.execution_id, first.plan_id)


@pytest.mark.parametrize(
    "change",
    [
        {"source": OTHER},
        {"inputs": {"n": 3}},
        {"inputs": {}},  # the default is 1, but the request is not the same
        {"fairness_key": "other-tenant"},
    ],
    ids=["workflow", "inputs", "inputs-omitted", "fairness-key"],
)
async def test_a_different_request_is_refused_without_side_effects(
    client: ExecutorClient, change: dict[str, Any]
) -> None:
    original: dict[str, Any] = {"source": WAIT, "inputs": {"n": 1}, "fairness_key": "t"}
    first = await client.start(**original, request_id="r-2")
    other_plan = (await client.compile(OTHER)).plan_id
    with pytest.raises(AlreadyExistsError) as caught:
        await client.start(**{**original, **change}, request_id="r-2")
    error = caught.value
    assert error.reason == "REQUEST_ID_REUSED"
    assert error.metadata == {
        "requestId": "r-2",
        "executionId": first.execution_id,
        "planId": first.plan_id,
    }
    assert first.execution_id in error.details
    # No side effect: the other workflow's plan was not registered on the way.
    with pytest.raises(Exception, match="NOT_FOUND"):
        await client.get_plan(other_plan)
    executions = [e async for e in client.list()]
    assert [e.execution_id for e in executions] == [first.execution_id]


async def test_a_reused_request_id_is_named_before_a_bad_input(client: ExecutorClient) -> None:
    # The plan is registered by the first start, so the second leaves the request_id
    # lookup to the store; refused earlier (bad inputs), it still names the reuse.
    first = await client.start(source=WAIT, inputs={"n": 1}, request_id="r-7")
    with pytest.raises(AlreadyExistsError) as caught:
        await client.start(source=WAIT, inputs={"n": "not a number"}, request_id="r-7")
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert caught.value.metadata["executionId"] == first.execution_id
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        await client.start(source=WAIT, inputs={"n": "not a number"}, request_id="r-8")


async def test_concurrent_starts_with_one_request_id(client: ExecutorClient) -> None:
    same = await asyncio.gather(
        *(client.start(source=WAIT, inputs={"n": 5}, request_id="r-3") for _ in range(8))
    )
    assert sum(s.created for s in same) == 1
    assert len({s.execution_id for s in same}) == 1
    mixed = await asyncio.gather(
        *(client.start(source=WAIT, inputs={"n": n}, request_id="r-4") for n in range(8)),
        return_exceptions=True,
    )
    started = [m for m in mixed if not isinstance(m, BaseException)]
    refused = [m for m in mixed if isinstance(m, AlreadyExistsError)]
    assert len(started) >= 1 and len(started) + len(refused) == 8
    assert len({s.execution_id for s in started}) == 1
    assert all(r.metadata["executionId"] == started[0].execution_id for r in refused)


async def test_start_by_plan_id_and_by_plan(client: ExecutorClient) -> None:
    plan = await client.compile(WAIT)
    first = await client.start(plan=plan, request_id="r-5")
    assert first.plan_id == plan.plan_id
    # By id or by the plan itself: the same plan, so the same request.
    again = await client.start(plan_id=plan.plan_id, request_id="r-5")
    assert (again.execution_id, again.created) == (first.execution_id, False)
    with pytest.raises(AlreadyExistsError):
        await client.start(source=OTHER, request_id="r-5")


def test_grpc_code_is_already_exists() -> None:
    assert AlreadyExistsError("x", code=grpc.StatusCode.ALREADY_EXISTS).code.name == (
        "ALREADY_EXISTS"
    )


async def test_the_raw_status_carries_google_rpc_error_info(client: ExecutorClient) -> None:
    from google.rpc import error_details_pb2  # noqa: PLC0415
    from grpc_status import rpc_status  # noqa: PLC0415

    await client.start(source=WAIT, request_id="r-6")
    async with grpc.aio.insecure_channel(client.address) as channel:
        from execplan.v1 import executor_service_pb2_grpc  # noqa: PLC0415

        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StartExecution(pb.StartExecutionRequest(source=OTHER, request_id="r-6"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert [d.Unpack(info) for d in status.details if d.Is(info.DESCRIPTOR)] == [True]
    assert (info.reason, info.domain) == ("REQUEST_ID_REUSED", "execplan.dev")
    assert set(info.metadata) == {"requestId", "executionId", "planId"}


WAIT_TWO = """
name: idem-control
tasks:
  - id: first
    type: builtin.wait_for_event
    inputs: {event: go}
  - id: second
    type: builtin.wait_for_event
    depends_on: [first]
    inputs: {event: later}
"""


async def _kinds(client: ExecutorClient, execution_id: str, kind: str) -> int:
    events = [e async for e in client.history(execution_id)]
    return sum(1 for e in events if e.WhichOneof("kind") == kind)


async def test_control_calls_are_idempotent_on_request_id(where: str) -> None:
    async with serving(where) as (server, _), ExecutorClient(server.address) as client:
        execution_id = (await client.start(source=WAIT_TWO)).execution_id
        assert (
            await client.pause(execution_id, reason="look", request_id="p-1")
            == ex.EXECUTION_STATE_PAUSED
        )
        assert (
            await client.pause(execution_id, reason="look", request_id="p-1")
            == ex.EXECUTION_STATE_PAUSED
        )
        assert await _kinds(client, execution_id, "execution_paused") == 1
        with pytest.raises(AlreadyExistsError) as caught:
            await client.resume(execution_id, request_id="p-1")
        assert caught.value.reason == "REQUEST_ID_REUSED"
        assert caught.value.metadata["previousCall"] == "pause"
        with pytest.raises(AlreadyExistsError):
            await client.pause(execution_id, reason="another reason", request_id="p-1")
        assert await client.resume(execution_id, request_id="r-1") == ex.EXECUTION_STATE_RUNNING

        await _until_waiting(client, execution_id)
        assert (
            await client.send_event(execution_id, "go", {"ok": 1}, request_id="e-1")
        ).task_id == "first"
        # The retry of a delivered event is answered, not delivered again.
        assert (
            await client.send_event(execution_id, "go", {"ok": 1}, request_id="e-1")
        ).task_id == "first"
        assert await _kinds(client, execution_id, "external_event_received") == 1
        with pytest.raises(AlreadyExistsError):
            await client.send_event(execution_id, "go", {"ok": 2}, request_id="e-1")

        assert (
            await client.cancel(execution_id, reason="done", request_id="c-1")
            == ex.EXECUTION_STATE_CANCELLED
        )
    # After a restart (state rebuilt from the store), a finished execution still
    # answers the repeat of the call that finished it, and refuses anything else.
    async with serving(where) as (server, _), ExecutorClient(server.address) as client:
        assert (
            await client.cancel(execution_id, reason="done", request_id="c-1")
            == ex.EXECUTION_STATE_CANCELLED
        )
        with pytest.raises(AlreadyExistsError):
            await client.terminate(execution_id, reason="done", request_id="c-1")
        with pytest.raises(Exception, match="FAILED_PRECONDITION"):
            await client.cancel(execution_id, reason="done", request_id="c-2")
        assert await _kinds(client, execution_id, "execution_cancel_requested") == 1


async def _until_waiting(client: ExecutorClient, execution_id: str) -> None:
    async with asyncio.timeout(10):
        while True:
            execution = await client.get(execution_id)
            if execution.tasks[0].state == ex.TASK_STATE_WAITING:
                return
            await asyncio.sleep(0.02)


async def test_register_plan_refuses_another_plan_under_a_stored_id(client: ExecutorClient) -> None:
    plan = await client.compile(WAIT)
    assert await client.register_plan(plan) == plan.plan_id
    assert await client.register_plan(plan) == plan.plan_id  # the same plan again: fine
    forged = type(plan)()
    forged.CopyFrom(plan)
    forged.nodes[0].type = "something.else"
    for call in (client.register_plan(forged), client.start(plan=forged)):
        with pytest.raises(AlreadyExistsError) as caught:
            await call
        assert caught.value.reason == "PLAN_ID_REUSED"
        assert caught.value.metadata == {"planId": plan.plan_id}
    stored = await client.get_plan(plan.plan_id)
    assert stored.nodes[0].type == plan.nodes[0].type
