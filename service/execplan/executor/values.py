"""Fast conversions between google.protobuf Value/Struct and plain Python values.

json_format.MessageToDict walks descriptors and is several times slower than these
direct recursions, which matters on the dispatch path (one conversion per task).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

JsonValue = Any


def from_value(value: struct_pb2.Value) -> JsonValue:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        # CEL and users expect 3 to stay an int, not become 3.0.
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    return None


def from_struct(struct: struct_pb2.Struct) -> dict[str, JsonValue]:
    # By key, not `.items()`: a protobuf map's items view is the generic Mapping one,
    # twice as slow.
    fields = struct.fields
    return {key: from_value(fields[key]) for key in fields} if fields else {}


def fill_value(target: struct_pb2.Value, value: JsonValue) -> None:
    kind = type(value)  # the plain types first: exact type checks, not isinstance
    if kind is dict:
        fill_struct(target.struct_value, value)
    elif kind is str:
        target.string_value = value
    elif kind is int or kind is float:
        target.number_value = value
    elif kind is bool:
        target.bool_value = value
    elif value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif kind is list:
        _fill_list(target, value)
    # Other types from here on (a tuple, an IntEnum, a Mapping): never a bool, which
    # cannot be subclassed.
    elif isinstance(value, int | float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, Mapping):
        fill_struct(target.struct_value, value)
    elif isinstance(value, list | tuple):
        _fill_list(target, value)
    else:
        target.string_value = str(value)


def _fill_list(target: struct_pb2.Value, value: list[JsonValue] | tuple[JsonValue, ...]) -> None:
    target.list_value.SetInParent()
    values = target.list_value.values
    for item in value:
        fill_value(values.add(), item)


def fill_struct(target: struct_pb2.Struct, value: Mapping[str, JsonValue]) -> None:
    target.SetInParent()
    if not value:  # most inputs and outputs: {}
        return
    fields = target.fields
    for key, item in value.items():
        fill_value(fields[key if type(key) is str else str(key)], item)


def to_value(value: JsonValue) -> struct_pb2.Value:
    result = struct_pb2.Value()
    fill_value(result, value)
    return result


def to_struct(value: Mapping[str, JsonValue]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    fill_struct(result, value)
    return result


def non_finite(value: JsonValue) -> str | None:
    """Where `value` holds NaN or an infinity (`.a[2]`, or "" for the value itself),
    else None. JSON has no such numbers: protobuf's JSON printer refuses them, so an
    execution holding one could not be shown (`execplan get`, the console) and an SDK
    could not decode the inputs made of it. Callers refuse such values where they
    come in (a request, a worker's output, an expression's result)."""
    # A first pass builds no paths (a worker's every output comes here); the path is
    # made only for a value that has such a number.
    stack: list[JsonValue] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return _non_finite_path(value)
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is str or kind is int or kind is bool or item is None:
            continue
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def _non_finite_path(value: JsonValue) -> str | None:
    stack: list[tuple[JsonValue, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if type(item) is float:
            if not math.isfinite(item):
                return path
        elif isinstance(item, Mapping):
            stack.extend((v, f"{path}.{k}") for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None
