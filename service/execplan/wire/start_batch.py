"""StartExecutions: many starts in one call, each answered on its own.

A batch pays gRPC's per-call work, the interceptor pass and the handler's entry once
instead of once per start. Its items run concurrently in this one handler pass, so:
- a source or plan several items share is compiled once (the servicer's compile
  cache) and registered once (the plan registry's single flight);
- their `create_execution`s are queued in the same event-loop turn and reach the
  store's group-commit writer together: one transaction and one commit for the
  batch (SQLite and PostgreSQL alike);
- the response is sent only when every item has its outcome, so every execution it
  reports as started is durable.

Each item is exactly a StartExecution: the same checks (the wire bounds of
`bounds.out_of_range`, run here per item instead of by the interceptor, so a bad
item fails alone), the same request_id idempotency (a request_id repeated inside one
batch is answered as across two calls: the store's writer runs the creates one after
the other in its transaction), the same events, logs, metrics and trace context.
A failed item's outcome is the `google.rpc.Status` StartExecution would have failed
with, its field paths prefixed with `requests[i].`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from execplan.errors import (
    ExecplanError,
    FieldViolation,
    InvalidArgument,
    LimitExceeded,
    is_native_panic,
)
from execplan.v1 import executor_service_pb2 as pb
from execplan.wire.auth import start_gate
from execplan.wire.bounds import out_of_range
from execplan.wire.status import internal_status, to_rpc_status
from google.rpc import error_details_pb2

log = logging.getLogger(__name__)
_BAD, _QUOTA = error_details_pb2.BadRequest, error_details_pb2.QuotaFailure

# The most starts one StartExecutions may carry: enough to amortise a call's cost
# many times over, and few enough that one call cannot hold the writer's group (and
# the executor's admission) for long. The request must also fit the message limit.
MAX_ITEMS = 1000

Ctx = grpc.aio.ServicerContext[Any, Any]
Start = Callable[[pb.StartExecutionRequest, dict[str, str]], Awaitable[pb.StartExecutionResponse]]


def trace_of(context: Ctx) -> dict[str, str]:
    """The caller's W3C trace context, recorded in the executions it starts."""
    return {
        k: v
        for k, v in context.invocation_metadata() or ()
        if k in ("traceparent", "tracestate") and isinstance(v, str)
    }


async def start_each(
    start: Start, request: pb.StartExecutionsRequest, trace: dict[str, str], max_bytes: int
) -> pb.StartExecutionsResponse:
    """Every item of `request` through `start` (the servicer's StartExecution), at once;
    one result per item, in order, in an answer of at most `max_bytes` (`_cut`)."""
    items = request.requests
    if not items:
        raise InvalidArgument(
            "requests is empty", [FieldViolation("requests", "at least one start")]
        )
    if len(items) > MAX_ITEMS:
        raise InvalidArgument(
            f"requests holds {len(items):,} starts; at most {MAX_ITEMS:,} in one call",
            [FieldViolation("requests", f"at most {MAX_ITEMS:,} items", "too-many")],
        )
    gate = start_gate()
    outcomes: list[asyncio.Future[pb.StartExecutionResult]] = []
    # The last item run with each request_id: a later item with the same one waits
    # for it, so a batch is answered as its items would be one call after the other
    # (the first creates, a repeat gets that execution or REQUEST_ID_REUSED).
    last: dict[str, asyncio.Future[pb.StartExecutionResult]] = {}
    for index, item in enumerate(items):
        # The rate bucket is asked in item order, before any item runs.
        refusal = _refusal(item, gate)
        if refusal is not None:
            outcomes.append(_settled(_failed(refusal, index)))
            continue
        before = last.get(item.request_id) if item.request_id else None
        outcome = asyncio.ensure_future(_one(start, index, item, trace, before))
        if item.request_id:
            last[item.request_id] = outcome
        outcomes.append(outcome)
    response = pb.StartExecutionsResponse(results=await asyncio.gather(*outcomes))
    if response.ByteSize() > max_bytes:
        _cut(response)
    return response


def _cut(response: pb.StartExecutionsResponse) -> None:
    """An answer over the message limit could not be sent, while the executions it
    reports are started: its errors keep their code, message, ErrorInfo and RetryInfo
    and lose their field lists (BadRequest, QuotaFailure). Each of those is at most
    ~3 KiB and the rest ~0.6 KiB, so 1,000 items then fit the smallest limit (1 MiB)."""
    for result in response.results:
        if result.HasField("error"):
            kept = [d for d in result.error.details if not d.Is(_BAD.DESCRIPTOR)]
            kept = [d for d in kept if not d.Is(_QUOTA.DESCRIPTOR)]
            del result.error.details[:]
            result.error.details.extend(kept)


def _refusal(
    item: pb.StartExecutionRequest, gate: Callable[[], None] | None
) -> ExecplanError | None:
    """Why `item` is refused before it runs: a value out of the wire bounds (what the
    interceptor refuses a StartExecution for), or the caller's start rate."""
    if violations := out_of_range(item):
        first = violations[0]
        return InvalidArgument(f"{first.field}: {first.description}", violations)
    if gate is not None:
        try:
            gate()
        except ExecplanError as error:
            return error
    return None


def _settled(result: pb.StartExecutionResult) -> asyncio.Future[pb.StartExecutionResult]:
    future: asyncio.Future[pb.StartExecutionResult] = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future


async def _one(
    start: Start,
    index: int,
    item: pb.StartExecutionRequest,
    trace: dict[str, str],
    before: asyncio.Future[pb.StartExecutionResult] | None,
) -> pb.StartExecutionResult:
    if before is not None:
        await asyncio.wait([before])  # its outcome is its own; only the order matters
    try:
        return pb.StartExecutionResult(started=await start(item, trace))
    except ExecplanError as error:
        return _failed(error, index)
    except Exception as error:
        return _internal(error)
    except BaseException as error:  # a Rust panic (pyo3) is not an Exception
        if not is_native_panic(error):
            raise
        return _internal(error)


def _failed(error: ExecplanError, index: int) -> pb.StartExecutionResult:
    if isinstance(error, InvalidArgument | LimitExceeded) and error.violations:
        prefix = f"requests[{index}]."
        error.violations = tuple(
            dataclasses.replace(v, field=prefix + v.field) if v.field else v
            for v in error.violations
        )
    return pb.StartExecutionResult(error=to_rpc_status(error))


def _internal(error: BaseException) -> pb.StartExecutionResult:
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error starting an execution (incident %s)", incident, exc_info=error)
    return pb.StartExecutionResult(error=internal_status(incident))
