"""ExecutorClient: typed async access to PlannerService and ExecutorService.

    async with ExecutorClient() as client:          # $EXECPLAN_ADDRESS or 127.0.0.1:7070
        started = await client.start(source=yaml_text, inputs={"order": 7})
        async for event in client.watch(started.execution_id):
            print(event.sequence, event.WhichOneof("kind"))

Every gRPC failure is raised as an `execplan.client.errors` exception. Mutating calls
carry a `request_id` (a fresh uuid4 unless given) so that a retried call is applied once.

Retries (one policy, `_backoff.py`; docs/contract.md "Client retries"): every call
is safe to repeat, because reads are reads and each mutating call carries its
request_id, which replicas share through the store. What is retried, within the
policy's deadline (60 s without progress), waiting as the policy says (the first
retry at once, then full jitter capped at 2 s, or the server's RetryInfo delay):

- a call shed by the server (RESOURCE_EXHAUSTED with RetryInfo) or dropped by it
  (CANCELLED that we did not ask for);
- UNAVAILABLE, on the next address, when `ExecutorClient("h1:7070,h2:7070")` (or a
  comma list in $EXECPLAN_ADDRESS) names several replicas: one channel per address,
  one used at a time, at most `failover_attempts` retries of one call. With one
  address a unary call fails at once on UNAVAILABLE (a server that is down);
- `watch` and `watch_all` retry all three on any number of addresses and resume:
  `watch` after the last event it yielded, so nothing is missed or repeated.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeAlias, TypeVar, overload

import grpc
from execplan.v1 import (
    events_pb2,
    execution_pb2,
    executor_service_pb2,
    executor_service_pb2_grpc,
    plan_pb2,
    planner_service_pb2,
    planner_service_pb2_grpc,
    workflow_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._backoff import DEFAULT_POLICY, Retry, RetryPolicy, transient
from ._channel import Security, open_channel, resolve_address
from ._schedules import Schedules
from ._starts import StartCoalescer
from .errors import UnavailableError, decode_details, translate
from .values import to_search_attributes, to_struct, to_value

ExecutionState: TypeAlias = execution_pb2.ExecutionState.ValueType
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


@dataclass(frozen=True, slots=True)
class _Stubs:
    address: str
    channel: grpc.aio.Channel
    executor: executor_service_pb2_grpc.ExecutorServiceAsyncStub
    planner: planner_service_pb2_grpc.PlannerServiceAsyncStub
    health: Any  # grpc_health ships no type stubs

    @classmethod
    def of(cls, address: str, channel: grpc.aio.Channel) -> _Stubs:
        return cls(
            address,
            channel,
            executor_service_pb2_grpc.ExecutorServiceStub(channel),
            planner_service_pb2_grpc.PlannerServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
        )


class _Builds(Protocol):
    """A workflow builder (`execplan.builder.Workflow`): anything with `build()`."""

    def build(self) -> workflow_pb2.Workflow: ...


def _workflow_message(workflow: workflow_pb2.Workflow | _Builds) -> workflow_pb2.Workflow:
    return workflow if isinstance(workflow, workflow_pb2.Workflow) else workflow.build()


_Pick: TypeAlias = Callable[[_Stubs], "grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]"]


class ExecutorClient:
    def __init__(
        self,
        address: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        failover_attempts: int | None = None,
        retry: RetryPolicy = DEFAULT_POLICY,
    ):
        """TLS files and the bearer token default to $EXECPLAN_TLS_CA/_CERT/_KEY and
        $EXECPLAN_TOKEN (see _channel.py); none of them: plaintext. `address` may be
        a comma list of replicas (see the module docstring); `failover_attempts`
        (default: twice the number of addresses) bounds the failovers of one call;
        `retry` is the backoff and deadline of every retry (see _backoff.py)."""
        self._retry_policy = retry
        # A channel passed in belongs to the caller, who closes it.
        self._owns_channel = channel is None
        if channel is not None:
            self._replicas = [_Stubs.of("", channel)]
        else:
            security = Security(tls_ca, tls_cert, tls_key, token)
            addresses = [a.strip() for a in resolve_address(address).split(",") if a.strip()]
            if not addresses:
                raise ValueError(f"no address in {address!r}")
            self._replicas = [_Stubs.of(a, open_channel(a, security)) for a in addresses]
        self._current = 0
        many = len(self._replicas) > 1
        self._attempts = (
            (failover_attempts if failover_attempts is not None else 2 * len(self._replicas))
            if many
            else 0
        )
        # Schedules: client.schedules.create(...), .list(), .pause(name)... (_schedules.py)
        self.schedules = Schedules(self._unary)
        self._starts = StartCoalescer(self._start_one, self._start_many, self._attempts > 0)

    @property
    def _executor(self) -> executor_service_pb2_grpc.ExecutorServiceAsyncStub:
        return self._replicas[self._current].executor

    @property
    def address(self) -> str:
        """The address calls go to now ("" for a channel passed in)."""
        return self._replicas[self._current].address

    def _fail_over(self, failed: int) -> None:
        """The replica at index `failed` is unavailable: move on (once per failure,
        however many calls saw it)."""
        if self._current == failed:
            self._current = (failed + 1) % len(self._replicas)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_channel:
            for replica in self._replicas:
                await replica.channel.close()

    # -- health -----------------------------------------------------------------

    async def health(self, service: str = "") -> str:
        """`grpc.health.v1.Health/Check` of `service` ("" = the server as a whole;
        or "execplan.v1.ExecutorService", ...): "SERVING", or "NOT_SERVING" once a
        graceful shutdown began. An unknown service raises NotFoundError."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._unary(lambda r: r.health.Check, request)
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name

    # -- planner ----------------------------------------------------------------

    async def compile(self, source: str) -> plan_pb2.ExecutionPlan:
        request = planner_service_pb2.CompilePlanRequest(
            source=source, format=planner_service_pb2.SOURCE_FORMAT_AUTO
        )
        return (await self._unary(lambda r: r.planner.CompilePlan, request)).plan

    # -- executions ---------------------------------------------------------------

    async def start(
        self,
        *,
        source: str | None = None,
        plan: plan_pb2.ExecutionPlan | None = None,
        plan_id: str | None = None,
        workflow: workflow_pb2.Workflow | _Builds | None = None,
        inputs: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        fairness_key: str = "",
        search_attributes: Mapping[str, Any] | None = None,
    ) -> executor_service_pb2.StartExecutionResponse:
        """Start an execution of exactly one of source=, plan=, plan_id=, workflow=.
        `search_attributes`: typed key/values to find it by (`values.py` says how
        Python types map), e.g. {"customer": "acme", "priority": 3}.

        Starts called in the same event-loop turn (`asyncio.gather(*(client.start(...)
        for ...))`) travel together as one StartExecutions call; each still returns
        its own response or raises its own error, as if sent alone (`_starts.py`)."""
        given = [x for x in (source, plan, plan_id, workflow) if x is not None]
        if len(given) != 1:
            raise ValueError("pass exactly one of source=, plan=, plan_id=, workflow=")
        request = executor_service_pb2.StartExecutionRequest(
            inputs=to_struct(inputs),
            request_id=request_id or str(uuid.uuid4()),
            fairness_key=fairness_key,
            search_attributes=to_search_attributes(search_attributes),
        )
        if source is not None:
            request.source = source
            request.format = planner_service_pb2.SOURCE_FORMAT_AUTO
        elif plan is not None:
            request.plan.CopyFrom(plan)
        elif plan_id is not None:
            request.plan_id = plan_id
        elif workflow is not None:
            request.workflow.CopyFrom(_workflow_message(workflow))
        # Coalesced with the other starts of this loop turn (_starts.py). Safe to
        # retry on another replica: the request_id makes the start idempotent.
        return await self._starts.start(request, _trace_metadata())

    async def _start_one(
        self,
        request: executor_service_pb2.StartExecutionRequest,
        metadata: tuple[tuple[str, str], ...],
    ) -> executor_service_pb2.StartExecutionResponse:
        return await self._unary(lambda r: r.executor.StartExecution, request, metadata=metadata)

    async def _start_many(
        self,
        request: executor_service_pb2.StartExecutionsRequest,
        metadata: tuple[tuple[str, str], ...],
    ) -> executor_service_pb2.StartExecutionsResponse:
        return await self._unary(lambda r: r.executor.StartExecutions, request, metadata=metadata)

    async def get(self, execution_id: str, at_sequence: int = 0) -> execution_pb2.Execution:
        request = executor_service_pb2.GetExecutionRequest(
            execution_id=execution_id, at_sequence=at_sequence
        )
        return (await self._unary(lambda r: r.executor.GetExecution, request)).execution

    async def list(
        self,
        states: Sequence[ExecutionState] = (),
        workflow_name: str = "",
        page_size: int = 100,
        filter: str = "",
        *,
        parent_execution_id: str = "",
    ) -> AsyncIterator[execution_pb2.Execution]:
        """All matching executions, newest first, following page tokens lazily.
        `filter`: the filter language (docs/operations.md), e.g.
        'customer = "acme" AND state IN (running, paused) AND created_at >= 2026-01-01';
        `parent_execution_id`: only the child executions of that one."""
        request = executor_service_pb2.ListExecutionsRequest(
            states=states,
            workflow_name=workflow_name,
            page_size=page_size,
            filter=filter,
            parent_execution_id=parent_execution_id,
        )
        while True:
            response = await self._unary(lambda r: r.executor.ListExecutions, request)
            for execution in response.executions:
                yield execution
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def history(
        self, execution_id: str, after_sequence: int = 0, page_size: int = 1000
    ) -> AsyncIterator[events_pb2.ExecutionEvent]:
        request = executor_service_pb2.GetExecutionHistoryRequest(
            execution_id=execution_id, after_sequence=after_sequence, page_size=page_size
        )
        while True:
            response = await self._unary(lambda r: r.executor.GetExecutionHistory, request)
            for event in response.events:
                yield event
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    @overload
    def watch(
        self, execution_id: str, after_sequence: int = 0, *, stream: Literal[False] = False
    ) -> AsyncIterator[events_pb2.ExecutionEvent]: ...

    @overload
    def watch(
        self, execution_id: str, after_sequence: int = 0, *, stream: Literal[True]
    ) -> AsyncIterator[events_pb2.ExecutionEvent | executor_service_pb2.StreamChunk]: ...

    async def watch(
        self, execution_id: str, after_sequence: int = 0, *, stream: bool = False
    ) -> AsyncIterator[events_pb2.ExecutionEvent | executor_service_pb2.StreamChunk]:
        """Events after `after_sequence`, ending with `execution_completed`.

        The server streams from any sequence number, so when the stream breaks
        (UNAVAILABLE, shed with RESOURCE_EXHAUSTED, dropped with CANCELLED, or
        closed early by a restarting server) we reconnect as the retry policy says
        and ask for events after the last one yielded: nothing is missed and
        nothing is yielded twice. Only a failure that outlasts the policy's
        deadline reaches the caller.

        `stream=True`: also the partial output of its tasks (`ctx.stream`) as
        `StreamChunk`s, interleaved with the events as they happen. Chunks are live
        only: those sent while reconnecting are not seen.
        """
        last = after_sequence
        retry = Retry(self._retry_policy)
        while True:
            request = executor_service_pb2.WatchExecutionRequest(
                execution_id=execution_id, after_sequence=last, stream=stream
            )
            using = self._current
            call = self._executor.WatchExecution(request)
            server_delay: float | None = None
            failure: grpc.aio.AioRpcError | None = None
            try:
                async for response in call:
                    if response.HasField("chunk"):
                        yield response.chunk
                        continue
                    event = response.event
                    if event.sequence <= last:
                        continue  # a server replaying an overlap must not duplicate
                    last = event.sequence
                    retry.progressed()
                    yield event
                    if event.HasField("execution_completed"):
                        return
            except grpc.aio.AioRpcError as err:
                server_delay = self._retryable_stream_error(err, using)
                failure = err
            finally:
                call.cancel()
            await _wait(retry, server_delay, failure)

    async def watch_task_stream(
        self, execution_id: str, task_id: str = ""
    ) -> AsyncIterator[executor_service_pb2.StreamChunk]:
        """The partial output of a running execution's tasks (of one, with `task_id`)
        from now on, until the execution (or that task) ends. Not resumable: chunks
        are not stored. A subscriber too slow to keep up is dropped by the server
        (ResourceExhaustedError, reason SUBSCRIBER_TOO_SLOW)."""
        request = executor_service_pb2.WatchTaskStreamRequest(
            execution_id=execution_id, task_id=task_id
        )
        call = self._executor.WatchTaskStream(request)
        try:
            async for response in call:
                yield response.chunk
        except grpc.aio.AioRpcError as err:
            raise translate(err) from err
        finally:
            call.cancel()

    async def purge(
        self,
        filter: str = "",
        *,
        limit: int = 1000,
        dry_run: bool = False,
    ) -> executor_service_pb2.PurgeExecutionsResponse:
        """Delete up to `limit` finished executions matching `filter` (admin); call
        again while the answer says `more`. `dry_run`: list, delete nothing."""
        request = executor_service_pb2.PurgeExecutionsRequest(
            filter=filter, limit=limit, dry_run=dry_run
        )
        return await self._unary(lambda r: r.executor.PurgeExecutions, request)

    async def watch_all(
        self, states: Sequence[ExecutionState] = (), workflow_name: str = ""
    ) -> AsyncIterator[execution_pb2.Execution]:
        """State changes of many executions; reconnects like `watch` does.

        There is no sequence to resume from, so changes made while disconnected
        arrive only as later changes; use `list()` to catch up if that matters.
        Ends when the server ends the stream (it is shutting down).
        """
        retry = Retry(self._retry_policy)
        # batched: the changes a round commits together come in one message (a server
        # that predates it sends one a message, in `execution`).
        request = executor_service_pb2.WatchExecutionsRequest(
            states=states, workflow_name=workflow_name, batched=True
        )
        while True:
            using = self._current
            call = self._executor.WatchExecutions(request)
            server_delay: float | None = None
            failure: grpc.aio.AioRpcError | None = None
            try:
                async for response in call:
                    retry.progressed()
                    if response.executions:
                        for execution in response.executions:
                            yield execution
                    else:
                        yield response.execution
                return
            except grpc.aio.AioRpcError as err:
                server_delay = self._retryable_stream_error(err, using)
                failure = err
            finally:
                call.cancel()
            await _wait(retry, server_delay, failure)

    def _retryable_stream_error(self, err: grpc.aio.AioRpcError, using: int) -> float | None:
        """The server's retry delay of a transient stream failure; raises the rest."""
        server_delay = decode_details(err).retry_after
        if not transient(err.code(), server_delay):
            raise translate(err) from err
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            self._fail_over(using)
        return server_delay

    # -- control --------------------------------------------------------------------

    async def pause(
        self, execution_id: str, reason: str = "", request_id: str | None = None
    ) -> ExecutionState:
        request = executor_service_pb2.PauseExecutionRequest(
            execution_id=execution_id, reason=reason, request_id=_request_id(request_id)
        )
        return (await self._unary(lambda r: r.executor.PauseExecution, request)).state

    async def resume(
        self, execution_id: str, reason: str = "", request_id: str | None = None
    ) -> ExecutionState:
        # ResumeExecutionRequest has no reason; accepted for a uniform signature.
        del reason
        request = executor_service_pb2.ResumeExecutionRequest(
            execution_id=execution_id, request_id=_request_id(request_id)
        )
        return (await self._unary(lambda r: r.executor.ResumeExecution, request)).state

    async def cancel(
        self, execution_id: str, reason: str = "", request_id: str | None = None
    ) -> ExecutionState:
        request = executor_service_pb2.CancelExecutionRequest(
            execution_id=execution_id, reason=reason, request_id=_request_id(request_id)
        )
        return (await self._unary(lambda r: r.executor.CancelExecution, request)).state

    async def terminate(
        self, execution_id: str, reason: str = "", request_id: str | None = None
    ) -> ExecutionState:
        request = executor_service_pb2.TerminateExecutionRequest(
            execution_id=execution_id, reason=reason, request_id=_request_id(request_id)
        )
        return (await self._unary(lambda r: r.executor.TerminateExecution, request)).state

    async def send_event(
        self, execution_id: str, name: str, data: Any = None, request_id: str | None = None
    ) -> executor_service_pb2.SendEventResponse:
        request = executor_service_pb2.SendEventRequest(
            execution_id=execution_id,
            name=name,
            data=to_value(data),
            request_id=_request_id(request_id),
        )
        return await self._unary(lambda r: r.executor.SendEvent, request)

    # -- plans -------------------------------------------------------------------------

    async def register_plan(self, plan: plan_pb2.ExecutionPlan) -> str:
        """Store and register `plan`; its plan_id (see `register` for the rest)."""
        return (await self.register(plan=plan)).plan_id

    async def register(
        self,
        *,
        source: str | None = None,
        plan: plan_pb2.ExecutionPlan | None = None,
        workflow: workflow_pb2.Workflow | _Builds | None = None,
    ) -> executor_service_pb2.RegisterPlanResponse:
        """Register a workflow by name (RegisterPlan): `builtin.workflow` tasks and
        `get_plan(workflow="NAME@VERSION")` find it. Pass exactly one of a YAML/JSON
        `source`, a compiled `plan`, or a `workflow` (a Workflow message or an
        `execplan.builder.Workflow`). A non-empty version is immutable: another plan
        under it raises AlreadyExists (reason VERSION_EXISTS)."""
        given = [x for x in (source, plan, workflow) if x is not None]
        if len(given) != 1:
            raise ValueError("pass exactly one of source=, plan=, workflow=")
        request = executor_service_pb2.RegisterPlanRequest()
        if source is not None:
            request.source = source
            request.format = planner_service_pb2.SOURCE_FORMAT_AUTO
        elif plan is not None:
            request.plan.CopyFrom(plan)
        elif workflow is not None:
            request.workflow.CopyFrom(_workflow_message(workflow))
        return await self._unary(lambda r: r.executor.RegisterPlan, request)

    async def get_plan(self, plan_id: str = "", *, workflow: str = "") -> plan_pb2.ExecutionPlan:
        """A stored plan by `plan_id`, or a registered one by `workflow` ("NAME" for
        the latest version, "NAME@VERSION" for that one)."""
        request = executor_service_pb2.GetPlanRequest(plan_id=plan_id, workflow=workflow)
        return (await self._unary(lambda r: r.executor.GetPlan, request)).plan

    # -- replay ------------------------------------------------------------------------

    async def replay(
        self,
        execution_id: str,
        *,
        plan: plan_pb2.ExecutionPlan | None = None,
        plan_id: str | None = None,
        source: str | None = None,
    ) -> executor_service_pb2.ReplayExecutionResponse:
        """Replay an execution's history; with a candidate (at most one of plan=,
        plan_id=, source=) also tell whether the instance could continue on it."""
        if sum(x is not None for x in (plan, plan_id, source)) > 1:
            raise ValueError("pass at most one of plan=, plan_id=, source=")
        request = executor_service_pb2.ReplayExecutionRequest(execution_id=execution_id)
        if plan is not None:
            request.plan.CopyFrom(plan)
        elif plan_id is not None:
            request.plan_id = plan_id
        elif source is not None:
            request.source = source
        return await self._unary(lambda r: r.executor.ReplayExecution, request)

    # -- circuit breakers --------------------------------------------------------------

    async def list_circuit_breakers(
        self, task_types: Sequence[str] = ()
    ) -> Sequence[executor_service_pb2.CircuitBreakerStatus]:
        """Circuit breakers per task type (all known ones when `task_types` is empty)."""
        request = executor_service_pb2.ListCircuitBreakersRequest(task_types=list(task_types))
        return list((await self._unary(lambda r: r.executor.ListCircuitBreakers, request)).breakers)

    # -- plans and workers -------------------------------------------------------------

    async def list_plans(
        self, workflow_name: str = "", page_size: int = 100
    ) -> AsyncIterator[executor_service_pb2.PlanSummary]:
        """Stored plans (of one workflow, if named), newest first, following page tokens."""
        request = executor_service_pb2.ListPlansRequest(
            workflow_name=workflow_name, page_size=page_size
        )
        while True:
            response = await self._unary(lambda r: r.executor.ListPlans, request)
            for plan in response.plans:
                yield plan
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def list_workers(
        self, task_types: Sequence[str] = ()
    ) -> Sequence[executor_service_pb2.WorkerInfo]:
        """Workers connected to this server (to the replica answering, on PostgreSQL)."""
        request = executor_service_pb2.ListWorkersRequest(task_types=list(task_types))
        return list((await self._unary(lambda r: r.executor.ListWorkers, request)).workers)

    # -- flow control ------------------------------------------------------------------

    async def list_limits(self, name: str = "") -> executor_service_pb2.ListLimitsResponse:
        """Concurrency limits and token buckets (levels per key) and waiting tasks."""
        request = executor_service_pb2.ListLimitsRequest(name=name)
        return await self._unary(lambda r: r.executor.ListLimits, request)

    async def set_rate_limit(
        self, name: str, units: int, period_ms: int, burst: int = 0
    ) -> executor_service_pb2.RateLimitStatus:
        """Register or change the token bucket `name`: `units` per `period_ms`, holding
        `burst` (0: `units`). Takes effect at once; wins over workflow declarations."""
        request = executor_service_pb2.SetRateLimitRequest(name=name, units=units, burst=burst)
        request.period.FromMilliseconds(period_ms)
        return (await self._unary(lambda r: r.executor.SetRateLimit, request)).rate_limit

    async def delete_rate_limit(self, name: str) -> bool:
        """Remove a registered bucket; False when there was none."""
        request = executor_service_pb2.DeleteRateLimitRequest(name=name)
        return (await self._unary(lambda r: r.executor.DeleteRateLimit, request)).deleted

    async def purge_cache(self, task_type: str = "", key: str = "") -> int:
        """Remove task result cache entries (all, of one type, or one key); how many."""
        request = executor_service_pb2.PurgeCacheRequest(task_type=task_type, key=key)
        return (await self._unary(lambda r: r.executor.PurgeCache, request)).purged

    # -- usage and budgets -------------------------------------------------------------

    async def usage(
        self,
        *,
        execution_id: str = "",
        workflow_name: str = "",
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        group_by: str = "",
        filter: str = "",
    ) -> executor_service_pb2.GetUsageResponse:
        """Usage recorded over a time range, added up (GetUsage): of one execution or
        of a workflow's executions, child executions included; all when neither is
        given. `since` is a time, or how far back from now (`timedelta(hours=24)`);
        `group_by` is "", "workflow", "execution", "task" or "attribute:NAME" (one
        group per value of the search attribute NAME, an execution without one
        counted under its nearest ancestor's: `group.key` is the value's text,
        `group.value` the typed value); `filter` keeps the executions it finds (the
        `ls --filter` language: `customer = "acme"`), with their children."""
        attribute = ""
        grouping = _GROUP_BY.get(group_by)
        if group_by.startswith(_BY_ATTRIBUTE):
            grouping = executor_service_pb2.USAGE_GROUPING_ATTRIBUTE
            attribute = group_by.removeprefix(_BY_ATTRIBUTE)
        if grouping is None:
            raise ValueError(
                f"group_by must be one of {', '.join(map(repr, _GROUP_BY))} or 'attribute:NAME'"
            )
        request = executor_service_pb2.GetUsageRequest(
            execution_id=execution_id,
            workflow_name=workflow_name,
            group_by=grouping,
            filter=filter,
            group_attribute=attribute,
        )
        if isinstance(since, timedelta):
            since = datetime.now(UTC) - since
        if since is not None:
            request.since.FromDatetime(_utc(since))
        if until is not None:
            request.until.FromDatetime(_utc(until))
        return await self._unary(lambda r: r.executor.GetUsage, request)

    async def set_budget(
        self,
        execution_id: str,
        *,
        cost: float | None = None,
        tokens: float | None = None,
        counters: Mapping[str, float] | None = None,
        on_exceeded: str = "",
        resume: bool = False,
        reason: str = "",
        request_id: str | None = None,
        task_id: str = "",
    ) -> executor_service_pb2.SetBudgetResponse:
        """Change a running execution's budget (SetBudget): the limits given replace
        those in force, the others stay; `on_exceeded` "pause" or "fail" (empty: keep).
        `resume=True` also resumes it when it is paused (by its budget or otherwise).
        `task_id`: change that task's own budget (a task with a `budget` in the plan;
        a for_each task's covers its instances) instead of the execution's."""
        budget = workflow_pb2.Budget()
        if cost is not None:
            budget.cost = cost
        if tokens is not None:
            budget.tokens = tokens
        for name, limit in (counters or {}).items():
            budget.counters[name] = limit
        if on_exceeded:
            budget.on_exceeded = workflow_pb2.BudgetAction.Value(
                "BUDGET_ACTION_" + on_exceeded.upper()
            )
        request = executor_service_pb2.SetBudgetRequest(
            execution_id=execution_id,
            budget=budget,
            resume=resume,
            reason=reason,
            request_id=_request_id(request_id),
            task_id=task_id,
        )
        return await self._unary(lambda r: r.executor.SetBudget, request)

    async def _unary(
        self,
        pick: _Pick[_Req, _Resp],
        request: _Req,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> _Resp:
        """`pick(replica)` is the method to call; transient failures are retried as
        the module docstring says (UNAVAILABLE only over several replicas)."""
        retry = Retry(self._retry_policy)
        failovers = 0
        while True:
            using = self._current
            try:
                return await pick(self._replicas[using])(request, metadata=metadata or None)
            except grpc.aio.AioRpcError as err:
                server_delay = decode_details(err).retry_after
                code = err.code()
                unavailable = code == grpc.StatusCode.UNAVAILABLE
                if not transient(code, server_delay) or (
                    unavailable and failovers >= self._attempts
                ):
                    raise translate(err) from err
                delay = retry.delay(server_delay)
                if delay is None:
                    raise translate(err) from err
            if unavailable:
                failovers += 1
                self._fail_over(using)
            await asyncio.sleep(delay)


async def _wait(
    retry: Retry, server_delay: float | None, failure: grpc.aio.AioRpcError | None
) -> None:
    """Sleep before the next try of a stream; past the deadline, raise its last
    failure (or UNAVAILABLE when the server kept ending it early)."""
    delay = retry.delay(server_delay)
    if delay is not None:
        await asyncio.sleep(delay)
    elif failure is not None:
        raise translate(failure) from failure
    else:
        raise UnavailableError(
            "the server kept ending the stream early", code=grpc.StatusCode.UNAVAILABLE
        )


def _trace_metadata() -> tuple[tuple[str, str], ...]:
    """W3C `traceparent`/`tracestate` of the caller's current span, if OpenTelemetry is
    installed (optional): the execution's span becomes its child."""
    try:
        from opentelemetry import propagate  # noqa: PLC0415
    except ImportError:
        return ()
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple((k, v) for k, v in carrier.items() if k in ("traceparent", "tracestate"))


_GROUP_BY = {
    "": executor_service_pb2.USAGE_GROUPING_UNSPECIFIED,
    "workflow": executor_service_pb2.USAGE_GROUPING_WORKFLOW,
    "execution": executor_service_pb2.USAGE_GROUPING_EXECUTION,
    "task": executor_service_pb2.USAGE_GROUPING_TASK,
}
# `group_by="attribute:customer"`: a group per value of a search attribute.
_BY_ATTRIBUTE = "attribute:"


def _utc(moment: datetime) -> datetime:
    """A naive datetime is taken as local time, as `datetime.astimezone` does."""
    return moment.astimezone(UTC)


def _request_id(given: str | None) -> str:
    return given or str(uuid.uuid4())


__all__ = ["ExecutionState", "ExecutorClient"]
