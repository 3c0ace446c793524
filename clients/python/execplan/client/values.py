"""Plain Python values <-> google.protobuf Struct / Value.

Inputs, outputs, progress and event data cross the wire as JSON-like protobuf
values. These helpers are the only conversion the SDK does, so a handler sees
plain dicts, lists, str, float/int, bool and None:

    to_struct({"amount": 12})    -> Struct
    from_struct(struct)          -> {"amount": 12.0}   (protobuf numbers are doubles)
    to_value([1, "a", None])     -> Value
    from_value(value)            -> [1.0, "a", None]

Integral floats are NOT turned back into ints: a double cannot tell 1 from 1.0,
and guessing would make types depend on the value.

Search attributes are typed (execplan.v1.SearchAttributeValue); Python values map
onto them by type, and back:

    to_search_attributes({"customer": "acme", "priority": 3, "vip": True,
                          "score": 0.5, "due": datetime.now(UTC), "old": None})
    from_search_attributes(execution.search_attributes)   -> {"customer": "acme", ...}

str -> string, bool -> bool, int -> int, float -> double, an aware datetime -> time,
None -> remove the attribute (from a task). Anything else is a TypeError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from execplan.v1 import execution_pb2
from google.protobuf import json_format, struct_pb2

# json_format.ParseDict's default depth limit; a Value, Struct and ListValue are one
# level each (a value nested 50 dicts deep is as far as it goes).
_MAX_DEPTH = 100


def _check_finite(obj: Any) -> None:
    """TypeError for NaN or an infinity anywhere in `obj`: JSON has no such number
    (protobuf would carry it, and the server refuses it)."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise TypeError(f"not a JSON number at {path or 'the top'}: {item}")
        elif isinstance(item, Mapping | list | tuple):
            if depth > _MAX_DEPTH:
                # Deeper than json_format takes: it refuses the value ("too deep").
                # Walking on would never end for a value that contains itself.
                return
            if isinstance(item, Mapping):
                stack.extend((v, f"{path}.{k}", depth + 1) for k, v in item.items())
            else:
                stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))


class _NotPlain(Exception):
    """A value the direct path leaves to json_format (for its checks and its error)."""


def _fill(target: struct_pb2.Value, obj: Any, depth: int) -> None:
    """Build `obj` into `target` with the same protobuf operations ParseDict does, for
    plain values only: exact dict (str keys), list, tuple, str, bool, int, finite
    float, None. Anything else raises _NotPlain (or the setter's own error)."""
    if depth > _MAX_DEPTH:
        raise _NotPlain
    kind = type(obj)
    if kind is str:
        target.string_value = obj
    elif kind is dict:
        if depth + 1 > _MAX_DEPTH:
            raise _NotPlain
        struct = target.struct_value
        struct.Clear()  # as ParseDict: sets the struct even when it has no fields
        fields = struct.fields
        for key in obj:
            if type(key) is not str:
                raise _NotPlain
            _fill(fields[key], obj[key], depth + 2)
    elif kind is list or kind is tuple:
        if depth + 1 > _MAX_DEPTH:
            raise _NotPlain
        items = target.list_value
        items.ClearField("values")
        values = items.values
        for item in obj:
            _fill(values.add(), item, depth + 2)
    elif obj is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif kind is bool:
        target.bool_value = obj
    elif kind is int or (kind is float and math.isfinite(obj)):
        target.number_value = obj
    else:
        raise _NotPlain


def to_value(obj: Any) -> struct_pb2.Value:
    """Raise TypeError for anything that is not JSON-like (NaN and infinities too)."""
    # Every result and progress report goes through here. json_format.ParseDict costs
    # ~3 us even for `{}`; plain values are built directly, into the same message.
    # Anything else (subclasses, a bad key or number, too deep) takes ParseDict's path
    # from the start, so what it accepts and the errors it raises stay exactly its own.
    value = struct_pb2.Value()
    try:
        _fill(value, obj, 1)
    except Exception:  # _NotPlain, or a setter refusing (an int too large, bad UTF-8)
        return _parsed_value(obj)
    return value


def _parsed_value(obj: Any) -> struct_pb2.Value:
    _check_finite(obj)
    value = struct_pb2.Value()
    try:
        json_format.ParseDict(obj, value)
    except json_format.ParseError as exc:
        raise TypeError(f"not a JSON-like value: {exc}") from exc
    return value


def from_value(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def to_struct(obj: Mapping[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if obj is None:
        return struct
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a mapping, got {type(obj).__name__}")
    _check_finite(obj)
    try:
        json_format.ParseDict(dict(obj), struct)
    except json_format.ParseError as exc:
        raise TypeError(f"not a JSON-like mapping: {exc}") from exc
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(struct)
    return result


def to_search_value(value: Any) -> execution_pb2.SearchAttributeValue:
    out = execution_pb2.SearchAttributeValue()
    if value is None:
        return out
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("a time search attribute needs an aware datetime (tzinfo set)")
        out.time_value.FromDatetime(value.astimezone(UTC))
    else:
        raise TypeError(
            f"a search attribute is a str, int, float, bool or datetime, not {type(value).__name__}"
        )
    return out


def from_search_value(value: execution_pb2.SearchAttributeValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "time_value":
        return value.time_value.ToDatetime(tzinfo=UTC)
    return None if kind is None else getattr(value, kind)


def to_search_attributes(
    attributes: Mapping[str, Any] | None,
) -> dict[str, execution_pb2.SearchAttributeValue]:
    return {str(k): to_search_value(v) for k, v in (attributes or {}).items()}


def from_search_attributes(
    attributes: Mapping[str, execution_pb2.SearchAttributeValue],
) -> dict[str, Any]:
    return {k: from_search_value(v) for k, v in attributes.items()}
