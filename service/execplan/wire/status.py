"""The one table that maps domain errors to gRPC status, with `google.rpc` details.

    ExecplanError subclass  ->  gRPC code             details (besides ErrorInfo)
    InvalidArgument           INVALID_ARGUMENT        BadRequest (one violation per field)
     ├ WorkflowInvalid        INVALID_ARGUMENT        BadRequest (every diagnostic)
     └ OutOfRange             OUT_OF_RANGE            BadRequest (the field past the end)
    LimitExceeded             RESOURCE_EXHAUSTED      QuotaFailure (one per limit hit)
    SubscriberTooSlow         RESOURCE_EXHAUSTED      (a live-output subscriber dropped)
    ResponseTooLarge          RESOURCE_EXHAUSTED      (an answer over the message limit)
    Overloaded                RESOURCE_EXHAUSTED      RetryInfo (the retry-after hint)
    NotFound                  NOT_FOUND
    AlreadyExists             ALREADY_EXISTS
    FailedPrecondition        FAILED_PRECONDITION
    StaleToken                FAILED_PRECONDITION
    Unauthenticated           UNAUTHENTICATED
    PermissionDenied          PERMISSION_DENIED
    Unavailable               UNAVAILABLE
    StoreError                UNAVAILABLE
     ├ ConcurrencyConflict    ABORTED
     └ OwnershipLost          UNAVAILABLE (another replica owns it now: retry)
    anything else             INTERNAL                (message only; traceback stays in the log)

Decisions:
- Sizes: the message is cut to MAX_MESSAGE_BYTES and the field violations to
  MAX_DETAILS_BYTES in all (the last one then says how many more there were), so a
  status always fits gRPC's 8 KiB trailer limit instead of turning into the
  client's RESOURCE_EXHAUSTED. Full lists travel in response bodies (e.g.
  `ValidateWorkflowResponse.diagnostics`).
- `StoreError` is UNAVAILABLE, not INTERNAL: the store contract says "nothing was
  acknowledged", the usual causes (disk full, database locked or unreachable) are
  transient, and mutating RPCs are idempotent on `request_id`, so the one thing a
  caller should do is retry with backoff, which is what UNAVAILABLE tells every
  gRPC client (and retry policies) to do. INTERNAL would say "do not retry, a bug".
- `ConcurrencyConflict` is ABORTED, gRPC's code for a lost optimistic-concurrency
  race ("retry at a higher level": re-read, then try again).
- Every error carries `ErrorInfo(reason=<UPPER_SNAKE code>, domain="execplan.dev")`
  so clients branch on a stable reason rather than on message text. An error may
  name a more specific reason and add metadata (`ExecplanError.reason`/`.metadata`:
  REQUEST_ID_REUSED with the `executionId` that request_id started).

Use it in servicers::

    class MyServicer(my_pb2_grpc.MyServiceServicer):
        @unary_errors
        async def Get(self, request, context): ...          # raise NotFound(...) freely

        @stream_errors
        async def Watch(self, request, context):            # async generator
            yield ...

or call `await abort_with(context, error)` directly. Unexpected exceptions become
INTERNAL with a short message and an incident id; the traceback is logged here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from execplan.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    ExecplanError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    OutOfRange,
    Overloaded,
    OwnershipLost,
    PermissionDenied,
    ResponseTooLarge,
    StaleToken,
    StoreError,
    SubscriberTooSlow,
    Unauthenticated,
    Unavailable,
    WorkflowInvalid,
    is_native_panic,
)
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "execplan.dev"

# The status travels in HTTP/2 trailers: the message percent-encoded (up to 3 bytes
# per byte) and the details base64-encoded (4/3). gRPC clients refuse trailers over
# 8 KiB (grpc-core's soft limit; measured: 80 diagnostics passed, 100 came back as
# RESOURCE_EXHAUSTED "received metadata size exceeds soft limit"), so both are capped
# to stay near 5.5 KiB in the worst case whatever the request echoed.
MAX_MESSAGE_BYTES = 400
MAX_DETAILS_BYTES = 3072
MAX_FIELD_CHARS = 200
MAX_DESCRIPTION_CHARS = 300

log = logging.getLogger(__name__)

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class StatusRow:
    code: grpc.StatusCode
    reason: str


# The table. Lookup walks the exception's MRO, so a subclass without its own row
# inherits its parent's code; a row here overrides that.
TABLE: dict[type[ExecplanError], StatusRow] = {
    InvalidArgument: StatusRow(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    WorkflowInvalid: StatusRow(grpc.StatusCode.INVALID_ARGUMENT, "WORKFLOW_INVALID"),
    OutOfRange: StatusRow(grpc.StatusCode.OUT_OF_RANGE, "OUT_OF_RANGE"),
    LimitExceeded: StatusRow(grpc.StatusCode.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED"),
    SubscriberTooSlow: StatusRow(grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW"),
    ResponseTooLarge: StatusRow(grpc.StatusCode.RESOURCE_EXHAUSTED, "RESPONSE_TOO_LARGE"),
    Overloaded: StatusRow(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED"),
    NotFound: StatusRow(grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    AlreadyExists: StatusRow(grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    FailedPrecondition: StatusRow(grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    StaleToken: StatusRow(grpc.StatusCode.FAILED_PRECONDITION, "STALE_TOKEN"),
    Unauthenticated: StatusRow(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    PermissionDenied: StatusRow(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    Unavailable: StatusRow(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
    StoreError: StatusRow(grpc.StatusCode.UNAVAILABLE, "STORE_ERROR"),
    ConcurrencyConflict: StatusRow(grpc.StatusCode.ABORTED, "CONCURRENCY_CONFLICT"),
    OwnershipLost: StatusRow(grpc.StatusCode.UNAVAILABLE, "OWNERSHIP_LOST"),
}

_INTERNAL = StatusRow(grpc.StatusCode.INTERNAL, "INTERNAL")


def mapping_for(error: BaseException) -> StatusRow:
    """The table row for `error`'s class or its nearest mapped ancestor."""
    for cls in type(error).__mro__:
        row = TABLE.get(cls)
        if row is not None:
            return row
    return _INTERNAL


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _described(v: FieldViolation) -> str:
    return _clip(f"{v.code}: {v.description}" if v.code else v.description, MAX_DESCRIPTION_CHARS)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…({len(text):,} chars)"


