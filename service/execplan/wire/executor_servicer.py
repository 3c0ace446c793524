"""gRPC face of the executor: `execplan.v1.ExecutorService`.

Thin: decode the request, call the engine, encode the answer. Workflow source is
compiled on the way by a `Compiler` (in process, or the PlannerService over gRPC
when the executor runs on its own).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import grpc
from execplan.config import MIB
from execplan.errors import (
    AlreadyExists,
    ExecplanError,
    FieldViolation,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    OutOfRange,
    ResponseTooLarge,
    Unavailable,
    WorkflowInvalid,
)
from execplan.executor.plan_view import PlanView
from execplan.executor.runtime.engine import Engine
from execplan.executor.runtime.hub import SummaryFilter
from execplan.executor.runtime.plan_index import PlanEntry
from execplan.executor.runtime.workers import WorkerConn
from execplan.executor.values import from_struct, from_value, non_finite
from execplan.executor.view import without_payloads
from execplan.flow import capacity
from execplan.flow.capacity import Capacity, Request
from execplan.search import parse
from execplan.store import registry
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import executor_service_pb2_grpc as pb_grpc
from execplan.v1 import plan_pb2
from execplan.v1 import planner_service_pb2 as planner_pb
from execplan.v1 import worker_service_pb2 as ws
from execplan.wire import limits, usage
from execplan.wire.bounds import MAX_INT64
from execplan.wire.channels import peer_channel
from execplan.wire.forward import remember_caller
from execplan.wire.paging import PAGE_ENVELOPE_BYTES, fitting, page_size
from execplan.wire.plan_check import check_format, check_plan
from execplan.wire.schedule_rpcs import OpsRpcs, decode_attributes
from execplan.wire.start_batch import start_each, trace_of
from execplan.wire.status import stream_errors, unary_errors
from execplan.wire.watch_batch import summary_batches
from execplan.wire.watch_limit import WatchLimit
from google.rpc import error_details_pb2
from grpc_status import rpc_status

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExecutorService"].full_name
Ctx = grpc.aio.ServicerContext[Any, Any]


def _history_token(token: str) -> int:
    """The sequence a GetExecutionHistory page token resumes after."""
    if not token.isdecimal() or not token.isascii() or int(token) > MAX_INT64:
        raise InvalidArgument(
            "bad page_token", [FieldViolation("page_token", "not a token this server issued")]
        )
    return int(token)


class Compiler(Protocol):
    async def compile(self, request: planner_pb.CompilePlanRequest) -> plan_pb2.ExecutionPlan: ...


class LocalCompiler:
    """Compiles in this process (execplan serve). A big definition compiles on a
    small thread pool, as PlannerService does, so a 100,000-task StartExecution does
    not stall every other call on the event loop for seconds."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    async def compile(self, request: planner_pb.CompilePlanRequest) -> plan_pb2.ExecutionPlan:
        from execplan.wire.planner_servicer import OFFLOAD_BYTES, compile_response  # noqa: PLC0415

        if request.ByteSize() < OFFLOAD_BYTES:
            return compile_response(request).plan
        if self._pool is None:  # idle threads cost nothing and end with the process
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="compile")
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self._pool, compile_response, request)
        return response.plan


