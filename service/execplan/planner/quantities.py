"""Kubernetes resource quantities: `cpu: "500m"` and `memory: "256Mi"`.

`parse_cpu_millis("500m") == 500`, `parse_cpu_millis("2") == 2000`,
`parse_memory_bytes("256Mi") == 268435456`, `parse_memory_bytes("1e3") == 1000`.
Suffixes: binary Ki Mi Gi Ti Pi Ei, decimal n u m k M G T P E, or an exponent
(`1e3`, `1E-3`). Results are rounded up, as Kubernetes does. Raises `ValueError`.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

from execplan.planner.diagnostics import echo

_SUFFIX: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(
    r"(?P<num>[+]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<exp>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)"
)
_INT64_MAX = 2**63 - 1


def parse_quantity(text: str | int | float) -> Fraction:
    """The exact value of a quantity (a bare int/float from YAML is allowed too)."""
    if isinstance(text, bool):
        raise ValueError(f"invalid quantity {echo(text)}")
    if isinstance(text, int | float):
        if text < 0 or not math.isfinite(text):
            raise ValueError(f"invalid quantity {echo(text)}")
        return Fraction(text)
    return _parse_text(text)


MAX_CHARS = 64


@lru_cache(maxsize=1024)
def _parse_text(text: str) -> Fraction:
    if len(text) > MAX_CHARS:  # a 5,000-digit number would also defeat int()
        raise ValueError(f"invalid quantity {echo(text)}: longer than {MAX_CHARS} characters")
    m = _QUANTITY.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"invalid quantity {echo(text)}: expected e.g. 500m, 2, 256Mi, 1G")
    value = Fraction(m["num"])
    if m["exp"]:
        exp = int(m["exp"][1:])
        if abs(exp) > 30:
            raise ValueError(f"quantity {echo(text)} is out of range")
        value *= Fraction(10) ** exp
    else:
        value *= _SUFFIX[m["suffix"] or ""]
    return value


def _ceil(q: Fraction, what: str, text: object) -> int:
    n = -(-q.numerator // q.denominator)
    if n > _INT64_MAX:
        raise ValueError(f"{what} {echo(text)} is out of range")
    return n


def parse_cpu_millis(text: str | int | float) -> int:
    return _ceil(parse_quantity(text) * 1000, "cpu", text)


def parse_memory_bytes(text: str | int | float) -> int:
    return _ceil(parse_quantity(text), "memory", text)