def _utf8_clip(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + f"…({len(text):,} chars)"


def _violations(violations: tuple[FieldViolation, ...]) -> Iterator[tuple[str, str]]:
    """(field, description) pairs that fit MAX_DETAILS_BYTES together, then one
    `("", "N more violations not shown")` if some did not."""
    used = 0
    for i, v in enumerate(violations):
        field, description = _clip(v.field, MAX_FIELD_CHARS), _described(v)
        used += len(field.encode()) + len(description.encode()) + 8  # + proto framing
        if used > MAX_DETAILS_BYTES:
            yield "", f"{len(violations) - i:,} more violations not shown"
            return
        yield field, description


def _details(error: ExecplanError, reason: str) -> list[any_pb2.Any]:
    info = error_details_pb2.ErrorInfo(
        reason=error.reason or reason, domain=DOMAIN, metadata=dict(error.metadata)
    )
    details = [_pack(info)]
    if isinstance(error, InvalidArgument) and error.violations:
        bad = error_details_pb2.BadRequest()
        for field, description in _violations(error.violations):
            bad.field_violations.add(field=field, description=description)
        details.append(_pack(bad))
    if isinstance(error, LimitExceeded) and error.violations:
        quota = error_details_pb2.QuotaFailure()
        for field, description in _violations(error.violations):
            quota.violations.add(subject=field, description=description)
        details.append(_pack(quota))
    if isinstance(error, Overloaded):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, round(error.retry_after_seconds * 1e9)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return details


def to_rpc_status(error: ExecplanError) -> status_pb2.Status:
    """The `google.rpc.Status` for a domain error (pure; unit-testable)."""
    row = mapping_for(error)
    code: int = row.code.value[0]
    return status_pb2.Status(
        code=code,
        message=_utf8_clip(str(error), MAX_MESSAGE_BYTES) or row.reason,
        details=_details(error, row.reason),
    )


def internal_status(incident: str) -> status_pb2.Status:
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (incident {incident}; details in the server log)",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN))],
    )


async def _abort(context: Ctx, status: status_pb2.Status) -> NoReturn:
    # Not abort_with_status: that leaves the OpenTelemetry server span without an
    # error status (docs/observability.md); abort() with the trailing metadata records it.
    st = rpc_status.to_status(status)
    await context.abort(st.code, st.details, st.trailing_metadata)
    raise AssertionError("context.abort returned")  # abort always raises


async def abort_with(context: Ctx, error: ExecplanError) -> NoReturn:
    """Fail the RPC with the status the table gives `error`."""
    await _abort(context, to_rpc_status(error))


async def _translate(context: Ctx, exc: BaseException) -> NoReturn:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the handler already chose a status
    if isinstance(exc, ExecplanError):
        await abort_with(context, exc)
    incident = uuid.uuid4().hex[:12]
    log.exception("unexpected error in RPC handler (incident %s)", incident, exc_info=exc)
    await _abort(context, internal_status(incident))


def unary_errors(
    method: Callable[[S, Req, Ctx], Awaitable[Resp]],
) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
    """Decorate a unary-response handler so every exception leaves as a proper status."""

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Ctx) -> Resp:
        try:
            return await method(self, request, context)
        except Exception as exc:
            await _translate(context, exc)
        except BaseException as exc:  # a Rust panic (pyo3) is not an Exception
            if not is_native_panic(exc):
                raise
            await _translate(context, exc)

    return wrapper


def stream_errors(
    method: Callable[[S, Req, Ctx], AsyncGenerator[Resp, None]],
) -> Callable[[S, Req, Ctx], AsyncGenerator[Resp, None]]:
    """The same for server- and bidi-streaming handlers (`request` is then the request
    iterator). They must be async generators: `yield`, not `context.write`, which the
    OpenTelemetry interceptor breaks (docs/observability.md)."""

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Ctx) -> AsyncGenerator[Resp, None]:
        try:
            # aclosing: when the client goes away, the handler's `finally` runs now,
            # not whenever the garbage collector finalizes the generator.
            async with contextlib.aclosing(method(self, request, context)) as items:
                async for item in items:
                    yield item
        except Exception as exc:
            await _translate(context, exc)
        except BaseException as exc:  # a Rust panic (pyo3) is not an Exception
            if not is_native_panic(exc):
                raise
            await _translate(context, exc)

    return wrapper
