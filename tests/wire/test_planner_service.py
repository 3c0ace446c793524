"""PlannerService over a real grpc.aio server (port 0), as any client sees it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.client import ExecutorClient, NotFoundError
from execplan.config import ServerConfig
from execplan.planner.limits import MAX_TASKS
from execplan.server import BaseComponent, ExecplanServer
from execplan.v1 import planner_service_pb2 as pb
from execplan.v1 import planner_service_pb2_grpc as pb_grpc
from execplan.v1 import workflow_pb2
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

VALID = """
name: demo
version: "1"
tasks:
  - id: fetch
    type: http.get
  - id: parse
    type: json.parse
    depends_on: [fetch]
    inputs:
      body: "${{ tasks.fetch.output.body }}"
"""

# Two independent errors: the response must name both, by exact path.
INVALID = """
name: demo
tasks:
  - id: a
    type: t.a
  - id: b
    type: t.b
    depends_on: [a, nope]
  - id: a
    type: t.c
"""


def _stub(channel: grpc.aio.Channel) -> pb_grpc.PlannerServiceAsyncStub:
    return pb_grpc.PlannerServiceStub(channel)


def _details(err: grpc.aio.AioRpcError, cls: Any) -> Any:
    st = rpc_status.from_call(err)
    assert st is not None, "no google.rpc.Status in the trailers"
    for detail in st.details:
        msg = cls()
        if detail.Unpack(msg):
            return msg
    raise AssertionError(f"no {cls.DESCRIPTOR.full_name} in the status details")


async def test_compile_plan_ok(channel: grpc.aio.Channel) -> None:
    response = await _stub(channel).CompilePlan(pb.CompilePlanRequest(source=VALID))
    assert response.plan.plan_id
    assert [n.task_id for n in response.plan.nodes] == ["fetch", "parse"]
    assert all(d.severity == pb.SEVERITY_WARNING for d in response.diagnostics)


async def test_compile_plan_from_workflow_message(channel: grpc.aio.Channel) -> None:
    wf = workflow_pb2.Workflow(name="demo")
    wf.tasks.add(id="only", type="t.only")
    by_message = await _stub(channel).CompilePlan(pb.CompilePlanRequest(workflow=wf))
    as_json = json_format.MessageToJson(wf, preserving_proto_field_name=True)
    by_source = await _stub(channel).CompilePlan(
        pb.CompilePlanRequest(source=as_json, format=pb.SOURCE_FORMAT_JSON)
    )
    # One definition, one plan, whichever way it arrives.
    assert by_message.plan == by_source.plan


async def test_invalid_workflow_is_invalid_argument_with_field_paths(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(channel).CompilePlan(pb.CompilePlanRequest(source=INVALID))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = _details(info.value, error_details_pb2.BadRequest)
    fields = [v.field for v in bad.field_violations]
    assert "tasks[1].depends_on[1]" in fields
    assert "tasks[2].id" in fields
    assert all(": " in v.description for v in bad.field_violations)  # "code: message"
    info_detail = _details(info.value, error_details_pb2.ErrorInfo)
    assert info_detail.reason == "WORKFLOW_INVALID"


async def test_validate_returns_diagnostics_instead_of_failing(
    channel: grpc.aio.Channel,
) -> None:
    response = await _stub(channel).ValidateWorkflow(pb.ValidateWorkflowRequest(source=INVALID))
    assert not response.valid
    paths = {d.path for d in response.diagnostics if d.severity == pb.SEVERITY_ERROR}
    assert {"tasks[1].depends_on[1]", "tasks[2].id"} <= paths
    ok = await _stub(channel).ValidateWorkflow(pb.ValidateWorkflowRequest(source=VALID))
    assert ok.valid


@pytest.mark.parametrize("rpc", ["CompilePlan", "ValidateWorkflow"])
async def test_missing_definition_names_the_field(channel: grpc.aio.Channel, rpc: str) -> None:
    request = pb.CompilePlanRequest() if rpc == "CompilePlan" else pb.ValidateWorkflowRequest()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(_stub(channel), rpc)(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = _details(info.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["definition"]


async def test_limit_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    # JSON, not YAML: PyYAML would take seconds to parse this many tasks. The request
    # is a few MiB, so it also takes the compile-on-a-thread path.
    tasks = [{"id": f"t{i}", "type": "x"} for i in range(MAX_TASKS + 1)]
    source = json.dumps({"name": "big", "tasks": tasks})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(channel).CompilePlan(pb.CompilePlanRequest(source=source))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    quota = _details(info.value, error_details_pb2.QuotaFailure)
    assert quota.violations


async def test_workflow_message_limits(channel: grpc.aio.Channel) -> None:
    """A `Workflow` message is bounded like source text: too many tasks are refused
    before its conversion to a document, and a NaN in a value (which has no JSON
    form) names the problem instead of answering INTERNAL."""
    wide = workflow_pb2.Workflow(name="wide")
    for i in range(MAX_TASKS + 1):
        wide.tasks.add(id=f"t{i}", type="x")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(channel).CompilePlan(pb.CompilePlanRequest(workflow=wide))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    quota = _details(info.value, error_details_pb2.QuotaFailure)
    assert [v.subject for v in quota.violations] == ["workflow.tasks"]

    odd = workflow_pb2.Workflow(name="odd")
    task = odd.tasks.add(id="a", type="x")
    task.inputs["v"].number_value = float("nan")
    for rpc in ("CompilePlan", "ValidateWorkflow"):
        request = (pb.CompilePlanRequest if rpc == "CompilePlan" else pb.ValidateWorkflowRequest)(
            workflow=odd
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(_stub(channel), rpc)(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = _details(info.value, error_details_pb2.BadRequest)
        assert "NaN" in bad.field_violations[0].description


async def test_health_serving(server: ExecplanServer, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "execplan.v1.PlannerService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    # The same through the Python SDK.
    client = ExecutorClient(channel=channel)
    assert await client.health() == "SERVING"
    assert await client.health("execplan.v1.ExecutorService") == "SERVING"
    with pytest.raises(NotFoundError):
        await client.health("no.such.Service")


async def test_health_list_names_every_service(
    server: ExecplanServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    listed = await health.List(health_pb2.HealthListRequest())
    serving = health_pb2.HealthCheckResponse.SERVING
    assert {name: s.status for name, s in listed.statuses.items()} == {
        "": serving,
        "execplan.v1.PlannerService": serving,
        "execplan.v1.ExecutorService": serving,
        "execplan.v1.WorkerService": serving,
    }
    # List agrees with Check through a graceful shutdown.
    await server.health.enter_graceful_shutdown()
    listed = await health.List(health_pb2.HealthListRequest())
    assert {s.status for s in listed.statuses.values()} == {
        health_pb2.HealthCheckResponse.NOT_SERVING
    }


async def test_reflection_lists_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"execplan.v1.PlannerService", "grpc.health.v1.Health"} <= names


async def test_stop_sets_not_serving_first(server: ExecplanServer) -> None:
    # The shutdown order starts with health: probes see NOT_SERVING before anything closes.
    await server.stop(grace=0.5)
    response = await server.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await asyncio.wait_for(server.stop(), 1)  # idempotent


async def test_tracing_records_spans_and_keeps_health_watch_working(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )
    from opentelemetry.trace import StatusCode  # noqa: PLC0415

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = ServerConfig(listen="127.0.0.1:0", db_path=str(tmp_path / "x.db"), tracing=True)
    async with (
        ExecplanServer(config, tracer_provider=provider) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        await _stub(channel).CompilePlan(pb.CompilePlanRequest(source=VALID))
        with pytest.raises(grpc.aio.AioRpcError):
            await _stub(channel).CompilePlan(pb.CompilePlanRequest(source=INVALID))
        # Health Watch streams with context.write(); the interceptor must not see it.
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await asyncio.wait_for(watch.read(), 5)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    spans = [s for s in exporter.get_finished_spans() if s.name.endswith("/CompilePlan")]
    # The abort reached the span (status code attribute); per the OpenTelemetry
    # conventions a caller's mistake (INVALID_ARGUMENT) leaves the server span UNSET.
    codes = [(s.attributes or {}).get("rpc.grpc.status_code") for s in spans]
    assert codes == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert all(s.status.status_code == StatusCode.UNSET for s in spans)
    assert not any("Health" in s.name for s in exporter.get_finished_spans())


# --- the composition root's lifecycle (here because the server is what these tests run)


class _Recorder(BaseComponent):
    """A fake component that records the lifecycle calls it gets, in order."""

    def __init__(self, name: str, log: list[str], server: list[ExecplanServer]) -> None:
        self.name, self.log, self.server = name, log, server

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        self.log.append(f"register {self.name}")
        return ()

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def begin_drain(self) -> None:
        # Health must already say NOT_SERVING when streams are asked to drain.
        health = await self.server[0].health.Check(health_pb2.HealthCheckRequest(), None)
        self.log.append(
            f"drain {self.name} {health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)}"
        )

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.name == "executor":
            raise RuntimeError("a failing stop must not keep the store open")


async def test_lifecycle_order(tmp_path: Path) -> None:
    log: list[str] = []
    holder: list[ExecplanServer] = []
    parts = [_Recorder(n, log, holder) for n in ("store", "executor")]
    config = ServerConfig(listen="127.0.0.1:0", db_path=str(tmp_path / "x.db"))
    server = ExecplanServer(config, parts)
    holder.append(server)
    async with server:
        assert server.port > 0
    assert log == [
        "start store",
        "start executor",
        "register store",
        "register executor",
        "drain executor NOT_SERVING",
        "drain store NOT_SERVING",
        "stop executor",
        "stop store",
    ]


async def test_big_compile_does_not_stall_other_calls(channel: grpc.aio.Channel) -> None:
    # A 10k-task chain compiles for a good fraction of a second; run inline, it would
    # stall the event loop (and every other RPC) for all of it. Offloaded to a thread,
    # health checks keep being answered between GIL switches.
    tasks = [
        {"id": f"t{i}", "type": "x", "depends_on": [f"t{i - 1}"] if i else []}
        for i in range(10_000)
    ]
    source = json.dumps({"name": "big", "tasks": tasks})
    health = health_pb2_grpc.HealthStub(channel)
    compiling = asyncio.ensure_future(
        _stub(channel).CompilePlan(pb.CompilePlanRequest(source=source))
    )
    started = last = time.monotonic()
    worst = 0.0
    while not compiling.done():
        await health.Check(health_pb2.HealthCheckRequest())
        await asyncio.sleep(0.002)
        now = time.monotonic()
        worst, last = max(worst, now - last), now
    took = time.monotonic() - started
    assert len((await compiling).plan.nodes) == 10_000
    assert worst < max(0.5 * took, 0.05), f"loop stalled {worst:.3f}s of a {took:.3f}s compile"


async def test_unknown_source_format_names_the_field(channel: grpc.aio.Channel) -> None:
    request = pb.CompilePlanRequest(source=VALID, format=99)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(channel).CompilePlan(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = _details(info.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["format"]
