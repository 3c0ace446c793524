"""Runtime form of compiled bindings: literal values, CEL expressions, templates.

The planner already checked every expression; here each one is compiled once per
plan (cached by source) and evaluated against a small context holding only what
the expression may read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cel
from execplan.errors import is_native_panic
from execplan.executor.values import JsonValue, from_value
from execplan.v1 import plan_pb2


class EvaluationError(Exception):
    """An expression failed at run time (missing field, wrong operand types...)."""


@lru_cache(maxsize=65536)
def _compile(source: str) -> Any:
    return cel.compile(source)


@dataclass(frozen=True, slots=True)
class Expr:
    source: str
    reads_tasks: tuple[str, ...]

    def evaluate(self, context: Mapping[str, JsonValue]) -> JsonValue:
        try:
            return _compile(self.source).execute(dict(context))
        except Exception as error:  # the cel binding raises KeyError/TypeError/ValueError
            raise EvaluationError(f"{self.source}: {_describe(error)}") from error
        except BaseException as error:  # a Rust panic in `cel` is not an Exception
            if not is_native_panic(error):
                raise
            raise EvaluationError(
                f"{self.source}: the expression library failed: {error}"
            ) from None


@dataclass(frozen=True, slots=True)
class Literal:
    value: JsonValue


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | Expr, ...]


@dataclass(frozen=True, slots=True)
class StructBinding:
    fields: tuple[tuple[str, BindingNode], ...]


@dataclass(frozen=True, slots=True)
class ListBinding:
    items: tuple[BindingNode, ...]


BindingNode = Literal | Expr | Template | StructBinding | ListBinding


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no such key {error.args[0]!r}" if error.args else "no such key"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def decode_expression(expression: plan_pb2.Expression) -> Expr:
    return Expr(expression.source, tuple(expression.reads_tasks))


def decode_binding_value(value: plan_pb2.BindingValue) -> BindingNode:
    kind = value.WhichOneof("kind")
    if kind == "expression":
        return decode_expression(value.expression)
    if kind == "template":
        return Template(
            tuple(
                decode_expression(part.expression)
                if part.WhichOneof("kind") == "expression"
                else part.text
                for part in value.template.parts
            )
        )
    if kind == "struct":
        return StructBinding(
            tuple((field.name, decode_binding_value(field.value)) for field in value.struct.fields)
        )
    if kind == "list":
        return ListBinding(tuple(decode_binding_value(item) for item in value.list.items))
    return Literal(from_value(value.literal))


def evaluate(node: BindingNode, context: Mapping[str, JsonValue]) -> JsonValue:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Expr):
        return node.evaluate(context)
    if isinstance(node, Template):
        return "".join(
            part if isinstance(part, str) else _interpolate(part.evaluate(context))
            for part in node.parts
        )
    if isinstance(node, StructBinding):
        return {name: evaluate(child, context) for name, child in node.fields}
    return [evaluate(child, context) for child in node.items]


def _interpolate(value: JsonValue) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def reads_of(node: BindingNode) -> set[str]:
    """Task ids a binding tree reads, so a context can hold only those."""
    if isinstance(node, Expr):
        return set(node.reads_tasks)
    if isinstance(node, Template):
        return {task for part in node.parts if isinstance(part, Expr) for task in part.reads_tasks}
    if isinstance(node, StructBinding):
        return {task for _, child in node.fields for task in reads_of(child)}
    if isinstance(node, ListBinding):
        return {task for child in node.items for task in reads_of(child)}
    return set()
