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


class RateLimited(Exception):
    """Raise when a provider throttled the call (an HTTP 429): the attempt fails as
    retryable with `ErrorInfo.retry_after`, and the executor waits at least
    `retry_after` seconds before the next attempt and holds every task that takes
    from the same rate-limit keys (`rate_limits`) as this one, so the whole key backs
    off, not only this attempt::

        if response.status_code == 429:
            raise RateLimited("openai: 429", retry_after=float(response.headers["retry-after"]))
    """

    def __init__(self, message: str = "rate limited", *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        if not retry_after >= 0:
            raise ValueError("retry_after must be >= 0 seconds")
        self.retry_after = retry_after


class ResourceExhausted(NonRetryableError):
    """An isolated attempt went over its memory or CPU-time limit (`resources` with
    `isolate`). Not retried: the next attempt would get the same limit."""
