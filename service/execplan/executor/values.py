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
    return {key: from_value(item) for key, item in struct.fields.items()}


def fill_value(target: struct_pb2.Value, value: JsonValue) -> None:
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int | float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, Mapping):
        fill_struct(target.struct_value, value)
    elif isinstance(value, list | tuple):
        target.list_value.SetInParent()
        for item in value:
            fill_value(target.list_value.values.add(), item)
    else:
        target.string_value = str(value)


def fill_struct(target: struct_pb2.Struct, value: Mapping[str, JsonValue]) -> None:
    target.SetInParent()
    for key, item in value.items():
        fill_value(target.fields[str(key)], item)


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
