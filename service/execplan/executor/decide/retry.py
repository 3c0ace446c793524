"""Retry backoff with cap and deterministic jitter.

Jitter is derived from (execution id, task id, phase, attempt) with a hash, not a
random generator, so replaying a history reproduces the same retry schedule.
"""

from __future__ import annotations

import hashlib

from execplan.executor.plan_view import RetryView
from execplan.v1 import execution_pb2 as ex


def jitter_fraction(execution_id: str, task_id: str, phase: int, attempt: int) -> float:
    digest = hashlib.blake2b(
        f"{execution_id}\x00{task_id}\x00{phase}\x00{attempt}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def backoff_ms(
    policy: RetryView, execution_id: str, task_id: str, phase: int, failed_attempt: int
) -> int:
    """Delay before attempt `failed_attempt + 1`."""
    base = policy.initial_interval_ms * policy.backoff_coefficient ** (failed_attempt - 1)
    if policy.max_interval_ms:
        base = min(base, policy.max_interval_ms)
    spread = policy.jitter * jitter_fraction(execution_id, task_id, phase, failed_attempt)
    return max(0, int(base * (1.0 - spread)))


def worker_retryable(error: ex.ErrorInfo) -> bool:
    """Whether a worker's error allows a retry: unless it says ERROR_RETRY_NON_RETRYABLE.

    `ErrorInfo.retryable` is not read: `false` and "not set" are the same bytes in
    proto3, so honouring it would let a worker that forgets the field disable
    retries. The decision and the migration are in execution.proto and
    docs/worker-protocol.md.
    """
    return error.retry != ex.ERROR_RETRY_NON_RETRYABLE


def should_retry(policy: RetryView, attempt: int, error_type: str, retryable: bool) -> bool:
    return retryable and error_type not in policy.non_retryable and attempt < policy.max_attempts
