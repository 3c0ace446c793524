"""The gRPC services over the Connect protocol, for browsers: same handlers, same checks.

Browsers cannot speak gRPC (no HTTP/2 trailers from `fetch`); they speak Connect
(or gRPC-Web), which connect-python serves as an ASGI application. Nothing here is
a second implementation of a service: the console serves the very method handlers
the gRPC server runs, each wrapped by the same `SecurityInterceptor` (tokens, roles,
rate limits, one table in wire/auth.py), through a small adapter that gives them the
part of `grpc.aio.ServicerContext` they use.

    table = HandlerTable(grpc_server)          # wire/handlers.py; components register
    ...                                        # components add their servicers
    app = connect_application(table, security, ["execplan.v1.ExecutorService", ...])

Errors leave as the handlers chose them: `context.abort(code, message, trailers)`
with a `google.rpc.Status` in `grpc-status-details-bin` becomes a Connect error
with the same code, message and details (BadRequest, ErrorInfo, RetryInfo...).

Server streams end when the browser goes away, even while no event is due (see
`_until_gone`): a closed tab must not hold a subscription until the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, NoReturn

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from execplan.wire.auth import SecurityInterceptor
from execplan.wire.handlers import Handler, HandlerTable
from google.protobuf import descriptor_pool, message_factory
from google.rpc import status_pb2

# Set by the console's ASGI app for each request: fires when the browser disconnects.
GONE: ContextVar[asyncio.Event | None] = ContextVar("execplan_connect_gone", default=None)

_CODES = {c.name: c for c in Code}
_CODES["CANCELLED"] = Code.CANCELED  # grpc spells it with two Ls


class _Aborted(ConnectError, grpc.aio.AbortError):
    """Raised by `ConnectContext.abort`. A `grpc.aio.AbortError`, so the handlers'
    error translation (wire/status.py) passes it on as a status already chosen."""


class ConnectContext:
    """The part of `grpc.aio.ServicerContext` our interceptor and servicers use."""

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx
        self._metadata = tuple(
            (key.lower(), value)
            for key, value in ctx.request_headers().allitems()
            if not key.startswith(":")
        )

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> Mapping[str, Any]:
        # The HTTP server does not hand the client certificate to the application:
        # console callers identify with a bearer token (docs/console.md).
        return {}

    def peer(self) -> str:
        address = self._ctx.client_address() or "unknown:0"
        host, _, port = address.rpartition(":")
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    def time_remaining(self) -> float | None:
        remaining = self._ctx.timeout_ms()
        return None if remaining is None else remaining / 1000

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        raise _Aborted(
            _CODES.get(code.name, Code.UNKNOWN), details, _status_details(trailing_metadata)
        )


def _status_details(trailing_metadata: Any) -> list[Any]:
    for key, value in trailing_metadata or ():
        if key == "grpc-status-details-bin":
            return list(status_pb2.Status.FromString(value).details)
    return []


def _message_class(full_name: str) -> Any:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)


def _method_info(path: str) -> MethodInfo[Any, Any]:
    service_name, _, name = path.lstrip("/").rpartition("/")
    service = descriptor_pool.Default().FindServiceByName(service_name)
    method = service.methods_by_name[name]
    return MethodInfo(
        name=name,
        service_name=service_name,
        input=_message_class(method.input_type.full_name),
        output=_message_class(method.output_type.full_name),
        idempotency_level=IdempotencyLevel.UNKNOWN,
    )


def _unary(handler: Handler) -> Callable[[Any, RequestContext[Any, Any]], Any]:
    call: Any = handler.unary_unary  # an async function: the handlers are grpc.aio's

    async def endpoint(request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await call(request, ConnectContext(ctx))

    return endpoint


def _server_stream(handler: Handler) -> Callable[[Any, RequestContext[Any, Any]], Any]:
    call: Any = handler.unary_stream  # an async generator function (see wire/auth.py)

    async def endpoint(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
        async with contextlib.aclosing(call(request, ConnectContext(ctx))) as items:
            async for item in _until_gone(items, GONE.get()):
                yield item

    return endpoint


async def _until_gone(items: AsyncIterator[Any], gone: asyncio.Event | None) -> AsyncIterator[Any]:
    """`items` until they end or the client disconnects, whichever comes first."""
    if gone is None:
        async for item in items:
            yield item
        return
    waiter = asyncio.ensure_future(gone.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(items))
            await asyncio.wait((following, waiter), return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                return
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        waiter.cancel()


def endpoints(
    table: HandlerTable, security: SecurityInterceptor, services: Iterable[str]
) -> dict[str, Any]:
    """Connect endpoints for every unary and server-streaming method of `services`
    in `table`, each behind `security`'s checks. Client and bidi streams (the worker
    stream) are not for browsers and are left out."""
    wanted = set(services)
    result: dict[str, Any] = {}
    for path, handler in sorted(table.handlers.items()):
        if path.lstrip("/").rpartition("/")[0] not in wanted:
            continue
        checked = security.wrap(handler, path)
        if checked.unary_unary is not None:
            result[path] = Endpoint.unary(_method_info(path), _unary(checked))
        elif checked.unary_stream is not None:
            result[path] = Endpoint.server_stream(_method_info(path), _server_stream(checked))
    return result


class ConnectApplication(ConnectASGIApplication[None]):
    """An ASGI application serving `routes` (from `endpoints`) over Connect and gRPC-Web."""

    def __init__(self, routes: Mapping[str, Any], read_max_bytes: int) -> None:
        super().__init__(
            service=None, endpoints=lambda _service: routes, read_max_bytes=read_max_bytes
        )
        self.paths = frozenset(routes)

    @property
    def path(self) -> str:
        return "/"
