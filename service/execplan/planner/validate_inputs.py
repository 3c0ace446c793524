"""Workflow input declarations: defaults match the declared type.

`invalid-input-default`: the default does not match `type` (null is accepted for any
type: it means "no value"). `required-input-undeclared`: a required input with no
`type`, so callers cannot know what to pass. A required input with a default is a
warning (`required-input-default`): the default is never used.
"""

from __future__ import annotations

from execplan.planner.diagnostics import Diagnostics, child, echo
from execplan.planner.model import Workflow


def _matches(type_name: str, v: object) -> bool:
    t = type(v)
    if v is None or type_name in ("", "INPUT_TYPE_ANY"):
        return True
    return {
        "INPUT_TYPE_STRING": t is str,
        "INPUT_TYPE_NUMBER": t is int or t is float,
        "INPUT_TYPE_INTEGER": t is int,
        "INPUT_TYPE_BOOLEAN": t is bool,
        "INPUT_TYPE_OBJECT": t is dict,
        "INPUT_TYPE_ARRAY": t is list,
    }.get(type_name, True)


def check(wf: Workflow, diags: Diagnostics) -> None:
    for name, spec in wf.inputs.items():
        path = child("inputs", name)
        if spec.has_default and not _matches(spec.type, spec.default):
            want = spec.type.removeprefix("INPUT_TYPE_").lower()
            diags.error(
                "invalid-input-default",
                f"{path}.default",
                f"default {echo(spec.default)} is not a {want}",
            )
        if spec.required and not spec.type:
            diags.error(
                "required-input-undeclared",
                f"{path}.type",
                f"required input {echo(name)} needs a type",
            )
        if spec.required and spec.has_default and spec.default is not None:
            diags.warning(
                "required-input-default",
                f"{path}.default",
                "a required input never uses its default",
            )
