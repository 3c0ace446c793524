"""Runtime form of compiled bindings: literal values, CEL expressions, templates.

The planner already checked every expression. Evaluating them is
executor/expressions/evaluation.py's job (inline when cheap, in a sandbox process otherwise);
this module holds the decoded tree and what is read from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from execplan.executor.values import JsonValue, from_value
from execplan.v1 import plan_pb2


class EvaluationError(Exception):
    """An expression failed at run time (missing field, wrong operand types...)."""


@dataclass(frozen=True, slots=True)
class Expr:
    source: str
    reads_tasks: tuple[str, ...]
    # Runtime variables read (item, index, iteration, previous, output).
    reads_variables: tuple[str, ...] = ()


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


def decode_expression(expression: plan_pb2.Expression) -> Expr:
    return Expr(expression.source, tuple(expression.reads_tasks), tuple(expression.reads_variables))


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


def interpolate(value: JsonValue) -> str:
    """How a value reads inside a template string."""
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
