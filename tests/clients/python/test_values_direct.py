"""`to_value` builds plain values directly: it must agree with json_format.ParseDict
(the path it replaced for them) on every value, good or bad: the same message and
bytes on the wire, the same exception type and message."""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any

import pytest
from execplan.client import values
from execplan.client.values import to_struct, to_value
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st


def reference(obj: Any) -> struct_pb2.Value:
    """to_value as it was, and as it still is for whatever is not plain: the
    finiteness walk, then json_format.ParseDict."""
    return values._parsed_value(obj)


def outcome(convert: Any, obj: Any) -> tuple[str, Any]:
    try:
        return "ok", convert(obj).SerializeToString(deterministic=True)
    except Exception as exc:
        return type(exc).__name__, str(exc)


class Color(enum.IntEnum):
    RED = 1


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.just(10**400),  # too large for a double
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.just("\ud800"),  # not encodable as UTF-8
    st.just(b"bytes"),
    st.just(Color.RED),
    st.just(object()),
)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
        st.dictionaries(st.text(max_size=3), inner, max_size=2).map(OrderedDict),
        st.dictionaries(st.integers(0, 9), inner, max_size=2),
        st.sets(st.integers(0, 3), max_size=2),
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(json_like)
def test_to_value_agrees_with_parse_dict(obj: Any) -> None:
    expected = outcome(reference, obj)
    assert outcome(to_value, obj) == expected
    if expected[0] == "ok":  # the same message, not only the same bytes
        assert to_value(obj) == reference(obj)


def nested(depth: int, container: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if container == "list" else {"k": value}
    return value


def test_the_depth_limit_is_parse_dicts() -> None:
    verdicts = set()
    for container in ("list", "dict"):
        for depth in range(45, 55):
            obj = nested(depth, container)
            assert outcome(to_value, obj) == outcome(reference, obj)
            verdicts.add(outcome(to_value, obj)[0])
    assert verdicts == {"ok", "TypeError"}  # both sides of the limit were tried


def test_empty_containers_are_set() -> None:
    assert to_value({}).WhichOneof("kind") == "struct_value"
    assert to_value([]).WhichOneof("kind") == "list_value"
    assert to_value(()).WhichOneof("kind") == "list_value"
    assert to_value(None).WhichOneof("kind") == "null_value"


def test_a_value_that_contains_itself_is_refused() -> None:
    """Neither path may walk it forever (the finiteness walk did: a hang, its memory
    growing): json_format refuses it as too deep, as any value past its limit."""
    items: list[Any] = []
    items.append(items)
    mapping: dict[str, Any] = {}
    mapping["a"] = mapping
    mapping["b"] = [mapping, 1.5]
    for obj in (items, mapping, {"x": [items]}, (1, items)):
        assert outcome(to_value, obj) == outcome(reference, obj)
        assert outcome(to_value, obj)[0] == "TypeError"
        assert "too deep" in outcome(to_value, obj)[1]
    with pytest.raises(TypeError, match="too deep"):
        to_struct(mapping)


def test_a_nan_within_the_depth_limit_is_still_named() -> None:
    obj = nested(49, "list")
    inner = obj
    for _ in range(48):
        inner = inner[0]
    inner.append(float("nan"))
    with pytest.raises(TypeError, match="not a JSON number"):
        to_value(obj)
