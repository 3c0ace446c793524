"""Strings a server keeps (ids, names, reasons, a worker's registration) have a
length bound, checked at the wire for every request: over it is INVALID_ARGUMENT
naming the field. Before, a 1 MB request_id, event name, reason or worker id was
stored as given (a worker id in every `task_dispatched` of its work)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import worker_service_pb2 as ws
from execplan.wire.bounds import MAX_ID_CHARS, MAX_LABELS, MAX_TASK_TYPES, MAX_TEXT_CHARS

from tests.support.raw_worker import RawWorker
from tests.support.server import Env, environment

WAITING = """
name: waiting
tasks:
  - {id: a, type: builtin.wait_for_event, inputs: {event: go, timeout: 1m}}
"""


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with environment(Env, tmp_path) as env_:
        yield env_


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def test_control_requests_at_and_over_each_bound(env: Env) -> None:
    stub = env.stub
    ok_id, long_id = "r" * MAX_ID_CHARS, "r" * (MAX_ID_CHARS + 1)
    start = pb.StartExecutionRequest(source=WAITING, request_id=ok_id, fairness_key=ok_id)
    execution_id = (await stub.StartExecution(start)).execution_id
    calls: dict[str, Callable[[str, str], Awaitable[Any]]] = {
        "request_id": lambda rid, _: stub.StartExecution(
            pb.StartExecutionRequest(source=WAITING, request_id=rid)
        ),
        "fairness_key": lambda key, _: stub.StartExecution(
            pb.StartExecutionRequest(source=WAITING, fairness_key=key)
        ),
        "name": lambda name, _: stub.SendEvent(
            pb.SendEventRequest(execution_id=execution_id, name=name)
        ),
        "reason": lambda _, reason: stub.PauseExecution(
            pb.PauseExecutionRequest(execution_id=execution_id, reason=reason)
        ),
    }
    resume = pb.ResumeExecutionRequest(execution_id=execution_id, request_id=long_id)
    assert await _code(stub.ResumeExecution(resume)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request_id: at most {MAX_ID_CHARS:,} characters",
    )
    for field, call in calls.items():
        long_text = "t" * (MAX_TEXT_CHARS + 1)
        code, details = await _code(call(long_id, long_text))
        most = MAX_TEXT_CHARS if field == "reason" else MAX_ID_CHARS
        assert (code, details) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}: at most {most:,} characters",
        ), field
        at_limit = f"{field}-".ljust(MAX_ID_CHARS, "x")  # a request_id not used before
        assert (await _code(call(at_limit, "t" * MAX_TEXT_CHARS)))[0] == grpc.StatusCode.OK, field


@pytest.mark.parametrize(
    ("registration", "field", "description"),
    [
        ({"worker_id": "w" * (MAX_ID_CHARS + 1)}, "worker_id", "at most 256 characters"),
        ({"task_types": ["t" * 129]}, "task_types", "at most 128 characters"),
        ({"task_types": [f"t{i}" for i in range(MAX_TASK_TYPES + 1)]}, "task_types", "entries"),
        ({"labels": {"k": "v" * (MAX_ID_CHARS + 1)}}, "labels", "at most 256 characters"),
        ({"labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}}, "labels", "entries"),
        ({"sdk": "s" * (MAX_ID_CHARS + 1)}, "sdk", "at most 256 characters"),
        ({"environment": "e" * (MAX_ID_CHARS + 1)}, "environment", "at most 256 characters"),
    ],
)
async def test_a_worker_registration_over_a_bound_ends_the_stream(
    env: Env, registration: dict[str, Any], field: str, description: str
) -> None:
    given: dict[str, Any] = {"worker_id": "w-1", "task_types": ["t.a"], "slots": 1}
    sent = ws.WorkerRegistration(**{**given, **registration})
    async with RawWorker.open(env.channel, sent) as raw:
        await raw.ended.wait()
    assert raw.error is not None
    assert raw.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raw.error.details() == f"register.{field}: {description}" or (
        description == "entries" and (raw.error.details() or "").endswith(" entries")
    ), raw.error.details()


def test_every_bounded_field_exists() -> None:
    """A name in the table that its message lacks would fail every such request."""
    from execplan.wire.bounds import _STRINGS  # noqa: PLC0415
    from google.protobuf import descriptor_pool  # noqa: PLC0415

    pool = descriptor_pool.Default()
    for message, fields in _STRINGS.items():
        descriptor = pool.FindMessageTypeByName(message)
        assert set(fields) <= set(descriptor.fields_by_name), message
