"""The one retry policy of the client and the worker SDK: when to retry, how long to wait.

Every retry loop (a unary call failing over between replicas, `watch`, `watch_all`,
the worker's stream) waits what `Backoff.next_delay` says:

- the first retry after a success is immediate (a restarted server is usually
  back at once, and the executor keeps a disconnected worker's leases only 5 s);
- then full jitter: uniform in [0, min(cap, initial * 2**(n-1))], so 0..0.1 s,
  0..0.2 s, ... never more than `cap` (2 s); full jitter spreads the reconnects of
  many clients after a restart instead of synchronising them into waves (AWS
  architecture blog, "Exponential Backoff And Jitter");
- a server that sends `google.rpc.RetryInfo` is honoured: at least its delay
  (bounded by `max_server_delay`), plus up to half of it again as jitter, so the
  callers it shed do not all come back in the same instant.

`Retry` adds the deadline: a loop gives up (raises the last error) once it has
been failing for `deadline` seconds without progress; None retries forever (the
worker's stream does).

    retry = Retry(RetryPolicy())
    delay = retry.delay(server_delay=None)   # None: past the deadline, give up
    retry.progressed()                        # after a call or a message got through
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # Ceiling of the first backed-off delay (the retry after the immediate one).
    initial: float = 0.1
    # No delay of our own is longer than this: well under the executor's 5 s
    # reconnect grace, so a worker is back before its leases are re-dispatched.
    cap: float = 2.0
    # A RetryInfo delay longer than this is cut to it (a confused server must not
    # park a client for an hour).
    max_server_delay: float = 30.0
    # Seconds of failing without progress before the error reaches the caller.
    deadline: float | None = 60.0


DEFAULT_POLICY = RetryPolicy()

# The jitter of every Backoff without an rng of its own: a Random seeds itself from
# 2.5 KB of os.urandom (~30 us), and a Retry is made for every call. Not the module's
# global one, which a program (or a test plugin) may seed. Reseeded in a forked child
# so that forked workers do not retry in step.
_JITTER = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_JITTER.seed)


class Backoff:
    def __init__(self, policy: RetryPolicy = DEFAULT_POLICY, rng: random.Random | None = None):
        self.policy = policy
        self._attempt = 0
        self._rng = rng or _JITTER

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self, server_delay: float | None = None) -> float:
        attempt = self._attempt
        self._attempt += 1
        if server_delay is not None and server_delay > 0:
            honoured = min(server_delay, self.policy.max_server_delay)
            return honoured * self._rng.uniform(1.0, 1.5)
        if attempt == 0:
            return 0.0
        # min() before the exponent overflows: 2**1100 is not a float.
        ceiling = min(self.policy.cap, self.policy.initial * 2 ** min(attempt - 1, 60))
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class Retry:
    """A Backoff with the policy's deadline, for one retry loop."""

    def __init__(self, policy: RetryPolicy = DEFAULT_POLICY, rng: random.Random | None = None):
        self.backoff = Backoff(policy, rng)
        self._failing_since: float | None = None

    def progressed(self) -> None:
        self.backoff.reset()
        self._failing_since = None

    def delay(self, server_delay: float | None = None) -> float | None:
        """Seconds to wait before the next try, or None when past the deadline."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        deadline = self.backoff.policy.deadline
        wait = self.backoff.next_delay(server_delay)
        if deadline is None:
            return wait
        left = self._failing_since + deadline - now
        if left <= 0:
            return None
        return min(wait, left)


def transient(code: grpc.StatusCode, server_delay: float | None) -> bool:
    """Whether a failed call may simply be tried again (later, or elsewhere).

    UNAVAILABLE: the server is down, restarting or shutting down. CANCELLED that we
    did not ask for: the server dropped the call (gRPC core cancels calls it queued
    beyond its backlog before any handler saw them; a stopping server cancels what
    is left after its grace). RESOURCE_EXHAUSTED only with a RetryInfo delay: that
    is the server shedding load; without one it is a limit no retry can fix.
    """
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return True
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and server_delay is not None
