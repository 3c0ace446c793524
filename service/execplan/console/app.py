"""The console's ASGI application: the built browser app, the Connect routes of
ExecutorService/PlannerService, and `/console/session`.

    app = ConsoleApp(assets, connect_app, security, loopback_only=True)

Routes:
  POST /execplan.v1.<Service>/<Method>   Connect (and gRPC-Web) calls, served by the
                                         gRPC handlers themselves (wire/connect.py)
  GET  /console/session                  who the bearer token is and which calls it
                                         may make, so the app shows only what works
  GET  anything else                     a file of the build, else index.html

Browser-facing checks the gRPC port does not need:
  - RPCs only by POST from the console's own origin (`Origin` equal to `Host`):
    another site's page cannot make the browser call us (cross-site requests);
    GET (Connect's form for side-effect-free calls) is refused for the same reason.
  - A console bound to loopback answers only `Host: localhost / 127.x / [::1]`, so a
    site whose DNS name points at 127.0.0.1 cannot reach it (DNS rebinding).
  - Pages carry a strict Content-Security-Policy (own origin only, no inline
    script) and may not be framed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from execplan.console.assets import BUILD_HINT, Assets
from execplan.errors import Unauthenticated
from execplan.wire.auth import SecurityInterceptor, allowed
from execplan.wire.connect import GONE, ConnectApplication

log = logging.getLogger("execplan.console")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SESSION = "/console/session"
# The calls the console makes; `/console/session` says which of them a token may make.
CONSOLE_METHODS = tuple(
    f"/execplan.v1.ExecutorService/{name}"
    for name in (
        "ListExecutions",
        "GetExecution",
        "WatchExecution",
        "WatchExecutions",
        "GetExecutionHistory",
        "ListPlans",
        "GetPlan",
        "ListWorkers",
        "ListCircuitBreakers",
        "ListLimits",
        "ReplayExecution",
        "StartExecution",
        "PauseExecution",
        "ResumeExecution",
        "CancelExecution",
        "TerminateExecution",
        "SendEvent",
    )
)
PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class ConsoleApp:
    def __init__(
        self,
        assets: Assets,
        connect: ConnectApplication,
        security: SecurityInterceptor,
        *,
        loopback_only: bool,
    ) -> None:
        self._assets = assets
        self._connect = connect
        self._security = security
        self._loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets
        headers = _headers(scope)
        if self._loopback_only and not _loopback_host(headers.get("host", "")):
            await _text(send, 421, "this console answers only on localhost")
            return
        path: str = scope["path"]
        if path in self._connect.paths:
            await self._rpc(scope, receive, send, headers)
        elif path == SESSION:
            await self._session(scope, send, headers)
        elif scope["method"] in ("GET", "HEAD"):
            await self._file(scope, send, path)
        else:
            await _text(send, 405, "method not allowed")

    async def _rpc(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        if scope["method"] != "POST":
            await _text(send, 405, "RPCs are POST only")
            return
        origin = headers.get("origin")
        if origin is not None and origin.partition("://")[2] != headers.get("host"):
            await _text(send, 403, "cross-origin calls are not allowed")
            return
        gone = asyncio.Event()

        async def watched() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            return message

        token = GONE.set(gone)
        try:
            await self._connect(scope, watched, send)
        finally:
            GONE.reset(token)

    async def _session(self, scope: Scope, send: Send, headers: dict[str, str]) -> None:
        metadata = (
            [("authorization", headers["authorization"])] if "authorization" in headers else []
        )
        client = scope.get("client") or ("unknown", 0)
        try:
            principal = self._security.identify(metadata, {}, f"ipv4:{client[0]}:{client[1]}")
        except Unauthenticated as exc:
            body = {"auth": True, "error": str(exc)}
            await _json(send, 401, body)
            return
        may = [m.rpartition("/")[2] for m in CONSOLE_METHODS if allowed(principal.role, m)]
        await _json(
            send,
            200,
            {
                "auth": self._security.tokens is not None,
                "name": principal.name,
                "role": principal.role,
                "may": may,
            },
        )

    async def _file(self, scope: Scope, send: Send, path: str) -> None:
        asset = self._assets.find(path)
        if asset is None:
            if self._assets.built:
                await _text(send, 404, "not found")
            else:
                await _text(send, 503, f"execplan: {BUILD_HINT}")
            return
        cache = b"public, max-age=31536000, immutable" if asset.immutable else b"no-cache"
        head = [
            (b"content-type", asset.content_type.encode()),
            (b"etag", asset.etag.encode()),
            (b"cache-control", cache),
            *PAGE_HEADERS,
        ]
        if _headers(scope).get("if-none-match") == asset.etag:
            await send({"type": "http.response.start", "status": 304, "headers": head})
            await send({"type": "http.response.body", "body": b""})
            return
        head.append((b"content-length", str(len(asset.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": head})
        body = b"" if scope["method"] == "HEAD" else asset.body
        await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _loopback_host(host: str) -> bool:
    name = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


async def _text(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    head = [(b"content-type", b"text/plain; charset=utf-8"), *PAGE_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, value: Any) -> None:
    head = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": json.dumps(value).encode()})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
