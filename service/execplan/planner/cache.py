"""`small_key_cache`: an LRU cache by string that never keeps a huge string alive.

The planner caches work by source text (a CEL source, a template string, a map key)
because big workflows repeat the same strings on thousands of tasks. A plain
`lru_cache` keyed by whole input strings would also keep the odd huge one (a 50 MB
`when`) alive for the life of the process; this one computes strings longer than
`max_chars` every time and remembers only the short ones.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

T = TypeVar("T")

CACHED_CHARS = 1024


def small_key_cache(
    maxsize: int, max_chars: int = CACHED_CHARS
) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """Cache `fn(text)` for texts of at most `max_chars` characters."""

    def decorate(fn: Callable[[str], T]) -> Callable[[str], T]:
        cached = lru_cache(maxsize)(fn)

        def call(text: str) -> T:
            return cached(text) if len(text) <= max_chars else fn(text)

        call.__doc__ = fn.__doc__
        return call

    return decorate
