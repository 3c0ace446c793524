"""Coalescing of `ExecutorClient.start()` calls into StartExecutions.

Calls of `start()` made in the same event-loop turn (`asyncio.gather` of many
starts, a burst of tasks woken together) with the same metadata are sent as ONE
StartExecutions call; a call alone in its turn is sent as StartExecution, as
before. Nothing waits on a timer: the batch leaves in the loop's next turn, so a
single start is not delayed at all. One batch call costs the server (and this
client) gRPC's per-call work once instead of once per start, and the server commits
the batch's executions together.

Each caller still gets exactly what StartExecution would have given it: its own
response, or its own exception of the same type with the same details (the
server's `requests[i].` prefix is taken off the field paths). An item refused with
a status a lone StartExecution would be retried on (RESOURCE_EXHAUSTED with
RetryInfo; UNAVAILABLE only over several replicas) is retried on its own, after
the server's delay, as a StartExecution under the client's retry policy
(`_unary`); retries are safe because every start carries its request_id.
A batch call that fails as a whole (after the client's own retries) fails each of
its callers with a copy of that error. A server without StartExecutions answers
UNIMPLEMENTED: the client remembers it and sends every start alone from then on.
A start() whose caller is cancelled before its batch leaves is not sent.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from execplan.v1 import executor_service_pb2 as pb

from ._backoff import Backoff, transient
from .errors import ExecplanClientError, FieldViolation, from_status

# The server's bounds: at most 1,000 items, and a request under its message limit
# (64 MiB by default, at least 1 MiB: --max-message-mib). A bigger start goes alone.
MAX_ITEMS = 1000
MAX_BYTES = 512 * 1024

Metadata = tuple[tuple[str, str], ...]
StartOne = Callable[[pb.StartExecutionRequest, Metadata], Awaitable[pb.StartExecutionResponse]]
StartMany = Callable[[pb.StartExecutionsRequest, Metadata], Awaitable[pb.StartExecutionsResponse]]

_ITEM_PREFIX = re.compile(r"^requests\[\d+\]\.")


@dataclass
class _Batch:
    items: list[pb.StartExecutionRequest] = field(default_factory=list)
    waiting: list[asyncio.Future[pb.StartExecutionResponse]] = field(default_factory=list)
    size: int = 0


class StartCoalescer:
    """Collects the starts of one loop turn per metadata and sends each group as one
    StartExecutions (one StartExecution when alone)."""

    def __init__(self, start_one: StartOne, start_many: StartMany, failover: bool) -> None:
        """`failover`: whether the client retries UNAVAILABLE (several replicas)."""
        self._start_one = start_one
        self._start_many = start_many
        self._failover = failover
        self._pending: dict[Metadata, list[_Batch]] = {}
        # False once a server answered UNIMPLEMENTED: every start goes alone.
        self._batches = True
        # The sends in flight, so that none is garbage-collected half-way.
        self._sending: set[asyncio.Task[None]] = set()

    async def start(
        self, request: pb.StartExecutionRequest, metadata: Metadata
    ) -> pb.StartExecutionResponse:
        if not self._batches:
            return await self._start_one(request, metadata)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[pb.StartExecutionResponse] = loop.create_future()
        size = request.ByteSize()
        groups = self._pending.get(metadata)
        if groups is None:
            groups = self._pending[metadata] = [_Batch()]
            loop.call_soon(self._flush, metadata)
        batch = groups[-1]
        if batch.items and (len(batch.items) >= MAX_ITEMS or batch.size + size > MAX_BYTES):
            batch = _Batch()
            groups.append(batch)
        batch.items.append(request)
        batch.waiting.append(future)
        batch.size += size
        return await future

    def _flush(self, metadata: Metadata) -> None:
        for batch in self._pending.pop(metadata, []):
            task = asyncio.ensure_future(self._send(batch, metadata))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch, metadata: Metadata) -> None:
        if any(waiting.done() for waiting in batch.waiting):
            # A caller cancelled before the batch left: its start is not sent, as a
            # lone start() cancelled before its call would not have been.
            kept = [(i, w) for i, w in zip(batch.items, batch.waiting, strict=True) if not w.done()]
            if not kept:
                return
            batch = _Batch([i for i, _ in kept], [w for _, w in kept])
        if len(batch.items) == 1 or not self._batches:
            await asyncio.gather(
                *(
                    _settle(waiting, self._start_one(item, metadata))
                    for item, waiting in zip(batch.items, batch.waiting, strict=True)
                )
            )
            return
        try:
            response = await self._start_many(
                pb.StartExecutionsRequest(requests=batch.items), metadata
            )
        except ExecplanClientError as error:
            if error.code == grpc.StatusCode.UNIMPLEMENTED:
                self._batches = False  # an older server: one at a time from now on
                await self._send(batch, metadata)
                return
            for waiting in batch.waiting:
                _fail(waiting, _copy(error))
            return
        except BaseException as error:
            for waiting in batch.waiting:
                _fail(waiting, error)
            raise
        retries = []
        for item, waiting, result in zip(
            batch.items, batch.waiting, response.results, strict=False
        ):
            if result.HasField("started"):
                if not waiting.done():
                    waiting.set_result(result.started)
                continue
            refusal = _unprefixed(from_status(result.error))
            if self._retried(refusal):
                # Refused for now: on its own, after the server's delay (with the
                # policy's jitter), then under the client's retry policy.
                retries.append(_settle(waiting, self._retry(item, metadata, refusal)))
            else:
                _fail(waiting, refusal)
        for waiting in batch.waiting[len(response.results) :]:  # a confused server
            _fail(waiting, ExecplanClientError("no result for this start in the batch"))
        await asyncio.gather(*retries)

    def _retried(self, error: ExecplanClientError) -> bool:
        if error.code == grpc.StatusCode.UNAVAILABLE:
            return self._failover
        return transient(error.code, error.retry_after)

    async def _retry(
        self, item: pb.StartExecutionRequest, metadata: Metadata, error: ExecplanClientError
    ) -> pb.StartExecutionResponse:
        await asyncio.sleep(Backoff().next_delay(error.retry_after))
        return await self._start_one(item, metadata)


async def _settle(
    waiting: asyncio.Future[pb.StartExecutionResponse],
    outcome: Awaitable[pb.StartExecutionResponse],
) -> None:
    try:
        response = await outcome
    except Exception as error:
        _fail(waiting, error)
    else:
        if not waiting.done():
            waiting.set_result(response)


def _fail(waiting: asyncio.Future[pb.StartExecutionResponse], error: BaseException) -> None:
    if not waiting.done():  # the caller may have been cancelled meanwhile
        waiting.set_exception(error)


def _copy(error: ExecplanClientError) -> ExecplanClientError:
    """One exception object per caller: a shared one would collect every caller's
    traceback."""
    copy = type(error)(
        error.details,
        code=error.code,
        violations=list(error.violations),
        retry_after=error.retry_after,
        reason=error.reason,
        metadata=dict(error.metadata),
    )
    copy.__cause__ = error.__cause__
    return copy


def _unprefixed(error: ExecplanClientError) -> ExecplanClientError:
    """The item's error as StartExecution names its fields (`inputs.n`, not
    `requests[3].inputs.n`)."""
    error.violations = [
        FieldViolation(_ITEM_PREFIX.sub("", v.field), v.description) for v in error.violations
    ]
    return error
