"""The circuit breaker of a task type: a small pure state machine; the caller passes
the time (the runtime's `BreakerGate` holds one per task type, shared by every
execution, and parks tasks behind it)::

    CLOSED --N consecutive failures, or failure rate >= r over `window`--> OPEN
    OPEN   --`open_for` elapsed (engine timer)---------------------------> HALF_OPEN
    HALF_OPEN --a success--> CLOSED        HALF_OPEN --a failure--> OPEN

While a breaker is OPEN (or HALF_OPEN with its K canary slots taken) the runtime
parks tasks of its type instead of dispatching them, so they spend no retry
attempts; with `on_open: fail_fast` it fails the attempt with `CircuitOpen`
instead. Only attempt failures and timeouts count (not cancellations, nor errors
the engine raises itself such as `CircuitOpen` or a binding error). Results that
arrive while OPEN (attempts dispatched before it opened) change nothing.

Transitions are rare, so each one is written with `store.put_kv("breakers", type,
encode(breaker))` and the engine reloads them all at start.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from execplan.executor.plan_view import BreakerView
from execplan.executor.task_errors import BINDING_ERROR, CANCELLED, CIRCUIT_OPEN, CONDITION_ERROR

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
NAMESPACE = "breakers"

# Error types the engine produces itself; they say nothing about the task type's health.
NOT_COUNTED = frozenset({CIRCUIT_OPEN, BINDING_ERROR, CONDITION_ERROR, CANCELLED})

# A canary attempt: (execution id, task index, attempt, lease epoch).
CanaryKey = tuple[str, int, int, int]


@dataclass(slots=True)
class Breaker:
    task_type: str
    policy: BreakerView
    state: str = CLOSED
    consecutive_failures: int = 0
    # (at_ms, failed) of recent results, for failure-rate breakers.
    window: deque[tuple[int, bool]] = field(default_factory=deque)
    opened_at_ms: int = 0
    half_open_at_ms: int = 0
    # Canary attempts let through in the current HALF_OPEN period and still in flight.
    # A canary that ends without a counted result (requeued, cancelled, failed with a
    # NOT_COUNTED error, or never committed) frees its slot: see `release_canaries`.
    canary_keys: set[CanaryKey] = field(default_factory=set)
    last_error: str = ""

    @property
    def canaries(self) -> int:
        return len(self.canary_keys)

    # -- admission ------------------------------------------------------------------
    def admits(self) -> bool:
        """May one more attempt of this type be dispatched now?"""
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN:
            return self.canaries < self.policy.half_open_max_calls
        return False

    def admitted(self, key: CanaryKey) -> None:
        """An attempt was dispatched (after `admits()` said yes)."""
        if self.state == HALF_OPEN:
            self.canary_keys.add(key)

    def release_canaries(self, in_flight: Callable[[CanaryKey], bool]) -> int:
        """Frees the slots of canaries no longer in flight; returns how many."""
        if self.state != HALF_OPEN:
            return 0
        gone = [key for key in self.canary_keys if not in_flight(key)]
        self.canary_keys.difference_update(gone)
        return len(gone)

    def due(self, now_ms: int) -> bool:
        return self.state == OPEN and now_ms >= self.half_open_at_ms

    def half_open(self) -> str:
        self.state = HALF_OPEN
        self.canary_keys.clear()
        return HALF_OPEN

    # -- results --------------------------------------------------------------------
    def record(self, failed: bool, now_ms: int, error: str = "") -> str | None:
        """Counts one attempt result; returns the new state on a transition."""
        if failed:
            self.last_error = error
        if self.state == OPEN:
            return None
        if self.state == HALF_OPEN:
            return self._open(now_ms) if failed else self._close()
        self.consecutive_failures = self.consecutive_failures + 1 if failed else 0
        policy = self.policy
        if policy.failure_rate_threshold > 0 and policy.window_ms > 0:
            self.window.append((now_ms, failed))
            while self.window and self.window[0][0] <= now_ms - policy.window_ms:
                self.window.popleft()
        if policy.failure_threshold and self.consecutive_failures >= policy.failure_threshold:
            return self._open(now_ms)
        calls, failures = self.window_counts()
        if (
            policy.failure_rate_threshold > 0
            and calls >= max(1, policy.failure_threshold)
            and failures / calls >= policy.failure_rate_threshold
        ):
            return self._open(now_ms)
        return None

    def window_counts(self) -> tuple[int, int]:
        return len(self.window), sum(1 for _, failed in self.window if failed)

    def _open(self, now_ms: int) -> str:
        self.state = OPEN
        self.opened_at_ms = now_ms
        self.half_open_at_ms = now_ms + self.policy.open_for_ms
        self.canary_keys.clear()
        self.window.clear()
        return OPEN

    def _close(self) -> str:
        self.state = CLOSED
        self.consecutive_failures = 0
        self.canary_keys.clear()
        self.window.clear()
        return CLOSED


def encode(breaker: Breaker) -> bytes:
    p = breaker.policy
    return json.dumps(
        {
            "state": breaker.state,
            "consecutive_failures": breaker.consecutive_failures,
            "opened_at_ms": breaker.opened_at_ms,
            "half_open_at_ms": breaker.half_open_at_ms,
            "last_error": breaker.last_error,
            "policy": [
                p.failure_threshold,
                p.open_for_ms,
                p.half_open_max_calls,
                p.failure_rate_threshold,
                p.window_ms,
                p.fail_fast,
            ],
        },
        sort_keys=True,
    ).encode()


def decode(task_type: str, payload: bytes) -> Breaker:
    data = json.loads(payload)
    threshold, open_for, half_open, rate, window, fail_fast = data["policy"]
    breaker = Breaker(
        task_type,
        BreakerView(
            int(threshold), int(open_for), int(half_open), float(rate), int(window), bool(fail_fast)
        ),
        state=str(data["state"]),
        consecutive_failures=int(data["consecutive_failures"]),
        opened_at_ms=int(data["opened_at_ms"]),
        half_open_at_ms=int(data["half_open_at_ms"]),
        last_error=str(data["last_error"]),
    )
    if breaker.state == HALF_OPEN:
        # Canaries in flight at the crash are lost or re-leased; let K new ones probe.
        breaker.canary_keys.clear()
    return breaker
