"""A scripted fake of the executor's WorkerService, for testing worker SDKs.

The fake is served from its own thread and event loop, as a real executor would run
in a separate process: a test whose handler blocks the test's loop (time.sleep in an
async handler) can then still prove that the worker's heartbeats kept arriving. Every
request is stamped with time.monotonic() when the server receives it. Workers of any
language connect to `ServerThread.address`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from execplan.v1 import worker_service_pb2 as pb
from execplan.v1 import worker_service_pb2_grpc
from google.rpc import status_pb2
from grpc_status import rpc_status


@dataclass
class Received:
    at: float
    stream: int
    request: pb.ConnectRequest


@dataclass
class _Stream:
    number: int
    outgoing: asyncio.Queue[pb.ConnectResponse | str] = field(default_factory=asyncio.Queue)


class FakeWorkerService(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(self, test_loop: asyncio.AbstractEventLoop, heartbeat_ms: int = 50) -> None:
        self.test_loop = test_loop
        self.heartbeat_ms = heartbeat_ms
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self.log: list[Received] = []
        self.streams: list[_Stream] = []
        self.half_closed: list[int] = []
        # Statuses to answer the next registrations with, instead of `registered`.
        self.register_errors: list[status_pb2.Status] = []
        # Filled into `registered.revoked` of the next registration.
        self.revoke_next: list[pb.AttemptRef] = []

    async def Connect(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[pb.ConnectRequest],
        context: grpc.aio.ServicerContext[pb.ConnectRequest, pb.ConnectResponse],
    ) -> None:
        stream = _Stream(len(self.streams) + 1)
        self.streams.append(stream)
        first = await anext(aiter(request_iterator))
        self._record(stream, first)
        if self.register_errors:
            st = rpc_status.to_status(self.register_errors.pop(0))
            await context.abort(st.code, st.details, st.trailing_metadata)
        registered = pb.WorkerRegistered(
            worker_id=first.register.worker_id,
            heartbeat_interval_ms=self.heartbeat_ms,
            ack_deadline_ms=1000,
            revoked=self.revoke_next,
        )
        self.revoke_next = []
        await context.write(pb.ConnectResponse(registered=registered))
        reader = asyncio.create_task(self._read(stream, request_iterator))
        try:
            while True:
                get = asyncio.create_task(stream.outgoing.get())
                await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    return  # the worker half-closed: end the stream, as the executor does
                item = get.result()
                if item == "abort":
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "stream dropped by test")
                elif item == "end":
                    return
                else:
                    assert isinstance(item, pb.ConnectResponse)
                    await context.write(item)
        finally:
            reader.cancel()

    async def _read(self, stream: _Stream, it: AsyncIterator[pb.ConnectRequest]) -> None:
        async for request in it:
            self._record(stream, request)
        self.half_closed.append(stream.number)

    def _record(self, stream: _Stream, request: pb.ConnectRequest) -> None:
        item = Received(time.monotonic(), stream.number, request)
        self.log.append(item)
        self.test_loop.call_soon_threadsafe(self.received.put_nowait, item)

    # -- test side --------------------------------------------------------------------
    async def next_request(
        self, match: Callable[[pb.ConnectRequest], bool] = lambda r: True, within: float = 5.0
    ) -> Received:
        async with asyncio.timeout(within):
            while True:
                item = await self.received.get()
                if match(item.request):
                    return item


class ServerThread:
    """A grpc.aio server with one servicer, on its own thread and loop."""

    def __init__(self, servicer: FakeWorkerService, port: int = 0) -> None:
        self.servicer = servicer
        self.port = port
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> int:
        self._thread.start()
        self._ready.wait(5)
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server()
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)

    def send(self, response: pb.ConnectResponse | str) -> None:
        """Send on the newest stream ("abort" drops it with UNAVAILABLE, "end" ends it)."""
        assert self.loop is not None
        stream = self.servicer.streams[-1]
        self.loop.call_soon_threadsafe(stream.outgoing.put_nowait, response)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
