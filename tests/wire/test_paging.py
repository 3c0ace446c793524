"""One paging rule for ListExecutions and GetExecutionHistory (AIP-158): page_size 0
is the default (100), a size above the maximum (1000) is served as the maximum, and a
page token the server did not issue is INVALID_ARGUMENT naming `page_token`."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.client import ExecutorClient
from execplan.client.values import to_struct
from execplan.config import ServerConfig
from execplan.server import ExecplanServer, ExecutorComponent, PlannerComponent
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import executor_service_pb2_grpc, schedule_pb2
from execplan.wire.paging import DEFAULT_PAGE, MAX_PAGE, page_size
from execplan.worker import Worker
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support.server import FAST, Env, environment, stop_worker

WAIT = "name: paged\ntasks:\n  - {id: w, type: builtin.wait_for_event, inputs: {event: go}}\n"


def test_the_rule() -> None:
    assert (DEFAULT_PAGE, MAX_PAGE) == (100, 1000)
    assert page_size(0) == DEFAULT_PAGE
    assert page_size(1) == 1
    assert page_size(MAX_PAGE) == MAX_PAGE
    assert page_size(MAX_PAGE + 1) == MAX_PAGE
    assert page_size(2**32 - 1) == MAX_PAGE


def _bad_field(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Unpack(bad):
            return [v.field for v in bad.field_violations]
    return []


async def test_both_rpcs_follow_it(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        ids = [await env.start(WAIT) for _ in range(3)]
        for size in (0, 2**32 - 1):
            listed = await env.stub.ListExecutions(pb.ListExecutionsRequest(page_size=size))
            assert sorted(e.execution_id for e in listed.executions) == sorted(ids)
            assert listed.next_page_token == ""
            history = await env.stub.GetExecutionHistory(
                pb.GetExecutionHistoryRequest(execution_id=ids[0], page_size=size)
            )
            assert [e.sequence for e in history.events] == list(range(1, 4))
            assert history.next_page_token == ""
        first = await env.stub.ListExecutions(pb.ListExecutionsRequest(page_size=2))
        assert len(first.executions) == 2 and first.next_page_token


async def _refused(call: object) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return _bad_field(caught.value)


async def test_a_token_not_issued_names_page_token(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        execution_id = await env.start(WAIT)
        for token in ("abc", "-1", "9" * 20, "\uff11\uff12"):  # int() reads fullwidth digits
            history = pb.GetExecutionHistoryRequest(execution_id=execution_id, page_token=token)
            assert await _refused(env.stub.GetExecutionHistory(history)) == ["page_token"]
        for raw in ("abc", "9" * 20 + ":x", "-" + "9" * 20 + ":x"):
            cursor = base64.urlsafe_b64encode(raw.encode()).decode()
            listing = pb.ListExecutionsRequest(page_token=cursor)
            assert await _refused(env.stub.ListExecutions(listing)) == ["page_token"]


async def test_a_sequence_past_the_last_event_is_out_of_range(tmp_path: Path) -> None:
    """GetExecution.at_sequence, WatchExecution and GetExecutionHistory.after_sequence:
    the last sequence itself is fine, one past it is OUT_OF_RANGE naming it."""
    async with environment(Env, tmp_path) as env:
        running = await env.start(WAIT)
        done = await env.start(WAIT)
        await env.client.terminate(done)
        for execution_id in (running, done):
            end = (await env.client.get(execution_id)).last_sequence
            at_end = await env.stub.GetExecution(
                pb.GetExecutionRequest(execution_id=execution_id, at_sequence=end)
            )
            assert at_end.execution.last_sequence == end
            calls: dict[str, Any] = {
                "at_sequence": env.stub.GetExecution(
                    pb.GetExecutionRequest(execution_id=execution_id, at_sequence=end + 1)
                ),
                "after_sequence": env.stub.GetExecutionHistory(
                    pb.GetExecutionHistoryRequest(execution_id=execution_id, after_sequence=end + 1)
                ),
            }
            for field, call in calls.items():
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
                assert f"its last event is {end}" in (caught.value.details() or "")
                assert _bad_field(caught.value) == [field]
            watch = env.stub.WatchExecution(
                pb.WatchExecutionRequest(execution_id=execution_id, after_sequence=end + 1)
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in watch:
                    pass
            assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
        # From the last event of a finished execution: nothing more, the stream ends.
        end = (await env.client.get(done)).last_sequence
        tail = env.stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=done, after_sequence=end)
        )
        assert [r async for r in tail] == []


BIG = """
name: big
inputs:
  blob: {type: string}
tasks:
  - {id: a, type: big.echo, inputs: {blob: "${{ workflow.inputs.blob }}"}}
  - {id: b, type: big.echo, inputs: {blob: "${{ workflow.inputs.blob }}"}}
  - {id: c, type: big.echo, inputs: {blob: "${{ workflow.inputs.blob }}"}}
