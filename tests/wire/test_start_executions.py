"""StartExecutions: many starts in one call, each answered as StartExecution would
have answered it, on SQLite and on PostgreSQL (real servers on loopback).

The raw stub is used on purpose: these tests pin the wire contract (result order,
google.rpc.Status per item, `requests[i].` field paths), not the SDK's view of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import pytest
from execplan.config import ServerConfig
from execplan.server import ExecplanServer, ExecutorComponent, PlannerComponent
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import executor_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from store.pg import pg_dsn, pg_server, where  # type: ignore[import-not-found]

from tests.support.server import serving
from tests.support.workflows import waiting

__all__ = ["pg_dsn", "pg_server", "where"]  # fixtures, imported for pytest

WAIT = waiting("batch")
BROKEN = "name: broken\ntasks:\n  - {id: a, type: t.x, depends_on: [nope]}\n"
OTHER = waiting("batch-other")

Stub: TypeAlias = "pb_grpc.ExecutorServiceAsyncStub"
Served = tuple[ExecplanServer, ExecutorComponent, Stub]


@pytest.fixture
async def served(where: str) -> AsyncIterator[Served]:
    async with (
        serving(where) as (server, executor),
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        yield server, executor, pb_grpc.ExecutorServiceStub(channel)


def _start(source: str = WAIT, request_id: str = "", **inputs: Any) -> pb.StartExecutionRequest:
    values = struct_pb2.Struct()
    values.update(inputs)
    return pb.StartExecutionRequest(source=source, inputs=values, request_id=request_id)


def _detail(status: status_pb2.Status, kind: Any) -> list[Any]:
    found = []
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            found.append(message)
    return found


def _fields(status: status_pb2.Status) -> list[str]:
    (bad,) = _detail(status, error_details_pb2.BadRequest)
    return [v.field for v in bad.field_violations]


def _reason(status: status_pb2.Status) -> str:
    (info,) = _detail(status, error_details_pb2.ErrorInfo)
    reason: str = info.reason
    return reason


async def _exists(stub: Stub, execution_id: str) -> bool:
    response = await stub.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
    return bool(response.execution.execution_id == execution_id)


async def test_good_and_bad_items_are_answered_each_in_order(served: Served) -> None:
    _, _, stub = served
    batch = pb.StartExecutionsRequest(
        requests=[
            _start(n=1),
            _start(n="not a number"),  # bad input
            pb.StartExecutionRequest(),  # no definition
            _start(source=BROKEN),  # source that does not compile
            _start(n=2),
            pb.StartExecutionRequest(plan_id="no-such-plan"),
        ]
    )
    response = await stub.StartExecutions(batch)
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["started", "error", "error", "error", "started", "error"]
    good = [response.results[i].started for i in (0, 4)]
    assert all(s.created for s in good) and good[0].execution_id != good[1].execution_id
    for started in good:
        assert await _exists(stub, started.execution_id)
    errors = {i: response.results[i].error for i in (1, 2, 3, 5)}
    assert errors[1].code == code_pb2.INVALID_ARGUMENT
    assert _fields(errors[1]) == ["requests[1].inputs.n"]
    assert errors[2].code == code_pb2.INVALID_ARGUMENT
    assert _fields(errors[2]) == ["requests[2].definition"]
    assert errors[3].code == code_pb2.INVALID_ARGUMENT
    assert _reason(errors[3]) == "WORKFLOW_INVALID"
    assert _fields(errors[3]) and all(f.startswith("requests[3].") for f in _fields(errors[3]))
    assert errors[5].code == code_pb2.NOT_FOUND
    # The same status StartExecution gives, but for the prefix.
    with pytest.raises(grpc.aio.AioRpcError) as alone:
        await stub.StartExecution(_start(n="not a number"))
    assert alone.value.details() == errors[1].message


async def test_one_batch_is_one_group_commit(served: Served) -> None:
    _, executor, stub = served
    await stub.StartExecution(_start(n=0))  # compiles and registers the plan
    stats = executor.store.stats  # type: ignore[attr-defined]
    before = stats.transactions
    response = await stub.StartExecutions(
        pb.StartExecutionsRequest(requests=[_start(n=i) for i in range(50)])
    )
    assert all(r.started.created for r in response.results)
    assert len({r.started.execution_id for r in response.results}) == 50
    assert stats.transactions - before == 1
    assert stats.largest_group >= 50


async def test_request_ids_inside_one_batch_and_across_batches(served: Served) -> None:
    _, _, stub = served
    first = await stub.StartExecutions(
        pb.StartExecutionsRequest(
            requests=[
                _start(request_id="a", n=1),
                _start(request_id="a", n=1),  # the same request: the same execution
                _start(request_id="b", n=1),
                _start(request_id="b", n=2),  # reused with another request
            ]
        )
    )
    a, a_again, b, b_other = first.results
    assert a.started.created and not a_again.started.created
    assert a_again.started.execution_id == a.started.execution_id
    assert b.started.created
    assert b_other.error.code == code_pb2.ALREADY_EXISTS
    assert _reason(b_other.error) == "REQUEST_ID_REUSED"
    (info,) = _detail(b_other.error, error_details_pb2.ErrorInfo)
    assert info.metadata["executionId"] == b.started.execution_id
    # Across batches, and across StartExecution and StartExecutions.
    second = await stub.StartExecutions(
        pb.StartExecutionsRequest(
            requests=[_start(request_id="a", n=1), _start(OTHER, request_id="b", n=1)]
        )
    )
    assert not second.results[0].started.created
    assert second.results[0].started.execution_id == a.started.execution_id
    assert _reason(second.results[1].error) == "REQUEST_ID_REUSED"
    alone = await stub.StartExecution(_start(request_id="a", n=1))
    assert (alone.execution_id, alone.created) == (a.started.execution_id, False)
    listed = await stub.ListExecutions(pb.ListExecutionsRequest())
    assert len(listed.executions) == 2  # "a" and "b", nothing else


async def test_a_burst_of_a_new_plan_looks_request_ids_up_once(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start of a plan not yet registered looks its request_id up and
    registers the plan; the others of the batch wait for that and leave their
    request_ids to the store's create_execution, which still finds a reused one."""
    _, executor, stub = served
    old = await stub.StartExecution(_start(request_id="old", n=1))
    lookups: list[str] = []
    store = executor.store
    find = store.find_by_request

    async def find_counted(request_id: str) -> Any:
        lookups.append(request_id)
        return await find(request_id)

    monkeypatch.setattr(store, "find_by_request", find_counted)
    response = await stub.StartExecutions(
        pb.StartExecutionsRequest(
            requests=[_start(OTHER, request_id=f"r{i}", n=i) for i in range(20)]
            + [_start(OTHER, request_id="old", n=1), _start(OTHER, request_id="r3", n=3)]
        )
    )
    *started, reused, again = response.results
    assert all(r.started.created for r in started)
    assert len({r.started.execution_id for r in started}) == 20
    assert _reason(reused.error) == "REQUEST_ID_REUSED"
    (info,) = _detail(reused.error, error_details_pb2.ErrorInfo)
    assert info.metadata["executionId"] == old.execution_id
    assert (again.started.execution_id, again.started.created) == (
        started[3].started.execution_id,
        False,
    )
    assert lookups == ["r0"]


