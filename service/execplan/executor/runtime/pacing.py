"""How many attempts a worker gets at once: a window below its registered slots.

A worker that takes dispatches and never acknowledges them holds every task it
gets for an ack deadline, then the task is re-queued, and with many slots it takes
the next batch too: one such worker starved a task type (500 dispatches, 0 of 20
executions done in 120 s). So each worker id has a window, additive-increase /
multiplicative-decrease as in TCP congestion control:

* a new worker id starts with `INITIAL_WINDOW` slots (or its `slots`, if fewer);
* every timely ack (an implied one, a result before the ack, too) adds one, up to
  the registered `slots`, so a healthy worker opens its window within a few ack
  round trips;
* a missed ack deadline halves it, at most once per ack deadline (a batch sent
  together expires together: one loss, not one per attempt);
* `QUARANTINE_AFTER` misses in a row without an ack in between close it: no
  dispatch during a probation of `PROBATION_MS`, doubled on each repeat up to
  `MAX_PROBATION_MS`, then one attempt as a probe; its ack reopens the window.

The dispatcher also prefers workers with no recent miss (`keeping_up`). The window
belongs to the worker id, not the stream: reconnecting does not reset it.
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL_WINDOW = 4
QUARANTINE_AFTER = 3
PROBATION_MS = 10_000
MAX_PROBATION_MS = 300_000


@dataclass(slots=True)
class Pace:
    window: int = INITIAL_WINDOW
    # Loss events (halvings) since the last timely ack.
    misses: int = 0
    # When the window was last halved; one halving per ack deadline.
    cut_at_ms: int | None = None
    # Probations so far without a timely ack since: each doubles the next one.
    quarantines: int = 0

    @classmethod
    def start(cls, slots: int) -> Pace:
        return cls(window=min(slots, INITIAL_WINDOW))

    @property
    def keeping_up(self) -> bool:
        return self.misses == 0

    def limit(self, slots: int) -> int:
        return min(slots, self.window)

    def acked(self, slots: int) -> bool:
        """A timely ack; True when the window grew (a dispatch round may use it)."""
        self.misses = 0
        self.quarantines = 0
        if self.window < slots:
            self.window += 1
            return True
        return False

    def missed(self, now_ms: int, ack_deadline_ms: int) -> int:
        """An ack deadline passed; returns the probation in ms it starts (0: none)."""
        if self.cut_at_ms is not None and now_ms - self.cut_at_ms < ack_deadline_ms:
            return 0  # part of a loss already counted
        self.cut_at_ms = now_ms
        self.misses += 1
        if self.misses < QUARANTINE_AFTER:
            self.window = max(1, self.window // 2)
            return 0
        probation = min(MAX_PROBATION_MS, PROBATION_MS << min(self.quarantines, 16))
        self.quarantines += 1
        self.window = 0
        return probation

    def probation_over(self) -> None:
        """One probe attempt; a miss on it starts the next, longer probation."""
        self.window = max(self.window, 1)
