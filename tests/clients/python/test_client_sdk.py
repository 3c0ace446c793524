"""ExecutorClient against scripted fakes of ExecutorService and PlannerService."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from execplan.client import (
    ExecplanClientError,
    ExecutorClient,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from execplan.client._backoff import Backoff, Retry, RetryPolicy, transient
from execplan.client._channel import resolve_address
from execplan.client.values import from_struct, from_value
from execplan.v1 import (
    events_pb2,
    execution_pb2,
    executor_service_pb2,
    executor_service_pb2_grpc,
    plan_pb2,
    planner_service_pb2,
    planner_service_pb2_grpc,
)
from google.protobuf import any_pb2, duration_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

Ctx = grpc.aio.ServicerContext[message.Message, message.Message]


async def abort_with(context: Ctx, code: int, text: str, *details: message.Message) -> None:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    st = rpc_status.to_status(status_pb2.Status(code=code, message=text, details=packed))
    await context.abort(st.code, st.details, st.trailing_metadata)


def event(seq: int, terminal: bool = False) -> events_pb2.ExecutionEvent:
    e = events_pb2.ExecutionEvent(execution_id="ex-1", sequence=seq)
    if terminal:
        e.execution_completed.state = execution_pb2.EXECUTION_STATE_SUCCEEDED
    else:
        e.task_queued.task_id = f"t{seq}"
    return e


class FakeExecutor(executor_service_pb2_grpc.ExecutorServiceServicer):
    def __init__(self) -> None:
        self.starts: list[executor_service_pb2.StartExecutionRequest] = []
        self.watch_requests: list[int] = []
        self.list_tokens: list[str] = []

    async def StartExecution(
        self, request: executor_service_pb2.StartExecutionRequest, context: Ctx
    ) -> executor_service_pb2.StartExecutionResponse:
        self.starts.append(request)
        if request.source == "invalid":
            await abort_with(
                context,
                code_pb2.INVALID_ARGUMENT,
                "workflow is invalid",
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="tasks[3].depends_on[0]", description="unknown task 'x'"
                        ),
                        error_details_pb2.BadRequest.FieldViolation(
                            field="name", description="required"
                        ),
                    ]
                ),
            )
        if request.source == "busy":
            await abort_with(
                context,
                code_pb2.RESOURCE_EXHAUSTED,
                "too many executions",
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2)),
            )
        created = len({s.request_id for s in self.starts}) == len(self.starts)
        return executor_service_pb2.StartExecutionResponse(
            execution_id="ex-1", plan_id="p-1", created=created
        )

    async def GetExecution(
        self, request: executor_service_pb2.GetExecutionRequest, context: Ctx
    ) -> executor_service_pb2.GetExecutionResponse:
        if request.execution_id != "ex-1":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{request.execution_id} not found")
        execution = execution_pb2.Execution(
            execution_id="ex-1", last_sequence=request.at_sequence or 9
        )
        return executor_service_pb2.GetExecutionResponse(execution=execution)

    async def ListExecutions(
        self, request: executor_service_pb2.ListExecutionsRequest, context: Ctx
    ) -> executor_service_pb2.ListExecutionsResponse:
        self.list_tokens.append(request.page_token)
        page = int(request.page_token or "0")
        ids = [f"ex-{page * 2 + i}" for i in range(2)]
        return executor_service_pb2.ListExecutionsResponse(
            executions=[execution_pb2.Execution(execution_id=i) for i in ids],
            next_page_token=str(page + 1) if page < 2 else "",
        )

    async def ResumeExecution(
        self, request: executor_service_pb2.ResumeExecutionRequest, context: Ctx
    ) -> executor_service_pb2.ResumeExecutionResponse:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "execution already finished")
        raise AssertionError

    async def SendEvent(
        self, request: executor_service_pb2.SendEventRequest, context: Ctx
    ) -> executor_service_pb2.SendEventResponse:
        return executor_service_pb2.SendEventResponse(
            task_id=f"{request.name}:{from_value(request.data)}:{bool(request.request_id)}"
        )

    async def WatchExecution(
        self, request: executor_service_pb2.WatchExecutionRequest, context: Ctx
    ) -> AsyncIterator[executor_service_pb2.WatchExecutionResponse]:
        self.watch_requests.append(request.after_sequence)
        if len(self.watch_requests) == 1:
            for seq in (1, 2, 3):
                yield executor_service_pb2.WatchExecutionResponse(event=event(seq))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "executor restarting")
        # A sloppy server that replays one event too many: the client must drop it.
        for seq in range(request.after_sequence, 6):
            e = event(seq, terminal=seq == 5)
            yield executor_service_pb2.WatchExecutionResponse(event=e)

    async def GetExecutionHistory(
        self, request: executor_service_pb2.GetExecutionHistoryRequest, context: Ctx
    ) -> executor_service_pb2.GetExecutionHistoryResponse:
        start = int(request.page_token or request.after_sequence + 1)
        end = min(start + request.page_size, 8)
        return executor_service_pb2.GetExecutionHistoryResponse(
            events=[event(s) for s in range(start, end)],
            next_page_token=str(end) if end < 8 else "",
        )


class FakePlanner(planner_service_pb2_grpc.PlannerServiceServicer):
    async def CompilePlan(
        self, request: planner_service_pb2.CompilePlanRequest, context: Ctx
    ) -> planner_service_pb2.CompilePlanResponse:
        assert request.format == planner_service_pb2.SOURCE_FORMAT_AUTO
        plan = plan_pb2.ExecutionPlan()
        plan.plan_id = f"plan-of-{len(request.source)}"
        return planner_service_pb2.CompilePlanResponse(plan=plan)


@contextlib.asynccontextmanager
async def serving(
    retry: RetryPolicy | None = None, fake: FakeExecutor | None = None
) -> AsyncIterator[tuple[FakeExecutor, ExecutorClient]]:
    server = grpc.aio.server()
    # The generated base answers UNIMPLEMENTED for the RPCs a fake leaves out.
    fake = fake or FakeExecutor()  # type: ignore[abstract]
    executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server(fake, server)
    planner_service_pb2_grpc.add_PlannerServiceServicer_to_server(FakePlanner(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with ExecutorClient(f"127.0.0.1:{port}", retry=retry or RetryPolicy()) as client:
            yield fake, client
    finally:
        await server.stop(0)


async def test_start_sends_inputs_and_a_fresh_request_id() -> None:
    async with serving() as (fake, client):
        first = await client.start(source="name: wf", inputs={"order": 7, "tags": ["a"]})
        again = await client.start(source="name: wf", request_id="fixed")
        repeat = await client.start(source="name: wf", request_id="fixed")
    assert first.execution_id == "ex-1" and first.created
    assert (again.created, repeat.created) == (True, False)
    request = fake.starts[0]
    assert request.WhichOneof("definition") == "source"
    assert from_struct(request.inputs) == {"order": 7.0, "tags": ["a"]}
    assert len(request.request_id) == 36  # uuid4
    with pytest.raises(ValueError, match="exactly one"):
        await client.start(source="x", plan_id="p")


async def test_invalid_argument_carries_field_violations() -> None:
    async with serving() as (_, client):
        with pytest.raises(InvalidArgumentError) as info:
            await client.start(source="invalid")
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.violations == [
        ("tasks[3].depends_on[0]", "unknown task 'x'"),
        ("name", "required"),
    ]
    assert err.violations[0].field == "tasks[3].depends_on[0]"
    assert isinstance(err.__cause__, grpc.aio.AioRpcError)
    assert "tasks[3].depends_on[0]: unknown task 'x'" in str(err)


async def test_resource_exhausted_is_retried_until_the_deadline_then_carries_retry_after() -> None:
    """Shed load (RESOURCE_EXHAUSTED + RetryInfo) is retried, waiting at least the
    server's delay; past the policy's deadline the error reaches the caller."""
    async with serving(RetryPolicy(deadline=0.5)) as (fake, client):
        began = time.monotonic()
        with pytest.raises(ResourceExhaustedError) as info:
            await client.start(source="busy", request_id="r-1")
        took = time.monotonic() - began
    assert info.value.retry_after == 2.0
    # Tried, waited (2 s asked, cut to the 0.5 s left of the deadline), tried again.
    assert [s.request_id for s in fake.starts] == ["r-1", "r-1"]
    assert 0.45 <= took < 2.0


async def test_status_codes_map_to_the_tree() -> None:
    async with serving() as (_, client):
        with pytest.raises(NotFoundError):
            await client.get("nope")
        with pytest.raises(FailedPreconditionError) as info:
            await client.resume("ex-1")
        assert isinstance(info.value, ExecplanClientError)
        assert (await client.get("ex-1", at_sequence=4)).last_sequence == 4


async def test_list_and_history_follow_page_tokens() -> None:
    async with serving() as (fake, client):
        ids = [e.execution_id async for e in client.list(page_size=2)]
        history = [e.sequence async for e in client.history("ex-1", page_size=3)]
    assert ids == [f"ex-{i}" for i in range(6)]
    assert fake.list_tokens == ["", "1", "2"]
    assert history == list(range(1, 8))


async def test_watch_resumes_after_unavailable_without_gaps_or_duplicates() -> None:
    async with serving() as (fake, client):
        sequences = [e.sequence async for e in client.watch("ex-1")]
    assert sequences == [1, 2, 3, 4, 5]
    assert fake.watch_requests == [0, 3]


async def test_compile_and_send_event() -> None:
    async with serving() as (_, client):
        plan = await client.compile("name: wf")
        sent = await client.send_event("ex-1", "approved", {"by": "ann"})
    assert plan.plan_id == "plan-of-8"
    assert sent.task_id == "approved:{'by': 'ann'}:True"


class SheddingExecutor(FakeExecutor):
    """WatchExecution that sheds, drops and only then serves; `shed_always` never
    serves, `missing` answers NOT_FOUND."""

    def __init__(self, shed_always: bool = False, missing: bool = False) -> None:
        super().__init__()
        self.shed_always = shed_always
        self.missing = missing
        self.at: list[float] = []

    async def WatchExecution(
        self, request: executor_service_pb2.WatchExecutionRequest, context: Ctx
    ) -> AsyncIterator[executor_service_pb2.WatchExecutionResponse]:
        self.watch_requests.append(request.after_sequence)
        self.at.append(time.monotonic())
        if self.missing:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such execution")
        if self.shed_always or len(self.watch_requests) == 1:
            delay = duration_pb2.Duration(nanos=200_000_000)
            retry = error_details_pb2.RetryInfo(retry_delay=delay)
            await abort_with(context, code_pb2.RESOURCE_EXHAUSTED, "too many watches", retry)
        if len(self.watch_requests) == 2:
            for seq in (1, 2):
                yield executor_service_pb2.WatchExecutionResponse(event=event(seq))
            await context.abort(grpc.StatusCode.CANCELLED, "dropped")
        for seq in range(request.after_sequence + 1, 6):
            yield executor_service_pb2.WatchExecutionResponse(event=event(seq, seq == 5))


async def test_watch_rides_out_shedding_and_cancellation_and_resumes() -> None:
    """RESOURCE_EXHAUSTED + RetryInfo and a server-side CANCELLED never reach the
    caller: the watch waits (at least the server's delay), then resumes after the
    last event it yielded."""
    fake = SheddingExecutor()  # type: ignore[abstract]
    async with serving(fake=fake) as (_, client):
        sequences = [e.sequence async for e in client.watch("ex-1")]
    assert sequences == [1, 2, 3, 4, 5]
    assert fake.watch_requests == [0, 0, 2]
    assert fake.at[1] - fake.at[0] >= 0.19  # RetryInfo honoured
    assert fake.at[2] - fake.at[1] < 1.0  # after progress, the retry is immediate


async def test_watch_surfaces_shedding_past_the_deadline_and_other_errors_at_once() -> None:
    fake = SheddingExecutor(shed_always=True)  # type: ignore[abstract]
    async with serving(RetryPolicy(deadline=1.0), fake) as (_, client):
        with pytest.raises(ResourceExhaustedError) as info:
            async for _ in client.watch("ex-1"):
                pass
    assert info.value.retry_after == pytest.approx(0.2)
    assert 3 <= len(fake.watch_requests) <= 6  # about one try per 0.2-0.3 s
    missing = SheddingExecutor(missing=True)  # type: ignore[abstract]
    async with serving(fake=missing) as (_, client):
        with pytest.raises(NotFoundError):
            async for _ in client.watch("ex-1"):
                pass
    assert missing.watch_requests == [0]


def test_backoff_is_immediate_then_full_jitter_capped_at_two_seconds() -> None:
    backoff = Backoff(RetryPolicy())
    delays = [backoff.next_delay() for _ in range(200)]
    assert delays[0] == 0.0  # the first retry after a success is immediate
    assert delays[1] <= 0.1 and delays[2] <= 0.2
    assert all(0.0 <= d <= 2.0 for d in delays)
    assert max(delays[10:]) > 1.0  # it does reach the cap's range
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() == 0.0


def test_backoff_honours_the_servers_retry_delay_with_jitter() -> None:
    backoff = Backoff(RetryPolicy(max_server_delay=30.0))
    delays = [backoff.next_delay(server_delay=1.0) for _ in range(200)]
    assert all(1.0 <= d <= 1.5 for d in delays)  # never earlier than asked
    assert max(delays) - min(delays) > 0.2  # spread, not one synchronised wave
    assert backoff.next_delay(server_delay=3600.0) <= 45.0  # a confused server is cut


def test_retry_gives_up_at_the_deadline() -> None:
    retry = Retry(RetryPolicy(deadline=0.2))
    assert retry.delay() == 0.0
    time.sleep(0.25)
    assert retry.delay() is None
    retry.progressed()
    assert retry.delay() == 0.0
    assert Retry(RetryPolicy(deadline=None)).delay(server_delay=5.0) is not None


def test_transient_codes() -> None:
    assert transient(grpc.StatusCode.UNAVAILABLE, None)
    assert transient(grpc.StatusCode.CANCELLED, None)
    assert transient(grpc.StatusCode.RESOURCE_EXHAUSTED, 1.0)
    # A limit (QuotaFailure, no RetryInfo) is not fixed by trying again.
    assert not transient(grpc.StatusCode.RESOURCE_EXHAUSTED, None)
    assert not transient(grpc.StatusCode.NOT_FOUND, None)
    assert not transient(grpc.StatusCode.INVALID_ARGUMENT, 1.0)


def test_address_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECPLAN_ADDRESS", raising=False)
    assert resolve_address(None) == "127.0.0.1:7070"
    monkeypatch.setenv("EXECPLAN_ADDRESS", "exec:9")
    assert resolve_address(None) == "exec:9"
    assert resolve_address("given:1") == "given:1"
