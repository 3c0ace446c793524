"""Durations: the one parser shared by planner and executor.

`parse_duration(text) -> int` milliseconds. Accepted forms:

- short forms with units, concatenated, Go style: `250ms`, `30s`, `5m`, `24h`, `1h30m`,
  `1.5s`, `2d` (days), `0`;
- the canonical Protobuf JSON form of `google.protobuf.Duration`: seconds with up to
  nine fractional digits and an `s` suffix, e.g. `"1.500s"`, `"0.000250s"`.

Negative durations are rejected. Precision below one millisecond is rounded up, so a
non-zero duration never becomes zero. Raises `ValueError` with a one-line message.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from execplan.planner.diagnostics import echo

_UNIT_MS: dict[str, Fraction] = {
    "ns": Fraction(1, 1_000_000),
    "us": Fraction(1, 1000),
    "µs": Fraction(1, 1000),
    "ms": Fraction(1),
    "s": Fraction(1000),
    "m": Fraction(60_000),
    "h": Fraction(3_600_000),
    "d": Fraction(86_400_000),
}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d+)?|\.\d+)(?:ns|us|µs|ms|s|m|h|d))+")

# Plenty for any real timeout, and keeps the value inside int64 nanoseconds.
MAX_MS = 10_000 * 365 * 86_400_000
MAX_CHARS = 64


@lru_cache(maxsize=4096)
def parse_duration(text: str) -> int:
    """Milliseconds in `text` (see the module docstring for the accepted forms)."""
    s = text.strip()
    if s == "0":
        return 0
    if len(s) > MAX_CHARS:  # also keeps the Fraction sum below from a million parts
        raise ValueError(f"invalid duration {echo(text)}: longer than {MAX_CHARS} characters")
    if not s or not _WHOLE.fullmatch(s):
        raise ValueError(f"invalid duration {echo(text)}: expected e.g. 250ms, 30s, 5m, 1h30m")
    total = Fraction(0)
    for number, unit in _PART.findall(s):
        total += Fraction(number) * _UNIT_MS[unit]
    ms = -(-total.numerator // total.denominator)  # ceil
    if ms > MAX_MS:
        raise ValueError(f"duration {echo(text)} is too long")
    return ms


def format_duration(ms: int) -> str:
    """Shortest readable form (`1h30m`, `250ms`, `0s`), used by the text renderers."""
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        q, ms = divmod(ms, size)
        if q:
            out.append(f"{q}{unit}")
    return "".join(out)
