"""Checks the inputs of StartExecution against the plan's declared inputs."""

from __future__ import annotations

from collections.abc import Mapping

from execplan.errors import FieldViolation, InvalidArgument
from execplan.executor.plan_view import PlanView
from execplan.executor.values import JsonValue
from execplan.v1 import workflow_pb2 as wf

_TYPE_NAMES: dict[int, str] = {
    wf.INPUT_TYPE_STRING: "string",
    wf.INPUT_TYPE_NUMBER: "number",
    wf.INPUT_TYPE_INTEGER: "integer",
    wf.INPUT_TYPE_BOOLEAN: "boolean",
    wf.INPUT_TYPE_OBJECT: "object",
    wf.INPUT_TYPE_ARRAY: "array",
}


def _matches(kind: int, value: JsonValue) -> bool:
    if kind == wf.INPUT_TYPE_STRING:
        return isinstance(value, str)
    if kind == wf.INPUT_TYPE_NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == wf.INPUT_TYPE_INTEGER:
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == wf.INPUT_TYPE_BOOLEAN:
        return isinstance(value, bool)
    if kind == wf.INPUT_TYPE_OBJECT:
        return isinstance(value, Mapping)
    if kind == wf.INPUT_TYPE_ARRAY:
        return isinstance(value, list)
    return True


def resolve_inputs(plan: PlanView, given: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """Applies defaults and checks types; raises InvalidArgument listing every problem."""
    violations: list[FieldViolation] = []
    declared = {spec.name: spec for spec in plan.inputs}
    resolved: dict[str, JsonValue] = {}
    for name in sorted(given):
        if name not in declared:
            violations.append(
                FieldViolation(
                    f"inputs.{name}", "not a declared input of the workflow", "unknown-input"
                )
            )
    for spec in plan.inputs:
        if spec.name in given:
            value = given[spec.name]
            if not _matches(spec.type, value):
                violations.append(
                    FieldViolation(
                        f"inputs.{spec.name}",
                        f"expected {_TYPE_NAMES.get(spec.type, 'any')}, got {_kind(value)}",
                        "invalid-input-type",
                    )
                )
                continue
            if spec.type == wf.INPUT_TYPE_INTEGER and isinstance(value, float):
                value = int(value)
            resolved[spec.name] = value
        elif spec.has_default:
            resolved[spec.name] = spec.default
        elif spec.required:
            violations.append(
                FieldViolation(f"inputs.{spec.name}", "required input is missing", "missing-input")
            )
    if violations:
        raise InvalidArgument("inputs do not match the workflow's declaration", violations)
    return resolved


def _kind(value: JsonValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array"
