"""Rates of token buckets: `"60/m"` <-> (units, period in ms), and bucket settings.

    parse_rate("60/m")   == (60, 60_000)
    parse_rate("10/s")   == (10, 1_000)
    parse_rate("5/30s")  == (5, 30_000)
    format_rate(60, 60_000) == "60/m"

The period after the slash is a unit (`ms`, `s`, `m`, `h`, `d`, meaning one of it)
or a duration with a number (`30s`, `1h30m`). Raises `ValueError` with one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_UNITS = 1_000_000_000
MIN_PERIOD_MS = 1
MAX_PERIOD_MS = 86_400_000  # a day: longer quotas are better kept by the provider
MAX_CHARS = 64
NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
MAX_NAME_CHARS = 128

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RATE = re.compile(r"\s*(\d{1,10})\s*/\s*(\S+)\s*")
_PART = re.compile(r"(\d{1,10})(ms|s|m|h|d)")


@dataclass(frozen=True, slots=True)
class BucketSettings:
    """`units` per `period_ms`, holding at most `burst` units."""

    units: int
    period_ms: int
    burst: int

    @property
    def per_ms(self) -> float:
        return self.units / self.period_ms


def check_name(name: str) -> str | None:
    """Why `name` is not a valid limit or bucket name, else None."""
    if not name:
        return "a name is required"
    if len(name) > MAX_NAME_CHARS:
        return f"longer than {MAX_NAME_CHARS} characters"
    if not NAME.fullmatch(name):
        return "must match [a-z0-9][a-z0-9._-]*"
    return None


def _period_ms(text: str) -> int:
    if text in _UNIT_MS:
        return _UNIT_MS[text]
    pos, total = 0, 0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += int(m[1]) * _UNIT_MS[m[2]]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid period {text[:MAX_CHARS]!r}: expected s, m, h, d or e.g. 30s")
    return total


def parse_rate(text: str) -> tuple[int, int]:
    """(units, period_ms) of `"N/period"`; raises ValueError."""
    if len(text) > MAX_CHARS:
        raise ValueError(f"invalid rate: longer than {MAX_CHARS} characters")
    m = _RATE.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid rate {text!r}: expected units/period, e.g. 60/m or 10/s")
    units, period = int(m[1]), _period_ms(m[2])
    check_settings(units, period, units)
    return units, period


def check_settings(units: int, period_ms: int, burst: int) -> None:
    """Raises ValueError naming what is out of range."""
    if not 1 <= units <= MAX_UNITS:
        raise ValueError(f"units must be within 1..{MAX_UNITS:,}")
    if not MIN_PERIOD_MS <= period_ms <= MAX_PERIOD_MS:
        raise ValueError("the period must be within 1ms..1d")
    if not 0 <= burst <= MAX_UNITS:
        raise ValueError(f"burst must be within 0..{MAX_UNITS:,}")


def settings(units: int, period_ms: int, burst: int = 0) -> BucketSettings:
    """Checked settings; burst 0 means `units`."""
    check_settings(units, period_ms, burst)
    return BucketSettings(units, period_ms, burst or units)


def format_rate(units: int, period_ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if period_ms == _UNIT_MS[unit]:
            return f"{units}/{unit}"
    for unit in ("d", "h", "m", "s"):
        if period_ms % _UNIT_MS[unit] == 0:
            return f"{units}/{period_ms // _UNIT_MS[unit]}{unit}"
    return f"{units}/{period_ms}ms"
