"""The Value/Struct conversions of executor/values.py (a worker's every output and a
dispatch's every input go through them) against plain reference versions written
for clarity: the same protobuf messages, the same Python values, the same verdict
and path for NaN and infinities."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

from execplan.executor.values import fill_value, from_value, non_finite, to_struct, to_value
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st


def reference_fill(target: struct_pb2.Value, value: Any) -> None:
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int | float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, Mapping):
        target.struct_value.SetInParent()
        for key, item in value.items():
            reference_fill(target.struct_value.fields[str(key)], item)
    elif isinstance(value, list | tuple):
        target.list_value.SetInParent()
        for item in value:
            reference_fill(target.list_value.values.add(), item)
    else:
        target.string_value = str(value)


def reference_from(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: reference_from(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [reference_from(v) for v in value.list_value.values]
    return None


def reference_non_finite(value: Any, path: str = "") -> str | None:
    """The first NaN/infinity in the order the stack walk visits (last item first)."""
    if type(value) is float:
        return None if math.isfinite(value) else path
    if isinstance(value, Mapping):
        for key, item in reversed(list(value.items())):
            if (found := reference_non_finite(item, f"{path}.{key}")) is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in reversed(list(enumerate(value))):
            if (found := reference_non_finite(item, f"{path}[{index}]")) is not None:
                return found
    return None


class Color(enum.IntEnum):
    RED = 1


class Opaque:
    def __str__(self) -> str:
        return "opaque"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.just(Color.RED),
    st.just(Opaque()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
        st.dictionaries(st.integers(0, 9), inner, max_size=3),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_conversions_match_the_reference(value: Any) -> None:
    expected = struct_pb2.Value()
    reference_fill(expected, value)
    assert to_value(value) == expected
    if isinstance(value, dict):
        assert to_struct(value) == expected.struct_value
    assert non_finite(value) == reference_non_finite(value)
    assert from_value(expected) == reference_from(expected) or non_finite(value) is not None


def test_a_value_without_a_kind_and_empty_containers() -> None:
    assert from_value(struct_pb2.Value()) is None
    empty = struct_pb2.Value()
    empty.struct_value.SetInParent()
    assert from_value(empty) == {}
    assert non_finite({}) is None
    assert non_finite({"a": [1, {"b": float("nan")}]}) == ".a[1].b"
    filled = struct_pb2.Value()
    fill_value(filled, [])
    assert filled.WhichOneof("kind") == "list_value"
