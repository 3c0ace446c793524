"""gRPC face of the dispatcher: `execplan.v1.WorkerService.Connect`.

One bidirectional stream per worker. The first message registers; after that a
reader task hands acks, heartbeats and results to the engine, and this handler
(an async generator, see docs/observability.md on the OpenTelemetry bug) writes whatever the
engine queued for the worker, merging everything pending into one message.

With authentication on, the stream's principal (`auth.caller()`) owns the worker id
it registers; `WorkerRegistered` tells the worker the largest output and message it
may send.

A worker holding leases that says nothing for `silence_ms` is treated as gone:
its stream ends and its leases are re-dispatched after the reconnect grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from execplan import hops
from execplan.errors import FieldViolation, InvalidArgument
from execplan.executor.runtime.engine import Engine
from execplan.v1 import worker_service_pb2 as ws
from execplan.v1 import worker_service_pb2_grpc as ws_grpc
from execplan.wire.auth import caller
from execplan.wire.status import stream_errors

_UINT32 = 2**32 - 1
SERVICE_NAME = ws.DESCRIPTOR.services_by_name["WorkerService"].full_name
Ctx = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger("execplan.workers")


class _Outbox:
    """Messages for one worker, merged on the way out.

    The stream's handler waits on one plain future that `put` (or `wake`) resolves:
    the wake-up is a single loop iteration, where an `asyncio.Event` awaited through
    `asyncio.wait` took a task and three iterations per message (it is on the path of
    every chain step)."""

    def __init__(self) -> None:
        self.pending: list[ws.ConnectResponse] = []
        self._waiter: asyncio.Future[None] | None = None
        # Set (and the handler woken) every `tick_every` s: time to look at the
        # worker's silence.
        self.ticked = False
        self._ticker: asyncio.TimerHandle | None = None

    def tick_every(self, seconds: float) -> None:
        def tick() -> None:
            self.ticked = True
            self.wake()
            self._ticker = loop.call_later(seconds, tick)

        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(seconds, tick)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    def put(self, message: ws.ConnectResponse) -> None:
        if hops.ON:
            hops.mark("server.send")
        self.pending.append(message)
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something is pending or `wake` is called."""
        if self.pending:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> ws.ConnectResponse:
        if len(self.pending) == 1:
            merged = self.pending[0]
        else:
            merged = ws.ConnectResponse()
            for message in self.pending:
                merged.MergeFrom(message)
        self.pending.clear()
        return merged


def _validate(first: ws.ConnectRequest) -> ws.WorkerRegistration:
    if not first.HasField("register"):
        raise InvalidArgument(
            "the first message must register the worker",
            [FieldViolation("register", "required in the first message")],
        )
    registration = first.register
    violations = []
    if not registration.worker_id:
        violations.append(FieldViolation("register.worker_id", "required"))
    if not registration.task_types:
        violations.append(FieldViolation("register.task_types", "register at least one task type"))
    if violations:
        raise InvalidArgument("invalid worker registration", violations)
    return registration


class WorkerServicer(ws_grpc.WorkerServiceServicer):
    def __init__(
        self, engine: Engine, silence_ms: int = 15_000, max_message_bytes: int = 0
    ) -> None:
        self._engine = engine
        self._silence_ms = silence_ms
        self._max_message_bytes = max_message_bytes
        self._outboxes: set[_Outbox] = set()
        self._draining = False

    def begin_drain(self, reason: str = "server shutting down") -> None:
        self._draining = True
        for outbox in self._outboxes:
            outbox.put(ws.ConnectResponse(drain=ws.Drain(reason=reason)))

    @stream_errors
    async def Connect(  # noqa: N802
        self, request_iterator: AsyncIterator[ws.ConnectRequest], context: Ctx
    ) -> AsyncGenerator[ws.ConnectResponse, None]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        registration = _validate(first)
        outbox = _Outbox()
        principal = caller()
        worker, revoked = self._engine.connect_worker(
            registration, outbox.put, principal.name if principal is not None else None
        )
        self._outboxes.add(outbox)
        last_heard = time.monotonic()
        log.info(
            "worker %s connected: %s, %d slots",
            worker.worker_id,
            ",".join(sorted(worker.task_types)),
            worker.slots,
        )

        async def read() -> None:
            nonlocal last_heard
            async for request in request_iterator:
                last_heard = time.monotonic()
                if hops.ON:
                    hops.mark("server.read")
                self._engine.worker_message(worker, request)

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: outbox.wake())
        try:
            outbox.tick_every(self._silence_ms / 1000)
            config = self._engine.config
            yield ws.ConnectResponse(
                registered=ws.WorkerRegistered(
                    worker_id=worker.worker_id,
                    heartbeat_interval_ms=config.heartbeat_interval_ms,
                    ack_deadline_ms=config.ack_deadline_ms,
                    revoked=revoked,
                    max_output_bytes=min(config.max_payload_bytes, _UINT32),
                    max_message_bytes=min(self._max_message_bytes, _UINT32),
                )
            )
            if self._draining:
                outbox.put(ws.ConnectResponse(drain=ws.Drain(reason="server shutting down")))
            # The registering message may carry more (a draining worker's status).
            self._engine.worker_message(worker, first)
            while True:
                await outbox.wait()
                if reader.done():
                    if reader.exception() is not None:
                        log.info(
                            "worker %s stream failed: %s", worker.worker_id, reader.exception()
                        )
                    return
                if outbox.ticked:
                    outbox.ticked = False
                    silent_ms = (time.monotonic() - last_heard) * 1000
                    if worker.leases and silent_ms >= self._silence_ms:
                        log.warning(
                            "worker %s silent for %d ms with %d leases; dropping it",
                            worker.worker_id,
                            silent_ms,
                            len(worker.leases),
                        )
                        return
                if outbox.pending:
                    if hops.ON:
                        hops.mark("server.write")
                    yield outbox.take()
        finally:
            outbox.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._outboxes.discard(outbox)
            self._engine.disconnect_worker(worker)
            log.info("worker %s disconnected", worker.worker_id)
