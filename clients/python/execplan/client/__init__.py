"""Typed async client for execplan (see `_client.py` for usage, `errors.py` for the tree)."""

from ._client import ExecutionState, ExecutorClient
from ._schedules import Schedules
from .errors import (
    AlreadyExistsError,
    CallCancelledError,
    DeadlineExceededError,
    ExecplanClientError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from .values import (
    from_search_attributes,
    from_struct,
    from_value,
    to_search_attributes,
    to_struct,
    to_value,
)

__all__ = [
    "AlreadyExistsError",
    "CallCancelledError",
    "DeadlineExceededError",
    "ExecplanClientError",
    "ExecutionState",
    "ExecutorClient",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Schedules",
    "UnauthenticatedError",
    "UnavailableError",
    "from_search_attributes",
    "from_struct",
    "from_value",
    "to_search_attributes",
    "to_struct",
    "to_value",
]
