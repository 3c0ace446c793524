"""The one server interceptor that authenticates callers, checks their role and
enforces per-identity limits.

    interceptor = SecurityInterceptor(TokenTable.load("tokens.txt"), Limits(...))
    grpc.aio.server(interceptors=[..., interceptor])

Who is calling (in this order):
  1. `authorization: Bearer <token>` metadata: the token's SHA-256 must be listed;
     a token that is present but unknown is UNAUTHENTICATED (it does not fall back
     to the certificate, so a stolen client cert cannot hide a bad token);
  2. the TLS client certificate (mutual TLS): its subject CN or any SAN, listed as
     `cert:<name>`;
  3. otherwise UNAUTHENTICATED.
With no token table (no `--auth-tokens`), authentication is off: every caller is
an `admin` named after its peer host, and only the limits apply.

What each role may call (`allowed`):
  viewer   the reads of `READ_METHODS`            look, never change (web console, dashboards)
  client   PlannerService/*, ExecutorService/*    compile, start, read, control; not
           but `ADMIN_METHODS`                    the server-wide settings (rate limits,
                                                  cache) and PurgeExecutions
  worker   WorkerService/Connect                  only the task types it is listed for
  admin    everything
Health (grpc.health.v1) and reflection stay open: probes and load balancers carry
no credentials, and both reveal only service names and SERVING states.

Token file, one principal per line (`#` starts a comment):

    # name        role    credential                       task types (workers)
    ci-bot        client  sha256:<64 hex digits>
    billing-1     worker  sha256:<64 hex digits>           payments.charge,payments.refund
    billing-2     worker  cert:billing-2.internal          payments.charge
    ops           admin   sha256:<64 hex digits>

The hash is of the UTF-8 token: `printf %s "$TOKEN" | sha256sum`. A worker without
a task-type column may register any type (`*` says the same explicitly).

Malformed requests: grpc answers UNKNOWN when a request does not parse (the error
happens inside grpc, before any handler). Every handler, open ones included, gets a
parser that cannot fail; bytes that do not parse are INVALID_ARGUMENT instead, and
so is a request with an integer or enum value the server cannot hold (`bounds.py`:
every message of every RPC, stream messages included, is checked here).

Handlers that must know who calls (WorkerService binds a worker id to its principal)
read `caller()`: the authenticated principal of the current stream, None when
authentication is off.

Limits, keyed by the principal's name:
  - at most `max_worker_streams` concurrent WorkerService.Connect streams;
  - StartExecution: a token bucket of `start_rate` per second, `start_burst` deep;
    an empty bucket is RESOURCE_EXHAUSTED with RetryInfo (`Overloaded`).
    StartExecutions takes one token per item from the same bucket: the handler asks
    `start_gate()` for each, and an item the bucket refuses fails alone.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from execplan.errors import (
    ExecplanError,
    FieldViolation,
    InvalidArgument,
    LimitExceeded,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
)
from execplan.wire.bounds import out_of_range
from execplan.wire.status import abort_with
from google.protobuf.message import Message

log = logging.getLogger("execplan.auth")

ROLES = ("viewer", "client", "worker", "admin")
CONNECT = "/execplan.v1.WorkerService/Connect"
START = "/execplan.v1.ExecutorService/StartExecution"
START_MANY = "/execplan.v1.ExecutorService/StartExecutions"
# Open to everyone, with or without credentials.
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})
CLIENT_SERVICES = frozenset({"execplan.v1.PlannerService", "execplan.v1.ExecutorService"})
# What a viewer may call: every method that changes nothing (compiling is pure).
READ_METHODS = frozenset(
    {
        f"/execplan.v1.ExecutorService/{name}"
        for name in (
            "GetExecution",
            "ListExecutions",
            "WatchExecution",
            "WatchExecutions",
            "GetExecutionHistory",
            "GetPlan",
            "ListPlans",
            "ReplayExecution",
            "ListCircuitBreakers",
            "ListWorkers",
            "ListLimits",
            "GetUsage",
            "WatchTaskStream",
            "GetSchedule",
            "ListSchedules",
        )
    }
    | {"/execplan.v1.PlannerService/CompilePlan", "/execplan.v1.PlannerService/ValidateWorkflow"}
)

# Server-wide settings that every execution feels, and deleting history: operators
# (admins) only.
ADMIN_METHODS = frozenset(
    f"/execplan.v1.ExecutorService/{name}"
    for name in ("SetRateLimit", "DeleteRateLimit", "PurgeCache", "PurgeExecutions")
)

Ctx = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the stubs only


class TokenFileError(ValueError):
    """The token file is malformed; the message names the line."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    # None: any task type (admins, workers listed without types, auth off).
    task_types: frozenset[str] | None = None


