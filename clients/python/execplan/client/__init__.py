"""Typed async client for execplan (see `_client.py` for usage, `errors.py` for the tree)."""

from ._client import ExecutionState, ExecutorClient
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
from .values import from_struct, from_value, to_struct, to_value

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
    "UnauthenticatedError",
    "UnavailableError",
    "from_struct",
    "from_value",
    "to_struct",
    "to_value",
]
