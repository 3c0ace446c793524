"""Token-bucket arithmetic, pure: every store applies it inside its own transaction.

A bucket key holds `tokens` (a float) as of `updated_ms`; it refills continuously at
`units / period_ms` per millisecond up to `burst`. Taking `n` units succeeds when at
least `n` tokens are there after the refill; otherwise nothing is taken and the
caller learns when `n` will be there (`ready_at_ms`). A provider's retry-after
pauses a key until `paused_until_ms`: nothing is taken before then, and the bucket
restarts empty at that moment so calls do not burst straight back into the 429.

A new key starts full (`burst`), as a provider's quota does after a quiet spell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from execplan.flow.rates import BucketSettings


@dataclass(frozen=True, slots=True)
class Level:
    tokens: float
    updated_ms: int
    paused_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class Take:
    """The outcome of taking units: the new level, and whether they were taken."""

    level: Level
    taken: bool
    # When the units could be taken at the earliest (== now when taken).
    ready_at_ms: int


def full(settings: BucketSettings, now_ms: int) -> Level:
    return Level(float(settings.burst), now_ms)


def refill(level: Level, settings: BucketSettings, now_ms: int) -> Level:
    """The level at `now_ms` (a clock that went backwards adds nothing)."""
    if now_ms < level.paused_until_ms:
        return level
    start = max(level.updated_ms, level.paused_until_ms)
    elapsed = max(now_ms - start, 0)
    tokens = min(float(settings.burst), level.tokens + elapsed * settings.per_ms)
    return Level(tokens, max(now_ms, level.updated_ms), level.paused_until_ms)


def take(level: Level | None, settings: BucketSettings, units: int, now_ms: int) -> Take:
    """Take `units` (>= 1) at `now_ms`; units above burst can never be taken."""
    current = full(settings, now_ms) if level is None else refill(level, settings, now_ms)
    if now_ms < current.paused_until_ms:
        wait = math.ceil(max(units - current.tokens, 0) / settings.per_ms)
        return Take(current, False, current.paused_until_ms + wait)
    if current.tokens + 1e-9 >= units:
        tokens = max(current.tokens - units, 0.0)
        return Take(Level(tokens, current.updated_ms, current.paused_until_ms), True, now_ms)
    wait = math.ceil((units - current.tokens) / settings.per_ms)
    return Take(current, False, now_ms + max(wait, 1))


def pause(level: Level | None, settings: BucketSettings, until_ms: int, now_ms: int) -> Level:
    """Hold the key until `until_ms` and restart it empty then (a retry-after)."""
    current = full(settings, now_ms) if level is None else refill(level, settings, now_ms)
    if until_ms <= max(current.paused_until_ms, now_ms):
        return current
    return Level(0.0, until_ms, until_ms)
