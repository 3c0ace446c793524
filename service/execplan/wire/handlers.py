"""The method handlers the components register on the gRPC server, by path.

    table = HandlerTable(server)                       # stands in for the server
    component.register(cast(grpc.aio.Server, table))   # registrations go through
    table.handlers["/execplan.v1.ExecutorService/GetExecution"]

The web console (wire/connect.py) serves these very handlers to browsers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class HandlerTable:
    """Stands in for the gRPC server while components register their servicers:
    forwards every registration to the real server and remembers the method handlers
    by path (`/execplan.v1.ExecutorService/GetExecution`)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        self._server.add_registered_method_handlers(service, handlers)
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler

    def __getattr__(self, name: str) -> Any:  # anything else a component may call
        return getattr(self._server, name)
