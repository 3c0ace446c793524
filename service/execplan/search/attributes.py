"""Search attributes: typed key/values people find executions by.

    attrs = {"customer": SearchValue.of("acme"), "priority": SearchValue.of(3)}
    check_attributes(attrs, "search_attributes")          # InvalidArgument naming each bad key
    merged = merge(current, {"priority": None})           # None removes a key

A value has one of five kinds; its kind is part of it, so `priority = 3` (an int)
and `priority = "3"` (a string) are different values, and a filter compares a
literal only with attributes of a matching kind (numbers: int and double alike).
Times are whole milliseconds since the Unix epoch (UTC).

Bounds (the same for a start, a task's update and a schedule): names match
`[A-Za-z_][A-Za-z0-9_]*` and are at most 64 characters; string values are at most
1,024 bytes of UTF-8; an execution holds at most 32 attributes. Names starting with
`execplan_` belong to the server (`execplan_schedule`, `execplan_scheduled_at`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from execplan.errors import FieldViolation, InvalidArgument

Kind = Literal["string", "int", "double", "bool", "time"]
KINDS: tuple[Kind, ...] = ("string", "int", "double", "bool", "time")

MAX_NAME_CHARS = 64
MAX_STRING_BYTES = 1024
MAX_ATTRIBUTES = 32
RESERVED_PREFIX = "execplan_"
SCHEDULE = "execplan_schedule"
SCHEDULED_AT = "execplan_scheduled_at"

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class SearchValue:
    """One typed value: `value` is str, int, float, bool, or int ms for "time"."""

    kind: Kind
    value: str | int | float | bool

    @classmethod
    def of(cls, value: str | int | float | bool | datetime) -> SearchValue:
        """The value of a Python str, bool, int, float or aware datetime."""
        if isinstance(value, bool):
            return cls("bool", value)
        if isinstance(value, int):
            return cls("int", value)
        if isinstance(value, float):
            return cls("double", value)
        if isinstance(value, datetime):
            return cls.time(to_ms(value))
        return cls("string", value)

    @classmethod
    def time(cls, ms: int) -> SearchValue:
        return cls("time", ms)

    def text(self) -> str:
        """As a person writes it in a filter (strings quoted, times in RFC 3339)."""
        if self.kind == "string":
            return '"' + str(self.value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if self.kind == "bool":
            return "true" if self.value else "false"
        if self.kind == "time":
            return format_time(int(self.value))
        return repr(self.value)


# A mapping of updates: None removes the key.
Updates = Mapping[str, SearchValue | None]


def to_ms(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("a time search attribute needs a time zone (an aware datetime)")
    return int(when.timestamp() * 1000)


def format_time(ms: int) -> str:
    """RFC 3339 in UTC, with milliseconds only when there are any."""
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def check_attributes(
    attributes: Updates,
    field: str,
    *,
    server: bool = False,
) -> None:
    """Raise InvalidArgument naming every bad key of `attributes` (`field["key"]`).
    `server`: the server's own `execplan_` names are allowed."""
    violations: list[FieldViolation] = []
    for name, value in attributes.items():
        where = f'{field}["{name[:MAX_NAME_CHARS]}"]'
        problem = name_problem(name, server=server) or (
            value_problem(value) if value is not None else ""
        )
        if problem:
            violations.append(FieldViolation(where, problem))
    if len(attributes) > MAX_ATTRIBUTES:
        violations.append(
            FieldViolation(field, f"at most {MAX_ATTRIBUTES} search attributes per execution")
        )
    if violations:
        raise InvalidArgument(f"invalid search attributes in {field}", violations)


def name_problem(name: str, *, server: bool = False) -> str:
    if len(name) > MAX_NAME_CHARS:
        return f"a name is at most {MAX_NAME_CHARS} characters"
    if not NAME.match(name):
        return "a name matches [A-Za-z_][A-Za-z0-9_]*"
    if name.startswith(RESERVED_PREFIX) and not server:
        return f"names starting with {RESERVED_PREFIX!r} belong to the server"
    return ""


def value_problem(value: SearchValue) -> str:
    if value.kind == "string" and len(str(value.value).encode()) > MAX_STRING_BYTES:
        return f"a string value is at most {MAX_STRING_BYTES} bytes"
    if value.kind in ("int", "time") and not _INT64[0] <= int(value.value) <= _INT64[1]:
        return "out of the 64-bit integer range"
    if value.kind == "double" and not math.isfinite(float(value.value)):
        return "a double must be finite (no NaN or infinity)"
    return ""


def merge(
    current: Mapping[str, SearchValue], updates: Updates, field: str
) -> dict[str, SearchValue]:
    """`current` with `updates` applied (None removes); InvalidArgument when the result
    would hold more than MAX_ATTRIBUTES."""
    merged = dict(current)
    for name, value in updates.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    if len(merged) > MAX_ATTRIBUTES:
        raise InvalidArgument(
            "too many search attributes",
            [FieldViolation(field, f"an execution holds at most {MAX_ATTRIBUTES}")],
        )
    return merged
