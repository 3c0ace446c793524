"""`grpc.health.v1.Health` with all three methods: Check, Watch and List.

grpcio-health-checking's asyncio servicer implements Check and Watch; its List
(added to health.proto after that servicer was written) fell through to the
generated base class, which answered UNIMPLEMENTED with "Method not implemented!".
This subclass adds List on top of the library's public API: every service given a
status through `set` (the server sets "" and each execplan service) is listed with
the status Check reports for it, so List, Check and Watch always agree, including
the NOT_SERVING of a graceful shutdown.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

Ctx = grpc.aio.ServicerContext[Any, Any]


class HealthServicer(health_aio.HealthServicer):  # type: ignore[misc]  # untyped library
    def __init__(self) -> None:
        super().__init__()
        self._names: set[str] = {""}  # the library's servicer starts with "" SERVING

    async def set(self, service: str, status: Any) -> None:
        self._names.add(service)
        await super().set(service, status)

    async def List(  # noqa: N802 - the gRPC method name
        self, request: health_pb2.HealthListRequest, context: Ctx
    ) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for name in sorted(self._names):
            checked = await self.Check(health_pb2.HealthCheckRequest(service=name), context)
            if checked is not None:
                response.statuses[name].CopyFrom(checked)
        return response
