"""A hand-driven WorkerService.Connect stream: exactly what a third-party worker
sends, message by message, with none of the SDK's behaviour (acks, heartbeats,
size checks) unless the test sends it.

    async with RawWorker.open(channel, ws.WorkerRegistration(...)) as raw:
        (dispatch,) = await raw.dispatches(1)
        raw.send(ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=dispatch.attempt)]))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from execplan.v1 import worker_service_pb2 as ws
from execplan.v1 import worker_service_pb2_grpc as ws_grpc


class RawWorker:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        registration: ws.WorkerRegistration,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._queue: asyncio.Queue[ws.ConnectRequest | None] = asyncio.Queue()
        self._queue.put_nowait(ws.ConnectRequest(register=registration))
        self.responses: list[ws.ConnectResponse] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()
        stub = ws_grpc.WorkerServiceStub(channel)
        self.call: Any = stub.Connect(self._requests(), metadata=tuple(metadata))
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        channel: grpc.aio.Channel,
        registration: ws.WorkerRegistration,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> AsyncIterator[RawWorker]:
        raw = cls(channel, registration, metadata)
        try:
            yield raw
        finally:
            await raw.close()

    async def _requests(self) -> AsyncIterator[ws.ConnectRequest]:
        while (request := await self._queue.get()) is not None:
            yield request

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.responses.append(response)
                self._changed.set()
        except grpc.aio.AioRpcError as error:
            self.error = error
        finally:
            self.ended.set()
            self._changed.set()

    def send(self, request: ws.ConnectRequest) -> None:
        self._queue.put_nowait(request)

    async def close(self) -> None:
        self._queue.put_nowait(None)
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self._reader

    async def wait(self, done: Callable[[], Any], within: float = 10.0) -> Any:
        """Waits until `done()` is truthy (re-checked on every message); returns it."""
        async with asyncio.timeout(within):
            while not (value := done()):
                if self.ended.is_set():
                    raise AssertionError(f"stream ended ({self.error}) before the condition")
                self._changed.clear()
                await self._changed.wait()
            return value

    async def registered(self, within: float = 10.0) -> ws.WorkerRegistered:
        first: ws.ConnectResponse = await self.wait(lambda: self.responses and self.responses[0])
        return first.registered

    def all_dispatches(self) -> list[ws.Dispatch]:
        return [d for r in self.responses for d in r.dispatches]

    def all_rejections(self) -> list[ws.ResultRejected]:
        return [x for r in self.responses for x in r.rejections]

    async def dispatches(self, count: int, within: float = 10.0) -> list[ws.Dispatch]:
        """The first `count` dispatches this stream received (waiting for them)."""
        await self.wait(lambda: len(self.all_dispatches()) >= count, within)
        return self.all_dispatches()[:count]

    async def rejections(self, count: int, within: float = 10.0) -> list[ws.ResultRejected]:
        await self.wait(lambda: len(self.all_rejections()) >= count, within)
        return self.all_rejections()[:count]

    def ack(self, *dispatches: ws.Dispatch) -> None:
        self.send(ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=d.attempt) for d in dispatches]))
