"""The policy and spec value types of a workflow, field for field as workflow.proto.

Each is a frozen dataclass whose fields are the proto's snake_case names; `doc()`
gives its part of the workflow document in the canonical proto JSON form
(durations as `"1.5s"`, enums by their full names), which `json_format.ParseDict`
turns into the message. Durations are written `"250ms"`, `"30s"`, `"1h30m"` or as a
`datetime.timedelta`; enums by their short lower-case names (`"compensate"`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from ._expr import Expr

Duration = str | timedelta
Json = Any

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def duration(value: Duration, what: str) -> str:
    """A duration as proto JSON (`"90s"`, `"0.250s"`)."""
    if isinstance(value, timedelta):
        ms = round(value.total_seconds() * 1000)
    elif isinstance(value, str) and value and _PART.sub("", value) == "":
        ms = round(sum(float(n) * _UNIT_MS[u] for n, u in _PART.findall(value)))
    else:
        raise ValueError(f"{what}: {value!r} is not a duration such as 250ms, 30s, 5m or 1h30m")
    if ms < 0:
        raise ValueError(f"{what}: a duration cannot be negative")
    seconds, millis = divmod(ms, 1000)
    return f"{seconds}s" if not millis else f"{seconds}.{millis:03d}s"


def enum(prefix: str, value: str, allowed: tuple[str, ...], what: str) -> str:
    """`"compensate"` -> `"ON_FAILURE_COMPENSATE"` (full names pass through)."""
    name = value.upper().removeprefix(prefix + "_")
    if name not in allowed:
        choices = ", ".join(a.lower() for a in allowed)
        raise ValueError(f"{what}: unknown value {value!r}; expected one of {choices}")
    return f"{prefix}_{name}"


def value(v: Any, what: str) -> Json:
    """A JSON value for inputs/outputs: an `Expr` becomes `${{ source }}` anywhere inside."""
    if isinstance(v, Expr):
        return v.template()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"{what}: keys must be strings, got {k!r}")
            out[k] = value(x, f"{what}.{k}")
        return out
    if isinstance(v, list | tuple):
        return [value(x, f"{what}[{i}]") for i, x in enumerate(v)]
    raise TypeError(f"{what}: {type(v).__name__} is not a JSON value or an Expr")


def cel(v: str | Expr, what: str) -> str:
    """A bare-CEL field (`when`, `for_each`, `until`): an Expr's source, or text."""
    if isinstance(v, Expr):
        return v.source
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{what}: expected a CEL expression (str or Expr)")
    return v


class _Spec:
    """Shared `doc()`: set fields only, durations and enums converted by `_convert`."""

    def _convert(self, name: str, v: Any) -> Json:
        return v

    def doc(self) -> dict[str, Json]:
        out: dict[str, Json] = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is None or v in ((), {}, ""):
                continue
            out[f.name] = self._convert(f.name, v)
        return out


@dataclass(frozen=True)
class Retry(_Spec):
    max_attempts: int | None = None
    initial_interval: Duration | None = None
    backoff_coefficient: float | None = None
    max_interval: Duration | None = None
    jitter: float | None = None
    non_retryable_errors: tuple[str, ...] = ()

    def _convert(self, name: str, v: Any) -> Json:
        if name in ("initial_interval", "max_interval"):
            return duration(v, f"retry.{name}")
        return list(v) if name == "non_retryable_errors" else v


@dataclass(frozen=True)
class Timeouts(_Spec):
    schedule_to_start: Duration | None = None
    start_to_close: Duration | None = None
    heartbeat: Duration | None = None
    schedule_to_close: Duration | None = None

    def _convert(self, name: str, v: Any) -> Json:
        return duration(v, f"timeouts.{name}")


@dataclass(frozen=True)
class CircuitBreaker(_Spec):
    failure_threshold: int | None = None
    open_for: Duration | None = None
    half_open_max_calls: int | None = None
    failure_rate_threshold: float | None = None
    window: Duration | None = None
    on_open: str = ""  # park | fail_fast

    def _convert(self, name: str, v: Any) -> Json:
        if name in ("open_for", "window"):
            return duration(v, f"circuit_breaker.{name}")
        if name == "on_open":
            return enum("BREAKER_OPEN_ACTION", v, ("PARK", "FAIL_FAST"), "circuit_breaker.on_open")
        return v


@dataclass(frozen=True)
class Placement(_Spec):
    require: dict[str, str] = field(default_factory=dict)
    prefer: dict[str, str] = field(default_factory=dict)
    environment: str = ""


@dataclass(frozen=True)
class Resources(_Spec):
    cpu: str = ""
    memory: str = ""
    gpu: int | None = None


@dataclass(frozen=True)
class Fallback(_Spec):
    type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    retry: Retry | None = None
    timeouts: Timeouts | None = None

    def _convert(self, name: str, v: Any) -> Json:
        return value(v, f"fallback.{name}") if name == "inputs" else _sub(v)


@dataclass(frozen=True)
class Compensation(Fallback):
    def _convert(self, name: str, v: Any) -> Json:
        return value(v, f"compensation.{name}") if name == "inputs" else _sub(v)


@dataclass(frozen=True)
class Repeat(_Spec):
    """Run the task again until `until` holds, at most `max_iterations` times."""

    until: str | Expr
    max_iterations: int

    def _convert(self, name: str, v: Any) -> Json:
        return cel(v, "repeat.until") if name == "until" else v


_INPUT_TYPES = ("STRING", "NUMBER", "INTEGER", "BOOLEAN", "OBJECT", "ARRAY", "ANY")


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Input(_Spec):
    """A declared workflow input: `Input("string", required=True)`."""

    type: str = ""
    required: bool = False
    default: Any = NO_DEFAULT  # None is a default of null
    description: str = ""

    def doc(self) -> dict[str, Json]:
        out: dict[str, Json] = {}
        if self.type:
            out["type"] = enum("INPUT_TYPE", self.type, _INPUT_TYPES, "input type")
        if self.required:
            out["required"] = True
        if self.default is not NO_DEFAULT:
            out["default"] = value(self.default, "default")
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Defaults(_Spec):
    """Policies applied to every task unless it overrides them."""

    retry: Retry | None = None
    timeouts: Timeouts | None = None
    circuit_breaker: CircuitBreaker | None = None
    placement: Placement | None = None
    resources: Resources | None = None
    priority: int | None = None

    def _convert(self, name: str, v: Any) -> Json:
        return _sub(v)


def _sub(v: Any) -> Json:
    return v.doc() if isinstance(v, _Spec) else v