async def test_the_item_count_is_bounded(served: Served) -> None:
    _, _, stub = served
    for count in (0, 1001):
        batch = pb.StartExecutionsRequest(requests=[_start()] * count)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StartExecutions(batch)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "requests" in (caught.value.details() or "")
    assert not (await stub.ListExecutions(pb.ListExecutionsRequest())).executions
    full = await stub.StartExecutions(pb.StartExecutionsRequest(requests=[_start()] * 1000))
    assert len(full.results) == 1000
    assert all(r.started.created for r in full.results)


async def test_an_item_out_of_the_wire_bounds_fails_alone(served: Served) -> None:
    _, _, stub = served
    response = await stub.StartExecutions(
        pb.StartExecutionsRequest(
            requests=[
                _start(request_id="ok"),
                _start(request_id="x" * 300),
                pb.StartExecutionRequest(source=WAIT, format=99),  # type: ignore[arg-type]
            ]
        )
    )
    ok, long_id, bad_enum = response.results
    assert ok.started.created
    assert long_id.error.code == code_pb2.INVALID_ARGUMENT
    assert _fields(long_id.error) == ["requests[1].request_id"]
    assert _fields(bad_enum.error) == ["requests[2].format"]
    # StartExecution refuses the same request the same way (in the interceptor).
    with pytest.raises(grpc.aio.AioRpcError) as alone:
        await stub.StartExecution(_start(request_id="x" * 300))
    assert alone.value.details() == long_id.error.message


async def test_an_answer_over_the_message_limit_loses_field_lists_not_items(
    tmp_path: Path,
) -> None:
    # 500 failed items with ~2.4 KB of BadRequest each would make a 1.2 MB answer on a
    # 1 MiB server, which gRPC could not send once the other 500 were started: the
    # errors keep code, message and ErrorInfo, and drop their field lists instead.
    limit = 1024 * 1024
    config = ServerConfig(
        listen="127.0.0.1:0", db_path=str(tmp_path / "cut.db"), max_message_bytes=limit
    )
    executor = ExecutorComponent(config.db_path, max_message_bytes=limit)
    names = [f"a{i:02}" for i in range(30)]
    source = "name: wide\ninputs:\n" + "".join(f"  {n}: {{type: integer}}\n" for n in names)
    source += "tasks:\n  - {id: w, type: builtin.wait_for_event, inputs: {event: go}}\n"
    async with (
        ExecplanServer(config, [executor, PlannerComponent(config)]) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub: Stub = pb_grpc.ExecutorServiceStub(channel)
        good: dict[str, Any] = dict.fromkeys(names, 1)
        bad: dict[str, Any] = dict.fromkeys(names, "x")
        first = pb.StartExecutionRequest(source=source, inputs=_struct(good))
        plan_id = (await stub.StartExecution(first)).plan_id
        items = [
            pb.StartExecutionRequest(plan_id=plan_id, inputs=_struct(bad if i % 2 else good))
            for i in range(1000)
        ]
        alone = await stub.StartExecutions(pb.StartExecutionsRequest(requests=items[:2]))
        assert len(_fields(alone.results[1].error)) == 30  # whole when it fits
        response = await stub.StartExecutions(pb.StartExecutionsRequest(requests=items))
        assert response.ByteSize() <= limit
        for i, result in enumerate(response.results):
            if i % 2 == 0:
                assert result.started.created
            else:
                assert result.error.code == code_pb2.INVALID_ARGUMENT
                assert result.error.message == alone.results[1].error.message
                assert _reason(result.error) == "INVALID_ARGUMENT"
                assert not _detail(result.error, error_details_pb2.BadRequest)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct
