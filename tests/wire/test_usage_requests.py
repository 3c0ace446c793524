"""GetUsage requests the store cannot judge, over a real server: timestamps outside
what a Timestamp holds, two scopes, an unknown grouping, a grouping by attribute
without a valid name (or a name without it); each INVALID_ARGUMENT with a BadRequest
naming the field."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import executor_service_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support.server import Env, environment


def _fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    out: list[str] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out += [v.field for v in bad.field_violations]
    return out


async def test_bad_usage_requests_name_the_field(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        stub = pb_grpc.ExecutorServiceStub(env.channel)
        far = pb.GetUsageRequest()
        far.since.seconds = 10**12
        nanos = pb.GetUsageRequest()
        nanos.until.nanos = -1
        both = pb.GetUsageRequest(execution_id="x", workflow_name="w")
        grouping = pb.GetUsageRequest(group_by=99)  # type: ignore[arg-type]
        by_attribute = pb.USAGE_GROUPING_ATTRIBUTE
        unnamed = pb.GetUsageRequest(group_by=by_attribute)
        misnamed = pb.GetUsageRequest(group_by=by_attribute, group_attribute="customer.id")
        stray = pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_TASK, group_attribute="customer")
        for request, field in (
            (far, "since"),
            (nanos, "until"),
            (both, "workflow_name"),
            (grouping, "group_by"),
            (unnamed, "group_attribute"),
            (misnamed, "group_attribute"),
            (stray, "group_attribute"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetUsage(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in _fields(caught.value), (field, caught.value.details())
        empty = await stub.GetUsage(pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_TASK))
        assert empty.executions == 0 and not empty.usage.counters and not empty.groups