outputs:
  a: "${{ tasks.a.output.echo }}"
  b: "${{ tasks.b.output.echo }}"
  c: "${{ tasks.c.output.echo }}"
"""

WAIT_BIG = """
name: big-wait
inputs:
  blob: {type: string}
tasks:
  - {id: w, type: builtin.wait_for_event, inputs: {event: go}}
"""


def server_hub(executor: ExecutorComponent) -> Any:
    return executor.engine.hub


async def test_pages_stay_under_the_message_limit(tmp_path: Path) -> None:
    """Big inputs and outputs end a page early instead of making one no response can
    carry: a 1 MiB server pages through 300 KB executions, events and schedules."""
    limit = 1024 * 1024
    config = ServerConfig(
        listen="127.0.0.1:0", db_path=str(tmp_path / "big.db"), max_message_bytes=limit
    )
    executor = ExecutorComponent(config.db_path, config=FAST, max_message_bytes=limit)
    async with ExecplanServer(config, [executor, PlannerComponent(config)]) as server:
        channel = grpc.aio.insecure_channel(server.address)
        client = ExecutorClient(channel=channel)
        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        worker = Worker(server.address, slots=3)
        worker.task("big.echo")(lambda inputs: {"echo": inputs["blob"]})
        serving = asyncio.create_task(worker.serve())
        try:
            blob = "x" * 300_000
            summaries: list[Any] = []

            async def watch_all() -> None:
                async for execution in client.watch_all(workflow_name="big"):
                    summaries.append(execution)
                    if execution.state == ex.EXECUTION_STATE_SUCCEEDED:
                        return

            watching = asyncio.create_task(watch_all())
            while not server_hub(executor).watchers_of_all():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            ids = [(await client.start(source=BIG, inputs={"blob": blob})).execution_id]
            async for event in client.watch(ids[0]):
                if event.HasField("execution_completed"):
                    break
            # The finished summary (300 KB inputs, 900 KB outputs) is over the limit: it
            # comes without them, and the stream goes on.
            async with asyncio.timeout(10):
                await watching
            assert summaries[-1].execution_id == ids[0]
            assert not summaries[-1].HasField("outputs") and not summaries[-1].HasField("inputs")
            assert summaries[0].inputs["blob"] == blob  # the start's summary fits whole
            for _ in range(4):  # running, 300 KB each: together more than one page
                started = await client.start(source=WAIT_BIG, inputs={"blob": blob})
                ids.append(started.execution_id)

            events: list[Any] = []
            token, pages = "", 0
            while True:
                history = await stub.GetExecutionHistory(
                    pb.GetExecutionHistoryRequest(execution_id=ids[0], page_token=token)
                )
                assert history.ByteSize() <= limit
                events += history.events
                pages += 1
                if not (token := history.next_page_token):
                    break
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert events[-1].HasField("execution_completed")
            assert pages >= 2  # the 3 outputs and the inputs do not fit in one

            listed: list[str] = []
            token, pages = "", 0
            while True:
                page = await stub.ListExecutions(pb.ListExecutionsRequest(page_token=token))
                assert page.ByteSize() <= limit
                listed += [e.execution_id for e in page.executions]
                first = next((e for e in page.executions if e.execution_id == ids[0]), None)
                if first is not None:  # 1.2 MB whole: listed without inputs and outputs
                    assert first.state == ex.EXECUTION_STATE_SUCCEEDED
                    assert not first.HasField("outputs") and not first.HasField("inputs")
                pages += 1
                if not (token := page.next_page_token):
                    break
            assert sorted(listed) == sorted(ids) and pages >= 2

            for n in range(5):
                await stub.CreateSchedule(
                    pb.CreateScheduleRequest(
                        name=f"big-{n}",
                        spec=schedule_pb2.ScheduleSpec(interval=duration_pb2.Duration(seconds=60)),
                        source=BIG,
                        inputs=to_struct({"blob": blob}),
                        paused=True,
                    )
                )
            names: list[str] = []
            token, pages = "", 0
            while True:
                schedules = await stub.ListSchedules(pb.ListSchedulesRequest(page_token=token))
                assert schedules.ByteSize() <= limit
                names += [s.name for s in schedules.schedules]
                pages += 1
                if not (token := schedules.next_page_token):
                    break
            assert sorted(names) == [f"big-{n}" for n in range(5)] and pages >= 2

            # One execution cannot be paged: too large is said plainly.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetExecution(pb.GetExecutionRequest(execution_id=ids[0]))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "over this server's message limit of 1,048,576" in str(caught.value.details())
            assert "GetExecutionHistory" in str(caught.value.details())
        finally:
            await stop_worker(worker, serving)
            await channel.close()