# Set for the task that runs a guarded stream's handler (see `_wrap`); a handler's
# async generator runs in that task, so it reads the caller here.
_CALLER: ContextVar[Principal | None] = ContextVar("execplan_caller", default=None)


# StartExecutions with a start rate: takes one start of the caller's bucket, raising
# Overloaded when it is empty (set by `_admit` for the task that runs the handler).
_START_GATE: ContextVar[Callable[[], None] | None] = ContextVar("execplan_start_gate", default=None)


def start_gate() -> Callable[[], None] | None:
    """For StartExecutions' handler: a function that takes one start from the caller's
    rate bucket (Overloaded when empty), or None when starts are not rate-limited."""
    return _START_GATE.get()


def caller() -> Principal | None:
    """The authenticated principal of the current stream; None with auth off."""
    return _CALLER.get()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def service_of(method: str) -> str:
    """`/pkg.Service/Method` -> `pkg.Service`."""
    return method.lstrip("/").rpartition("/")[0]


def allowed(role: str, method: str) -> bool:
    service = service_of(method)
    if service in OPEN_SERVICES or role == "admin":
        return True
    if role == "client":
        return service in CLIENT_SERVICES and method not in ADMIN_METHODS
    if role == "viewer":
        return method in READ_METHODS
    return role == "worker" and method == CONNECT


@dataclass(frozen=True, slots=True)
class TokenTable:
    by_hash: dict[str, Principal] = field(default_factory=dict)
    by_cert: dict[str, Principal] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"cannot read token file {path}: {exc}") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<tokens>") -> TokenTable:
        table = cls()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            table._add(line.split(), f"{source}:{number}")
        return table

    def _add(self, fields: list[str], where: str) -> None:
        if len(fields) not in (3, 4):
            raise TokenFileError(f"{where}: expected NAME ROLE CREDENTIAL [TASK_TYPES]")
        name, role, credential = fields[:3]
        if role not in ROLES:
            raise TokenFileError(f"{where}: role must be one of {', '.join(ROLES)}")
        types = None
        if len(fields) == 4 and fields[3] != "*":
            if role != "worker":
                raise TokenFileError(f"{where}: only workers take a task-type list")
            types = frozenset(t for t in fields[3].split(",") if t)
        principal = Principal(name, role, types)
        kind, _, value = credential.partition(":")
        if kind == "sha256":
            value = value.lower()
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise TokenFileError(f"{where}: sha256: needs 64 hex digits (never a token)")
            self.by_hash[value] = principal
        elif kind == "cert" and value:
            self.by_cert[value] = principal
        else:
            raise TokenFileError(f"{where}: credential must be sha256:<hex> or cert:<name>")

    def __len__(self) -> int:
        return len(self.by_hash) + len(self.by_cert)

    def authenticate(self, metadata: Any, auth_context: Mapping[str, Any]) -> Principal:
        token = _bearer(metadata)
        if token is not None:
            # A dict lookup by digest: comparing digests of a secret in variable time
            # leaks nothing usable about the token itself.
            principal = self.by_hash.get(hash_token(token))
            if principal is None:
                raise Unauthenticated("unknown bearer token")
            return principal
        for name in _cert_names(auth_context):
            principal = self.by_cert.get(name)
            if principal is not None:
                return principal
        if auth_context.get("x509_common_name"):
            raise Unauthenticated("client certificate is not listed in the token file")
        raise Unauthenticated(
            "credentials required: authorization: Bearer <token> or a client cert"
        )


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization must be 'Bearer <token>'")
            return token.strip()
    return None


