"""Every RPC of every execplan service, called with raw bytes (identity serializers),
so tests can send valid, empty, malformed or truncated messages alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from execplan.v1 import executor_service_pb2, planner_service_pb2, worker_service_pb2


@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def _rpcs() -> tuple[Rpc, ...]:
    found = []
    for module, service in (
        (planner_service_pb2, "PlannerService"),
        (executor_service_pb2, "ExecutorService"),
        (worker_service_pb2, "WorkerService"),
    ):
        descriptor = module.DESCRIPTOR.services_by_name[service]
        for m in descriptor.methods:
            found.append(Rpc(descriptor.full_name, m.name, m.client_streaming, m.server_streaming))
    return tuple(found)


ALL_RPCS = _rpcs()
# Health and reflection: open to everyone (no credentials), fuzzed all the same.
OPEN_RPCS = (
    Rpc("grpc.health.v1.Health", "Check", False, False),
    Rpc("grpc.health.v1.Health", "List", False, False),
    Rpc("grpc.health.v1.Health", "Watch", False, True),
    Rpc("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", True, True),
)


def _identity(b: bytes) -> bytes:
    return b


async def call_raw(
    channel: grpc.aio.Channel,
    rpc: Rpc,
    payloads: Sequence[bytes] = (b"",),
    metadata: tuple[tuple[str, str], ...] = (),
    deadline: float = 5.0,
) -> grpc.StatusCode:
    """The status code of one call; a stream that produced a message counts as OK
    (it is then cancelled), and one still quiet after `deadline` seconds as DEADLINE_EXCEEDED."""
    kw = {"request_serializer": _identity, "response_deserializer": _identity}
    try:
        if not rpc.client_streaming and not rpc.server_streaming:
            await channel.unary_unary(rpc.path, **kw)(
                payloads[0], metadata=metadata, timeout=deadline
            )
            return grpc.StatusCode.OK
        call: Any
        if not rpc.client_streaming:
            call = channel.unary_stream(rpc.path, **kw)(
                payloads[0], metadata=metadata, timeout=deadline
            )
        else:
            call = channel.stream_stream(rpc.path, **kw)(metadata=metadata, timeout=deadline)
            for payload in payloads:
                await call.write(payload)
            await call.done_writing()
        try:
            message = await call.read()
        finally:
            call.cancel()
        if message is grpc.aio.EOF:
            code = await call.code()
            return grpc.StatusCode.OK if code == grpc.StatusCode.CANCELLED else code
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        return err.code()
