"""The one-pass bounds check (`wire/bounds.py` `_fine`) on shapes no request type has
today: a message type that holds itself (singular, repeated, in a map, through
another type), and a oneof and an `optional` enum among its checked fields. Its
checker is made while the checkers of the types below it are, so a recursive type
reaches its own through the cache entry made first; a type added to the API later
must not find that path untried. Random messages of these types get the same
verdict from `_fine` as from the walk that names each field (`_walk`)."""

from __future__ import annotations

import random
from typing import Any

from execplan.errors import FieldViolation
from execplan.wire import bounds
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

F = descriptor_pb2.FieldDescriptorProto
PACKAGE = "boundstest.recursive"


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    type_name: str = "",
    *,
    repeated: bool = False,
    **extra: Any,
) -> None:
    label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
    field = message.field.add(name=name, number=number, type=kind, label=label, **extra)
    if type_name:
        field.type_name = f".{PACKAGE}.{type_name}"


def _types() -> dict[str, Descriptor]:
    file = descriptor_pb2.FileDescriptorProto(
        name="boundstest/recursive.proto", package=PACKAGE, syntax="proto3"
    )
    color = file.enum_type.add(name="Color")
    for number, name in enumerate(("COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_BLUE")):
        color.value.add(name=name, number=number)
    node = file.message_type.add(name="Node")
    _field(node, "n", 1, F.TYPE_UINT64)
    _field(node, "color", 2, F.TYPE_ENUM, "Color")
    _field(node, "children", 3, F.TYPE_MESSAGE, "Node", repeated=True)
    _field(node, "named", 4, F.TYPE_MESSAGE, "Node.NamedEntry", repeated=True)
    _field(node, "next", 5, F.TYPE_MESSAGE, "Node")
    _field(node, "leaf", 6, F.TYPE_MESSAGE, "Leaf", oneof_index=0)
    _field(node, "m", 7, F.TYPE_FIXED64, oneof_index=0)
    _field(node, "maybe", 8, F.TYPE_ENUM, "Color", oneof_index=1, proto3_optional=True)
    _field(node, "other", 9, F.TYPE_MESSAGE, "Other")
    _field(node, "colors", 10, F.TYPE_ENUM, "Color", repeated=True)
    _field(node, "note", 11, F.TYPE_STRING)
    node.oneof_decl.add(name="kind")
    node.oneof_decl.add(name="_maybe")
    entry = node.nested_type.add(name="NamedEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, F.TYPE_MESSAGE, "Node")
    leaf = file.message_type.add(name="Leaf")
    _field(leaf, "x", 1, F.TYPE_UINT64)
    other = file.message_type.add(name="Other")  # Node -> Other -> Node
    _field(other, "back", 1, F.TYPE_MESSAGE, "Node")
    _field(other, "v", 2, F.TYPE_UINT64)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: pool.FindMessageTypeByName(f"{PACKAGE}.{name}") for name in ("Node", "Other")}


UINTS = (0, 1, 2**63 - 1, 2**63, 2**64 - 1)
COLORS = (0, 1, 2, 3, -1, 2**31 - 1)


def _random(message: Message, rng: random.Random, depth: int) -> None:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.4:
            continue
        value = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth == 0:
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key in ("a", "b")[: rng.randint(0, 2)]:
                    _random(value[key], rng, depth - 1)
            elif field.is_repeated:
                for _ in range(rng.randint(0, 2)):
                    _random(value.add(), rng, depth - 1)
            else:
                value.SetInParent()
                _random(value, rng, depth - 1)
        elif field.type == FieldDescriptor.TYPE_STRING:
            setattr(message, field.name, "s")
        else:
            choices = COLORS if field.type == FieldDescriptor.TYPE_ENUM else UINTS
            if field.is_repeated:
                value.extend(rng.choice(choices) for _ in range(rng.randint(0, 3)))
            else:
                setattr(message, field.name, rng.choice(choices))


def _walked(message: Message) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    bounds._walk(message, "", found)
    return found


def test_recursive_types_get_the_verdict_of_the_walk() -> None:
    types = _types()
    rng = random.Random(17)
    refused = accepted = 0
    for _ in range(3000):
        message = GetMessageClass(types[rng.choice(("Node", "Other"))])()
        _random(message, rng, rng.randint(0, 4))
        fine = bounds._fine(message)
        assert fine == (not _walked(message)), message
        refused += not fine
        accepted += fine
    assert refused > 300 and accepted > 300, (refused, accepted)


def test_a_bad_value_deep_in_a_recursive_type_is_found() -> None:
    node: Any = GetMessageClass(_types()["Node"])()  # a class made at run time
    assert bounds._fine(node)
    deep = node.named["a"].children.add().next.other.back
    deep.maybe = 0  # set, in range: present, not out of bounds
    assert bounds._fine(node)
    deep.leaf.x = 2**63
    assert not bounds._fine(node)
    assert [v.field for v in bounds.out_of_range(node)] == [
        "named['a'].children[0].next.other.back.leaf.x"
    ]
    deep.m = 1  # the oneof drops the leaf
    assert bounds._fine(node)
    deep.maybe = 7
    assert not bounds._fine(node)
