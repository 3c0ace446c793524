"""The one exception tree of the execplan server.

    ExecplanError
     ├── InvalidArgument          bad request or workflow; carries field violations
     │    ├── WorkflowInvalid      planner diagnostics (every problem at once)
     │    └── OutOfRange           a position past the end (that may exist later)
     ├── LimitExceeded            a size or count limit; maps to RESOURCE_EXHAUSTED
     │    └── SubscriberTooSlow    a live-output subscriber fell behind and was dropped
     ├── Overloaded               back-pressure with a retry-after hint
     ├── NotFound                 unknown execution, plan, ...
     ├── AlreadyExists
     ├── FailedPrecondition       e.g. resuming a finished execution
     ├── StaleToken               a result or ack carrying an outdated fencing token
     ├── Unauthenticated          missing or unknown credentials
     ├── PermissionDenied         the caller's role may not do this
     ├── Unavailable              shutting down, store unreachable
     └── StoreError               the store failed; nothing was acknowledged
          ├── ConcurrencyConflict  (execution_id, sequence) already written
          └── OwnershipLost        another executor replica owns the execution now

Domain code raises these; `execplan.wire.status` maps each to one gRPC status code
with `google.rpc` details. Lower-level exceptions are translated with `raise ... from`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one field, named by its path (`tasks[3].depends_on[0]`)."""

    field: str
    description: str
    code: str = ""


class ExecplanError(Exception):
    """Base of every error the server raises on purpose.

    `reason` and `metadata` refine the status's google.rpc.ErrorInfo: a reason more
    specific than the status table's (REQUEST_ID_REUSED rather than ALREADY_EXISTS)
    and facts the caller can act on (the id of the execution that exists).
    """

    reason: str = ""
    metadata: Mapping[str, str] = MappingProxyType({})


class InvalidArgument(ExecplanError):
    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)


class WorkflowInvalid(InvalidArgument):
    """The workflow has errors; `violations` lists all of them, sorted."""


class OutOfRange(InvalidArgument):
    """A position past the end of what exists now, e.g. a sequence number after an
    execution's last event: OUT_OF_RANGE, which (unlike INVALID_ARGUMENT) says that
    the same request may succeed once there is more."""


class LimitExceeded(ExecplanError):
    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)


class SubscriberTooSlow(LimitExceeded):
    """A subscriber of live output fell too far behind and was dropped."""

    reason = "SUBSCRIBER_TOO_SLOW"


class ResponseTooLarge(LimitExceeded):
    """An answer that would be larger than the server's message limit."""

    reason = "RESPONSE_TOO_LARGE"


class Overloaded(ExecplanError):
    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class NotFound(ExecplanError):
    pass


class AlreadyExists(ExecplanError):
    def __init__(
        self, message: str, *, reason: str = "", metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})


class FailedPrecondition(ExecplanError):
    pass


class StaleToken(ExecplanError):
    pass


class Unauthenticated(ExecplanError):
    """No credentials, or credentials the server does not know. The message never
    repeats the presented token."""


class PermissionDenied(ExecplanError):
    """Authenticated, but the role (or a worker's task-type list) does not allow it."""


class Unavailable(ExecplanError):
    pass


class StoreError(ExecplanError):
    pass


class ConcurrencyConflict(StoreError):
    pass


class OwnershipLost(StoreError):
    """Replicas: the executions are owned by another replica (or this replica's lease
    expired); nothing of their appends was written. `execution_ids` names them."""

    def __init__(self, message: str, execution_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.execution_ids: tuple[str, ...] = tuple(execution_ids)


def is_native_panic(error: BaseException) -> bool:
    """A Rust panic inside a native extension (the `cel` package is built with pyo3).

    pyo3 raises it as `pyo3_runtime.PanicException`, which derives from BaseException,
    not Exception, so an `except Exception` that guards a call into the library lets
    it through. Callers catch BaseException, keep what this accepts and re-raise the
    rest (KeyboardInterrupt, SystemExit, asyncio.CancelledError)."""
    cls = type(error)
    return cls.__name__ == "PanicException" and cls.__module__ == "pyo3_runtime"
