"""Protobuf JSON with map entries in key order, so the same message prints the same.

    message_dict(msg)        # MessageToDict(msg, preserving_proto_field_name=True),
                             # every map and Struct object in key order
    json_dict(msg)           # the same with JSON's lowerCamelCase field names

`json_format.MessageToDict` writes a message's fields in field-number order, but the
entries of a `map<...>` field and the members of a `google.protobuf.Struct` in the
order protobuf's map iterates them, which is a hash order that differs from process
to process: `execplan plan --format json` printed a workflow's labels in a new order
on every run. Here the data MessageToDict made is walked along the message's
descriptor, and only the objects that are maps (or Structs, at any depth) are
re-made in key order; messages keep their field order, lists their item order.
"""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# Well-known types whose JSON is a bare JSON value: every object inside is a map.
_JSON_VALUES = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)


def message_dict(message: Message) -> Any:
    """MessageToDict (proto field names) with maps and Structs in key order."""
    return ordered(
        json_format.MessageToDict(message, preserving_proto_field_name=True),
        cast(Descriptor, message.DESCRIPTOR),
    )


def json_dict(message: Message) -> Any:
    """MessageToDict (JSON's lowerCamelCase names) with maps and Structs in key order."""
    return ordered(json_format.MessageToDict(message), cast(Descriptor, message.DESCRIPTOR))


def ordered(data: Any, descriptor: Descriptor) -> Any:
    """`data` (MessageToDict of a message of type `descriptor`, by proto or JSON field
    names) with its maps sorted."""
    if descriptor.full_name in _JSON_VALUES:
        return _sorted_json(data)
    if not isinstance(data, dict):  # a well-known type written as a string or number
        return data
    for field in descriptor.fields:
        if field.message_type is None:
            continue
        name = field.name if field.name in data else field.json_name
        if name not in data:
            continue
        value = data[name]
        entry = field.message_type
        if entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            data[name] = {key: _field_value(value[key], value_field) for key in sorted(value)}
        elif field.is_repeated:
            data[name] = [ordered(item, entry) for item in value]
        else:
            data[name] = ordered(value, entry)
    return data


def _field_value(value: Any, field: FieldDescriptor) -> Any:
    return value if field.message_type is None else ordered(value, field.message_type)


def _sorted_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_json(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_json(item) for item in value]
    return value
