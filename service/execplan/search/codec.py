"""Search attribute values <-> `execplan.v1.SearchAttributeValue` (and maps of them).

encode_value(SearchValue.of("acme"))      -> SearchAttributeValue(string_value="acme")
decode_value(message)                     -> SearchValue, or None for a removal
encode_map({"customer": SearchValue.of("acme")}) / decode_map(message.search_attributes)
"""

from __future__ import annotations

from collections.abc import Mapping

from execplan.v1 import execution_pb2

from .attributes import SearchValue


def encode_value(value: SearchValue) -> execution_pb2.SearchAttributeValue:
    out = execution_pb2.SearchAttributeValue()
    if value.kind == "string":
        out.string_value = str(value.value)
    elif value.kind == "int":
        out.int_value = int(value.value)
    elif value.kind == "double":
        out.double_value = float(value.value)
    elif value.kind == "bool":
        out.bool_value = bool(value.value)
    else:
        out.time_value.FromMilliseconds(int(value.value))
    return out


def decode_value(value: execution_pb2.SearchAttributeValue) -> SearchValue | None:
    """None for a value with nothing set (a removal)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return SearchValue("string", value.string_value)
    if kind == "int_value":
        return SearchValue("int", value.int_value)
    if kind == "double_value":
        return SearchValue("double", value.double_value)
    if kind == "bool_value":
        return SearchValue("bool", value.bool_value)
    if kind == "time_value":
        return SearchValue.time(value.time_value.ToMilliseconds())
    return None


def encode_map(
    attributes: Mapping[str, SearchValue],
) -> dict[str, execution_pb2.SearchAttributeValue]:
    return {name: encode_value(value) for name, value in attributes.items()}


def decode_map(
    attributes: Mapping[str, execution_pb2.SearchAttributeValue],
) -> dict[str, SearchValue | None]:
    """None for the values with nothing set (removals)."""
    return {name: decode_value(value) for name, value in attributes.items()}