def _cert_names(auth_context: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            names.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return names


@dataclass(frozen=True, slots=True)
class Limits:
    # 0 = unlimited.
    max_worker_streams: int = 0
    # StartExecution calls per second per identity; 0 = unlimited.
    start_rate: float = 0.0
    start_burst: int = 10

    @property
    def active(self) -> bool:
        return self.max_worker_streams > 0 or self.start_rate > 0


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.at = time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class SecurityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenTable | None, limits: Limits | None = None) -> None:
        self.tokens = tokens
        self.limits = limits or Limits()
        self._streams: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None:
            return None
        # grpc asks for the handler on every call; the wrapped one is the same each
        # time its inner handler is (one entry per method the server has).
        wrapped = self._wrapped.get(method)
        if wrapped is None or wrapped[0] is not handler:
            wrapped = self._wrapped[method] = (handler, self._wrap(handler, method))
        return wrapped[1]

    # -- the checks ------------------------------------------------------------------
    def _principal(self, context: Ctx) -> Principal:
        return self.identify(context.invocation_metadata(), context.auth_context(), context.peer())

    def identify(self, metadata: Any, auth_context: Mapping[str, Any], peer: str) -> Principal:
        """Who is calling (see the module docstring); raises `Unauthenticated`."""
        if self.tokens is None:
            return Principal(_peer_host(peer), "admin")
        return self.tokens.authenticate(metadata, auth_context)

    def _admit(self, context: Ctx, method: str) -> Principal:
        principal = self._principal(context)
        if not allowed(principal.role, method):
            raise PermissionDenied(f"role {principal.role!r} may not call {method}")
        if self.limits.start_rate > 0:
            if method == START:
                self._take_start(principal.name)
            elif method == START_MANY:
                _START_GATE.set(partial(self._take_start, principal.name))
        return principal

    def _take_start(self, name: str) -> None:
        """One start of `name`'s bucket; Overloaded (with the wait) when it is empty."""
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(self.limits.start_rate, self.limits.start_burst)
        wait = bucket.take()
        if wait > 0:
            raise Overloaded(
                f"start rate of {name!r} exceeds "
                f"{self.limits.start_rate:g}/s (burst {bucket.burst})",
                wait,
            )

    def _open_stream(self, principal: Principal) -> None:
        limit = self.limits.max_worker_streams
        count = self._streams.get(principal.name, 0)
        if limit and count >= limit:
            raise LimitExceeded(
                f"{principal.name!r} already has {count} worker streams open",
                [FieldViolation("worker_streams", f"at most {limit} per identity")],
            )
        self._streams[principal.name] = count + 1

    def _close_stream(self, principal: Principal) -> None:
        count = self._streams.get(principal.name, 1) - 1
        if count > 0:
            self._streams[principal.name] = count
        else:
            self._streams.pop(principal.name, None)

    # -- wrapping the handler ----------------------------------------------------------
    def wrap(self, handler: Handler, method: str) -> Handler:
        """`handler` of `method` behind these checks; the Connect routes of the web
        console (wire/connect.py) use it to serve the very same handlers."""
        return self._wrap(handler, method)

    def _wrap(self, handler: Handler, method: str) -> Handler:
        """The same handler, with the checks in front (`open`: only the decode guard)
        and a request parser that cannot fail inside grpc (see `_tolerant`)."""
        guarded = service_of(method) not in OPEN_SERVICES
        admitted = guarded and self._admits(method)
        req = _tolerant(handler.request_deserializer)
        resp = handler.response_serializer
        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Ctx) -> Any:
                if admitted:
                    await self._checked(context, method)
                if (refusal := _refusal(request)) is not None:
                    await abort_with(context, refusal)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, req, resp)
        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream
            if not inspect.isasyncgenfunction(inner_us):  # context.write style (health)

                async def unary_write(request: Any, context: Ctx) -> Any:
                    await _well_formed(request, context)
                    return await inner_us(request, context)

                return grpc.unary_stream_rpc_method_handler(unary_write, req, resp)

            async def unary_stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
                if admitted:
                    await self._checked(context, method)
                await _well_formed(request, context)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, req, resp)
        if handler.stream_stream is not None:
            inner_ss: Any = handler.stream_stream
            if not guarded:

                async def open_stream(requests: Any, context: Ctx) -> Any:
                    return await inner_ss(_all_well_formed(requests, context), context)

                return grpc.stream_stream_rpc_method_handler(
                    _same_kind(inner_ss, open_stream), req, resp
                )

            async def stream_stream(requests: Any, context: Ctx) -> AsyncIterator[Any]:
                principal = await self._checked(context, method)
                if self.tokens is not None:  # auth off: callers are only peer hosts
                    _CALLER.set(principal)
                if method == CONNECT:
                    try:
                        self._open_stream(principal)
                    except ExecplanError as exc:
                        await abort_with(context, exc)
                try:
                    checked = _checked_requests(requests, context, principal)
                    async for item in inner_ss(checked, context):
                        yield item
                finally:
                    if method == CONNECT:
                        self._close_stream(principal)

            return grpc.stream_stream_rpc_method_handler(stream_stream, req, resp)
        # Stream-unary: none exists today; fail closed should one be added unwrapped.
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Ctx) -> Any:
            if admitted:
                await self._checked(context, method)
            return await inner_su(_all_well_formed(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, req, resp)

    def _admits(self, method: str) -> bool:
        """Whether a call of `method` can be refused by `_admit`. With authentication
        off every caller is an admin, so only StartExecution's rate limit can refuse
        one; other calls then skip reading their metadata and peer. (Worker streams
        are admitted regardless: they count per principal.)"""
        return self.tokens is not None or (
            method in (START, START_MANY) and self.limits.start_rate > 0
        )

    async def _checked(self, context: Ctx, method: str) -> Principal:
        try:
            return self._admit(context, method)
        except ExecplanError as exc:
            log.info("denied %s from %s: %s", method, context.peer(), exc)
            await abort_with(context, exc)


class Malformed:
    """Stands for request bytes that did not parse (see `_tolerant`)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A parser that returns `Malformed` instead of raising: an exception inside
    grpc's own deserialization step answers UNKNOWN, which tells the caller nothing;
    the handler turns `Malformed` into INVALID_ARGUMENT instead."""
    if parse is None:
        return None

    def tolerant(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, RecursionError, ...: all mean bad bytes
            return Malformed(type(exc).__name__)

    return tolerant


async def _well_formed(request: Any, context: Ctx) -> None:
    if (refusal := _refusal(request)) is not None:
        await abort_with(context, refusal)


def _refusal(request: Any) -> InvalidArgument | None:
    """Why a request is refused before any handler sees it, or None (the common case,
    checked without an await: every message of a worker stream comes here)."""
    if isinstance(request, Malformed):
        return InvalidArgument(
            "the request is not a valid protobuf message",
            [FieldViolation("request", f"cannot be parsed ({request.reason})")],
        )
    if isinstance(request, Message) and (violations := out_of_range(request)):
        first = violations[0]
        return InvalidArgument(f"{first.field}: {first.description}", violations)
    return None


async def _all_well_formed(requests: Any, context: Ctx) -> AsyncIterator[Any]:
    async for request in requests:
        if (refusal := _refusal(request)) is not None:
            await abort_with(context, refusal)
        yield request


def _same_kind(inner: Any, wrapper: Any) -> Any:
    """For open stream handlers: keep an async generator an async generator."""
    if not inspect.isasyncgenfunction(inner):
        return wrapper

    async def generator(requests: Any, context: Ctx) -> AsyncIterator[Any]:
        async for item in inner(_all_well_formed(requests, context), context):
            yield item

    return generator


async def _checked_requests(
    requests: Any, context: Ctx, principal: Principal
) -> AsyncIterator[Any]:
    """A guarded stream's messages, each well formed (`_well_formed`), refusing a
    registration of a task type the principal is not listed for. The servicer's
    error translation turns the raised PermissionDenied into PERMISSION_DENIED
    before anything is registered. One generator for both checks: every message of
    a worker stream passes through it."""
    types = principal.task_types
    async for request in requests:
        if (refusal := _refusal(request)) is not None:
            await abort_with(context, refusal)
        if types is not None and request.HasField("register"):
            extra = sorted(set(request.register.task_types) - types)
            if extra:
                raise PermissionDenied(
                    f"{principal.name!r} may not register task types {', '.join(extra)}"
                )
        yield request


def _peer_host(peer: str) -> str:
    # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555" -> the host part
    address = peer.partition(":")[2]
    return address.rpartition(":")[0].strip("[]") or peer
