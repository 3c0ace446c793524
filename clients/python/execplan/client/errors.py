"""The one exception tree of the execplan client and worker SDK.

    ExecplanClientError             any failed call; .code, .details, .violations, .retry_after,
                                    .reason and .metadata (google.rpc.ErrorInfo)
     ├── InvalidArgumentError        INVALID_ARGUMENT; .violations from google.rpc.BadRequest
     ├── NotFoundError               NOT_FOUND
     ├── AlreadyExistsError          ALREADY_EXISTS
     ├── FailedPreconditionError     FAILED_PRECONDITION (e.g. resuming a finished execution)
     ├── ResourceExhaustedError      RESOURCE_EXHAUSTED; .retry_after from google.rpc.RetryInfo
     ├── UnavailableError            UNAVAILABLE (server down, shutting down)
     ├── DeadlineExceededError       DEADLINE_EXCEEDED
     ├── CallCancelledError          CANCELLED
     ├── PermissionDeniedError       PERMISSION_DENIED
     ├── UnauthenticatedError        UNAUTHENTICATED
     └── InternalError               INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED, ...

`translate(err)` turns a `grpc.aio.AioRpcError` into one of these; callers write
`raise translate(err) from err`, so the gRPC error stays in `__cause__`.
`from_status(status)` does the same for a `google.rpc.Status` that arrived in a
response body (an item of StartExecutions).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_log = logging.getLogger(__name__)


class FieldViolation(NamedTuple):
    """One problem with one request field, e.g. ("tasks[3].depends_on[0]", "unknown task")."""

    field: str
    description: str


class ExecplanClientError(Exception):
    """Base of every error raised by execplan.client and execplan.worker."""

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        violations: list[FieldViolation] | None = None,
        retry_after: float | None = None,
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.violations: list[FieldViolation] = violations or []
        # Seconds the server asked us to wait before retrying (google.rpc.RetryInfo).
        self.retry_after = retry_after
        # google.rpc.ErrorInfo: a stable reason to branch on ("REQUEST_ID_REUSED") and
        # its facts ({"executionId": ...}); "" and {} when the server sent none.
        self.reason = reason
        self.metadata: dict[str, str] = metadata or {}

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.details}"
        for violation in self.violations:
            text += f"\n  {violation.field}: {violation.description}"
        return text


class InvalidArgumentError(ExecplanClientError):
    pass


class NotFoundError(ExecplanClientError):
    pass


class AlreadyExistsError(ExecplanClientError):
    pass


class FailedPreconditionError(ExecplanClientError):
    pass


class ResourceExhaustedError(ExecplanClientError):
    pass


class UnavailableError(ExecplanClientError):
    pass


class DeadlineExceededError(ExecplanClientError):
    pass


class CallCancelledError(ExecplanClientError):
    pass


class PermissionDeniedError(ExecplanClientError):
    pass


class UnauthenticatedError(ExecplanClientError):
    pass


class InternalError(ExecplanClientError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[ExecplanClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


class RichDetails(NamedTuple):
    violations: list[FieldViolation]
    retry_after: float | None
    reason: str = ""
    metadata: dict[str, str] = {}  # noqa: RUF012 - NamedTuple default, never mutated


def decode_details(err: grpc.aio.AioRpcError) -> RichDetails:
    """Read google.rpc ErrorInfo / BadRequest / QuotaFailure / RetryInfo from the
    status details."""
    try:
        status: Any = rpc_status.from_call(err)
    except ValueError:
        # Code or message of the packed status disagree with the call's: the details
        # cannot be trusted, but the error itself still is.
        _log.debug("inconsistent google.rpc.Status details on %s", err.code())
        status = None
    if status is None:
        return RichDetails([], None)
    return _rich(status)


def _rich(status: Any) -> RichDetails:
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    reason = ""
    metadata: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            violations.extend(FieldViolation(v.subject, v.description) for v in quota.violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = info.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
            reason, metadata = error_info.reason, dict(error_info.metadata)
    return RichDetails(violations, retry_after, reason, metadata)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def from_status(status: status_pb2.Status) -> ExecplanClientError:
    """The error a call failing with `status` would have raised (`translate`)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return _error(code, status.message, _rich(status))


def translate(err: grpc.aio.AioRpcError) -> ExecplanClientError:
    return _error(err.code(), err.details(), decode_details(err))


def _error(code: grpc.StatusCode, message: str | None, rich: RichDetails) -> ExecplanClientError:
    return _BY_CODE.get(code, InternalError)(
        message or code.name,
        code=code,
        violations=rich.violations,
        retry_after=rich.retry_after,
        reason=rich.reason,
        metadata=rich.metadata,
    )
