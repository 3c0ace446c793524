"""Exceptions a task handler raises to steer retries."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raise (or subclass) to fail the attempt as not retryable
    (`ErrorInfo.retry = ERROR_RETRY_NON_RETRYABLE`).

    The executor then skips the remaining retries of the task's retry policy. Any
    other exception with an attribute `retryable = False` has the same effect; every
    other exception is sent as retryable.
    """

    retryable = False
