"""Every integer and enum field of every request message, set to extreme values,
over a real server: the answer is never INTERNAL or UNKNOWN.

The fields are found by walking the request types' descriptors (nested messages
too: a plan inside StartExecutionRequest, attempt tokens inside ConnectRequest), so
a field added later is covered without touching this test. Each value is sent in
an otherwise valid request that names a real execution and plan, so it reaches
the handler's logic and the store, not just the first "required" check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.client.values import to_struct
from execplan.v1 import (
    events_pb2,
    execution_pb2,
    executor_service_pb2,
    planner_service_pb2,
    schedule_pb2,
    worker_service_pb2,
    workflow_pb2,
)
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status

from tests.security.rpcs import ALL_RPCS, Rpc, call_raw
from tests.support.server import Env, environment

EXTREMES = (0, -1, 2**31, 2**63 - 1, 2**64 - 1)
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SOURCE = """
name: ranges
inputs:
  n: {type: integer, default: 1}
tasks:
  - {id: a, type: rng.a, priority: 3}
  - {id: b, type: rng.b, depends_on: [a], inputs: {x: "${{ tasks.a.output.v }}"}}
"""
_BITS = {
    FieldDescriptor.TYPE_INT32: (32, True),
    FieldDescriptor.TYPE_SINT32: (32, True),
    FieldDescriptor.TYPE_SFIXED32: (32, True),
    FieldDescriptor.TYPE_ENUM: (32, True),
    FieldDescriptor.TYPE_UINT32: (32, False),
    FieldDescriptor.TYPE_FIXED32: (32, False),
    FieldDescriptor.TYPE_INT64: (64, True),
    FieldDescriptor.TYPE_SINT64: (64, True),
    FieldDescriptor.TYPE_SFIXED64: (64, True),
    FieldDescriptor.TYPE_UINT64: (64, False),
    FieldDescriptor.TYPE_FIXED64: (64, False),
}


def as_field_value(value: int, field: FieldDescriptor) -> int:
    """`value` as the field's type holds it: what the same bits on the wire decode to
    (-1 in a uint64 is 2^64-1; 2^31 in an int32 is -2^31)."""
    bits, signed = _BITS[field.type]
    wrapped = value % (1 << bits)
    if signed and wrapped >= 1 << (bits - 1):
        wrapped -= 1 << bits
    return wrapped


# A step of a field path: (field, key) where key is None (singular), 0 (first item of
# a repeated message field) or a map key.
Path_ = tuple[tuple[FieldDescriptor, Any], ...]


def integer_paths(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> Iterator[Path_]:
    """Every integer/enum field reachable from `descriptor` (each message type once per
    path; well-known types are not ours and are skipped)."""
    for field in descriptor.fields:
        if field.type in _BITS:
            yield ((field, None),)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            inner = field.message_type
            assert inner is not None
            if inner.full_name.startswith("google.protobuf.") or inner.full_name in seen:
                continue
            if inner.GetOptions().map_entry:
                value = inner.fields_by_name["value"]
                if value.type in _BITS:
                    yield ((field, "k"),)
                elif value.type == FieldDescriptor.TYPE_MESSAGE:
                    assert value.message_type is not None
                    for rest in integer_paths(value.message_type, seen | {inner.full_name}):
                        yield ((field, "k"), *rest)
                continue
            key = 0 if field.is_repeated else None
            for rest in integer_paths(inner, seen | {inner.full_name}):
                yield ((field, key), *rest)


def with_value(base: Message, path: Path_, value: int) -> Message:
    message = type(base)()
    message.CopyFrom(base)
    target: Any = message
    for field, key in path[:-1]:
        container = getattr(target, field.name)
        if key is None:
            target = container
        elif isinstance(key, str):
            target = container[key]
        else:
            target = container[0] if len(container) else container.add()
    leaf, key = path[-1]
    if key == "k":  # a map of integers: the entry's value field says the type
        assert leaf.message_type is not None
        entry_value = leaf.message_type.fields_by_name["value"]
        getattr(target, leaf.name)["k"] = as_field_value(value, entry_value)
        return message
    v = as_field_value(value, leaf)
    if leaf.is_repeated:
        getattr(target, leaf.name).append(v)
    else:
        setattr(target, leaf.name, v)
    return message


def name_of(path: Path_) -> str:
    return ".".join(f.name + (f"[{k!r}]" if isinstance(k, str) else "") for f, k in path)


@dataclass
class Fixture:
    env: Env
    bases: dict[str, list[Message]]


@pytest.fixture
async def fixture(tmp_path: Path) -> AsyncIterator[Fixture]:
    async with environment(Env, tmp_path) as env:
        compiled = await planner_stub(env.channel).CompilePlan(
            planner_service_pb2.CompilePlanRequest(source=SOURCE)
        )
        plan = compiled.plan
        done = await env.start(SOURCE)
        await env.client.terminate(done, reason="ended on purpose")
        running = await env.start(SOURCE)
        token = events_pb2.AttemptToken(attempt=1, lease_epoch=1)
        ref = worker_service_pb2.AttemptRef(execution_id=running, task_id="a", token=token)
        workflow_request = planner_service_pb2.CompilePlanRequest(source=SOURCE)
        pb = executor_service_pb2
        register = worker_service_pb2.WorkerRegistration(
            worker_id="ranges-1",
            task_types=["rng.a"],
            slots=2,
            running=[ref],
            capacity=worker_service_pb2.WorkerCapacity(
                cpu_millis=1000, memory_bytes=1 << 20, gpu=1, custom={"slots": 1}
            ),
        )
        bases: dict[str, list[Message]] = {
            "CompilePlan": [
                workflow_request,
                planner_service_pb2.CompilePlanRequest(workflow=_workflow()),
            ],
            "ValidateWorkflow": [planner_service_pb2.ValidateWorkflowRequest(workflow=_workflow())],
            "StartExecution": [
                pb.StartExecutionRequest(plan=plan, inputs=to_struct({"n": 2})),
                pb.StartExecutionRequest(workflow=_workflow()),
            ],
            "StartExecutions": [
                pb.StartExecutionsRequest(
                    requests=[
                        pb.StartExecutionRequest(plan=plan, inputs=to_struct({"n": 2})),
                        pb.StartExecutionRequest(workflow=_workflow()),
                    ]
                )
            ],
            "GetExecution": [pb.GetExecutionRequest(execution_id=e) for e in (done, running)],
            "ListExecutions": [pb.ListExecutionsRequest(workflow_name="ranges")],
            "PauseExecution": [pb.PauseExecutionRequest(execution_id=running)],
            "ResumeExecution": [pb.ResumeExecutionRequest(execution_id=running)],
            "CancelExecution": [pb.CancelExecutionRequest(execution_id=done)],
            "TerminateExecution": [pb.TerminateExecutionRequest(execution_id=done)],
            "SendEvent": [pb.SendEventRequest(execution_id=running, name="go")],
            "WatchExecution": [pb.WatchExecutionRequest(execution_id=done)],
            "WatchExecutions": [pb.WatchExecutionsRequest()],
            "GetExecutionHistory": [
                pb.GetExecutionHistoryRequest(execution_id=e) for e in (done, running)
            ],
            "RegisterPlan": [pb.RegisterPlanRequest(plan=plan)],
            "GetPlan": [pb.GetPlanRequest(plan_id=plan.plan_id)],
            "ReplayExecution": [pb.ReplayExecutionRequest(execution_id=done, plan=plan)],
            "ListCircuitBreakers": [pb.ListCircuitBreakersRequest()],
            "ListPlans": [pb.ListPlansRequest(workflow_name="ranges")],
            "ListWorkers": [pb.ListWorkersRequest()],
            "ListLimits": [pb.ListLimitsRequest()],
            "SetRateLimit": [
                pb.SetRateLimitRequest(
                    name="ranges", units=10, burst=5, period=duration_pb2.Duration(seconds=1)
                )
            ],
            "DeleteRateLimit": [pb.DeleteRateLimitRequest(name="ranges")],
            "PurgeCache": [pb.PurgeCacheRequest(task_type="rng.a")],
            "SetBudget": [
                pb.SetBudgetRequest(execution_id=running, budget=workflow_pb2.Budget(cost=5.0))
            ],
            "GetUsage": [
                pb.GetUsageRequest(workflow_name="ranges"),
                pb.GetUsageRequest(execution_id=running, group_by=pb.USAGE_GROUPING_TASK),
            ],
            "WatchTaskStream": [pb.WatchTaskStreamRequest(execution_id=done)],
            "PurgeExecutions": [
                pb.PurgeExecutionsRequest(filter='workflow = "none"', limit=5, dry_run=True)
            ],
            "CreateSchedule": [
                pb.CreateScheduleRequest(
                    name="ranges",
                    spec=schedule_pb2.ScheduleSpec(interval=duration_pb2.Duration(seconds=60)),
                    plan=plan,
                    paused=True,
                    search_attributes={
                        "n": execution_pb2.SearchAttributeValue(int_value=1),
                    },
                )
            ],
            "GetSchedule": [pb.GetScheduleRequest(name="ranges")],
            "ListSchedules": [pb.ListSchedulesRequest()],
            "DeleteSchedule": [pb.DeleteScheduleRequest(name="gone")],
            "PauseSchedule": [pb.PauseScheduleRequest(name="ranges")],
            "ResumeSchedule": [pb.ResumeScheduleRequest(name="ranges")],
            "BackfillSchedule": [
                pb.BackfillScheduleRequest(
                    name="ranges",
                    start=timestamp_pb2.Timestamp(seconds=60),
                    end=timestamp_pb2.Timestamp(seconds=600),
                )
            ],
            "Connect": [
                worker_service_pb2.ConnectRequest(register=register),
                worker_service_pb2.ConnectRequest(
                    acks=[worker_service_pb2.AssignmentAck(attempt=ref)],
                    heartbeats=[worker_service_pb2.TaskHeartbeat(attempt=ref)],
                    results=[worker_service_pb2.TaskResult(attempt=ref)],
                    status=worker_service_pb2.WorkerStatus(free_slots=1),
                ),
            ],
        }
        yield Fixture(env, bases)


def planner_stub(channel: grpc.aio.Channel) -> Any:
    from execplan.v1 import planner_service_pb2_grpc  # noqa: PLC0415

    return planner_service_pb2_grpc.PlannerServiceStub(channel)


def _workflow() -> Any:
    from execplan.v1 import workflow_pb2  # noqa: PLC0415

    workflow = workflow_pb2.Workflow(name="ranges-msg")
    workflow.tasks.add(id="a", type="rng.a")
    return workflow


async def connect_code(fixture: Fixture, request: Message) -> grpc.StatusCode:
    """The final status of a worker stream that sends `request` (after a registration,
    unless it is one), half-closes and reads until the server ends the stream."""
    messages = [request]
    if not request.HasField("register"):
        messages.insert(0, fixture.bases["Connect"][0])
    call: Any = fixture.env.channel.stream_stream(
        "/execplan.v1.WorkerService/Connect",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=worker_service_pb2.ConnectResponse.FromString,
    )(timeout=5.0)
    try:
        for message in messages:
            await call.write(message)
        await call.done_writing()
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def batch_code(fixture: Fixture, request: Message) -> grpc.StatusCode:
    """StartExecutions answers an item out of range in that item's result: the worst
    code of the call and of its items."""
    try:
        assert isinstance(request, executor_service_pb2.StartExecutionsRequest)
        response = await fixture.env.stub.StartExecutions(request, timeout=3.0)
    except grpc.aio.AioRpcError as err:
        return err.code()
    codes = {code.value[0]: code for code in grpc.StatusCode}
    for result in response.results:
        if result.HasField("error") and codes[result.error.code] in BAD:
            return codes[result.error.code]
    return grpc.StatusCode.OK


def request_type(rpc: Rpc) -> Descriptor:
    for module in (executor_service_pb2, planner_service_pb2, worker_service_pb2):
        service = module.DESCRIPTOR.services_by_name.get(rpc.service.rpartition(".")[2])
        if service is not None:
            found: Descriptor = service.methods_by_name[rpc.name].input_type
            return found
    raise AssertionError(rpc)


async def test_every_integer_field_of_every_request_is_range_checked(fixture: Fixture) -> None:
    assert {rpc.name for rpc in ALL_RPCS} == set(fixture.bases), "a new RPC needs a base request"
    failures: list[str] = []
    calls = 0
    for rpc in ALL_RPCS:
        descriptor = request_type(rpc)
        paths = list(integer_paths(descriptor))
        for base in fixture.bases[rpc.name]:
            assert base.DESCRIPTOR.full_name == descriptor.full_name
            for path in paths:
                for value in EXTREMES:
                    request = with_value(base, path, value)
                    if rpc.name == "Connect":
                        code = await connect_code(fixture, request)
                    elif rpc.name == "StartExecutions":
                        code = await batch_code(fixture, request)
                    else:
                        payload = request.SerializeToString()
                        code = await call_raw(fixture.env.channel, rpc, [payload], deadline=3.0)
                    calls += 1
                    if code in BAD:
                        failures.append(f"{rpc.name} {name_of(path)}={value}: {code.name}")
    assert calls > 500, calls
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("rpc", "field"),
    [("WatchExecution", "after_sequence"), ("GetExecutionHistory", "after_sequence")],
)
async def test_a_sequence_past_int64_names_the_field(
    fixture: Fixture, rpc: str, field: str
) -> None:
    base = fixture.bases[rpc][0]
    request = type(base)()
    request.CopyFrom(base)
    setattr(request, field, 2**63)
    method = getattr(fixture.env.stub, rpc)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call = method(request)
        if rpc == "WatchExecution":
            async for _ in call:
                pass
        else:
            await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    from google.rpc import error_details_pb2  # noqa: PLC0415

    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(bad.DESCRIPTOR))
    assert [v.field for v in bad.field_violations] == [field]
    assert "9223372036854775807" in bad.field_violations[0].description
