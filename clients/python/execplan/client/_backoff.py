"""Exponential backoff with full jitter, shared by the client and the worker SDK.

Full jitter (a uniform draw between 0 and the capped exponential) spreads the
reconnects of many workers after a server restart instead of synchronising them
into waves; see the AWS architecture blog "Exponential Backoff And Jitter".

    backoff = Backoff()
    delay = backoff.next_delay()   # 0 .. 0.2 s, then 0 .. 0.4 s, ... capped at 10 s
    backoff.reset()                # after a call succeeded
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None
    ) -> None:
        self.base = base
        self.cap = cap
        self._attempt = 0
        self._rng = rng or random.Random()

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        # min() before the exponent overflows: 2**1100 is not a float.
        ceiling = min(self.cap, self.base * (2 ** min(self._attempt, 60)))
        self._attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self._attempt = 0