class RemoteCompiler:
    """Compiles through a PlannerService over gRPC (execplan executor --planner ...);
    its INVALID_ARGUMENT (with BadRequest details) is passed through unchanged.
    `credentials`: TLS to the planner (None: plaintext); `token`: sent as
    `authorization: Bearer <token>` to a planner running --auth-tokens."""

    def __init__(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        from execplan.v1 import planner_service_pb2_grpc  # noqa: PLC0415

        self._channel = peer_channel(address, credentials)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub = planner_service_pb2_grpc.PlannerServiceStub(self._channel)

    async def compile(self, request: planner_pb.CompilePlanRequest) -> plan_pb2.ExecutionPlan:
        try:
            response = await self._stub.CompilePlan(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise _planner_error(error) from error
        return response.plan

    async def close(self) -> None:
        await self._channel.close()


def _planner_error(error: grpc.aio.AioRpcError) -> ExecplanError:
    """The planner's answer as our own error, so its field violations reach the caller."""
    violations: list[FieldViolation] = []
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
    message = f"planner: {error.details()}"
    code = error.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return WorkflowInvalid(message, violations)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return LimitExceeded(message, violations)
    return Unavailable(f"planner at the configured address failed: {code.name}: {error.details()}")


def _states(values: Any) -> list[str]:
    known = set(ex.ExecutionState.values())
    unknown = [f"{v}" for v in values if v not in known]
    if unknown:  # proto3 enums are open: any int arrives
        raise InvalidArgument(
            "unknown execution state", [FieldViolation("states", f"unknown value {unknown[0]}")]
        )
    return [ex.ExecutionState.Name(v).removeprefix("EXECUTION_STATE_") for v in values if v]


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required", [FieldViolation(field, "required")])
    return value


def _finite(value: Any, field: str) -> Any:
    """`value` unless it holds NaN or an infinity: JSON has no such number, and an
    execution holding one could not be shown or handed to a worker."""
    where = non_finite(value)
    if where is not None:
        path = f"{field}{where}"
        raise InvalidArgument(
            f"{path} is not a JSON number",
            [FieldViolation(path, "NaN and infinities are not JSON")],
        )
    return value


def _state_value(name: str) -> ex.ExecutionState.ValueType:
    return ex.ExecutionState.Value("EXECUTION_STATE_" + name)


class CachingCompiler:
    """Remembers recent compiles by their request bytes.

    Compiling is pure, so the same source always gives the same plan; clients that
    start many executions of one workflow from source (the common case) would
    otherwise pay YAML parsing and compilation on every StartExecution.

    Bounded in bytes, not only in entries: keyed by a digest of the request (not the
    request, which may be 64 MiB) and holding at most `max_bytes` of plans, so 256
    big workflows cannot pin GiBs.
    """

    def __init__(self, inner: Compiler, size: int = 256, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._inner = inner
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._plans: OrderedDict[bytes, tuple[plan_pb2.ExecutionPlan, int]] = OrderedDict()

    async def compile(self, request: planner_pb.CompilePlanRequest) -> plan_pb2.ExecutionPlan:
        key = hashlib.blake2b(request.SerializeToString(deterministic=True)).digest()
        found = self._plans.get(key)
        if found is not None:
            self._plans.move_to_end(key)
            return found[0]
        plan = await self._inner.compile(request)
        size = plan.ByteSize()
        if size <= self._max_bytes and key not in self._plans:
            self._plans[key] = (plan, size)
            self._bytes += size
            while len(self._plans) > self._size or self._bytes > self._max_bytes:
                _, (_, dropped) = self._plans.popitem(last=False)
                self._bytes -= dropped
        return plan


class ExecutorServicer(pb_grpc.ExecutorServiceServicer):
    def __init__(
        self,
        engine: Engine,
        compiler: Compiler,
        watch_limit: WatchLimit | None = None,
        ops: OpsRpcs | None = None,
        max_message_bytes: int = 64 * MIB,
    ) -> None:
        """`ops`: schedules and purge (wire/schedule_rpcs.py; server.py sets it, as it
        needs `plan_for`); without it those RPCs are UNAVAILABLE. `max_message_bytes`:
        the server's message limit, which pages of history and executions stay under."""
        self._engine = engine
        self._max_message_bytes = max_message_bytes
        self._page_bytes = max(1, max_message_bytes - PAGE_ENVELOPE_BYTES)
        self._compiler = CachingCompiler(compiler)
        # One bound shared by every watch stream (wire/watch_limit.py).
        self._watches = watch_limit or WatchLimit()
        self.ops = ops
        # Plans a start is registering, by plan_id: set when it has (or has given
        # up). The other starts of a burst of one new plan (a StartExecutions of 200)
        # wait for it and then start as starts of a registered plan do, instead of
        # each looking its request_id up first (`start`). An Event: a waiter costs
        # one future, a quarter of what asyncio.wait or shield cost per waiter.
        self._first_starts: dict[str, asyncio.Event] = {}

    async def plan_for(self, request: Any) -> plan_pb2.ExecutionPlan:
        """The plan a request's `definition` oneof names (StartExecution and
        CreateSchedule share it): compiled or looked up, and checked."""
        plan = await self._plan(request)
        check_format(plan)
        return plan

    async def _plan(
        self, request: pb.StartExecutionRequest | pb.CreateScheduleRequest
    ) -> plan_pb2.ExecutionPlan:
        kind = request.WhichOneof("definition")
        if kind == "plan":
            check_plan(request.plan)
            await self._not_another_plan(request.plan)
            return request.plan
        if kind == "plan_id":
            return await self._engine.get_plan(request.plan_id)
        if kind == "source":
            return await self._compiler.compile(
                planner_pb.CompilePlanRequest(source=request.source, format=request.format)
            )
        if kind == "workflow":
            return await self._compiler.compile(
                planner_pb.CompilePlanRequest(workflow=request.workflow)
            )
        raise InvalidArgument(
            "a definition is required",
            [FieldViolation("definition", "set one of plan, plan_id, source or workflow")],
        )

    async def _not_another_plan(self, plan: plan_pb2.ExecutionPlan) -> None:
        """A plan sent by a caller under a plan_id already stored must be that plan.
        Plan ids are digests, so only a hand-made plan can differ; storing it would be
        ignored silently (the first plan with an id wins) while its executions ran
        the stored one."""
        stored = await self._engine.store.get_plan(plan.plan_id)
        if stored is not None and stored != plan.SerializeToString(deterministic=True):
            raise AlreadyExists(
                f"plan_id {plan.plan_id} is already stored with other contents; a "
                "changed plan needs its own plan_id (compile it)",
                reason="PLAN_ID_REUSED",
                metadata={"planId": plan.plan_id},
            )

    async def _within_log(self, execution_id: str, sequence: int, field: str) -> None:
        """A sequence number a caller sends must be one the execution has reached: past
        its last event it is OUT_OF_RANGE (a watch from there would skip the events up
        to it, terminal one included, and never end)."""
        record = await self._engine.store.get_execution(execution_id)
        if record is None:
            raise NotFound(f"execution {execution_id} not found")
        if sequence > record.last_sequence:
            raise OutOfRange(
                f"{field} {sequence} is past the end of execution {execution_id}: "
                f"its last event is {record.last_sequence}",
                [FieldViolation(field, f"at most {record.last_sequence}, the last sequence")],
            )

    @unary_errors
    async def StartExecution(  # noqa: N802
        self, request: pb.StartExecutionRequest, context: Ctx
    ) -> pb.StartExecutionResponse:
        return await self.start(request, trace_of(context))

    @unary_errors
    async def StartExecutions(  # noqa: N802
        self, request: pb.StartExecutionsRequest, context: Ctx
    ) -> pb.StartExecutionsResponse:
        return await start_each(self.start, request, trace_of(context), self._page_bytes)

    async def start(
        self, request: pb.StartExecutionRequest, trace: dict[str, str]
    ) -> pb.StartExecutionResponse:
        """One StartExecution (alone, or an item of StartExecutions); `trace`: the
        caller's trace context (`traceparent`, `tracestate`)."""
        self._engine.check_payload(request.inputs.ByteSize(), "inputs", "inputs")
        attributes = decode_attributes(request.search_attributes, "search_attributes")
        plan = await self._plan(request)
        check_format(plan)
        inputs = _finite(from_struct(request.inputs), "inputs")

        async def started_before() -> pb.StartExecutionResponse | None:
            """The execution this request_id started, if any (AlreadyExists if the
            request differs)."""
            before = await self._engine.started_by(
                request.request_id, plan.plan_id, inputs, request.fairness_key, attributes
            )
            if before is None:
                return None
            return pb.StartExecutionResponse(
                execution_id=before.execution_id, plan_id=before.plan_id, created=False
            )

        # A repeated request_id is answered with the execution it started, without a
        # side effect of this request (its plan is not registered). When starting
        # writes nothing before the store's create_execution (`quiet_plan`), that
        # lookup is left to create_execution, which also catches concurrent
        # duplicates; otherwise it is done first, here. A start of a plan that another
        # start is registering waits for that one (`_register`) and is then such a
        # start: a burst of one new plan costs one lookup, not one per start.
        view = quiet = self._engine.quiet_plan(plan.plan_id)
        if view is None and (first := self._first_starts.get(plan.plan_id)) is not None:
            await first.wait()
            view = quiet = self._engine.quiet_plan(plan.plan_id)
        if view is None:
            registered = await self._register(plan, started_before)
            if isinstance(registered, pb.StartExecutionResponse):
                return registered
            view = registered
        try:
            execution_id, created = await self._engine.start_execution(
                view,
                inputs,
                request_id=request.request_id,
                fairness_key=request.fairness_key,
                trace_context=trace,
                search_attributes=attributes,
            )
        except AlreadyExists:
            raise
        except ExecplanError:
            # Refused before the store was asked (overloaded, bad inputs): the repeat
            # of a request that started an execution still gets that execution.
            if quiet is not None and (answer := await started_before()) is not None:
                return answer
            raise
        return pb.StartExecutionResponse(
            execution_id=execution_id, plan_id=view.plan_id, created=created
        )

    async def _register(
        self,
        plan: plan_pb2.ExecutionPlan,
        started_before: Callable[[], Awaitable[pb.StartExecutionResponse | None]],
    ) -> PlanView | pb.StartExecutionResponse:
        """The plan registered for a start, or the answer of `started_before` when
        the request was made before. The first start of a plan that is not registered
        marks it in `_first_starts` until this is done."""
        first: asyncio.Event | None = None
        if plan.plan_id not in self._first_starts:
            first = self._first_starts[plan.plan_id] = asyncio.Event()
        try:
            if (answer := await started_before()) is not None:
                return answer
            return await self._engine.register_plan(plan)
        finally:
            if first is not None:
                del self._first_starts[plan.plan_id]
                first.set()

    @unary_errors
    async def GetExecution(  # noqa: N802
        self, request: pb.GetExecutionRequest, context: Ctx
    ) -> pb.GetExecutionResponse:
        execution_id = _required(request.execution_id, "execution_id")
        if request.at_sequence:
            await self._within_log(execution_id, request.at_sequence, "at_sequence")
        execution = await self._engine.get_execution(execution_id, request.at_sequence)
        response = pb.GetExecutionResponse(execution=execution)
        if (size := response.ByteSize()) > self._max_message_bytes:
            # Said plainly, instead of gRPC's "Sent message larger than max" after the fact.
            raise ResponseTooLarge(
                f"execution {execution_id} is {size:,} bytes encoded, over this server's"
                f" message limit of {self._max_message_bytes:,} (execplan serve"
                " --max-message-mib): read it in pages with GetExecutionHistory"
            )
        return response

    @unary_errors
    async def ListExecutions(  # noqa: N802
        self, request: pb.ListExecutionsRequest, context: Ctx
    ) -> pb.ListExecutionsResponse:
        search = parse(request.filter)
        executions, token = await self._engine.list_executions(
            _states(request.states),
            request.workflow_name,
            page_size(request.page_size),
            request.page_token,
            parent_execution_id=request.parent_execution_id,
            search=search,
            max_bytes=self._page_bytes,
        )
        return pb.ListExecutionsResponse(executions=executions, next_page_token=token)

    @unary_errors
    async def PauseExecution(  # noqa: N802
        self, request: pb.PauseExecutionRequest, context: Ctx
    ) -> pb.PauseExecutionResponse:
        remember_caller(context)  # a forward to the owner carries it
        state = await self._engine.pause(
            _required(request.execution_id, "execution_id"), request.reason, request.request_id
        )
        return pb.PauseExecutionResponse(state=_state_value(state))

    @unary_errors
    async def ResumeExecution(  # noqa: N802
        self, request: pb.ResumeExecutionRequest, context: Ctx
    ) -> pb.ResumeExecutionResponse:
        remember_caller(context)  # a forward to the owner carries it
        state = await self._engine.resume(
            _required(request.execution_id, "execution_id"), request.request_id
        )
        return pb.ResumeExecutionResponse(state=_state_value(state))

    @unary_errors
    async def CancelExecution(  # noqa: N802
        self, request: pb.CancelExecutionRequest, context: Ctx
    ) -> pb.CancelExecutionResponse:
        remember_caller(context)  # a forward to the owner carries it
        state = await self._engine.cancel(
            _required(request.execution_id, "execution_id"),
            request.reason,
            request.request_id,
            terminate=False,
        )
        return pb.CancelExecutionResponse(state=_state_value(state))

    @unary_errors
    async def TerminateExecution(  # noqa: N802
        self, request: pb.TerminateExecutionRequest, context: Ctx
    ) -> pb.TerminateExecutionResponse:
        remember_caller(context)  # a forward to the owner carries it
        state = await self._engine.cancel(
            _required(request.execution_id, "execution_id"),
            request.reason,
            request.request_id,
            terminate=True,
        )
        return pb.TerminateExecutionResponse(state=_state_value(state))

    @unary_errors
    async def SendEvent(  # noqa: N802
        self, request: pb.SendEventRequest, context: Ctx
    ) -> pb.SendEventResponse:
        remember_caller(context)  # a forward to the owner carries it
        task_id = await self._engine.send_event(
            _required(request.execution_id, "execution_id"),
            _required(request.name, "name"),
            _finite(from_value(request.data), "data") if request.HasField("data") else None,
            request.request_id,
        )
        return pb.SendEventResponse(task_id=task_id)

    @stream_errors
    async def WatchExecution(  # noqa: N802
        self, request: pb.WatchExecutionRequest, context: Ctx
    ) -> AsyncGenerator[pb.WatchExecutionResponse, None]:
        execution_id = _required(request.execution_id, "execution_id")
        await self._within_log(execution_id, request.after_sequence, "after_sequence")
        with self._watches.slot():
            if not request.stream:
                async for event in self._engine.watch(execution_id, request.after_sequence):
                    yield pb.WatchExecutionResponse(event=event)
                return
            watched = self._engine.watch_with_output(execution_id, request.after_sequence)
            async for item in watched:
                if isinstance(item, pb.StreamChunk):
                    yield pb.WatchExecutionResponse(chunk=item)
                else:
                    yield pb.WatchExecutionResponse(event=item)

    @stream_errors
    async def WatchTaskStream(  # noqa: N802
        self, request: pb.WatchTaskStreamRequest, context: Ctx
    ) -> AsyncGenerator[pb.WatchTaskStreamResponse, None]:
        execution_id = _required(request.execution_id, "execution_id")
        with self._watches.slot():
            async for chunk in self._engine.watch_output(execution_id, request.task_id):
                yield pb.WatchTaskStreamResponse(chunk=chunk)

    @stream_errors
    async def WatchExecutions(  # noqa: N802
        self, request: pb.WatchExecutionsRequest, context: Ctx
    ) -> AsyncGenerator[pb.WatchExecutionsResponse, None]:
        wanted = SummaryFilter(frozenset(request.states), request.workflow_name)
        with self._watches.slot():
            subscription = self._engine.hub.subscribe_all(wanted)
            try:
                if request.batched:
                    async for response in summary_batches(subscription.queue, self._page_bytes):
                        yield response
                    return
                while True:
                    execution = await subscription.queue.get()
                    if execution is None:
                        return
                    if execution.ByteSize() > self._page_bytes:
                        execution = without_payloads(execution)
                    yield pb.WatchExecutionsResponse(execution=execution)
            finally:
                self._engine.hub.unsubscribe_all(subscription)

    @unary_errors
    async def GetExecutionHistory(  # noqa: N802
        self, request: pb.GetExecutionHistoryRequest, context: Ctx
    ) -> pb.GetExecutionHistoryResponse:
        execution_id = _required(request.execution_id, "execution_id")
        after = request.after_sequence
        if request.page_token:
            after = _history_token(request.page_token)
        else:
            await self._within_log(execution_id, after, "after_sequence")
        size = page_size(request.page_size)
        events = await self._engine.history(execution_id, after, size + 1)
        page = events[: fitting(events[:size], self._page_bytes)]
        token = str(page[-1].sequence) if len(events) > len(page) and page else ""
        return pb.GetExecutionHistoryResponse(events=page, next_page_token=token)

    @unary_errors
    async def RegisterPlan(  # noqa: N802
        self, request: pb.RegisterPlanRequest, context: Ctx
    ) -> pb.RegisterPlanResponse:
        plan = await self._plan_to_register(request)
        view = await self._engine.register_plan(plan)
        registration, created = await registry.register(
            self._engine.store,
            plan.workflow_name,
            plan.workflow_version,
            view.plan_id,
            self._engine.now_ms(),
        )
        return pb.RegisterPlanResponse(
            plan_id=view.plan_id,
            workflow_name=registration.name,
            workflow_version=registration.version,
            created=created,
        )

    async def _plan_to_register(self, request: pb.RegisterPlanRequest) -> plan_pb2.ExecutionPlan:
        """The one definition a RegisterPlanRequest carries (plan, source or workflow)."""
        given = [
            name
            for name, present in (
                ("plan", request.HasField("plan")),
                ("source", bool(request.source)),
                ("workflow", request.HasField("workflow")),
            )
            if present
        ]
        if len(given) != 1:
            raise InvalidArgument(
                "set exactly one of plan, source or workflow",
                [FieldViolation(given[1] if given else "plan", "set exactly one of them")],
            )
        if given[0] == "plan":
            check_plan(request.plan)
            await self._not_another_plan(request.plan)
            return request.plan
        if given[0] == "source":
            compile_request = planner_pb.CompilePlanRequest(
                source=request.source, format=request.format
            )
        else:
            compile_request = planner_pb.CompilePlanRequest(workflow=request.workflow)
        return await self._compiler.compile(compile_request)

    @unary_errors
    async def GetPlan(  # noqa: N802
        self, request: pb.GetPlanRequest, context: Ctx
    ) -> pb.GetPlanResponse:
        if request.workflow and request.plan_id:
            raise InvalidArgument(
                "set plan_id or workflow, not both",
                [FieldViolation("workflow", "plan_id is set too")],
            )
        if request.workflow:
            name, version = registry.split_ref(request.workflow)
            found = await registry.resolve(self._engine.store, name, version)
            if found is None:
                raise NotFound(f"workflow {request.workflow} is not registered")
            return pb.GetPlanResponse(plan=await self._engine.get_plan(found.plan_id))
        plan_id = _required(request.plan_id, "plan_id")
        return pb.GetPlanResponse(plan=await self._engine.get_plan(plan_id))

    @unary_errors
    async def ReplayExecution(  # noqa: N802
        self, request: pb.ReplayExecutionRequest, context: Ctx
    ) -> pb.ReplayExecutionResponse:
        from execplan.executor.decide import replay  # noqa: PLC0415
        from execplan.executor.plan_view import decode_plan  # noqa: PLC0415

        execution_id = _required(request.execution_id, "execution_id")
        record = await self._engine.store.get_execution(execution_id)
        if record is None:
            raise NotFound(f"execution {execution_id} not found")
        events: list[Any] = []
        while True:
            page = await self._engine.history(execution_id, len(events), 5000)
            events.extend(page)
            if len(page) < 5000:
                break
        recorded = decode_plan(await self._engine.get_plan(record.plan_id))
        # Off the event loop: replay is CPU work, and an expression too expensive to
        # run inline waits for the engine's sandbox.
        sandbox = self._engine.evaluations.sandbox
        result = await asyncio.to_thread(
            replay.replay, recorded, events, execution_id=execution_id, sandbox=sandbox
        )
        response = pb.ReplayExecutionResponse(
            deterministic=result.deterministic, events=result.events
        )
        if result.divergence is not None:
            response.divergence.CopyFrom(_divergence(result.divergence))
        kind = request.WhichOneof("candidate")
        if kind is not None:
            if kind == "plan":
                check_plan(request.plan)
                candidate = request.plan
            elif kind == "plan_id":
                candidate = await self._engine.get_plan(request.plan_id)
            else:
                candidate = await self._compiler.compile(
                    planner_pb.CompilePlanRequest(source=request.source)
                )
            verdict = await asyncio.to_thread(
                replay.compatibility, recorded, decode_plan(candidate), events, sandbox
            )
            response.compatible = verdict.compatible
            response.incompatibilities.extend(verdict.incompatibilities)
            response.candidate_plan_id = candidate.plan_id
        return response

    @unary_errors
    async def ListCircuitBreakers(  # noqa: N802
        self, request: pb.ListCircuitBreakersRequest, context: Ctx
    ) -> pb.ListCircuitBreakersResponse:
        statuses = self._engine.breaker_statuses(list(request.task_types))
        return pb.ListCircuitBreakersResponse(
            breakers=[_breaker_status(b, parked) for b, parked in statuses]
        )

    @unary_errors
    async def ListPlans(  # noqa: N802
        self, request: pb.ListPlansRequest, context: Ctx
    ) -> pb.ListPlansResponse:
        entries, token = await self._engine.list_plans(
            request.workflow_name, page_size(request.page_size), request.page_token
        )
        return pb.ListPlansResponse(
            plans=[_plan_summary(e) for e in entries], next_page_token=token
        )

    @unary_errors
    async def ListWorkers(  # noqa: N802
        self, request: pb.ListWorkersRequest, context: Ctx
    ) -> pb.ListWorkersResponse:
        workers = self._engine.worker_statuses(list(request.task_types))
        return pb.ListWorkersResponse(workers=[_worker_info(w) for w in workers])

    @unary_errors
    async def ListLimits(  # noqa: N802
        self, request: pb.ListLimitsRequest, context: Ctx
    ) -> pb.ListLimitsResponse:
        waiting = []
        for execution_id, task_id, wait in self._engine.waiting_tasks()[: limits.MAX_WAITING]:
            item = pb.WaitingTask(execution_id=execution_id, task_id=task_id)
            wait.fill(item.waiting)
            waiting.append(item)
        return await limits.list_limits(self._engine.store.flow, request, waiting)

    @unary_errors
    async def SetRateLimit(  # noqa: N802
        self, request: pb.SetRateLimitRequest, context: Ctx
    ) -> pb.SetRateLimitResponse:
        return await limits.set_rate_limit(self._engine.store.flow, request)

    @unary_errors
    async def DeleteRateLimit(  # noqa: N802
        self, request: pb.DeleteRateLimitRequest, context: Ctx
    ) -> pb.DeleteRateLimitResponse:
        return await limits.delete_rate_limit(self._engine.store.flow, request)

    @unary_errors
    async def PurgeCache(  # noqa: N802
        self, request: pb.PurgeCacheRequest, context: Ctx
    ) -> pb.PurgeCacheResponse:
        return await limits.purge_cache(self._engine.store.flow, request)

    @unary_errors
    async def SetBudget(  # noqa: N802
        self, request: pb.SetBudgetRequest, context: Ctx
    ) -> pb.SetBudgetResponse:
        remember_caller(context)  # a forward to the owner carries it
        execution_id = _required(request.execution_id, "execution_id")
        requested = usage.budget_change(request)
        state = await self._engine.set_budget(
            execution_id,
            requested,
            resume=request.resume,
            reason=request.reason,
            request_id=request.request_id,
            task_id=request.task_id,
        )
        execution = await self._engine.get_execution(execution_id)
        budget = execution.budget
        if request.task_id:
            found = [t.budget for t in execution.tasks if t.task_id == request.task_id]
            budget = found[0] if found else budget
        return pb.SetBudgetResponse(budget=budget, state=_state_value(state))

    @unary_errors
    async def GetUsage(  # noqa: N802
        self, request: pb.GetUsageRequest, context: Ctx
    ) -> pb.GetUsageResponse:
        return await usage.get_usage(self._engine.store, request)

    # -- schedules and purge (wire/schedule_rpcs.py) ---------------------------------
    def _require_ops(self) -> OpsRpcs:
        if self.ops is None:
            raise Unavailable("this server runs no scheduler (schedules and purge)")
        return self.ops

    @unary_errors
    async def CreateSchedule(  # noqa: N802
        self, request: pb.CreateScheduleRequest, context: Ctx
    ) -> pb.CreateScheduleResponse:
        return await self._require_ops().create_schedule(request)

    @unary_errors
    async def GetSchedule(  # noqa: N802
        self, request: pb.GetScheduleRequest, context: Ctx
    ) -> pb.GetScheduleResponse:
        return await self._require_ops().get_schedule(request)

    @unary_errors
    async def ListSchedules(  # noqa: N802
        self, request: pb.ListSchedulesRequest, context: Ctx
    ) -> pb.ListSchedulesResponse:
        return await self._require_ops().list_schedules(request)

    @unary_errors
    async def DeleteSchedule(  # noqa: N802
        self, request: pb.DeleteScheduleRequest, context: Ctx
    ) -> pb.DeleteScheduleResponse:
        return await self._require_ops().delete_schedule(request)

    @unary_errors
    async def PauseSchedule(  # noqa: N802
        self, request: pb.PauseScheduleRequest, context: Ctx
    ) -> pb.PauseScheduleResponse:
        return await self._require_ops().pause_schedule(request)

    @unary_errors
    async def ResumeSchedule(  # noqa: N802
        self, request: pb.ResumeScheduleRequest, context: Ctx
    ) -> pb.ResumeScheduleResponse:
        return await self._require_ops().resume_schedule(request)

    @unary_errors
    async def BackfillSchedule(  # noqa: N802
        self, request: pb.BackfillScheduleRequest, context: Ctx
    ) -> pb.BackfillScheduleResponse:
        return await self._require_ops().backfill_schedule(request)

    @unary_errors
    async def PurgeExecutions(  # noqa: N802
        self, request: pb.PurgeExecutionsRequest, context: Ctx
    ) -> pb.PurgeExecutionsResponse:
        return await self._require_ops().purge_executions(request)


def _plan_summary(entry: PlanEntry) -> pb.PlanSummary:
    summary = pb.PlanSummary(
        plan_id=entry.plan_id,
        workflow_name=entry.workflow_name,
        workflow_version=entry.workflow_version,
        description=entry.description,
        node_count=entry.node_count,
    )
    summary.registered_at.FromMilliseconds(entry.registered_at_ms)
    return summary


def _worker_info(worker: WorkerConn) -> pb.WorkerInfo:
    info = pb.WorkerInfo(
        worker_id=worker.worker_id,
        task_types=sorted(worker.task_types),
        labels=worker.labels,
        environment=worker.environment,
        slots=worker.slots,
        slots_in_use=len(worker.leases),
        draining=worker.draining,
        sdk=worker.sdk,
        capacity=max(0, worker.capacity),
        principal=worker.principal or "",
    )
    info.connected_at.FromMilliseconds(worker.connected_at_ms)
    info.last_seen_at.FromMilliseconds(worker.last_seen_ms)
    _fill_capacity(info.resources, worker.resources)
    _fill_capacity(info.resources_in_use, capacity.total(worker.taken.values()))
    return info


def _fill_capacity(target: ws.WorkerCapacity, source: Capacity | Request) -> None:
    target.cpu_millis = source.cpu_millis
    target.memory_bytes = source.memory_bytes
    target.gpu = source.gpu
    target.custom.update(source.custom)


def _breaker_status(breaker: Any, parked: int) -> pb.CircuitBreakerStatus:
    calls, failures = breaker.window_counts()
    status = pb.CircuitBreakerStatus(
        task_type=breaker.task_type,
        state=pb.BreakerState.Value("BREAKER_STATE_" + breaker.state.upper()),
        consecutive_failures=breaker.consecutive_failures,
        window_failures=failures,
        window_calls=calls,
        parked_tasks=parked,
        last_error=breaker.last_error,
    )
    if breaker.opened_at_ms:
        status.opened_at.FromMilliseconds(breaker.opened_at_ms)
        status.half_open_at.FromMilliseconds(breaker.half_open_at_ms)
    return status


def _divergence(divergence: Any) -> pb.ReplayDivergence:
    return pb.ReplayDivergence(
        sequence=divergence.sequence, expected=divergence.expected, actual=divergence.actual
    )
