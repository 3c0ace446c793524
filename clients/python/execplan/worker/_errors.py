"""Exceptions a task handler raises to steer retries."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raise (or subclass) to fail the attempt with `retryable = False`.

    The executor then skips the remaining retries of the task's retry policy. Any
    other exception with an attribute `retryable = False` has the same effect.
    """

    retryable = False
